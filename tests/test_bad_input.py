"""Bad input ends in one clear line (exit 1 or 2) naming the file or option, never a traceback or a silent
substitution (issue 13): missing / empty / truncated / wrong-kind files, negative or zero counts, directories
where files belong, devices that are not there, a random CLIP, captions cut by the text window."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from dalle_eval.cli import main
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST


def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def fails_cleanly(r: Result, *names: str, codes: tuple[int, ...] = (1, 2)) -> str:
    """Exit 1 or 2, click's own error line (no exception escaped), one line naming every `names`."""
    assert r.exit_code in codes, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def fast_args(*extra: str) -> list[str]:
    return [a for item in FAST for a in ("--set", item)] + list(extra)


@pytest.fixture()
def ckpt(tmp_path, transformer_ckpt) -> Path:
    """A private copy of the session's transformer checkpoint (tests break it)."""
    return shutil.copytree(transformer_ckpt, tmp_path / "ckpt")


def sample_args(ckpt: Path, out: Path, *extra) -> list:
    return ["sample", "--ckpt", ckpt, "--caption", "a red circle", "--n", "1", "--out", out, *extra]


# --------------------------------------------------------------------------- config files and --set


def test_config_that_is_a_folder(tmp_path):
    fails_cleanly(run("info", "--config", tmp_path), str(tmp_path), "a folder")


def test_config_that_is_empty_or_not_text(tmp_path):
    empty, binary = tmp_path / "empty.toml", tmp_path / "binary.toml"
    empty.write_text("\n")
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    fails_cleanly(run("info", "--config", empty), str(empty), "empty")
    fails_cleanly(run("info", "--config", binary), str(binary), "not a UTF-8 text file")


def test_toml_error_location_has_no_stray_dot(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nseed = "x"\n')
    line = fails_cleanly(run("info", "--config", bad), f"{bad}:train.seed: expected int")
    assert ":." not in line
    line = fails_cleanly(run("info", "--set", "train.transformer.steps=x"), "--set train.transformer.steps: expected int")
    assert " ." not in line


@pytest.mark.parametrize("item, name", [
    ("train.log_every=0", "train.log_every"),
    ("train.transformer.batch_size=-4", "train.transformer.batch_size"),
    ("sample.batch_size=0", "sample.batch_size"),
    ("sample.temperature=0", "sample.temperature"),
    ("sample.top_p=1.5", "sample.top_p"),
    ("data.shard_size=0", "data.shard_size"),
    ("eval.n_captions=-1", "eval.n_captions"),
    ("transformer.n_layer=0", "transformer.n_layer"),
])
def test_negative_and_zero_counts_in_the_config(item, name):
    fails_cleanly(run("info", "--set", item), f"--set {name}", "got")


def test_counts_in_a_config_file_are_checked_too(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train.transformer]\nbatch_size = 0\n")
    fails_cleanly(run("info", "--config", bad), f"{bad}:train.transformer.batch_size: must be at least 1, got 0")


def test_every_range_names_an_option_and_the_named_configs_pass():
    from dalle_eval.config import RANGES, Config, config_from_dict, config_to_dict

    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else flat.setdefault(prefix + k, v)

    walk(config_to_dict(Config()))
    assert set(RANGES) <= set(flat)
    config_from_dict(config_to_dict(Config()))  # the defaults are in range
    for name in ("tiny", "dalle-1.3b", "dalle-12b"):
        load_config([name])


def test_zero_stays_valid_where_it_means_off():
    cfg = load_config(["tiny"], ["train.transformer.micro_batch=0", "sample.top_k=0", "train.sample_every=0",
                                 "sample.rerank=0", "train.val_shards=0", "train.keep_last=0", "train.dvae.steps=0"])
    assert cfg.sample.top_k == 0 and cfg.train.val_shards == 0


# --------------------------------------------------------------------------- counts on the command line


@pytest.mark.parametrize("n", ["-5", "0"])
def test_build_dataset_count_must_be_positive(tmp_path, n):
    fails_cleanly(run("build-dataset", "--source", "shapes", "--n", n, "--out", tmp_path / "d"), "--n", n)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("option, value", [("--n", "0"), ("--n", "-2"), ("--rerank", "0"), ("--rerank", "-1")])
def test_sample_counts_must_be_positive(tmp_path, ckpt, option, value):
    args = ["sample", "--ckpt", ckpt, "--caption", "a red circle", "--out", tmp_path / "s", option, value]
    fails_cleanly(run(*args), option, value)


def test_demo_count_must_be_positive(tmp_path):
    fails_cleanly(run("demo", "--n", "-1", "--out", tmp_path / "demo"), "--n", "-1")


# --------------------------------------------------------------------------- broken checkpoints


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "folder"])
def test_broken_model_weights_are_named(tmp_path, ckpt, damage):
    weights = ckpt / "model.safetensors"
    if damage == "truncated":
        _truncate(weights)
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file" * 10)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.unlink()
        weights.mkdir()
    fails_cleanly(run(*sample_args(ckpt, tmp_path / "s")), str(weights))


