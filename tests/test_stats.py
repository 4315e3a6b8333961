"""`dataset-stats`: numbers checked against pandas/urllib on a pair table written here, files, CLI, errors."""

import json
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from dalle_eval.pipelines.stats import dataset_stats
from dalle_eval.pipelines.stats_report import format_stats
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.errors import DalleEvalError

STATUSES = {"ok": 110, "http_404": 20, "caption_too_short": 15, "near_duplicate": 12, "duplicate_url": 10,
            "timeout": 8, "not_english": 8, "undecodable": 7, "clip_score_low": 5, "eval_overlap": 5}  # fmt: skip
DOWNLOADED = ("ok", "near_duplicate", "clip_score_low", "eval_overlap")
# 5 hosts with 70/50/40/25/15 rows, spelled in ways that must count as one host each
HOSTS = [
    ("https://images.example.com/a/{i}.jpg", 40), ("https://User:pw@IMAGES.example.com:8443/b/{i}.jpg", 30),
    ("http://cdn.pics.org/{i}.png", 50), ("https://www.flickr.com./photos/{i}?size=l", 40),
    ("http://[::1]:8000/{i}.webp", 25), ("https://static.site.net/x/{i}.jpg#frag", 15),
]  # fmt: skip
WORDS = "a small red circle above a large blue square on a white background near the edge"


