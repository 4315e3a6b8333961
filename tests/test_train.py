"""Training at scale, proven on CPU: streaming shards, exact resume, accumulation, guards, DDP/FSDP on gloo."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch
from dalle_eval.model.schedule import LRSchedule
from dalle_eval.model.stage2 import decode_tokens
from dalle_eval.model.stream import ShardStream, StreamLoader
from dalle_eval.model.train import train

from dalle_eval.artifacts import read_json, sha256_file, write_json
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST


def cfg_with(*overrides):
    return load_config(["tiny"], FAST + list(overrides))


def records(run, split="train"):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def losses(run):
    return [r["loss"] for r in records(run) if "skipped" not in r]


@pytest.fixture()
def tokens(tmp_path, token_data):
    """A private copy of the token shards (tests corrupt it)."""
    return shutil.copytree(token_data / "tokens", tmp_path / "tokens")


def _decode_with_key(sample):
    return (torch.tensor(int(sample["__key__"])), *decode_tokens(sample, 24))


def _stream(folder, n_streams, window=2):
    m = read_json(folder / "manifest.json")
    return ShardStream(folder, m["shards"], m["shard_sizes"], _decode_with_key, n_streams, window, seed=0)


def _keys(batch):
    return sorted(batch[0].tolist())


def test_stream_global_batch_is_the_same_for_one_or_two_ranks(tokens):
    one = StreamLoader(_stream(tokens, 2), rank=0, world=1, batch=8, workers=0)
    ranks = [StreamLoader(_stream(tokens, 2), rank=r, world=2, batch=4, workers=0) for r in (0, 1)]
    for _ in range(30):  # several epochs of the 3 small shards
        both = [r.next() for r in ranks]
        assert _keys(one.next()) == sorted(_keys(both[0]) + _keys(both[1]))


def test_stream_epoch_covers_every_sample_once_and_reshuffles(tokens):
    m = read_json(tokens / "manifest.json")
    n = sum(m["shard_sizes"])
    loader = StreamLoader(_stream(tokens, 1, window=1), rank=0, world=1, batch=n, workers=0)
    first, second = loader.next(), loader.next()
    assert len(set(_keys(first))) == n and _keys(first) == _keys(second)  # whole epochs, nothing twice
    assert not torch.equal(first[0], second[0])  # a new order each epoch
    assert not torch.equal(first[0], loader.next()[0])


@pytest.mark.parametrize("workers", [0, 1])
def test_stream_resumes_at_the_next_sample(tokens, workers):
    full = StreamLoader(_stream(tokens, 1), 0, 1, batch=6, workers=workers)
    expected = [full.next() for _ in range(12)]
    part = StreamLoader(_stream(tokens, 1), 0, 1, batch=6, workers=workers)
    for _ in range(5):
        part.next()
    resumed = StreamLoader(_stream(tokens, 1), 0, 1, batch=6, workers=workers, positions=part.positions)
    for want in expected[5:]:
        got = resumed.next()
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_corrupt_and_short_shards_are_skipped_by_name(tmp_path, tokens):
    m = read_json(tokens / "manifest.json")
    data = tokens / m["shards"][0]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncated mid-sample
    short = tokens / m["shards"][1]  # a valid tar missing its last samples: caught by the manifest count
    with tarfile.open(short) as tf:
        members = [(mem, tf.extractfile(mem).read()) for mem in tf.getmembers()][:-8]
    with tarfile.open(short, "w") as tf:
        for mem, payload in members:
            tf.addfile(mem, io.BytesIO(payload))
    cfg = cfg_with("train.val_shards=0")
    with pytest.warns(UserWarning, match="skipping unreadable shard"):
        summary = train("transformer", tokens, cfg, tmp_path / "run", progress=False)
    assert summary["bad_shards"] == sorted(m["shards"][:2])
    assert records(tmp_path / "run")[-1]["bad_shards"] == 2
    with pytest.raises(DalleEvalError, match=f"{m['shards'][0]}: unreadable shard"):
        train("transformer", tokens, cfg_with("train.val_shards=0", "train.on_bad_shard=fail"), tmp_path / "r2",
              progress=False)


def test_tokens_made_with_another_tokenizer_are_refused(tmp_path, tokens):
    (tokens / "tokenizer.json").write_text((tokens / "tokenizer.json").read_text() + "\n")  # another file
    with pytest.raises(DalleEvalError, match="tokenizer file has sha256 .* but .*manifest.json records"):
        train("transformer", tokens, cfg_with(), tmp_path / "run", progress=False)


def test_resume_on_other_data_is_refused(tmp_path, tokens):
    train("transformer", tokens, cfg_with(), tmp_path / "run", progress=False, stop_at=3)
    m = read_json(tokens / "manifest.json")
    (tokens / "tokenizer.json").write_text((tokens / "tokenizer.json").read_text() + " ")
    m["tokenizer_sha256"] = sha256_file(tokens / "tokenizer.json")
    write_json(tokens / "manifest.json", m)
    with pytest.raises(DalleEvalError, match="resume with the same data"):
        train("transformer", tokens, cfg_with(), tmp_path / "run", resume=True, progress=False)


def test_gradient_accumulation_equals_the_full_batch(tmp_path, token_data):
    full = train("transformer", token_data, cfg_with(), tmp_path / "full", progress=False)
    accum = train("transformer", token_data, cfg_with("train.transformer.micro_batch=2"), tmp_path / "accum",
                  progress=False)
    assert accum["data"]["accumulation"] == 4
    assert losses(tmp_path / "accum") == pytest.approx(losses(tmp_path / "full"), abs=1e-5)
    assert full["eval"]["val_loss"] == pytest.approx(accum["eval"]["val_loss"], abs=1e-5)


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, token_data, monkeypatch):
    from dalle_eval.model.stage2 import TransformerTask

    real = TransformerTask.loss
    bad_steps = {2, 3}

    def flaky(self, forward, batch, step):
        out = real(self, forward, batch, step)
        return {**out, "loss": out["loss"] * float("nan")} if step in bad_steps else out

    monkeypatch.setattr(TransformerTask, "loss", flaky)
    train("transformer", token_data, cfg_with(), tmp_path / "run", progress=False)
    skipped = [r["step"] for r in records(tmp_path / "run") if "skipped" in r]
    assert skipped == [3, 4] and len(losses(tmp_path / "run")) == 3

    bad_steps = set(range(2, 100))
    with pytest.raises(DalleEvalError, match="3 training steps in a row had a non-finite loss"):
        train("transformer", token_data, cfg_with("train.max_bad_steps=2", "train.transformer.steps=20"),
              tmp_path / "stop", progress=False)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "stop" / "model.safetensors")
    assert (tmp_path / "stop" / "latest").read_text().strip() == "step-00000005"
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_paper_schedules():
    warm = LRSchedule("halving", 4.5e-4, 0.0, 100, warmup=10, halve_every=20)
    assert warm.lr(0) == pytest.approx(4.5e-5) and warm.lr(9) == pytest.approx(4.5e-4)
    assert warm.lr(29) == pytest.approx(4.5e-4) and warm.lr(30) == pytest.approx(2.25e-4)
    plateau = LRSchedule("plateau", 1.0, 0.1, 100, patience=2)
    for loss in (3.0, 2.0, 2.0):
        assert not plateau.observe_val(loss)
    assert plateau.observe_val(2.0) and plateau.lr(50) == 0.5  # two validations without improvement
    state = plateau.state_dict()
    again = LRSchedule("plateau", 1.0, 0.1, 100, patience=2)
    again.load_state_dict(state)
    assert again.lr(50) == 0.5
    for _ in range(20):
        plateau.observe_val(2.0)
    assert plateau.lr(99) == 0.1  # never below lr_min
    with pytest.raises(DalleEvalError, match="halve_every"):
        LRSchedule("halving", 1.0, 0.0, 10)


def test_metrics_validation_samples_and_tensorboard(tmp_path, token_data):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train("transformer", token_data, cfg_with("train.sample_every=3", "train.tensorboard=true", "train.peak_tflops=0"),
          run, progress=False)  # peak 0: the MFU's denominator measured at start
    rec = records(run)[-1]
    for key in ("loss", "text_loss", "image_loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu"):
        assert key in rec and rec[key] == rec[key], key
    assert 0 < rec["mfu"] < 1 and rec["tokens_per_s"] == pytest.approx(rec["samples_per_s"] * (24 + 64))
    peak = read_json(run / "summary.json")["mfu_peak"]
    assert peak["flops_per_s"] > 1e9 and peak["source"].startswith("measured at start")
    val = records(run, "val")
    assert [r["step"] for r in val] == [4, 6] and all(r["val_loss"] > 0 for r in val)
    from PIL import Image

    grid = Image.open(run / "samples" / "step-00000006.png")
    assert grid.width == 4 * 128  # one column per fixed prompt
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


def _grid_tiles(path, rows: int, cols: int, size: int, cell: int = 128):
    """The PNG grid of report.image_grid cut back into its tiles: (rows * cols, size, size, 3) uint8.

    Tiles are `cell` px, pasted with a NEAREST resize, one caption strip under each row: every
    (cell/size)-th pixel of a tile is the image's own."""
    import numpy as np
    from PIL import Image

    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape[1] == cols * cell and grid.shape[0] % rows == 0
    pitch, step = grid.shape[0] // rows, cell // size  # row height: the tile and its caption strip
    return np.stack([grid[r * pitch : r * pitch + cell : step, c * cell : (c + 1) * cell : step]
                     for r in range(rows) for c in range(cols)])


