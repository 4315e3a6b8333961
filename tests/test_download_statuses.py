"""Download statuses (issue 13): every status the pair table can hold is documented in the README, URLs are
sent the way a browser sends them, transient failures are retried, EXIF orientation is applied, and a list
the pre-filter empties still writes its table.

One img2dataset run (module fixture) against pipelines/local_http.serve() serves the whole battery; the other tests
need no download."""

import dataclasses
import json
import re
import tarfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.shards import iter_raw_samples, iter_shards

README = Path(__file__).resolve().parents[1] / "README.md"

BATTERY = {  # path on the test server -> the status its row must end with (/bomb.png, too_large: test_data.py)
    "/good.jpg": "ok",
    "/missing.jpg": "http_404",
    "/error.jpg": "http_500",
    "/always/503.jpg": "http_503",
    "/slow.jpg": "timeout",
    "/truncated.jpg": "undecodable",
    "/page.jpg": "undecodable",
    "/loop.jpg": "redirect_loop",
    "/tiny.png": "too_small",
    "/wide.png": "bad_aspect_ratio",
    "/noai.jpg": "opted_out",
    "/empty.jpg": "empty_body",  # 200 with a zero-byte body
    "/short.jpg": "truncated",  # fewer bytes than its Content-Length, then the server hangs up
    "/reset.jpg": "connection_reset",
    "/flaky/503.jpg": "ok",  # 503 once, then the image: retried
    "/flaky/429.jpg": "ok",
    "/flaky/reset.jpg": "ok",
    "/flaky/timeout.jpg": "ok",
    "/with space/a b.jpg": "ok",  # listed as written by people: sent percent-encoded
    "/ünïcödé/café.jpg": "ok",
    "/search.jpg?q=red car&lang=ü": "ok",
    "/pct%20ok.jpg": "ok",  # already encoded: not encoded twice
    **{f"/exif/{tag}.jpg": "ok" for tag in range(1, 9)},
}
ELSEWHERE = {  # full URLs -> status
    "http://127.0.0.1:1/refused.jpg": "unreachable",
    "http:///no-host.jpg": "bad_url",
}


@pytest.fixture(scope="module")
def battery(tmp_path_factory, fast_cfg):
    """(pair table indexed by url, the build's output folder) of one build over the whole battery."""
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.local_http import serve

    tmp = tmp_path_factory.mktemp("battery")
    data = dataclasses.replace(fast_cfg.data, download_timeout=2, download_retries=1)
    # the eight EXIF photos are one picture: keep them all to look at each
    cfg = dataclasses.replace(fast_cfg, data=data, filter=dataclasses.replace(fast_cfg.filter, skip=("near_duplicate",)))
    with serve(slow_seconds=4) as base:
        want = {base + path: status for path, status in BATTERY.items()} | ELSEWHERE
        rows = [(url, f"a picture for case number {i}") for i, url in enumerate(want)]
        pd.DataFrame(rows, columns=["url", "caption"]).to_parquet(tmp / "list.parquet")
        build_dataset(cfg, str(tmp / "list.parquet"), tmp / "out")
    table = pd.read_parquet(tmp / "out" / "pairs.parquet").set_index("url")
    table.attrs["hits"] = dict(base.hits)
    return table, want, tmp / "out"


@pytest.mark.slow  # the battery: one img2dataset run against a local server, ~21 s
def test_every_row_ends_with_its_documented_status(battery):
    table, want, _ = battery
    assert table["status"].to_dict() == want  # url: the list's own text, not the encoded one
    from dalle_eval.pipelines.download import is_documented_status

    undocumented = sorted(s for s in set(table["status"]) if not is_documented_status(s))
    assert not undocumented, f"statuses the README does not list: {undocumented}"


