"""data.raven_fraction: the training side of the Raven probes. Matrices drawn whole with their answer, the probes'
caption, a stream no probe item comes from; off, the data byte for byte as before."""

from __future__ import annotations

import io
import json
import random

import pandas as pd
import pytest
from dalle_eval.pipelines.shapes_source import _scene, training_caption, write_shapes_shards
from PIL import Image

from dalle_eval.config import apply_overrides, load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.raven import CAPTION, RavenItem, generate_items, nearest_candidate
from dalle_eval.shapes import sample_scene
from dalle_eval.shards import iter_raw_samples


def _key(item: RavenItem) -> tuple:
    return item.config, item.context, item.candidates[item.answer]


def test_off_draws_nothing_and_changes_nothing(tmp_path):
    assert load_config(["tiny"]).data.raven_fraction == 0.0
    assert all(_scene(0, i, raven_fraction=0.0) == sample_scene(random.Random(f"0-{i}")) for i in range(200))
    rows = write_shapes_shards(tmp_path / "a", 20, 64, 10, 0)
    assert rows == write_shapes_shards(tmp_path / "b", 20, 64, 10, 0, raven_fraction=0.0)
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert list(iter_raw_samples(tmp_path / "a" / name)) == list(iter_raw_samples(tmp_path / "b" / name))


def test_matrices_carry_their_answer_and_the_probe_caption(tmp_path):
    """Each Raven sample's image is its item's matrix with the true answer drawn in (the candidate matcher reads it
    back), its caption is the probes' Raven caption whatever scramble/paraphrase say, and the other samples are the
    shapes scenes they were."""
    n = 2000
    items = {i: s for i in range(n) if isinstance(s := _scene(0, i, raven_fraction=0.25), RavenItem)}
    assert 0.22 < len(items) / n < 0.28 and {it.config for it in items.values()} == {"center", "grid2x2", "grid3x3"}
    assert all(training_caption(it, 0, i, scramble="colour") == CAPTION for i, it in items.items())
    assert all(_scene(0, i, raven_fraction=0.25) == sample_scene(random.Random(f"0-{i}")) for i in range(200) if i not in items)

    rows = write_shapes_shards(tmp_path / "r", 40, 64, 40, 0, raven_fraction=0.5)
    samples = [files for _, files in iter_raw_samples(tmp_path / "r" / "shard-000000.tar")]
    raven = [s for s in samples if "candidates" in json.loads(s["json"])["scene"]]
    assert 10 < len(raven) < 30 and [r["caption"] for r in rows] == [s["txt"].decode() for s in samples]
    for s in raven:
        item = RavenItem.from_json(json.loads(s["json"])["scene"])
        assert s["txt"].decode() == CAPTION
        assert nearest_candidate(item, Image.open(io.BytesIO(s["png"])).convert("RGB"), 64) == item.answer


def test_no_training_matrix_is_a_probe_item():
    """The training stream is not the probes' (raven-<eval.seed>): none of 1,000 training items of seed 0 equals one
    of the first 500 probe items of seeds 0 and 1."""
    train = [s for i in range(4000) if isinstance(s := _scene(0, i, raven_fraction=0.25), RavenItem)]
    probes = {_key(it) for seed in (0, 1) for it in generate_items(500, seed)}
    assert len(train) > 900 and not any(_key(it) in probes for it in train)


def test_the_build_records_the_arm_and_refuses_what_cannot_hold_it(tmp_path, fast_cfg):
    from dalle_eval.pipelines.build import build_dataset

    cfg = apply_overrides(fast_cfg, ["data.raven_fraction=0.3", "data.resolution=64"])
    build_dataset(cfg, "shapes", tmp_path / "raven", n=60)
    manifest = json.loads((tmp_path / "raven" / "images" / "manifest.json").read_text())
    assert manifest["raven"]["fraction"] == 0.3 and manifest["raven"]["caption"] == CAPTION
    fp = json.loads((tmp_path / "raven" / "images" / "fingerprint.json").read_text())["fingerprint"]
    assert fp["data"]["raven_fraction"] == 0.3
    captions = pd.read_parquet(tmp_path / "raven" / "pairs.parquet")["caption"].tolist()
    assert 8 < captions.count(CAPTION) < 30
    with pytest.raises(DalleEvalError, match=r"data.raven_fraction needs data.resolution >= 64 \(got 32\)"):
        build_dataset(apply_overrides(cfg, ["data.resolution=32"]), "shapes", tmp_path / "small", n=10)
    csv = tmp_path / "pairs.csv"
    csv.write_text("url,caption\nhttp://127.0.0.1:9/a.png,a cat\n")
    with pytest.raises(DalleEvalError, match="raven_fraction"):
        build_dataset(cfg, str(csv), tmp_path / "web", n=1)
    with pytest.raises(DalleEvalError, match=r"data.raven_fraction: must be in \[0, 1\], got 2"):
        load_config(["tiny"], ["data.raven_fraction=2"])
