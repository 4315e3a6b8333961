"""Issue 13, never a wrong answer with exit 0: an output folder records what made it (fingerprint.json).

The same run again resumes (a larger --n extends without touching the files already there); another
checkpoint, other captions or other sampling settings stop with one line naming what differs, unless
--overwrite. Build stages hold only the settings that change their output, and torchrun ranks never
rebuild the image shards. Also: metrics.jsonl after a resume, and atomic writes under the umask.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from dalle_eval.artifacts import atomic_path, write_json
from dalle_eval.cli import main
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import save_random_inception
from dalle_eval.outputs import prepare_stage
from dalle_eval.shards import iter_shards
from tests.conftest import FAST

RED, BLUE = "a small red circle", "a large blue square"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


def summary_value(result, key: str) -> str:
    lines = [ln.strip() for ln in result.output.splitlines() if ln.strip().startswith(key + " ")]
    assert lines, result.output
    return lines[-1][len(key):].strip()


def rows(folder):
    return [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]


def pngs(folder) -> dict:
    """name -> (inode, mtime, bytes): a file rewritten (even with the same bytes) shows a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*_*.png"))}


def sample(ckpt, out, caption, n, *extra):
    return cli("sample", "--ckpt", ckpt, "--caption", caption, "--n", n, "--out", out, *extra)


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory, transformer_ckpt):
    """Checkpoint B: checkpoint A's folder with every weight changed."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("ckpt") / "b"
    shutil.copytree(transformer_ckpt, out)
    weights = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.manual_seed(1)
    save_file({k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()},
              out / "model.safetensors")
    return out


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_inception(tmp_path_factory.mktemp("inc") / "inception.pth")


# --------------------------------------------------------------------------- sample


def test_sample_into_a_folder_of_other_captions_checkpoint_or_settings_is_refused(tmp_path, transformer_ckpt, other_ckpt):
    out = tmp_path / "x"
    assert sample(transformer_ckpt, out, RED, 2).exit_code == 0
    before, before_rows = pngs(out), rows(out)
    for args, named in (((transformer_ckpt, out, BLUE, 3), "captions"), ((other_ckpt, out, RED, 2), "ckpt"),
                        ((transformer_ckpt, out, RED, 2, "--set", "sample.temperature=0.5"), "temperature (1.0 vs 0.5)")):
        r = sample(*args)
        assert r.exit_code == 1, r.output
        line = last_line(r)
        assert str(out) in line and named in line and "--overwrite" in line and "another --out" in line, line
        assert pngs(out) == before and rows(out) == before_rows  # nothing touched
    named = last_line(r).split("differs in: ")[1]
    assert named.startswith("temperature (1.0 vs 0.5);") and "captions" not in named  # only what differs


def test_sample_growing_n_extends_without_touching_the_files_there(tmp_path, transformer_ckpt):
    out = tmp_path / "x"
    assert sample(transformer_ckpt, out, RED, 2).exit_code == 0
    first = pngs(out)
    r = sample(transformer_ckpt, out, RED, 4)
    assert r.exit_code == 0, r.output
    now = pngs(out)
    assert sorted(now) == ["0_0.png", "0_1.png", "0_2.png", "0_3.png"]
    assert {k: now[k] for k in first} == first  # same inode, mtime and bytes
    assert sorted((x["prompt_id"], x["index"]) for x in rows(out)) == [("0", i) for i in range(4)]  # no duplicate rows
    assert summary_value(r, "images") == "4"
    # the same images as one run of --n 4
    assert sample(transformer_ckpt, tmp_path / "y", RED, 4).exit_code == 0
    assert {k: v[2] for k, v in pngs(tmp_path / "y").items()} == {k: v[2] for k, v in now.items()}


def test_sample_overwrite_replaces_the_folder(tmp_path, transformer_ckpt):
    out = tmp_path / "x"
    assert sample(transformer_ckpt, out, RED, 3).exit_code == 0
    r = sample(transformer_ckpt, out, BLUE, 1, "--overwrite")
    assert r.exit_code == 0, r.output
    assert [(x["caption"], x["index"]) for x in rows(out)] == [(BLUE, 0)]
    assert sorted(pngs(out)) == ["0_0.png"] and summary_value(r, "images") == "1"


def test_sample_summary_counts_files_that_exist(tmp_path, transformer_ckpt):
    out = tmp_path / "x"
    assert sample(transformer_ckpt, out, RED, 2).exit_code == 0
    lost = (out / "0_1.png").read_bytes()
    (out / "0_1.png").unlink()
    r = sample(transformer_ckpt, out, RED, 2)
    assert r.exit_code == 0, r.output
    assert (out / "0_1.png").read_bytes() == lost and len(rows(out)) == 2  # drawn again from its seed
    assert summary_value(r, "images") == "2"


def test_sample_folder_without_a_fingerprint_is_refused(tmp_path, transformer_ckpt):
    out = tmp_path / "x"
    assert sample(transformer_ckpt, out, RED, 1).exit_code == 0
    (out / "fingerprint.json").unlink()  # as made before folders recorded one
    r = sample(transformer_ckpt, out, RED, 1)
    assert r.exit_code == 1 and "fingerprint.json" in last_line(r) and "--overwrite" in last_line(r)
    assert sample(transformer_ckpt, out, RED, 1, "--overwrite").exit_code == 0


# --------------------------------------------------------------------------- probes, coco-fid


def test_probes_with_another_checkpoint_into_the_same_out(tmp_path, transformer_ckpt, other_ckpt):
    out = tmp_path / "p"
    args = ["probes", "--suite", "attributes", "--scorer", "parser", "--out", out, "--set", "eval.probe_samples=1"]
    assert cli(*args, "--ckpt", transformer_ckpt).exit_code == 0
    r = cli(*args, "--ckpt", other_ckpt)
    assert r.exit_code == 1 and "ckpt (sha256 " in last_line(r) and "--overwrite" in last_line(r), r.output
    assert json.loads((out / "report.json").read_text())["ckpt"] == str(transformer_ckpt)
    r = cli(*args, "--ckpt", other_ckpt, "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["ckpt"] == str(other_ckpt)
    assert {x["ckpt"] for x in rows(out / "samples")} == {str(other_ckpt)}


def test_coco_fid_with_another_checkpoint_into_the_same_out(tmp_path, shapes_data, transformer_ckpt, other_ckpt,
                                                            inception):
    out = tmp_path / "f"
    args = ["coco-fid", "--coco", shapes_data / "coco", "--out", out, "--inception-weights", inception,
            "--set", "eval.n_captions=4", "--set", "eval.blur_radii=[0]", "--set", f"eval.cache_dir={tmp_path / 'c'}"]
    assert cli(*args, "--ckpt", transformer_ckpt).exit_code == 0
    report = (out / "report.json").read_text()
    r = cli(*args, "--ckpt", other_ckpt)
    assert r.exit_code == 1 and "ckpt (sha256 " in last_line(r) and "--overwrite" in last_line(r), r.output
    assert (out / "report.json").read_text() == report
    r = cli(*args, "--ckpt", other_ckpt, "--overwrite")
    assert r.exit_code == 0, r.output
    assert {x["ckpt"] for x in rows(out / "samples")} == {str(other_ckpt)} and len(rows(out / "samples")) == 4


# --------------------------------------------------------------------------- build-dataset


def test_build_dataset_other_inputs_are_refused_overwrite_rebuilds(tmp_path):
    out = tmp_path / "d"
    args = ["build-dataset", "--source", "shapes", "--out", out, "--set", "data.shard_size=8", "--set", "data.n_val=4"]
    assert cli(*args, "--n", 16).exit_code == 0
    r = cli(*args, "--n", 8)
    assert r.exit_code == 1 and "n (16 vs 8)" in last_line(r) and "--overwrite" in last_line(r), r.output
    assert json.loads((out / "images" / "manifest.json").read_text())["n_samples"] == 16
    assert cli(*args, "--n", 8, "--overwrite").exit_code == 0
    assert json.loads((out / "images" / "manifest.json").read_text())["n_samples"] == 8


def test_a_stage_recorded_before_fingerprints_is_checked_on_the_keys_it_still_uses(tmp_path):
    """stage_inputs.json of an earlier version (every data setting): reused when the settings that matter agree."""
    folder = tmp_path / "images"
    write_json(folder / "stage_inputs.json", {"source": "shapes", "n": 8,
                                              "data": {"resolution": 64, "device": "cuda", "encode_batch": 64}})
    write_json(folder / "manifest.json", {})
    assert prepare_stage(folder, {"source": "shapes", "n": 8, "data": {"resolution": 64}}, overwrite=False)
    assert (folder / "fingerprint.json").exists() and not (folder / "stage_inputs.json").exists()
    with pytest.raises(DalleEvalError, match=r"differs in: data.resolution \(64 vs 128\); use another --out"):
        prepare_stage(folder, {"source": "shapes", "n": 8, "data": {"resolution": 128}}, overwrite=False)
    assert not prepare_stage(folder, {"source": "shapes", "n": 8, "data": {"resolution": 128}}, overwrite=True)
    assert not (folder / "manifest.json").exists()


def _inodes(folder):
    return {p.name: p.stat().st_ino for p in folder.iterdir()}


@pytest.mark.slow  # torchrun: 2 processes
def test_token_stage_under_torchrun_with_other_device_and_batch_keeps_the_images(tmp_path, fast_cfg, token_data,
                                                                                   dvae_ckpt):
    """The image stage's fingerprint holds no encoding settings: one process skips it; under torchrun no rank
    rebuilds it, and 2 gloo ranks give the tokens of one process."""
    import dataclasses

    from dalle_eval.pipelines.build import build_dataset

    data = tmp_path / "data"
    shutil.copytree(token_data / "images", data / "images")
    shutil.copy(token_data / "pairs.parquet", data / "pairs.parquet")
    shutil.copy(token_data / "tokens" / "tokenizer.json", tmp_path / "tokenizer.json")
    images = _inodes(data / "images")
    changed = ["data.encode_batch=7", "data.device=cpu:0"]
    cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, encode_batch=7, device="cpu:0"))
    build_dataset(cfg, "shapes", data, n=160)  # one process: nothing to redo
    assert _inodes(data / "images") == images
    sets = [x for item in FAST + changed for x in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dalle_eval.cli",
           "build-dataset", "--source", "shapes", "--limit", "160", "--out", str(data), "--dvae", str(dvae_ckpt),
           "--tokenizer", str(tmp_path / "tokenizer.json"), *sets]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "rebuild" not in r.stdout + r.stderr and _inodes(data / "images") == images
    ref = json.loads((token_data / "tokens" / "manifest.json").read_text())
    for name in ref["shards"]:
        a, b = iter_shards([data / "tokens" / name]), iter_shards([token_data / "tokens" / name])
        assert all((x["codes.npy"] == y["codes.npy"]).all() and (x["text.npy"] == y["text.npy"]).all()
                   for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- train, atomic writes


def test_resume_after_a_kill_logs_each_step_once(tmp_path, shapes_data, fast_cfg):
    from dalle_eval.model.train import train

    run = tmp_path / "run"
    train("dvae", shapes_data, fast_cfg, run, progress=False)  # 6 steps, checkpoints at 3 and 6
    first = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # killed after logging step 6 but before its checkpoint: the newest checkpoint is step 3
    shutil.rmtree(run / "state" / "step-00000006")
    (run / "latest").write_text("step-00000003\n")
    train("dvae", shapes_data, fast_cfg, run, resume=True, progress=False)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["split"], r["step"]) for r in recs]
    assert len(keys) == len(set(keys)) and keys == [(r["split"], r["step"]) for r in first]
    assert recs[0] == first[0]  # records up to the checkpoint are kept as they were


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "table.json", {"a": 1})
        with atomic_path(tmp_path / "shard.tar") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("table.json", "shard.tar"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