@pytest.mark.slow  # the battery: one img2dataset run against a local server, ~21 s
def test_only_transient_failures_are_retried(battery):
    """data.download_retries=1: a transient failure (timeout, reset, truncated, 429, 5xx) is asked once more,
    after the rest of the list; a 404, an empty body or an opted-out image only once."""
    table, _, _ = battery
    hits = table.attrs["hits"]
    retried = ["/error.jpg", "/always/503.jpg", "/slow.jpg", "/short.jpg", "/reset.jpg", "/flaky/503.jpg",
               "/flaky/429.jpg", "/flaky/reset.jpg", "/flaky/timeout.jpg"]
    assert {path: hits.get(path) for path in retried} == dict.fromkeys(retried, 2)
    once = [path for path in BATTERY if path not in retried and path != "/loop.jpg"]  # a loop: 10 redirects
    assert {path: hits.get(unquote(path)) for path in once} == dict.fromkeys(once, 1)  # hits: decoded paths


@pytest.mark.slow  # the battery: one img2dataset run against a local server, ~21 s
def test_failures_keep_their_message(battery):
    table, _, _ = battery
    failed = table[table["status"] != "ok"]
    assert failed["error"].notna().all() and (failed["error"].str.len() > 0).all()
    by_status = failed.set_index("status")["error"]
    assert "buf.empty()" in by_status["empty_body"]  # OpenCV's own words stay in `error`
    assert "IncompleteRead" in by_status["truncated"]
    assert "reset" in by_status["connection_reset"].lower()
    assert by_status["http_503"] == "HTTP Error 503: Service Unavailable"
    assert table.loc[table["status"] == "ok", "error"].isna().all()  # a retried success keeps no old error


@pytest.mark.slow  # the battery: one img2dataset run against a local server, ~21 s
def test_exif_orientation_is_applied_and_the_shown_size_recorded(battery):
    """All 8 EXIF orientations: the stored square is the upright photo's center crop, not a rotated or
    mirrored one; width/height are the size as shown (portrait 96x128)."""
    from dalle_eval.pipelines.local_http import EXIF_STORED, upright_photo

    table, _, out = battery
    exif = table[table.index.str.contains("/exif/")]
    assert (exif["status"] == "ok").all()
    assert (exif["width"] == 96).all() and (exif["height"] == 128).all()
    # what img2dataset makes of the upright photo: shorter side to 64 (96x128 -> 64x85), center crop
    reference = upright_photo().resize((64, 85), Image.Resampling.BOX).crop((0, 10, 64, 74))
    candidates = {t: np.asarray(reference if t is None else reference.transpose(t), np.float32)
                  for t in EXIF_STORED.values()}
    samples = {s["txt"]: s["image"] for s in iter_shards(sorted((out / "images").glob("*.tar")))}
    for url, row in exif.iterrows():
        got = np.asarray(samples[row["caption"]], np.float32)
        diffs = {t: float(np.abs(got - c).mean()) for t, c in candidates.items()}
        assert min(diffs, key=diffs.get) is None and diffs[None] < 8, (url, diffs)


@pytest.mark.slow  # the battery: one img2dataset run against a local server, ~21 s
def test_exif_pass_leaves_upright_shards_alone_on_a_rerun(battery):
    """A resumed download runs the orientation pass again: shards already turned stay byte for byte."""
    from dalle_eval.pipelines.download import APPLIED, apply_exif_orientation

    _, _, out = battery
    folder = out / "download" / "img2dataset"
    before = {p.name: p.read_bytes() for p in folder.glob("*.tar")}
    assert apply_exif_orientation(folder) == 0
    assert {p.name: p.read_bytes() for p in folder.glob("*.tar")} == before
    metas = [json.loads(files["json"]) for p in folder.glob("*.tar") for _, files in iter_raw_samples(p)]
    assert sorted(m[APPLIED] for m in metas if APPLIED in m) == [2, 3, 4, 5, 6, 7, 8]  # tag 1: nothing to do


