"""Probes inside training: records in metrics.jsonl, the same training with them on or off, their cost."""

import json
import types

import pytest
import torch
from dalle_eval.model.train import _exported_weights
from dalle_eval.model.train import train as train_stage

from dalle_eval.config import apply_overrides
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.in_training import DVAEProbe, probe_subset, train


def _records(run, split):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def test_probes_leave_training_unchanged_and_log_every_check(tmp_path, fast_cfg, token_data):
    cfg = apply_overrides(fast_cfg, ["train.log_every=1", "train.probe_prompts=6"])
    plain = train("transformer", token_data, cfg, tmp_path / "plain", progress=False)
    probed_cfg = apply_overrides(cfg, ["train.probe_every=4"])
    probed = train("transformer", token_data, probed_cfg, tmp_path / "probed", progress=False)
    loss = lambda run: [(r["step"], r["loss"]) for r in _records(run, "train")]
    assert loss(tmp_path / "probed") == loss(tmp_path / "plain")  # bit for bit: probing changes nothing
    assert probed["eval"] == plain["eval"]
    recs = _records(tmp_path / "probed", "probe")
    assert sorted({r["step"] for r in recs}) == [0, 4, 6]  # step 0, every 4, the last
    keys = {(r["suite"], r["scorer"], r["check"]) for r in recs}
    assert {("attributes", "likelihood", "vs_colour"), ("binding", "likelihood", "ranked_first"),
            ("raven", "likelihood", "answer")} <= keys
    for r in recs:
        assert 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 and 0 < r["chance"] < 1 and r["n"] > 0
        assert r["seconds"] > 0
    assert max(r["n"] for r in recs if r["suite"] == "raven") == 6  # the subset: probe_prompts per suite
    assert probed["probes"]["probe_passes"] == 3 and 0 < probed["probes"]["probe_share_of_time"] < 1
    assert "probes" not in plain


def test_sampled_probe_images_are_parser_scored(tmp_path, fast_cfg, token_data):
    cfg = apply_overrides(fast_cfg, ["train.probe_prompts=3", "train.probe_every=6", "train.probe_samples=2",
                                     "train.transformer.steps=2"])
    train("transformer", token_data, cfg, tmp_path / "run", progress=False)
    recs = [r for r in _records(tmp_path / "run", "probe") if r["scorer"] == "parser"]
    colour = [r for r in recs if r["suite"] == "attributes" and r["check"] == "colour"]
    assert colour and all(r["n"] == 3 * 2 for r in colour)  # 3 prompts x 2 images, at step 0 and the last


def test_dvae_runs_log_their_ceiling(tmp_path, fast_cfg, shapes_data):
    cfg = apply_overrides(fast_cfg, ["train.probe_every=3", "train.probe_prompts=4"])
    train("dvae", shapes_data, cfg, tmp_path / "dvae", progress=False)
    recs = _records(tmp_path / "dvae", "probe")
    assert {r["scorer"] for r in recs} == {"dvae_ceiling"}
    assert {"colour", "shape", "size", "object"} <= {r["check"] for r in recs if r["suite"] == "attributes"}
    assert {("raven", "answer"), ("binding", "image")} <= {(r["suite"], r["check"]) for r in recs}
    assert sorted({r["step"] for r in recs}) == [0, 3, 6]


def test_the_last_dvae_probe_scores_the_exported_ema_weights(tmp_path, fast_cfg, shapes_data):
    """With train.dvae.ema the run exports the average: the last probe pass scores it, and training is unchanged."""
    from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir

    cfg = apply_overrides(fast_cfg, ["train.log_every=1", "train.dvae.ema=0.5", "train.probe_prompts=4"])
    plain = train("dvae", shapes_data, cfg, tmp_path / "plain", progress=False)
    probed = train("dvae", shapes_data, apply_overrides(cfg, ["train.probe_every=3"]), tmp_path / "dvae", progress=False)
    loss = lambda run: [(r["step"], r["loss"]) for r in _records(run, "train")]
    assert loss(tmp_path / "dvae") == loss(tmp_path / "plain") and probed["eval"] == plain["eval"]
    last = sorted((r["suite"], r["check"], r["accuracy"]) for r in _records(tmp_path / "dvae", "probe") if r["step"] == 6)
    exported = load_image_tokenizer_dir(tmp_path / "dvae").eval()
    again = DVAEProbe(cfg, exported)()
    assert last == sorted((r["suite"], r["check"], r["accuracy"]) for r in again)


def test_exported_weights_are_swapped_in_for_the_pass_and_back_out():
    model = torch.nn.Linear(2, 2)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    average = {k: torch.full_like(v, 0.5) for k, v in trained.items()}
    task = types.SimpleNamespace(model=model, export_weights=lambda: average)
    with _exported_weights(task, final=True):
        assert (model.weight == 0.5).all() and (model.bias == 0.5).all()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    with _exported_weights(task, final=False):  # not the last step: the trained weights
        assert torch.equal(model.weight, trained["weight"])


def test_probe_subset_is_fixed_and_sized(fast_cfg):
    cfg = apply_overrides(fast_cfg, ["train.probe_prompts=5"])
    a, b = probe_subset(cfg), probe_subset(cfg)
    assert [p["prompt_id"] for p in a] == [p["prompt_id"] for p in b]
    assert {s: sum(p["suite"] == s for p in a) for s in ("attributes", "binding", "raven")} == \
        {"attributes": 5, "binding": 5, "raven": 5}


def test_model_layer_train_refuses_probe_every_without_probes(tmp_path, fast_cfg, token_data):
    cfg = apply_overrides(fast_cfg, ["train.probe_every=2"])
    with pytest.raises(DalleEvalError, match="dalle_eval.probes.in_training.train"):
        train_stage("transformer", token_data, cfg, tmp_path / "run", progress=False)
