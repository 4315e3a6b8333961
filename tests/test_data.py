import dataclasses
import json
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from dalle_eval.cli import main
from dalle_eval.errors import DalleEvalError
from dalle_eval.shapes import HELDOUT
from dalle_eval.shards import count_samples, iter_shards


def test_shapes_build_round_trip(shapes_data):
    """pair table -> shards -> webdataset reader: every ok row comes back with its caption."""
    table = pd.read_parquet(shapes_data / "pairs.parquet")
    manifest = json.loads((shapes_data / "images" / "manifest.json").read_text())
    samples = list(iter_shards(shapes_data / "images" / s for s in manifest["shards"]))
    assert len(table) == len(samples) == manifest["n_samples"] == 160
    by_key = dict(zip(table["key"], table["caption"]))
    for s in samples:
        assert by_key[s["__key__"]] == s["txt"]
        assert s["image"].size == (64, 64)
        assert not any(f"{c} {sh}" in s["txt"] for c, sh in HELDOUT)
    coco = json.loads((shapes_data / "coco" / "captions_val.json").read_text())
    assert len(coco["images"]) == 16 and all((shapes_data / "coco" / "images" / i["file_name"]).exists() for i in coco["images"])


def test_token_shards_and_manifest(token_data, fast_cfg):
    manifest = json.loads((token_data / "tokens" / "manifest.json").read_text())
    assert manifest["n_samples"] == 160 and manifest["grid"] == 8 and manifest["image_vocab"] == fast_cfg.dvae.vocab_size
    assert len(manifest["tokenizer_sha256"]) == 64 and len(manifest["dvae_sha256"]) == 64
    sample = next(iter_shards([token_data / "tokens" / manifest["shards"][0]]))
    assert sample["codes.npy"].shape == (8, 8) and str(sample["codes.npy"].dtype) == "uint16"
    assert sample["text.npy"].dtype.name == "int32" and 0 < len(sample["text.npy"]) <= fast_cfg.transformer.text_len


def test_rebuild_skips_finished_stages(shapes_data, fast_cfg, capsys):
    from dalle_eval.pipelines.build import build_dataset

    before = (shapes_data / "images" / "shard-000000.tar").stat().st_mtime_ns
    build_dataset(fast_cfg, "shapes", shapes_data, n=160)
    assert "already built" in capsys.readouterr().out
    assert (shapes_data / "images" / "shard-000000.tar").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("link,text\nhttp://x/a.png,a cat\n", "pairs.csv", "missing column(s) url, caption; found link, text"),
        ("", "pairs.csv", "the file is empty"),
        ("url,caption\n", "pairs.csv", "no rows after the header"),
        ("a\tb\n", "pairs.xlsx", "unknown format '.xlsx'"),
    ],
)
def test_bad_source_gives_one_clear_line(tmp_path, content, name, message):
    src = tmp_path / name
    src.write_text(content)
    result = CliRunner().invoke(main, ["build-dataset", "--source", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: --source") and message in last and "Traceback" not in result.output


EXPECTED = {  # what the web's bad inputs (pipelines/local_http.py: serve) must end as
    "/good.jpg": "ok", "/good.png": "ok", "/good.webp": "ok", "/gray.png": "ok", "/cmyk.jpg": "ok",
    "/alpha.png": "ok", "/anim.gif": "ok",
    **{f"/copy/{i}.jpg": "near_duplicate" for i in range(5)},  # the bytes of /good.jpg under other URLs
    "/missing.jpg": "http_404", "/error.jpg": "http_500", "/slow.jpg": "timeout", "/truncated.jpg": "undecodable",
    "/page.jpg": "undecodable", "/bomb.png": "too_large", "/loop.jpg": "redirect_loop",
}


@pytest.mark.slow  # img2dataset against a local server, a 5 s slow response: ~9 s
def test_web_bad_inputs_each_end_with_one_status(tmp_path, fast_cfg):
    """A real img2dataset run against a local server serving good, odd and broken images."""
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.local_http import serve

    cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, download_timeout=2))
    with serve(slow_seconds=5) as base:
        rows = [{"url": base + path, "caption": f"picture {i}"} for i, path in enumerate(EXPECTED)]
        src = tmp_path / "pairs.parquet"
        pd.DataFrame(rows).to_parquet(src)
        report = build_dataset(cfg, str(src), tmp_path / "out")
    table = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    got = dict(zip(table["url"].str.removeprefix(base), table["status"]))
    assert got == EXPECTED
    assert sum(report["images"]["status_counts"].values()) == len(rows) == len(table)
    assert report["stats"]["status"] == {"rows": 19, "kept": 7, "rejected": 12, "kept_share": 7 / 19,
                                         "rejected_share": 12 / 19}
    assert (tmp_path / "out" / "stats" / "status.png").exists()  # dataset-stats ran as part of the build
    assert (table.loc[table["status"] == "ok", "width"] == 320).all()  # the original size, not the resized one
    assert (table.loc[table["status"] == "near_duplicate", "dup_of"] == table.loc[0, "key"]).all()
    assert table.loc[table["status"] == "http_404", "error"].item() == "HTTP Error 404: Not Found"
    manifest = json.loads((tmp_path / "out" / "images" / "manifest.json").read_text())
    samples = list(iter_shards(tmp_path / "out" / "images" / s for s in manifest["shards"]))
    ok = [r["caption"] for r, want in zip(rows, EXPECTED.values()) if want == "ok"]
    assert sorted(s["txt"] for s in samples) == sorted(ok) and sum(manifest["shard_sizes"]) == len(ok)
    assert manifest["shard_sizes"] == [count_samples(tmp_path / "out" / "images" / s) for s in manifest["shards"]]
    assert all(s["image"].size == (64, 64) and s["image"].mode == "RGB" for s in samples)


