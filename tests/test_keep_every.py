"""train.keep_every: besides the last train.keep_last state dirs, every step-N with N % keep_every == 0 is kept."""

import pytest
from dalle_eval.model.checkpoint import _export_file, kept_checkpoints
from dalle_eval.model.train import train

from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST


def _fake_state(ckpt, step):
    d = ckpt / "state" / f"step-{step:08d}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"weights")
    return d


@pytest.mark.parametrize(("keep_last", "keep_every", "kept"), [
    (1, 0, [12]),
    (1, 4, [4, 8, 12]),
    (2, 4, [4, 8, 10, 12]),
    (2, 5, [10, 12]),
    (0, 4, [2, 4, 6, 8, 10, 12]),  # keep_last 0 keeps every state dir, as before
])
def test_pruning_keeps_the_last_and_every_multiple(tmp_path, keep_last, keep_every, kept):
    for step in range(2, 14, 2):
        final = _fake_state(tmp_path, step)
        _export_file(tmp_path, final, "model.safetensors", keep_last, keep_every)
        assert (tmp_path / "latest").read_text().strip() == final.name
    assert [s for s, _ in kept_checkpoints(tmp_path)] == kept


def test_kept_checkpoints_lists_complete_state_dirs_by_step(tmp_path):
    assert kept_checkpoints(tmp_path) == []
    for step in (100_000_000, 3, 20):  # sorted by step, also past the 8 zero-padded digits
        _fake_state(tmp_path, step)
    (tmp_path / "state" / ".step-00000030.tmp").mkdir()  # a checkpoint being written
    (tmp_path / "state" / "step-notes").mkdir()
    (tmp_path / "state" / "step-00000040").write_text("not a dir")
    assert kept_checkpoints(tmp_path) == [(3, tmp_path / "state" / "step-00000003"),
                                          (20, tmp_path / "state" / "step-00000020"),
                                          (100_000_000, tmp_path / "state" / "step-100000000")]


def test_the_state_dir_just_written_is_never_pruned(tmp_path):
    """A resume from a rewound `latest` writes an older step than ones on disk: it stays, as the latest."""
    for step in (4, 8, 12):
        _fake_state(tmp_path, step)
    final = _fake_state(tmp_path, 6)
    _export_file(tmp_path, final, "model.safetensors", 1, 4)
    assert [s for s, _ in kept_checkpoints(tmp_path)] == [4, 6, 8, 12]


def test_keep_every_is_validated():
    assert load_config(["tiny"]).train.keep_every == 0
    with pytest.raises(DalleEvalError, match="keep_every"):
        load_config(["tiny"], ["train.keep_every=-1"])


def test_tiny_run_keeps_the_last_and_every_nth(tmp_path, shapes_data):
    cfg = load_config(["tiny"], FAST + ["train.dvae.steps=11", "train.ckpt_every=2", "train.keep_last=1",
                                        "train.keep_every=4", "train.val_every=100"])
    train("dvae", shapes_data, cfg, tmp_path / "run", progress=False)
    kept = kept_checkpoints(tmp_path / "run")
    assert [s for s, _ in kept] == [4, 8, 11]  # checkpoints at 2, 4, ..., 10 and the last step, 11
    assert (tmp_path / "run" / "latest").read_text().strip() == kept[-1][1].name