def _pairs(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    status = rng.permutation([s for s, k in STATUSES.items() for _ in range(k)])
    urls = rng.permutation([u.format(i=j) for u, k in HOSTS for j in range(k)])
    words = WORDS.split()
    captions = [" ".join(words[: 1 + i % len(words)]) * (1 + i % 4) for i in range(n)]
    captions[3], captions[7], captions[11] = None, "", "   "
    downloaded = np.isin(status, DOWNLOADED)
    width = np.where(downloaded, rng.integers(100, 3000, n), np.nan)
    height = np.where(downloaded, rng.integers(100, 3000, n), np.nan)
    # near-duplicate clusters among downloaded rows: sizes 4, 3, 3, 2, 2 (+ singletons); NaN elsewhere
    cluster = np.full(n, np.nan)
    dup_of = [None] * n
    idx = np.flatnonzero(downloaded)
    cluster[idx] = np.arange(len(idx)) + 100
    start = 0
    for c, size in enumerate((4, 3, 3, 2, 2)):
        members = idx[start : start + size]
        cluster[members] = c
        for m in members[1:]:
            dup_of[m] = f"{members[0]:09d}"
        start += size
    clip = np.where(downloaded, rng.uniform(0.12, 0.42, n), np.nan)
    return pd.DataFrame({
        "key": [f"{i:09d}" for i in range(n)], "url": urls, "caption": captions, "status": status,
        "source": [f"part-{i % 3}.parquet" for i in range(n)], "error": None, "width": width, "height": height,
        "cluster": cluster, "cluster_size": pd.Series(cluster).map(pd.Series(cluster).value_counts()),
        "dup_of": dup_of, "clip_score": clip,
    })  # fmt: skip


@pytest.fixture
def build_dir(tmp_path):
    out = tmp_path / "web"
    (out / "images").mkdir(parents=True)
    (out / "tokens").mkdir()
    df = _pairs()
    df.to_parquet(out / "pairs.parquet", index=False)
    manifest = {"kind": "images", "source": "lists/*.parquet", "n_samples": 110, "n_shards": 2, "shards": [],
                "shard_sizes": [64, 46], "resolution": 256, "status_counts": STATUSES}  # fmt: skip
    (out / "images" / "manifest.json").write_text(json.dumps(manifest))
    tokens = {"kind": "tokens", "n_samples": 110, "n_shards": 2, "text_len": 64, "grid": 32, "text_vocab": 16384,
              "image_vocab": 8192, "truncated_captions": 11}  # fmt: skip
    (out / "tokens" / "manifest.json").write_text(json.dumps(tokens))
    return out, df


def _hist_counts(values: pd.Series, edges) -> list[int]:
    bins = np.digitize(values.dropna().to_numpy(), edges[1:])
    return np.bincount(bins, minlength=len(edges)).tolist()


def test_numbers_match_pandas(build_dir):
    out, df = build_dir
    s = dataset_stats(out)
    kept = df[df.status == "ok"]

    st = s["status"]
    assert {r["status"]: r["rows"] for r in st["table"]} == STATUSES
    assert st["table"][0]["status"] == "ok" and [r["rows"] for r in st["table"][1:]] == sorted(
        [r["rows"] for r in st["table"][1:]], reverse=True
    )
    assert sum(r["rows"] for r in st["table"]) == s["rows"] == 200
    assert st["totals"] == {
        "rows": 200,
        "kept": 110,
        "rejected": 90,
        "kept_share": 0.55,
        "rejected_share": 0.45,
    }
    assert st["table"][1] == {"status": "http_404", "rows": 20, "share": 0.1, "kind": "rejected"}
    assert (
        st["checks"]["adds_up"]
        and st["checks"]["all_passed"]
        and st["checks"]["manifest_agrees"]
        and s["warnings"] == []
    )

    by_source = df.groupby("source").status.agg(rows="size", kept=lambda x: int((x == "ok").sum()))
    assert {r["source"]: (r["rows"], r["kept"]) for r in s["sources"]} == {
        k: (v.rows, v.kept) for k, v in by_source.iterrows()
    }
    for r in s["sources"]:
        top = df[(df.source == r["source"]) & (df.status != "ok")].status.value_counts()
        assert r["top_rejection_rows"] == top.max() and r["top_rejection"] in top[top == top.max()].index

    cl = s["caption_length"]
    chars, words = df.caption.str.len(), df.caption.map(lambda c: len(c.split()), na_action="ignore")
    for unit, values in (("chars", chars), ("words", words)):
        h = cl[unit]["histogram"]
        assert sum(r["all"] for r in h) == 200 and sum(r["kept"] for r in h) == 110
        assert h[-1] == {
            "bin": "(no caption)",
            "lo": None,
            "hi": None,
            "all": 1,
            "kept": int(kept.caption.isna().sum()),
        }
        edges = [r["lo"] for r in h[:-1]]
        assert [r["all"] for r in h[:-1]] == _hist_counts(values, edges)
        assert [r["kept"] for r in h[:-1]] == _hist_counts(values[df.status == "ok"], edges)
        assert cl[unit]["all"]["n"] == 199 and cl[unit]["all"]["max"] == values.max()
        assert cl[unit]["kept"]["median"] == pytest.approx(values[df.status == "ok"].median())
    assert cl["words"]["histogram"][0]["all"] == 2  # "" and "   "

    res = s["resolution"]
    assert sum(r["shorter"] for r in res["histogram"]) == sum(r["longer"] for r in res["histogram"]) == 110
    edges = [r["lo"] for r in res["histogram"]]
    assert [r["shorter"] for r in res["histogram"]] == _hist_counts(
        np.minimum(kept.width, kept.height), edges
    )
    assert res["width"]["n"] == 110 and res["width"]["max"] == kept.width.max()

    hosts = Counter(urlsplit(u).hostname.rstrip(".") for u in df.url)
    kept_hosts = Counter(urlsplit(u).hostname.rstrip(".") for u in kept.url)
    d = s["domains"]
    assert [(r["domain"], r["rows"], r["kept"]) for r in d["top"]] == [
        ("images.example.com", 70, kept_hosts["images.example.com"]), ("cdn.pics.org", 50, kept_hosts["cdn.pics.org"]),
        ("www.flickr.com", 40, kept_hosts["www.flickr.com"]), ("[::1]", 25, kept_hosts["::1"]),
        ("static.site.net", 15, kept_hosts["static.site.net"]),
    ]  # fmt: skip
    assert d["distinct"] == len(hosts) == 5 and d["other_rows"] == 0

    nd = s["near_duplicates"]
    assert nd["clusters"] == 5 and nd["rows_in_clusters"] == 14 and nd["near_duplicate_rows"] == 12
    assert [r["size"] for r in nd["largest"]] == [4, 3, 3, 2, 2]
    first = df[df.cluster == 0]
    assert (
        nd["largest"][0]["kept_key"] == first.key.iloc[0]
        and nd["largest"][0]["kept_caption"] == first.caption.iloc[0]
    )
    assert {r["bin"]: r["clusters"] for r in nd["size_histogram"]} == {
        "2": 2,
        "3": 2,
        "4-5": 1,
        "6-10": 0,
        "11-100": 0,
        "101+": 0,
    }

    cs = s["clip_score"]
    assert (
        cs["all"]["n"] == df.clip_score.notna().sum() == 132 and sum(r["all"] for r in cs["histogram"]) == 132
    )
    assert sum(r["kept"] for r in cs["histogram"]) == 110
    assert s["images"]["n_samples"] == 110 and s["tokens"]["truncated_captions"] == 11


def test_files_written(build_dir):
    out, _ = build_dir
    s = dataset_stats(out)
    folder = out / "stats"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "caption_length.png",
        "clip_score.png",
        "domains.png",
        "resolution.png",
        "stats.json",
        "stats.md",
        "status.png",
    ]  # fmt: skip  (no temp files left)
    assert json.loads((folder / "stats.json").read_text()) == json.loads(json.dumps(s))
    for p in s["files"]["plots"]:
        with Image.open(p) as im:
            assert (
                im.format == "PNG" and im.width >= 600 and len(im.convert("RGB").getcolors(1 << 16) or []) > 5
            )
    md = (folder / "stats.md").read_text()
    assert "| http_404 | 20 | 10.0% | rejected |" in md
    assert "| images.example.com | 70 |" in md and "![domains](domains.png)" in md
    assert "10.0%" in md.split("## Shards")[1]  # 11 of 110 captions truncated
    text = format_stats(s)
    assert "== Top 5 domains ==" in text and "200 rows: 110 kept (55.0%), 90 rejected (45.0%)." in text

    (folder / "status.png").unlink()
    s = dataset_stats(out, plots=False)
    assert (
        s["files"]["plots"] == []
        and not (folder / "status.png").exists()
        and "## Plots" not in (folder / "stats.md").read_text()
    )


