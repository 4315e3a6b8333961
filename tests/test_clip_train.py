"""`train --stage clip`: a tiny open_clip CLIP trained on the shapes world's images and true captions, loaded back
by the reranking path (model/clip.py) as a local open_clip checkpoint."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dalle_eval.model.clip import ClipScorer
from dalle_eval.model.stage_clip import MODEL_CONFIG, contrastive_loss
from dalle_eval.model.train import train

from dalle_eval.artifacts import read_rgb
from dalle_eval.cli import main
from dalle_eval.coco import choose_subset, find_coco
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST

CLIP = ["train.clip.steps=60", "train.clip.batch_size=32", "train.clip.warmup=5", "train.val_samples=32",
        "train.val_every=30", "train.ckpt_every=30", "train.log_every=5"]


def _cfg(*extra):
    return load_config(["tiny"], FAST + CLIP + list(extra))


def _train_losses(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def clip_run(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    summary = train("clip", shapes_data, _cfg(), out, progress=False)
    return out, summary


def _true_above_shuffled(scorer: ClipScorer, coco) -> float:
    """Held-out COCO-format images (never trained on): how often an image's own caption scores above each other
    image's caption that reads differently (chance 0.5)."""
    captions, images = find_coco(coco)
    prompts = choose_subset(captions, images, 16, seed=0)
    ims = [read_rgb(p["image"]) for p in prompts]
    texts = [p["caption"] for p in prompts]
    s = np.array([scorer.scores([im] * len(texts), texts).numpy() for im in ims])  # (image, caption)
    differ = np.array([[a != b for b in texts] for a in texts])
    return float((s.diagonal()[:, None] > s)[differ].mean())


def test_contrastive_loss_is_symmetric_infonce_with_shared_targets():
    torch.manual_seed(0)
    fi, ft = torch.randn(4, 8), torch.randn(4, 8)
    ids = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    logits = 10 * torch.nn.functional.normalize(fi, dim=-1) @ torch.nn.functional.normalize(ft, dim=-1).T
    plain = (torch.nn.functional.cross_entropy(logits, torch.arange(4))
             + torch.nn.functional.cross_entropy(logits.T, torch.arange(4))) / 2
    assert contrastive_loss(fi, ft, torch.tensor(10.0), ids) == pytest.approx(float(plain))  # distinct captions
    same = ids.clone()
    same[1] = same[0]  # captions 0 and 1 read the same: each image's target is split between them
    target = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    want = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    assert contrastive_loss(fi, ft, torch.tensor(10.0), same) == pytest.approx(float(want))


@pytest.mark.slow  # a 60-step CLIP run: ~20 s
def test_training_lowers_the_loss_and_ranks_true_captions_on_heldout_images(clip_run, shapes_data):
    out, summary = clip_run
    loss = _train_losses(out)
    assert np.mean(loss[-3:]) < 0.7 * loss[0], loss  # the contrastive loss falls
    assert summary["eval"]["val_pair_accuracy"] > 0.7 and summary["eval"]["val_loss"] < loss[0]
    # the run dir is a local open_clip checkpoint for the reranking path
    scorer = ClipScorer(str(out / MODEL_CONFIG), str(out / "model.safetensors"))
    assert not scorer.random
    trained = _true_above_shuffled(scorer, shapes_data / "coco")
    untrained = _true_above_shuffled(ClipScorer(str(out / MODEL_CONFIG), None, allow_random=True), shapes_data / "coco")
    assert trained > 0.75 and trained > untrained + 0.15, (trained, untrained)


@pytest.mark.slow  # three short CLIP runs: ~11 s
def test_resume_through_the_cli_continues_exactly(shapes_data, tmp_path):
    """Stopped at step 10 and resumed with `train --stage clip --resume` = one uninterrupted 20-step run."""
    steps = ["--set", "train.clip.steps=20", "--set", "train.ckpt_every=10"]
    args = ["train", "--stage", "clip", "--data", str(shapes_data), "--config", "tiny",
            *[a for item in FAST + CLIP for a in ("--set", item)], *steps]
    whole = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    assert "val_pair_accuracy" in whole.output
    train("clip", shapes_data, _cfg("train.clip.steps=20", "train.ckpt_every=10"), tmp_path / "part", progress=False,
          stop_at=10)
    assert len(_train_losses(tmp_path / "part")) == 2
    resumed = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "part"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _train_losses(tmp_path / "part") == pytest.approx(_train_losses(tmp_path / "whole"), rel=1e-5)
    a, b = (ClipScorer(str(tmp_path / d / MODEL_CONFIG), str(tmp_path / d / "model.safetensors")) for d in ("whole", "part"))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_tiny_config_trains_clip_without_probes_and_bad_sizes_are_named(shapes_data, tmp_path):
    assert load_config(["tiny"], []).train.probe_every > 0  # tiny probes the dVAE and transformer runs ...
    r = CliRunner().invoke(main, ["train", "--stage", "clip", "--data", str(shapes_data), "--out", str(tmp_path / "r"),
                                  "--config", "tiny", "--set", "train.clip.steps=2", "--set", "train.clip.batch_size=8",
                                  "--set", "train.num_workers=0", "--set", "train.val_samples=8",
                                  "--set", "train.sample_every=0"])
    assert r.exit_code == 0, r.output  # ... a CLIP run has no probe suite: probes are off
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["train"]["probe_every"] == 0
    with pytest.raises(DalleEvalError, match="clip.image_size=60 must be a multiple of clip.patch_size=8"):
        train("clip", shapes_data, _cfg("clip.image_size=60"), tmp_path / "bad", progress=False)