def test_dvae_reconstruction_grid(tmp_path, shapes_data):
    """The dVAE's sample grid shows the first 8 held-out images over the run's own reconstructions of them:
    the top tiles equal the images, the bottom ones the exported model's encode -> decode, to the 1/255 of
    the uint8 conversion (this process's convolutions, without channels_last, may differ in the last bit)."""
    import numpy as np
    from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
    from dalle_eval.model.stage1 import decode_image
    from dalle_eval.model.train import load_val, split_shards

    run, cfg = tmp_path / "dvae", cfg_with("train.sample_every=6")
    train("dvae", shapes_data, cfg, run, progress=False)
    folder = shapes_data / "images"
    _, val_shards = split_shards(folder, read_json(folder / "manifest.json"), cfg.train.val_shards)
    held_out, _ = load_val(folder, val_shards, decode_image, 8)
    images = torch.stack([s[0] for s in held_out])  # (8, 3, 64, 64) uint8
    tiles = _grid_tiles(run / "samples" / "step-00000006.png", 2, len(images), cfg.dvae.image_size)
    assert np.array_equal(tiles[: len(images)], images.permute(0, 2, 3, 1).numpy())
    dvae = load_image_tokenizer_dir(run)  # the weights at step 6 (no EMA in this config): the ones the grid was drawn with
    rec = dvae.decode(dvae.encode(images.float() / 255))
    want = (rec.permute(0, 2, 3, 1).clamp(0, 1) * 255).byte().numpy().astype(int)
    got = tiles[len(images) :].astype(int)
    assert np.abs(got - want).max() <= 1
    assert np.abs(got - images.permute(0, 2, 3, 1).numpy()).max() > 8  # reconstructions, not the images again


