"""`train --init-from CKPT_DIR` (issue 16 §2): a new run starts from another run's weights only (a fresh
optimizer, schedule, step and data position, its own config), records the source's fingerprint, refuses
weights of other shapes naming the parameters, and refuses misuse with one clear line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from dalle_eval.model.checkpoint import init_weights, kept_checkpoints
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.train import train
from dalle_eval.model.transformer import DalleTransformer
from safetensors.torch import load_file

from dalle_eval.artifacts import sha256_file
from dalle_eval.cli import main
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST
from tests.test_train import _torchrun, losses


def _cfg(*extra: str):
    return load_config(["tiny"], FAST + list(extra))


class _StepZero:
    """A probe factory (train's in-training probe hook) that keeps the model's weights before the first step."""

    def __init__(self):
        self.weights: dict[str, torch.Tensor] | None = None

    def __call__(self, stage, cfg, folder, model):
        def probe() -> list[dict]:
            if self.weights is None:
                self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return []

        return probe


def _train(stage, data, out, *extra, **kwargs) -> dict:
    return train(stage, data, _cfg(*extra), out, progress=False, **kwargs)


def _same(weights: dict, path: Path) -> bool:
    source = load_file(path)
    return source.keys() <= weights.keys() and all(torch.equal(weights[k], v) for k, v in source.items())


@pytest.mark.parametrize("stage", ["dvae", "transformer"])
def test_a_run_starts_from_the_source_weights_only(tmp_path, stage, token_data, dvae_ckpt, transformer_ckpt):
    """dVAE from a kept state dir, transformer from a run dir: the source's weights at step 0, this run's config,
    a fresh optimizer and step counter, the source's fingerprint in config.json and summary.json."""
    source_run = {"dvae": dvae_ckpt, "transformer": transformer_ckpt}[stage]
    kept = kept_checkpoints(source_run)
    src_step, state = kept[0] if stage == "dvae" else kept[-1]  # a run dir: its latest state dir
    src, weights = state if stage == "dvae" else source_run, state / "model.safetensors"
    seen = _StepZero()
    out = tmp_path / "fine"
    summary = _train(stage, token_data, out, f"train.{stage}.steps=1", f"train.{stage}.lr=3e-4", "train.probe_every=50",
                     "train.val_every=0", probes=seen, init_from=src)
    assert _same(seen.weights, weights)
    state = torch.load(out / "state" / "step-00000001" / "train.pt", weights_only=True)
    assert state["step"] == 1
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {1}  # AdamW restarted, not at 6
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["train"][stage]["lr"] == 3e-4 and saved["config"]["train"][stage]["steps"] == 1
    record = saved["init_from"]
    assert record["weights"] == str(weights.resolve()) and record["run"] == str(source_run.resolve())
    assert record["sha256"] == sha256_file(weights) and record["step"] == src_step
    assert summary["init_from"] == record == json.loads((out / "summary.json").read_text())["init_from"]
    assert not _same(load_file(out / "model.safetensors"), weights)  # and it trained on from there


def test_the_cli_fine_tunes_and_says_from_what(tmp_path, token_data, transformer_ckpt):
    args = [a for item in FAST for a in ("--set", item)]
    r = CliRunner().invoke(main, ["train", "--stage", "transformer", "--data", str(token_data), "--out",
                                  str(tmp_path / "fine"), "--init-from", str(transformer_ckpt), *args,
                                  "--set", "train.transformer.steps=2"])
    assert r.exit_code == 0, r.output
    assert "initialised from" in r.output and str(transformer_ckpt) in r.output
    summary = json.loads((tmp_path / "fine" / "summary.json").read_text())
    assert summary["init_from"]["sha256"] == sha256_file(transformer_ckpt / "model.safetensors")
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--init-from CKPT_DIR" in help_text and "Weights only" in help_text


def test_a_source_trained_on_other_tokens_is_flagged(tmp_path, token_data, transformer_ckpt, capsys):
    source = shutil.copytree(transformer_ckpt, tmp_path / "source")
    meta = json.loads((source / "config.json").read_text())
    meta["data"]["fingerprints"]["tokenizer_sha256"] = "another tokenizer"
    (source / "config.json").write_text(json.dumps(meta))
    _train("transformer", token_data, tmp_path / "fine", "train.transformer.steps=1", init_from=source)
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "another tokenizer" in warning[0]


@pytest.mark.slow  # torchrun: 2 processes
def test_fsdp_ranks_start_from_the_source_weights(tmp_path, token_data, transformer_ckpt):
    """Weights loaded before the model is sharded: 2 FSDP ranks from the source = 1 process from it (same losses)."""
    extra = ["train.data_streams=2", "train.transformer.steps=3", "train.transformer.micro_batch=2",
             "train.transformer.schedule=halving", "train.transformer.halve_every=1000", "train.ckpt_every=100"]
    torch.set_num_threads(1)
    try:
        _train("transformer", token_data, tmp_path / "one", *extra, init_from=transformer_ckpt)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    two = tmp_path / "two"
    _torchrun(["train", "--stage", "transformer", "--data", str(token_data), "--out", str(two), "--init-from",
               str(transformer_ckpt), *[x for item in FAST + extra + ["train.parallel=fsdp"] for x in ("--set", item)]])
    assert losses(two) == pytest.approx(losses(tmp_path / "one"), abs=2e-5)
    record = json.loads((two / "config.json").read_text())["init_from"]
    assert record == json.loads((tmp_path / "one" / "config.json").read_text())["init_from"]


def _fails(tmp_path, token_data, *args: str) -> str:
    """`train --stage transformer` with `args` -> its one error line (exit 1, no traceback)."""
    fast = [a for item in FAST for a in ("--set", item)]
    r = CliRunner().invoke(main, ["train", "--stage", "transformer", "--data", str(token_data), "--out",
                                  str(tmp_path / "fine"), *fast, *args])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    return errors[0]


def test_misuse_is_refused_with_one_clear_line(tmp_path, token_data, dvae_ckpt, transformer_ckpt):
    line = _fails(tmp_path, token_data, "--init-from", str(transformer_ckpt), "--resume")
    assert "--init-from" in line and "--resume" in line and "give one" in line
    line = _fails(tmp_path, token_data, "--init-from", str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in line and "no such file or folder" in line and "run dir" in line
    line = _fails(tmp_path, token_data, "--init-from", str(dvae_ckpt))
    assert str(dvae_ckpt) in line and "a 'dvae' checkpoint" in line and "'transformer'" in line
    line = _fails(tmp_path, token_data, "--init-from", str(token_data))  # a dataset, not a checkpoint
    assert "not a checkpoint dir" in line and "config.json" in line
    line = _fails(tmp_path, token_data, "--init-from", str(transformer_ckpt / "model.safetensors"))
    assert "a file" in line and "run dir" in line
    assert not (tmp_path / "fine" / "state").exists()


def test_other_shapes_name_every_parameter_and_both_shapes(tmp_path, token_data, transformer_ckpt):
    line = _fails(tmp_path, token_data, "--init-from", str(transformer_ckpt), "--set", "transformer.d_model=96")
    assert "DalleTransformer" in line and "other shape" in line
    assert "text_emb.weight" in line and "in the source" in line and ", 64) in the source" in line
    assert ", 96) here" in line and "transformer.d_model: 64 in the source, 96 here" in line
    deeper = DalleTransformer(_cfg("transformer.n_layer=3").transformer)
    with pytest.raises(DalleEvalError, match=r"missing from the source: blocks\.2\.") as e:
        init_weights(deeper, transformer_ckpt, "transformer", _cfg("transformer.n_layer=3"))
    assert "transformer.n_layer: 2 in the source, 3 here" in str(e.value)


def test_a_dvae_of_another_vocab_is_refused(dvae_ckpt):
    cfg = _cfg("dvae.vocab_size=64")
    with pytest.raises(DalleEvalError, match=r"other shape: .*\(128, .*\) in the source, \(64, .*\) here") as e:
        init_weights(DVAE(cfg.dvae), dvae_ckpt, "dvae", cfg)
    assert "dvae.vocab_size: 128 in the source, 64 here" in str(e.value)


def test_resume_keeps_the_record_and_reloads_before_the_first_checkpoint(tmp_path, token_data, transformer_ckpt):
    """A resumed run keeps its init_from record; one resumed before its first checkpoint (here: deleted) starts
    from the source's weights again, and a source file changed since is refused."""
    out, weights = tmp_path / "fine", transformer_ckpt / "model.safetensors"
    extra = ("train.transformer.steps=2", "train.val_every=0")
    _train("transformer", token_data, out, *extra, stop_at=1, init_from=transformer_ckpt)
    record = json.loads((out / "config.json").read_text())["init_from"]
    assert _resume(token_data, out)["init_from"] == record
    _forget_checkpoints(out)  # as if killed before its first checkpoint
    seen = _StepZero()
    _resume(token_data, out, "train.probe_every=50", probes=seen)
    assert _same(seen.weights, weights)
    _forget_checkpoints(out)
    config = json.loads((out / "config.json").read_text())
    config["init_from"]["sha256"] = "0" * 64
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(DalleEvalError, match="start a new --out with --init-from"):
        _resume(token_data, out, "train.probe_every=0")


def _resume(data: Path, out: Path, *overrides: str, **kwargs) -> dict:
    return train("transformer", data, _cfg(), out, resume=True, progress=False, overrides=overrides,
                 use_saved_config=True, **kwargs)


def _forget_checkpoints(out: Path) -> None:
    shutil.rmtree(out / "state")
    (out / "latest").unlink()
    (out / "model.safetensors").unlink()