def test_weights_of_another_model_are_named(tmp_path, ckpt):
    shutil.copyfile(ckpt / "dvae" / "model.safetensors", ckpt / "model.safetensors")
    fails_cleanly(run(*sample_args(ckpt, tmp_path / "s")), str(ckpt / "model.safetensors"), "do not match")


def test_weights_guard_keeps_legacy_checkpoints_loadable(tmp_path, ckpt):
    """A checkpoint from before layer_pattern was saved (same mask order at 2 layers) still samples."""
    from safetensors.torch import load_file, save_file

    weights = load_file(ckpt / "model.safetensors")
    del weights["layer_pattern"]
    (ckpt / "model.safetensors").unlink()
    save_file(weights, ckpt / "model.safetensors")
    r = run(*sample_args(ckpt, tmp_path / "s"))
    assert r.exit_code == 0, r.output


def test_broken_dvae_weights_are_named_by_probes_and_coco_fid(tmp_path, ckpt, shapes_data):
    weights = ckpt / "dvae" / "model.safetensors"
    _truncate(weights)
    fails_cleanly(run("probes", "--suite", "attributes", "--ckpt", ckpt, "--out", tmp_path / "p",
                      *fast_args()), str(weights))
    fails_cleanly(run("coco-fid", "--coco", shapes_data / "coco", "--ckpt", ckpt, "--out", tmp_path / "f",
                      "--random-inception", *fast_args()), str(weights))


def _resume_args(data: Path, out: Path) -> list:
    return ["train", "--stage", "transformer", "--data", data, "--out", out, "--resume",
            *fast_args("--set", "train.transformer.steps=9")]


@pytest.mark.parametrize("part", ["train.pt", "model.safetensors"])
def test_truncated_training_state_names_the_file_and_the_previous_checkpoint(ckpt, token_data, part):
    state = ckpt / "state" / (ckpt / "latest").read_text().strip()
    assert state.name == "step-00000006" and (ckpt / "state" / "step-00000003").is_dir()
    (state / part).unlink()  # model.safetensors is hard-linked to CKPT/model.safetensors: break only this one
    (state / part).write_bytes((ckpt / "model.safetensors").read_bytes()[:100] if part != "train.pt" else b"PK\x03")
    fails_cleanly(run(*_resume_args(token_data, ckpt)), str(state / part), "step-00000003")


def test_latest_pointing_at_a_missing_state_is_not_a_fresh_start(ckpt, token_data):
    shutil.rmtree(ckpt / "state" / "step-00000006")
    fails_cleanly(run(*_resume_args(token_data, ckpt)), "step-00000006", "step-00000003")


# --------------------------------------------------------------------------- files and folders on the command line