def test_plot_metrics_cli(tmp_path, token_data):
    from click.testing import CliRunner

    from dalle_eval.cli import main

    train("transformer", token_data, cfg_with(), tmp_path / "run", progress=False)
    r = CliRunner().invoke(main, ["plot-metrics", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 10_000
    r = CliRunner().invoke(main, ["plot-metrics", str(tmp_path)])  # a dir without metrics.jsonl
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("Error: metrics not found")


def _torchrun(args, n=2, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "dalle_eval.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def _sets(*extra):
    return [x for item in FAST + list(extra) for x in ("--set", item)]


@pytest.mark.slow  # torchrun: 2 processes, 3 launches for fsdp
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path, token_data, parallel):
    """2 ranks = 1 process at the same global batch: the same samples per step (2 fixed streams), the same losses."""
    extra = ["train.data_streams=2", f"train.parallel={parallel}", "train.transformer.steps=6",
             "train.transformer.micro_batch=2",  # with accumulation: 2 ranks x 2 x 2 = 1 x 2 x 4
             "train.transformer.schedule=halving", "train.transformer.halve_every=1000"]  # lr independent of steps
    one = tmp_path / "one"
    torch.set_num_threads(1)
    try:
        train("transformer", token_data, cfg_with(*extra), one, progress=False)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    two = tmp_path / "two"
    base = ["train", "--stage", "transformer", "--data", str(token_data), "--out", str(two)]
    r = _torchrun(base + _sets(*extra, "train.ckpt_every=100"), timeout=300)
    assert "== train transformer ==" in r.stdout and r.stdout.count("== train transformer ==") == 1
    summary = read_json(two / "summary.json")
    assert summary["data"]["world_size"] == 2 and summary["data"]["parallel"] == parallel
    assert losses(two) == pytest.approx(losses(one), abs=2e-5)  # float reduction order only
    assert summary["eval"]["val_loss"] == pytest.approx(read_json(one / "summary.json")["eval"]["val_loss"], abs=2e-5)
    if parallel == "fsdp":  # sharded checkpoint: resume under torchrun continues exactly
        assert (two / "state" / "step-00000006" / "dcp").is_dir()
        part = tmp_path / "part"
        base = ["train", "--stage", "transformer", "--data", str(token_data), "--out", str(part)]
        _torchrun(base + _sets(*extra, "train.transformer.steps=3"))
        _torchrun(base + ["--resume", "--set", "train.transformer.steps=6"])
        by_step = {r["step"]: r["loss"] for r in records(part)}  # part also logged its last step, 3
        assert [by_step[r["step"]] for r in records(two)] == pytest.approx(losses(two), abs=1e-6)


@pytest.mark.slow  # inductor compiles for ~20 s
def test_torch_compile_gives_the_eager_losses(tmp_path, token_data):
    """train.compile=true (inductor on CPU: ~40 s to compile) trains to the eager run's losses."""
    train("transformer", token_data, cfg_with(), tmp_path / "eager", progress=False)
    train("transformer", token_data, cfg_with("train.compile=true"), tmp_path / "compiled", progress=False)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=1e-5)


def test_bpe_dropout_is_the_tokenizer_at_zero_and_seeded(token_data):
    import random

    from dalle_eval.model.tokenizer import BPEDropout, load_tokenizer

    path = token_data / "tokens" / "tokenizer.json"
    tok = load_tokenizer(path)
    captions = ["a red circle", "A small blue square LEFT of a large green triangle", "Tom &amp; Jerry! émoji 🙂", ""]
    exact = BPEDropout(path, 0.0)
    assert all(exact.encode(c, random.Random(0)).tolist() == tok.encode(c).ids for c in captions)
    drop = BPEDropout(path, 0.1)
    runs = [[drop.encode(c, random.Random(seed)).tolist() for c in captions] for seed in range(20)]
    assert all(tok.decode(ids) == tok.decode(tok.encode(c).ids) for run in runs for ids, c in zip(run, captions))
    assert any(run != runs[0] for run in runs)  # other seeds, other segmentations of the same text
    assert runs[3] == [drop.encode(c, random.Random(3)).tolist() for c in captions]


def test_resume_with_bpe_dropout_gives_the_same_losses(tmp_path, token_data):
    cfg = cfg_with("train.transformer.bpe_dropout=0.5")
    full, part = tmp_path / "full", tmp_path / "part"
    train("transformer", token_data, cfg, full, progress=False)
    train("transformer", token_data, cfg, part, progress=False, stop_at=3)
    train("transformer", token_data, cfg, part, resume=True, progress=False)
    no_dropout = tmp_path / "plain"
    train("transformer", token_data, cfg_with(), no_dropout, progress=False)
    assert losses(part) == pytest.approx(losses(full), abs=1e-6)
    assert losses(full) != pytest.approx(losses(no_dropout), abs=1e-6)  # the dropout is really applied