def readme_statuses(text: str) -> set[str]:
    """The status names in the README's build-dataset stage table (its third column), plus `ok`; examples of
    `http_<code>` (`http_404`) count as that."""
    section = text.split("## Building web data", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\|\s*\d\.", line)]
    names = {name for row in rows for name in re.findall(r"`([a-z0-9_<>]+)`", row.split("|")[3])}
    return {"http_<code>" if re.fullmatch(r"http_\d{3}", n) else n for n in names} | {"ok"}


def test_readme_table_lists_exactly_the_statuses_in_code():
    from dalle_eval.pipelines.download import STATUSES

    assert readme_statuses(README.read_text(encoding="utf-8")) == set(STATUSES)


@pytest.mark.parametrize(
    "url, sent",
    [
        ("http://h/a b.jpg", "http://h/a%20b.jpg"),
        ("http://h/ünï/café.jpg", "http://h/%C3%BCn%C3%AF/caf%C3%A9.jpg"),
        ("http://h/s.jpg?q=red car&l=ü", "http://h/s.jpg?q=red%20car&l=%C3%BC"),
        ("http://h/a%20b.jpg?x=%C3%BC", "http://h/a%20b.jpg?x=%C3%BC"),  # never encoded twice
        ("http://h/100% real.jpg", "http://h/100%%20real.jpg"),  # a lone % stays, as in browsers
        ('http://h/q"<>`{}.jpg?a="b\'', "http://h/q%22%3C%3E%60%7B%7D.jpg?a=%22b%27"),
        ("  http://h/x.jpg#frag \n", "http://h/x.jpg"),  # trimmed; the fragment is never sent
        ("http://h/a\tb\nc.jpg", "http://h/abc.jpg"),  # tabs and newlines inside are dropped
        ("http://bücher.example/x.jpg", "http://xn--bcher-kva.example/x.jpg"),  # IDNA host
        ("http://h:8080/a+b,c;d=e.jpg", "http://h:8080/a+b,c;d=e.jpg"),  # reserved characters stay
        ("file:///tmp/a%20b.jpg", "file:///tmp/a%20b.jpg"),  # what Path.as_uri() writes
    ],
)
def test_urls_are_percent_encoded_as_browsers_send_them(url, sent):
    from dalle_eval.pipelines.download import browser_url

    assert browser_url(url) == sent


@pytest.mark.parametrize(
    "status, message, name",
    [
        ("failed_to_download", "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed>",
         "tls_error"),
        ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>", "unreachable"),
        ("failed_to_download", "<urlopen error [Errno 110] Connection timed out>", "timeout"),
        ("failed_to_download", "HTTP Error 999: Request denied", "http_999"),
        ("failed_to_download", "something nobody has seen", "download_error"),
        # messages that quote a file name or URL are classed by the error, not by the words in the name
        ("failed_to_download", "<urlopen error [Errno 2] No such file or directory: '/photos/timeout.jpg'>",
         "unreachable"),
        ("failed_to_download", "URL can't contain control characters. '/ssl/a\x01.jpg' (found at least '\x01')",
         "bad_url"),
        ("failed_to_resize", "Image decoding error", "undecodable"),
        ("failed_to_resize", "something nobody has seen", "resize_error"),
        ("failed_to_resize", "OpenCV(4.9) error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS", "too_large"),
    ],
)
def test_messages_nobody_serves_here_map_to_documented_classes(status, message, name):
    from dalle_eval.pipelines.download import error_class, is_documented_status

    assert error_class(message, status) == name and is_documented_status(name)


def test_prefilter_rejecting_every_row_writes_the_table_and_says_so(tmp_path):
    src = tmp_path / "pairs.csv"
    pd.DataFrame({"url": ["http://127.0.0.1:9/a.jpg", "ftp://x/b.jpg", "http://127.0.0.1:9/c.jpg"],
                  "caption": ["   ", "a red car on a road", "ab"]}).to_csv(src, index=False)
    out = tmp_path / "out"
    for _ in range(2):  # a re-run says the same, it does not report an empty success
        result = CliRunner().invoke(main, ["build-dataset", "--source", str(src), "--out", str(out)])
        assert result.exit_code == 1, result.output
        last = result.stderr.strip().splitlines()[-1]  # after "images: already built" on stdout, on a re-run
        assert last.startswith("Error: 0 rows left after the pre-filter") and "Traceback" not in result.output
        assert "caption_empty 1" in last and "url_invalid 1" in last and str(out / "pairs.parquet") in last
    table = pd.read_parquet(out / "pairs.parquet")
    assert table["status"].tolist() == ["caption_empty", "url_invalid", "caption_too_short"]


def test_evaluation_images_are_hashed_as_shown(tmp_path):
    """An evaluation set's photo with an EXIF Orientation tag is hashed upright, as the downloaded copies
    are stored: the overlap check compares the pictures people see."""
    from dalle_eval.pipelines.dedup import hamming, phash
    from dalle_eval.pipelines.local_http import exif_photo, upright_photo
    from dalle_eval.pipelines.shard_images import hash_folder

    for tag in range(1, 9):
        (tmp_path / f"{tag}.jpg").write_bytes(exif_photo(tag))
    got = hash_folder(tmp_path, progress=False)
    distances = hamming(got["phash"].to_numpy("int64"), phash([upright_photo()])[0])
    assert distances.max() <= 4, dict(zip(got["key"], distances))


def test_retry_rounds_back_off_and_count_attempts_across_runs(tmp_path, monkeypatch):
    """Rounds over the transient failures only, 1 s, 2 s, 4 s apart; attempts are counted from the shards,
    so running again (a resumed build) adds no round beyond data.download_retries."""
    from dalle_eval.pipelines import download as dl

    sleeps, rounds = [], []
    monkeypatch.setattr(dl.time, "sleep", sleeps.append)
    answers = {"a": ("failed_to_download", "HTTP Error 503: Service Unavailable"),
               "b": ("failed_to_download", "HTTP Error 404: Not Found"),
               "c": ("failed_to_download", "The read operation timed out")}

    def shard(keys: list[str]) -> None:  # what img2dataset leaves for a finished shard
        i = len(list(tmp_path.glob("*_stats.json")))
        rows = [{"pair_key": k, "url": f"http://h/{k}", "caption": k, "key": f"{i}{k}", "status": answers[k][0],
                 "error_message": answers[k][1], "original_width": None, "original_height": None, "exif": None}
                for k in keys]
        pd.DataFrame(rows).to_parquet(tmp_path / f"{i:05d}.parquet")
        tarfile.open(tmp_path / f"{i:05d}.tar", "w").close()
        (tmp_path / f"{i:05d}_stats.json").write_text("{}")

    def fake_img2dataset(url_list: str, incremental_mode: str, **_) -> None:
        keys = pd.read_parquet(url_list)["pair_key"].tolist()
        rounds.append((incremental_mode, sorted(keys)))
        answers["c"] = ("success", None)  # the timeout goes away, the 503 stays
        shard(keys)

    shard(["a", "b", "c"])
    cfg = dataclasses.replace(dl.DataConfig(), download_retries=3)
    dl._retry_transient(fake_img2dataset, tmp_path, cfg)
    assert rounds == [("extend", ["a", "c"]), ("extend", ["a"]), ("extend", ["a"])] and sleeps == [1.0, 2.0, 4.0]
    dl._retry_transient(fake_img2dataset, tmp_path, cfg)  # a re-run: a has had its 1 + 3 attempts
    assert len(rounds) == 3
    table = dl._fold_status(pd.DataFrame({"key": ["a", "b", "c", "d"]}), dl._read_stats(tmp_path, dl._finished_shards(tmp_path)))
    assert table["status"].tolist() == ["http_503", "http_404", "ok", "not_attempted"]


@pytest.mark.parametrize(
    "manifest, stage",
    [
        ({"prefilter": {"ok": 2}, "status_counts": {"http_404": 2, "url_invalid": 1}}, "the download"),
        ({"prefilter": {"ok": 2}, "status_counts": {"near_duplicate": 2, "http_404": 1}}, "the post-filter"),
    ],
)
def test_an_empty_set_names_the_stage_that_emptied_it(tmp_path, manifest, stage):
    from dalle_eval.pipelines.download import check_rows_left

    from dalle_eval.errors import DalleEvalError

    with pytest.raises(DalleEvalError, match=f"^0 rows left after {stage} \\(of 3 rows: "):
        check_rows_left({"n_samples": 0, **manifest}, tmp_path)
    check_rows_left({"n_samples": 1, **manifest}, tmp_path)  # something kept: no error