def test_shapes_without_n_is_refused_before_touching_out(tmp_path):
    result = CliRunner().invoke(main, ["build-dataset", "--source", "shapes", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "needs --n" in result.output
    assert not (tmp_path / "out").exists()


def _run_until(cmd, done, timeout=120):
    """Start `cmd` in its own process group; SIGKILL the whole group once `done()` is true."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not done() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.slow  # SIGKILLed subprocesses + a local server: ~15 s
def test_sigkill_mid_download_and_mid_encode_then_rerun_keeps_every_sample_once(tmp_path, dvae_ckpt):
    import sys

    from dalle_eval.pipelines.local_http import serve

    from tests.conftest import FAST

    out = tmp_path / "out"
    sets = [x for item in FAST + ["data.shard_size=5", "data.download_threads=2", "data.min_image_size=0"]
            for x in ("--set", item)]
    build = [sys.executable, "-m", "dalle_eval.cli", "build-dataset", "--out", str(out), *sets]
    with serve(n_pictures=30, delay=0.15) as base:
        src = tmp_path / "pairs.csv"
        pd.DataFrame({"url": [f"{base}/pic/{i}.png" for i in range(30)],
                      "caption": [f"picture number {i}" for i in range(30)]}).to_csv(src, index=False)
        folder = out / "download" / "img2dataset"
        killed = _run_until(build + ["--source", str(src)], lambda: len(list(folder.glob("*_stats.json"))) >= 2)
        assert killed and not (out / "images" / "manifest.json").exists()
        r = CliRunner().invoke(main, ["build-dataset", "--source", str(src), "--out", str(out), *sets])
        assert r.exit_code == 0, r.output
    tokens = out / "tokens"
    killed = _run_until(build + ["--source", str(src), "--dvae", str(dvae_ckpt)],
                        lambda: len(list(tokens.glob("shard-*.tar"))) >= 2)
    assert killed and not (tokens / "manifest.json").exists()
    r = CliRunner().invoke(main, ["build-dataset", "--source", str(src), "--out", str(out), "--dvae", str(dvae_ckpt),
                                  *sets])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tokens / "manifest.json").read_text())
    captions = [s["txt"] for s in iter_shards(tokens / name for name in manifest["shards"])]
    assert sorted(captions) == sorted(f"picture number {i}" for i in range(30))  # each exactly once
    assert manifest["n_samples"] == 30 == sum(manifest["shard_sizes"])


@pytest.mark.slow  # img2dataset with 2 download processes: ~6 s
def test_glob_of_lists_two_processes_filters_and_eval_sets(tmp_path, fast_cfg):
    """Several list files, img2dataset's multiprocessing distributor with 2 processes, the pre-filter
    and both evaluation-set filters: each row ends with the first reason that applies."""
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.local_http import picture as _picture
    from dalle_eval.pipelines.local_http import serve

    eval_dir = tmp_path / "coco_val"
    eval_dir.mkdir()
    _picture(96, 96, seed=103).resize((200, 200)).save(eval_dir / "val_0001.jpg", quality=80)  # = /pic/3.png
    coco = {"annotations": [{"image_id": 1, "caption": "A Yellow Bird, on a branch."}]}
    (tmp_path / "captions_val.json").write_text(json.dumps(coco))
    want = {}
    with serve(n_pictures=10) as base:
        rows = [(f"{base}/pic/{i}.png", f"a small picture with the number {i}") for i in range(10)]
        rows[5] = (rows[5][0], "a yellow bird on a branch")  # an evaluation caption
        rows[6] = (rows[6][0], "   ")
        rows[7] = (rows[7][0], "Ein kleiner Hund spielt im Garten mit einem roten Ball")
        rows.append((rows[0][0], "the first picture again"))  # same url
        for part in range(3):
            chunk = rows[part * 4 : part * 4 + 4]
            pd.DataFrame(chunk, columns=["url", "caption"]).to_csv(tmp_path / f"part-{part}.csv", index=False)
        cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, download_processes=2, shard_size=3))
        build_dataset(cfg, str(tmp_path / "part-*.csv"), tmp_path / "out", eval_captions=tmp_path / "captions_val.json",
                      eval_images=eval_dir)
    table = pd.read_parquet(tmp_path / "out" / "pairs.parquet").set_index("caption")
    want = {rows[5][1]: "eval_caption", rows[6][1]: "caption_empty", rows[7][1]: "not_english",
            "the first picture again": "duplicate_url", rows[3][1]: "eval_overlap"}
    assert {c: table.loc[c, "status"] for c in want} == want
    assert (table["status"] == "ok").sum() == 11 - len(want) and sorted(table["source"].unique()) == [
        "part-0.csv", "part-1.csv", "part-2.csv"]
    manifest = json.loads((tmp_path / "out" / "images" / "manifest.json").read_text())
    samples = list(iter_shards(tmp_path / "out" / "images" / s for s in manifest["shards"]))
    assert sorted(s["txt"] for s in samples) == sorted(table.index[table["status"] == "ok"])
    assert manifest["shard_sizes"] == [3, 3] == [count_samples(tmp_path / "out" / "images" / s)
                                                 for s in manifest["shards"]]


@pytest.mark.slow  # torchrun: 2 processes
def test_torchrun_shards_the_encoding_and_gives_the_same_tokens(tmp_path, token_data, dvae_ckpt):
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import FAST

    data = tmp_path / "data"
    shutil.copytree(token_data / "images", data / "images")
    shutil.copy(token_data / "pairs.parquet", data / "pairs.parquet")
    shutil.copy(token_data / "tokens" / "tokenizer.json", tmp_path / "tokenizer.json")
    sets = [x for item in FAST for x in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dalle_eval.cli",
           "build-dataset", "--source", "shapes", "--limit", "160", "--out", str(data), "--dvae", str(dvae_ckpt),
           "--tokenizer", str(tmp_path / "tokenizer.json"), *sets]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("== build-dataset ==") == 1
    ours = json.loads((data / "tokens" / "manifest.json").read_text())
    ref = json.loads((token_data / "tokens" / "manifest.json").read_text())
    assert ours["world_size"] == 2 and ours["n_samples"] == ref["n_samples"] and ours["shard_sizes"] == ref["shard_sizes"]
    for name in ref["shards"]:
        a, b = iter_shards([data / "tokens" / name]), iter_shards([token_data / "tokens" / name])
        assert all((x["codes.npy"] == y["codes.npy"]).all() and x["txt"] == y["txt"] for x, y in zip(a, b))


@pytest.mark.slow  # a local Spark / Ray cluster: ~18 s each
@pytest.mark.parametrize("distributor", ["pyspark", "ray"])
def test_cluster_distributors_give_the_same_table_and_leave_no_cluster_running(tmp_path, fast_cfg, distributor):
    """img2dataset's pyspark and ray distributors, each on a local cluster it starts itself (as on one
    machine without a cluster), from the CLI in a session of its own: the same statuses and shards as
    multiprocessing, and once the command has returned no process of its session is left (Spark's JVM, Ray's
    workers). The test process never hosts the cluster, so nothing the cluster does can reach it."""
    import os
    import subprocess
    import time

    pytest.importorskip("pyspark.sql" if distributor == "pyspark" else "ray")
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.local_http import serve

    tables = {}
    data = ["data.download_processes=2", "data.shard_size=3", "data.n_val=16", "data.download_retries=0"]
    with serve(n_pictures=6) as base:
        rows = [(f"{base}/pic/{i}.png", f"a small picture with the number {i}") for i in range(6)]
        rows.append((f"{base}/404", "a picture that is not there"))
        pd.DataFrame(rows, columns=["url", "caption"]).to_csv(tmp_path / "list.csv", index=False)
        ref = dataclasses.replace(fast_cfg.data, download_distributor="multiprocessing", download_processes=2, shard_size=3)
        build_dataset(dataclasses.replace(fast_cfg, data=ref), str(tmp_path / "list.csv"), tmp_path / "multiprocessing")
        sets = [x for item in [*data, f"data.download_distributor={distributor}"] for x in ("--set", item)]
        cmd = [sys.executable, "-m", "dalle_eval.cli", "build-dataset", "--source", str(tmp_path / "list.csv"),
               "--out", str(tmp_path / distributor), "--config", "tiny", *sets]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]

    def left() -> list[str]:  # processes still in the command's session
        ps = subprocess.run(["ps", "-eo", "sid=,pid=,comm="], capture_output=True, text=True, check=True).stdout
        return [line for line in ps.splitlines() if line.split()[0] == str(proc.pid)]

    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left(), left()
    for name in ("multiprocessing", distributor):
        tables[name] = pd.read_parquet(tmp_path / name / "pairs.parquet").set_index("caption")["status"]
    assert tables[distributor].sort_index().to_dict() == tables["multiprocessing"].sort_index().to_dict()
    assert tables[distributor].value_counts().to_dict() == {"ok": 6, "http_404": 1}
    shards = sorted((tmp_path / distributor / "images").glob("*.tar"))
    assert sorted(s["txt"] for s in iter_shards(shards)) == sorted(c for _, c in rows[:6])


def test_missing_distributor_package_is_named(tmp_path, fast_cfg, monkeypatch):
    from dalle_eval.pipelines.build import build_dataset

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    pd.DataFrame([("http://127.0.0.1:9/a.png", "a small picture")], columns=["url", "caption"]).to_csv(
        tmp_path / "list.csv", index=False)
    cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, download_distributor="ray"))
    with pytest.raises(DalleEvalError, match=r"download_distributor=ray needs ray: pip install 'dalle-eval\[ray\]'"):
        build_dataset(cfg, str(tmp_path / "list.csv"), tmp_path / "out")


def _raw(folder):
    from dalle_eval.shards import iter_raw_samples

    manifest = json.loads((folder / "images" / "manifest.json").read_text())
    return [files for s in manifest["shards"] for _, files in iter_raw_samples(folder / "images" / s)]


def test_scrambled_captions_lie_only_about_their_attribute(tmp_path, fast_cfg):
    """data.scramble=colour: each object's colour word is an independent uniform draw (differs from the truth
    ~5/6 of the time), every other word, the image and the scene JSON are the true ones; data.scramble="" gives
    the captions it gave before the option existed (pinned digest of a seed-0 build)."""
    import hashlib

    from dalle_eval.pipelines.build import build_dataset

    from dalle_eval.config import apply_overrides, load_config
    from dalle_eval.shapes import COLOURS, Scene, caption

    build_dataset(fast_cfg, "shapes", tmp_path / "true", n=200)
    captions = pd.read_parquet(tmp_path / "true" / "pairs.parquet")["caption"].tolist()
    assert hashlib.sha256("\n".join(captions).encode()).hexdigest() == \
        "f50c0ea06f7dd58cd99a34c2947241673673b6be35437640b940e004802e1c1c"
    true_fp = json.loads((tmp_path / "true" / "images" / "fingerprint.json").read_text())["fingerprint"]
    assert not {"scramble", "paraphrase", "translation_fraction"} & set(true_fp["data"])  # records of builds made before the option still match

    cfg = apply_overrides(fast_cfg, ["data.scramble=colour"])
    build_dataset(cfg, "shapes", tmp_path / "colour", n=200)
    true, scrambled = _raw(tmp_path / "true"), _raw(tmp_path / "colour")
    assert len(true) == len(scrambled) == 200
    changed = slots = 0
    for t, s in zip(true, scrambled):
        assert t["png"] == s["png"] and t["json"] == s["json"]
        scene = Scene.from_json(json.loads(s["json"])["scene"])
        assert t["txt"].decode() == caption(scene)
        words_t, words_s = t["txt"].decode().split(), s["txt"].decode().split()
        assert len(words_t) == len(words_s)
        for a, b in zip(words_t, words_s):
            assert a == b or (a.strip(",") in COLOURS and b.strip(",") in COLOURS)
            slots += a.strip(",") in COLOURS
            changed += a != b
    assert 0.75 < changed / slots < 0.9 and slots > 300  # 5/6 = 0.83
    table = pd.read_parquet(tmp_path / "colour" / "pairs.parquet")
    assert table["caption"].tolist() == [s["txt"].decode() for s in scrambled]  # the BPE learns these
    manifest = json.loads((tmp_path / "colour" / "images" / "manifest.json").read_text())
    assert manifest["scramble"]["attribute"] == manifest["config"]["data"]["scramble"] == "colour"
    coco = lambda name: (tmp_path / name / "coco" / "captions_val.json").read_bytes()
    assert coco("colour") == coco("true")  # the evaluation split keeps true captions

    build_dataset(cfg, "shapes", tmp_path / "again", n=200)  # reproducible
    assert [s["txt"] for s in _raw(tmp_path / "again")] == [s["txt"] for s in scrambled]
    with pytest.raises(DalleEvalError, match="data.scramble"):  # a folder of true captions is not reused
        build_dataset(cfg, "shapes", tmp_path / "true", n=200)
    with pytest.raises(DalleEvalError, match="hue"):
        load_config(["tiny"], ["data.scramble=hue"])


def test_paraphrased_captions_are_recorded_and_match_the_phrasing_grammar(tmp_path, fast_cfg):
    """data.paraphrase.fraction=1: every multi/relation/stack caption is a phrasing of its own scene (read back by
    spec_from_phrasing), never a held-out family; the manifest records the arm; non-shapes sources are refused."""
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.shapes_source import training_caption

    from dalle_eval.config import apply_overrides
    from dalle_eval.shapes import Scene
    from dalle_eval.shapes.phrasing import normalise, spec_from_phrasing

    cfg = apply_overrides(fast_cfg, ["data.paraphrase.fraction=1"])
    build_dataset(cfg, "shapes", tmp_path / "para", n=200)
    raw = _raw(tmp_path / "para")
    table = pd.read_parquet(tmp_path / "para" / "pairs.parquet")
    assert table["caption"].tolist() == [s["txt"].decode() for s in raw]
    rephrased = 0
    for i, s in enumerate(raw):
        scene = Scene.from_json(json.loads(s["json"])["scene"])
        text = s["txt"].decode()
        assert text == training_caption(scene, cfg.data.seed, i, paraphrase=cfg.data.paraphrase)
        if scene.kind in ("multi", "relation", "stack"):
            assert spec_from_phrasing(text) == normalise(scene)
            rephrased += 1
    assert rephrased > 50
    manifest = json.loads((tmp_path / "para" / "images" / "manifest.json").read_text())
    assert manifest["paraphrase"]["fraction"] == 1 and manifest["paraphrase"]["heldout"] == ["clause", "numerals"]


def test_translation_arm_is_recorded_by_the_build(tmp_path, fast_cfg):
    """data.translation_fraction: the build writes that share of two-panel identity/recolour scenes, records the arm
    in its manifest and fingerprint, and refuses a non-shapes source."""
    from dalle_eval.pipelines.build import build_dataset

    from dalle_eval.config import apply_overrides

    cfg = apply_overrides(fast_cfg, ["data.translation_fraction=0.3"])
    build_dataset(cfg, "shapes", tmp_path / "panels", n=100)
    manifest = json.loads((tmp_path / "panels" / "images" / "manifest.json").read_text())
    assert manifest["translation"] == {"fraction": 0.3, "transforms": ["identity", "recolour"], "coco_images": "one panel"}
    fp = json.loads((tmp_path / "panels" / "images" / "fingerprint.json").read_text())["fingerprint"]
    assert fp["data"]["translation_fraction"] == 0.3
    captions = pd.read_parquet(tmp_path / "panels" / "pairs.parquet")["caption"].tolist()
    panels = [c for c in captions if c.startswith("the exact same shapes on the top")]
    assert 15 < len(panels) < 45 and all("large" not in c and "mirrored" not in c for c in panels)
    csv = tmp_path / "pairs.csv"
    csv.write_text("url,caption\nhttp://127.0.0.1:9/a.png,a cat\n")
    with pytest.raises(DalleEvalError, match="translation_fraction"):
        build_dataset(cfg, str(csv), tmp_path / "web", n=1)


def test_heldout_images_is_a_stage1_image_set(tmp_path, fast_cfg, dvae_ckpt):
    """data.heldout_images: the images show held-out colour-shape pairs (recorded in the manifest and fingerprint),
    a dVAE may train on them, and no token stage (so no caption the transformer learns) is built from them."""
    from dalle_eval.pipelines.build import build_dataset

    from dalle_eval.config import apply_overrides
    from dalle_eval.shapes import Scene

    cfg = apply_overrides(fast_cfg, ["data.heldout_images=true"])
    build_dataset(cfg, "shapes", tmp_path / "stage1", n=200)
    scenes = [Scene.from_json(json.loads(s["json"])["scene"]) for s in _raw(tmp_path / "stage1")]
    assert sum(s.heldout for s in scenes) > 20
    manifest = json.loads((tmp_path / "stage1" / "images" / "manifest.json").read_text())
    assert manifest["heldout_images"]["use"] == "stage 1 only"
    assert json.loads((tmp_path / "stage1" / "images" / "fingerprint.json").read_text())["fingerprint"]["data"][
        "heldout_images"] is True
    with pytest.raises(DalleEvalError, match="stage 1 only"):
        build_dataset(cfg, "shapes", tmp_path / "stage1", n=200, dvae=dvae_ckpt)
    assert not (tmp_path / "stage1" / "tokens").exists()


def test_the_image_manifest_holds_the_shards_true_sizes(tmp_path, fast_cfg):
    """The manifest's shard sizes are worked out from the kept rows, not recounted: they must be what is on disk."""
    from dalle_eval.pipelines.build import build_dataset

    cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, shard_size=8, n_val=4))
    build_dataset(cfg, "shapes", tmp_path, n=21)
    manifest = json.loads((tmp_path / "images" / "manifest.json").read_text())
    assert manifest["shard_sizes"] == [8, 8, 5] == [count_samples(tmp_path / "images" / s) for s in manifest["shards"]]