def test_url_domains_and_minimal_table(tmp_path):
    urls = {
        "HTTPS://User:pw@WWW.Example.COM:8080/a?b=1": "www.example.com", "http://example.com./x": "example.com",
        "file:///tmp/a.jpg": "file://", "shapes://0/1": "shapes://", "data:image/png;base64,AAAA": "data:",
        "just some text": "(no scheme)", None: "(no url)", "http:///path": "(no host)", "s3://bucket/k.jpg": "bucket",
    }  # fmt: skip
    pd.DataFrame({"key": [str(i) for i in range(len(urls))], "url": list(urls), "status": "ok"}).to_parquet(
        tmp_path / "pairs.parquet"
    )
    s = dataset_stats(tmp_path, plots=False)
    assert {r["domain"]: r["rows"] for r in s["domains"]["top"]} == {v: 1 for v in urls.values()}
    assert "caption_length" not in s and "resolution" not in s and s["images"] is None
    assert "== Top 9 domains ==" in format_stats(s)


def test_broken_tables_are_reported_not_hidden(tmp_path):
    pd.DataFrame({"key": ["a", "a", None, "b"], "status": ["ok", None, "timeout", ""]}).to_parquet(
        tmp_path / "pairs.parquet"
    )
    s = dataset_stats(tmp_path, plots=False)
    assert {r["status"]: r["rows"] for r in s["status"]["table"]} == {"ok": 1, "(missing)": 2, "timeout": 1}
    assert not s["status"]["checks"]["adds_up"] and not s["status"]["checks"]["all_passed"]
    assert any("2 rows have no status" in w for w in s["warnings"])
    assert any("keys not unique: 1 repeated, 1 missing" in w for w in s["warnings"])
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "manifest.json").write_text("{not json")
    s = dataset_stats(tmp_path, plots=False)
    assert s["images"] is None and any("manifest.json: not valid JSON" in w for w in s["warnings"])


def test_stale_manifest_is_a_warning(build_dir):
    out, _ = build_dir
    manifest = json.loads((out / "images" / "manifest.json").read_text())
    manifest["status_counts"] = {"ok": 120, "http_404": 80}
    manifest["n_samples"] = 120
    (out / "images" / "manifest.json").write_text(json.dumps(manifest))
    s = dataset_stats(out, plots=False)
    assert s["status"]["checks"]["manifest_agrees"] is False and not s["status"]["checks"]["all_passed"]
    assert s["status"]["checks"]["adds_up"]
    assert len(s["warnings"]) == 2 and "120 samples; pairs.parquet 110 kept rows" in s["warnings"][1]
    assert "Warning: images/manifest.json: status_counts differ" in format_stats(s)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, r"pairs\.parquet: no pair table — run `dalle-eval build-dataset --out .*` first"),
        (
            lambda d: pd.DataFrame({"key": ["a"], "url": ["x"]}).to_parquet(d / "pairs.parquet"),
            "missing column.s. status",
        ),
        (lambda d: (d / "pairs.parquet").write_text("url,caption\n"), "not a readable parquet file"),
    ],
)
def test_errors_are_one_line(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DalleEvalError, match=message):
        dataset_stats(tmp_path)
    result = CliRunner().invoke(main, ["dataset-stats", str(tmp_path)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: ") and not (tmp_path / "stats").exists()


def test_cli(build_dir):
    out, _ = build_dir
    result = CliRunner().invoke(main, ["dataset-stats", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "== Status ==" in result.output
        and "http_404" in result.output
        and "== dataset-stats ==" in result.output
    )
    assert (
        str(out / "stats" / "stats.md") in result.output
        and str(out / "stats" / "domains.png") in result.output
    )
    result = CliRunner().invoke(main, ["dataset-stats", str(out), "--no-plots"])
    assert result.exit_code == 0 and "domains.png" not in result.output


def test_shapes_world_build(tmp_path, fast_cfg):
    from dalle_eval.pipelines.build import build_dataset

    build_dataset(fast_cfg, "shapes", tmp_path, n=16)
    s = dataset_stats(tmp_path)
    assert s["domains"]["top"] == [{"domain": "shapes://", "rows": 16, "kept": 16, "kept_share": 1.0}]
    assert s["status"]["checks"]["adds_up"] and s["status"]["checks"]["manifest_agrees"]
    assert (
        sum(r["shorter"] for r in s["resolution"]["histogram"]) == 16
        and s["resolution"]["width"]["max"] == 64
    )
    assert len(s["files"]["plots"]) == 4 and "near_duplicates" not in s