def test_sample_prompts_and_image_that_are_folders(tmp_path, ckpt):
    r = run("sample", "--ckpt", ckpt, "--prompts", tmp_path, "--out", tmp_path / "s")
    fails_cleanly(r, "--prompts", str(tmp_path))
    r = run("sample", "--ckpt", ckpt, "--caption", "a red circle", "--image", tmp_path, "--keep-rows", "2",
            "--out", tmp_path / "s")
    fails_cleanly(r, "--image", str(tmp_path))


def test_sample_out_that_is_a_file(tmp_path, ckpt):
    (tmp_path / "s").write_text("x")
    fails_cleanly(run(*sample_args(ckpt, tmp_path / "s")), "--out", str(tmp_path / "s"))


@pytest.mark.parametrize("damage", ["folder", "truncated"])
def test_clip_weights_that_are_a_folder_or_truncated(tmp_path, ckpt, tiny_clip, damage):
    weights = tmp_path / "clip.pt"
    if damage == "folder":
        weights.mkdir()
    else:
        weights.write_bytes(Path(tiny_clip[1]).read_bytes()[:5000])
    r = run(*sample_args(ckpt, tmp_path / "s", "--rerank", "2", "--clip-model", tiny_clip[0],
                         "--clip-pretrained", weights))
    fails_cleanly(r, str(weights))


@pytest.mark.parametrize("command", ["build", "train", "coco-fid", "demo", "probes", "probes-export", "plot-metrics"])
def test_a_file_where_a_folder_belongs_and_back(tmp_path, command, token_data, shapes_data, transformer_ckpt):
    afile, afolder = tmp_path / "a-file", tmp_path / "a-folder"
    afile.write_text("x")
    afolder.mkdir()
    args = {"build": ["build-dataset", "--source", "shapes", "--n", "8", "--out", afile],
            "train": _train_args(token_data, afile),
            "coco-fid": ["coco-fid", "--coco", shapes_data / "coco", "--ckpt", transformer_ckpt, "--out", afile],
            "demo": ["demo", "--out", afile],
            "probes": ["probes", "--suite", "attributes", "--ckpt", transformer_ckpt, "--out", afile],
            "probes-export": ["probes", "export", "--suite", "attributes", "--out", afolder],
            "plot-metrics": ["plot-metrics", transformer_ckpt, "--out", afolder]}[command]
    fails_cleanly(run(*args), str(afile) if afile in args else str(afolder))


@pytest.mark.parametrize("option", ["--tokenizer", "--eval-captions"])
def test_build_dataset_files_that_are_folders(tmp_path, option):
    fails_cleanly(run("build-dataset", "--source", "shapes", "--n", "8", "--out", tmp_path / "d", option, tmp_path),
                  option, str(tmp_path))


@pytest.mark.parametrize("option", ["--subset", "--export-captions", "--inception-weights"])
def test_coco_fid_files_that_are_folders(tmp_path, shapes_data, transformer_ckpt, option):
    r = run("coco-fid", "--coco", shapes_data / "coco", "--ckpt", transformer_ckpt, "--out", tmp_path / "f",
            option, tmp_path, *fast_args())
    fails_cleanly(r, option, str(tmp_path))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_coco_fid_inception_weights_that_are_not_a_state_dict(tmp_path, shapes_data, transformer_ckpt, damage):
    from dalle_eval.fid import save_random_inception

    weights = tmp_path / "inception.pth"
    if damage == "garbage":
        weights.write_bytes(b"garbage\n" * 10)
    else:
        save_random_inception(tmp_path / "full.pth")
        weights.write_bytes((tmp_path / "full.pth").read_bytes()[:20000])
    r = run("coco-fid", "--coco", shapes_data / "coco", "--ckpt", transformer_ckpt, "--out", tmp_path / "f",
            "--inception-weights", weights, *fast_args("--set", "eval.n_captions=2"))
    fails_cleanly(r, "--inception-weights", str(weights))


@pytest.mark.parametrize("line", ['{"prompt_id": "a", "caption": ""}', '{"prompt_id": "a"}', '["a red circle"]'])
def test_sample_prompts_without_a_caption(tmp_path, ckpt, line):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt_id": "ok", "caption": "a red circle"}\n' + line + "\n")
    fails_cleanly(run("sample", "--ckpt", ckpt, "--prompts", prompts, "--out", tmp_path / "s"), f"{prompts}:2")


