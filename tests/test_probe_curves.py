"""Capability curves after the fact (dalle_eval/probes/over_checkpoints.py, `dalle-eval probes curves`): the kept
checkpoints of a finished run scored with the training probes give the records training itself logs."""

import json
import shutil

import pytest
from click.testing import CliRunner

from dalle_eval.artifacts import read_jsonl
from dalle_eval.config import apply_overrides
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.over_checkpoints import PLOT, RECORDS, run_config, score_checkpoints

RUN = ["train.ckpt_every=2", "train.keep_every=2", "train.keep_last=1", "train.transformer.steps=6",
       "train.probe_prompts=4", "train.probe_every=2"]


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory, fast_cfg, token_data):
    """A tiny transformer run that kept steps 2, 4, 6 and logged its own probe records at 0, 2, 4, 6."""
    from dalle_eval.probes.in_training import train

    out = tmp_path_factory.mktemp("probed-run")
    train("transformer", token_data, apply_overrides(fast_cfg, RUN), out, progress=False)
    return out


def _probe_records(path, steps=None):
    return [r for r in read_jsonl(path) if r.get("split") == "probe" and (steps is None or r["step"] in steps)]


def _without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_scores_equal_what_training_logged(probed_run, tmp_path):
    """Same subset, same weights: every record equals the one training logged at that step (key order included)."""
    out = tmp_path / "curves"
    r = score_checkpoints(probed_run, out, run_config(probed_run), "all", progress=False)
    assert r["steps"] == r["scored"] == [2, 4, 6] and r["skipped"] == []
    mine = _probe_records(out / RECORDS)
    logged = _probe_records(probed_run / "metrics.jsonl", {2, 4, 6})
    assert {x["step"] for x in mine} == {2, 4, 6} and len(mine) == len(logged) > 3
    key = lambda x: (x["step"], x["suite"], x["scorer"], x["check"])
    assert _without_seconds(sorted(mine, key=key)) == _without_seconds(sorted(logged, key=key))
    assert all(list(a) == list(b) for a, b in zip(mine, logged))  # the same fields in the same order
    at = lambda s: [x["accuracy"] for x in sorted(mine, key=key) if x["step"] == s]
    assert at(2) != at(6)  # the weights differ per step, so equal records mean each step's own weights
    assert (out / PLOT).stat().st_size > 0


def test_every_n_keeps_multiples_and_the_final_step(probed_run, tmp_path):
    r = score_checkpoints(probed_run, tmp_path / "c", run_config(probed_run), "every-4", progress=False)
    assert r["steps"] == r["scored"] == [4, 6]
    assert {x["step"] for x in _probe_records(tmp_path / "c" / RECORDS)} == {4, 6}


def test_rerun_resumes(probed_run, tmp_path):
    out, cfg = tmp_path / "c", run_config(probed_run)
    score_checkpoints(probed_run, out, cfg, "every-4", progress=False)
    r = score_checkpoints(probed_run, out, cfg, "all", progress=False)
    assert r["scored"] == [2] and r["skipped"] == [4, 6]
    recs = read_jsonl(out / RECORDS)
    assert [x["step"] for x in recs] == sorted(x["step"] for x in recs) and {x["step"] for x in recs} == {2, 4, 6}
    assert score_checkpoints(probed_run, out, cfg, "all", progress=False)["scored"] == []
    assert len(read_jsonl(out / RECORDS)) == len(recs)
    with pytest.raises(DalleEvalError, match="probe_prompts differ.*--overwrite"):  # other settings: refused
        score_checkpoints(probed_run, out, apply_overrides(cfg, ["train.probe_prompts=2"]), "all", progress=False)
    r = score_checkpoints(probed_run, out, apply_overrides(cfg, ["train.probe_prompts=2"]), "every-6", progress=False,
                          overwrite=True)
    assert r["scored"] == [6] and {x["step"] for x in read_jsonl(out / RECORDS)} == {6}


@pytest.mark.parametrize("which", ["every-0", "every-x", "some", ""])
def test_bad_checkpoints_option_refused(probed_run, tmp_path, which):
    with pytest.raises(DalleEvalError, match=r"--checkpoints .*expected 'all' or 'every-N'"):
        score_checkpoints(probed_run, tmp_path / "c", run_config(probed_run), which, progress=False)


def test_bad_runs_refused(probed_run, dvae_ckpt, tmp_path):
    cfg = run_config(probed_run)
    with pytest.raises(DalleEvalError, match="a 'dvae' run; capability curves score a transformer run"):
        score_checkpoints(dvae_ckpt, tmp_path / "c", cfg, progress=False)
    with pytest.raises(DalleEvalError, match="a 'dvae' run"):
        run_config(dvae_ckpt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DalleEvalError, match="no config.json"):
        score_checkpoints(empty, tmp_path / "c", cfg, progress=False)
    shutil.copy(probed_run / "config.json", empty / "config.json")
    with pytest.raises(DalleEvalError, match=r"no kept checkpoints \(state/step-N/"):
        score_checkpoints(empty, tmp_path / "c", cfg, progress=False)


def test_unloadable_checkpoint_named_and_earlier_steps_kept(probed_run, tmp_path):
    run, out = tmp_path / "run", tmp_path / "c"
    shutil.copytree(probed_run, run)
    weights = run / "state" / "step-00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DalleEvalError, match=r"checkpoint step 4 \(.*step-00000004\) does not load.*steps 2 are saved"):
        score_checkpoints(run, out, run_config(run), progress=False)
    assert {x["step"] for x in read_jsonl(out / RECORDS)} == {2}
    weights.unlink()  # an FSDP state with only its shards
    (weights.parent / "dcp").mkdir()
    with pytest.raises(DalleEvalError, match=r"step-00000004: an FSDP sharded checkpoint \(dcp/\) without the full"):
        score_checkpoints(run, out, run_config(run), progress=False)


def test_cli_writes_the_plot(probed_run, tmp_path):
    from dalle_eval.cli import main

    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["probes", "curves", "--ckpt", str(probed_run), "--checkpoints", "every-4",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / PLOT).stat().st_size > 0 and "scored now" in res.output and "4, 6" in res.output
    assert json.loads((out / "fingerprint.json").read_text())["probe_prompts"] == 4
    res = CliRunner().invoke(main, ["probes", "curves", "--ckpt", str(probed_run), "--checkpoints", "every-0",
                                    "--out", str(out)])
    assert res.exit_code != 0 and "--checkpoints 'every-0'" in res.output
    assert "every-N" in CliRunner().invoke(main, ["probes", "curves", "--help"]).output