def test_image_manifest_without_shards(tmp_path, shapes_data):
    images = shutil.copytree(shapes_data / "images", tmp_path / "images")
    manifest = json.loads((images / "manifest.json").read_text())
    del manifest["shards"]
    (images / "manifest.json").write_text(json.dumps(manifest))
    r = run("train", "--stage", "dvae", "--data", images, "--out", tmp_path / "run", *fast_args())
    fails_cleanly(r, str(images / "manifest.json"), "no shards")


def test_resume_with_a_broken_config_json(tmp_path, token_data):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{not json")
    fails_cleanly(run(*_train_args(token_data, tmp_path / "run", "--resume")), str(tmp_path / "run" / "config.json"))


def test_token_manifest_missing_fields(tmp_path, tokens):
    manifest = json.loads((tokens / "manifest.json").read_text())
    del manifest["text_len"], manifest["grid"]
    (tokens / "manifest.json").write_text(json.dumps(manifest))
    fails_cleanly(run(*_train_args(tokens, tmp_path / "run")), str(tokens / "manifest.json"), "text_len")


@pytest.mark.parametrize("command", ["run", "export"])
def test_probes_raven_items_zero_is_not_the_default(tmp_path, command, transformer_ckpt):
    args = {"run": ["probes", "--suite", "raven", "--ckpt", transformer_ckpt, "--scorer", "likelihood", "--out", tmp_path],
            "export": ["probes", "export", "--suite", "raven", "--out", tmp_path / "p.jsonl"]}[command]
    fails_cleanly(run(*args, "--raven-items", "0"), "--raven-items", "0")


def test_sample_empty_caption_and_random_clip_with_weights(tmp_path, ckpt, tiny_clip):
    r = run("sample", "--ckpt", ckpt, "--caption", "  ", "--out", tmp_path / "s")
    fails_cleanly(r, "--caption")
    r = run(*sample_args(ckpt, tmp_path / "s", "--rerank", "2", "--clip-model", tiny_clip[0],
                         "--clip-pretrained", tiny_clip[1], "--random-clip"))
    fails_cleanly(r, "--random-clip", "--clip-pretrained")


# --------------------------------------------------------------------------- shards


def _rewrite_shard(path: Path, change) -> None:
    """Rewrite a token shard as a valid tar, each sample's .npy arrays passed through change(name, array)."""
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(path, "w") as tf:
        for m, payload in members:
            if m.name.endswith(".npy"):
                buf = io.BytesIO()
                np.save(buf, change(m.name, np.load(io.BytesIO(payload))))
                payload = buf.getvalue()
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload))


@pytest.fixture()
def tokens(tmp_path, token_data) -> Path:
    return shutil.copytree(token_data / "tokens", tmp_path / "tokens")


def _train_args(tokens: Path, out: Path, *extra) -> list:
    return ["train", "--stage", "transformer", "--data", tokens, "--out", out, *fast_args(*extra)]


@pytest.mark.parametrize("field", ["codes", "text"])
def test_out_of_range_ids_make_a_bad_shard(tmp_path, tokens, field):
    manifest = json.loads((tokens / "manifest.json").read_text())
    first = tokens / manifest["shards"][0]
    limit = manifest["image_vocab"] if field == "codes" else manifest["text_vocab"]
    _rewrite_shard(first, lambda name, a: np.full_like(a, limit) if name.endswith(f"{field}.npy") else a)
    with pytest.warns(UserWarning, match=f"skipping unreadable shard {first}: .*out of range"):
        r = run(*_train_args(tokens, tmp_path / "skip"))
    assert r.exit_code == 0, r.output
    fails_cleanly(run(*_train_args(tokens, tmp_path / "fail", "--on-bad-shard", "fail")), str(first), "out of range")


def test_truncated_validation_shard_follows_on_bad_shard(tmp_path, tokens):
    manifest = json.loads((tokens / "manifest.json").read_text())
    val = tokens / manifest["shards"][-1]
    _truncate(val)
    fails_cleanly(run(*_train_args(tokens, tmp_path / "fail", "--on-bad-shard", "fail")), str(val))
    with pytest.warns(UserWarning, match=f"skipping unreadable validation shard {val}: ReadError"):
        r = run(*_train_args(tokens, tmp_path / "skip"))
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize("item", ["sample.device=cuda", "sample.device=cuda:3", "sample.device=gpu"])
def test_sample_on_a_device_that_is_not_there(tmp_path, ckpt, item):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = fails_cleanly(run(*sample_args(ckpt, tmp_path / "s", "--set", item)), f"sample.device={item.split('=')[1]}")
    assert "cpu" in line


def test_train_and_build_on_a_device_that_is_not_there(tmp_path, token_data, dvae_ckpt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fails_cleanly(run(*_train_args(token_data, tmp_path / "t", "--set", "train.device=cuda")), "train.device=cuda")
    r = run("build-dataset", "--source", "shapes", "--n", "160", "--out", tmp_path / "d", "--dvae", dvae_ckpt,
            "--set", "data.device=cuda")
    fails_cleanly(r, "data.device=cuda")


# --------------------------------------------------------------------------- CLIP: never a random one unasked


def test_rerank_without_clip_weights_is_refused(tmp_path, ckpt, tiny_clip):
    r = run(*sample_args(ckpt, tmp_path / "s", "--rerank", "2", "--clip-model", tiny_clip[0]))
    fails_cleanly(r, "--clip-pretrained", "--random-clip")
    assert not (tmp_path / "s" / "samples.jsonl").exists()


def test_random_clip_when_asked_is_labelled(tmp_path, ckpt, tiny_clip):
    r = run(*sample_args(ckpt, tmp_path / "s", "--rerank", "2", "--clip-model", tiny_clip[0], "--random-clip"))
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    assert rows and all(row["random_clip"] is True for row in rows)
    assert "random CLIP" in r.output


def test_coco_fid_rerank_without_clip_weights_is_refused_and_random_clip_labelled(tmp_path, ckpt, shapes_data,
                                                                                  tiny_clip):
    base = ["coco-fid", "--coco", shapes_data / "coco", "--ckpt", ckpt, "--random-inception",
            "--rerank", "2", "--clip-model", tiny_clip[0],
            *fast_args("--set", "eval.n_captions=2", "--set", "eval.blur_radii=[0]")]
    fails_cleanly(run(*base, "--out", tmp_path / "refused"), "--clip-pretrained", "--random-clip")
    r = run(*base, "--out", tmp_path / "f", "--random-clip")
    assert r.exit_code == 0, r.output
    caveat = "random CLIP: reranking and CLIP score not meaningful"
    assert caveat in r.output
    assert caveat in (tmp_path / "f" / "report.md").read_text()
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert report["protocol"]["random_clip"] is True


def test_clip_scorer_refuses_no_weights_unless_asked(tiny_clip):
    from dalle_eval.model.clip import ClipScorer

    with pytest.raises(DalleEvalError, match="no CLIP weights"):
        ClipScorer(tiny_clip[0], None)
    assert ClipScorer(tiny_clip[0], None, allow_random=True).random
    assert not ClipScorer(*tiny_clip).random


# --------------------------------------------------------------------------- captions longer than the text window


def test_sample_warns_and_records_a_cut_caption(tmp_path, ckpt):
    long = " ".join(["a small red circle above a large blue square"] * 4)
    with pytest.warns(UserWarning, match=r"1 of 1 captions are longer than the model's 24-token text window .*"
                                         r"prompt 0: \d+ tokens"):
        r = run("sample", "--ckpt", ckpt, "--caption", long, "--n", "1", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert "captions cut" in r.output
    row = json.loads((tmp_path / "s" / "samples.jsonl").read_text().splitlines()[0])
    assert row["text_tokens"] > 24 and row["text_truncated"] is True
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        r = run(*sample_args(ckpt, tmp_path / "short"))
    assert r.exit_code == 0 and "captions cut" not in r.output
    assert not [w for w in got if "text window" in str(w.message)]
    row = json.loads((tmp_path / "short" / "samples.jsonl").read_text().splitlines()[0])
    assert row["text_truncated"] is False


# --------------------------------------------------------------------------- demo: stage times of re-runs


def test_demo_rerun_keeps_each_stage_time_and_marks_skipped_stages(tmp_path, monkeypatch):
    """Stub stages (each does its work once, then finds it done in 1 s): a re-run reports the times measured when
    the stages ran, not the skip times; a stage interrupted and resumed counts both parts."""
    from dalle_eval import demo

    now, out = [0.0], tmp_path / "demo"
    preempt = {"train transformer": True}

    def work(product: Path, seconds: float, text: str = "done\n") -> bool:
        if product.exists():
            now[0] += 1
            return False
        product.parent.mkdir(parents=True, exist_ok=True)
        product.write_text(text)
        now[0] += seconds
        return True

    def build(cfg, source, data, n, dvae=None):
        work(data / ("tokens" if dvae else "images") / "manifest.json", 40 if dvae else 20)

    def train(stage, data, cfg, ckpt, resume):
        if stage == "transformer" and preempt.pop("train transformer", False):
            now[0] += 60
            return {"preempted": "SIGTERM", "stopped_at": 3, "stage": stage}
        work(ckpt / "latest", 100 if stage == "dvae" else 40)
        return {"eval": {"val_psnr_db": 20.0, "val_image_loss": 1.0}}

    def sample(ckpt, prompts, n, folder, cfg):
        work(folder / "samples.jsonl", 5, json.dumps({"file": "0_0.png", "caption": "a red circle"}) + "\n")

    def probes(suite, folder, cfg, ckpt):
        work(folder / "samples" / "samples.jsonl", 9)
        return {"table": [], "text_window": None}

    def coco(coco, folder, cfg, ckpt, random_inception):
        work(folder / "samples" / "samples.jsonl", 80)
        return {"fid": 0.5, "protocol": {"inception_weights": "random"}}

    for name, fn in (("build_dataset", build), ("train", train), ("run_sample", sample), ("run_probes", probes),
                     ("run_coco_fid", coco), ("image_grid", lambda *a, **k: None), ("_clock", lambda: now[0])):
        monkeypatch.setattr(demo, name, fn)
    cfg = load_config(["tiny"])
    with pytest.raises(DalleEvalError, match="interrupted by SIGTERM"):
        demo.run_demo(cfg, out, 16)
    first = demo.run_demo(cfg, out, 16)  # resumes the transformer (40 s more), the rest is done
    expected = {"build images": 20, "train dVAE": 100, "encode tokens": 40, "train transformer": 100,
                "sample held-out prompts": 5, "probes": 9, "coco-fid": 80}
    assert first["timings_s"] == expected and first["headline"]["total minutes"] == round(354 / 60, 1)
    assert [k for k, v in first["stages"].items() if v["skipped"]] == ["build images", "train dVAE", "encode tokens"]
    again = demo.run_demo(cfg, out, 16)  # everything done: 1 s each
    assert again["timings_s"] == expected and again["headline"]["total minutes"] == round(354 / 60, 1)
    assert all(v["skipped"] and v["this_run_s"] == 1 for v in again["stages"].values())
    md = (out / "report.md").read_text()
    assert "| coco-fid | 80 | skipped: already done (1 s) |" in md.replace(".0", "")
    (out / "fid" / "samples" / "samples.jsonl").unlink()  # coco-fid runs again: its new time, marked ran
    third = demo.run_demo(cfg, out, 16)
    assert third["stages"]["coco-fid"] == {"seconds": 80, "skipped": False, "this_run_s": 80}
