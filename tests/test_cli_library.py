"""The CLI is thin: the library's train(resume=True) applies the resume-config rule `train --resume` does."""

from __future__ import annotations

import pytest
from dalle_eval.model.train import train

from dalle_eval.artifacts import read_json
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST


def _cfg(*overrides: str):
    return load_config(["tiny"], FAST + list(overrides))


def test_resume_with_another_config_is_refused_and_config_json_kept(tmp_path, token_data):
    run = tmp_path / "run"
    train("transformer", token_data, _cfg(), run, progress=False, stop_at=2)
    before = (run / "config.json").read_bytes()
    with pytest.raises(DalleEvalError, match=r"another config \(transformer\.dropout: .* saved, 0\.3 given"):
        train("transformer", token_data, _cfg("transformer.dropout=0.3"), run, resume=True, progress=False)
    assert (run / "config.json").read_bytes() == before


def test_resume_with_the_same_config_or_saved_config_plus_overrides_continues(tmp_path, token_data):
    run = tmp_path / "run"
    train("transformer", token_data, _cfg("train.transformer.steps=4"), run, progress=False, stop_at=2)
    s = train("transformer", token_data, _cfg("train.transformer.steps=4"), run, resume=True, progress=False)
    assert s["steps"] == 4 and "preempted" not in s
    more = ["train.transformer.steps=6"]
    s = train("transformer", token_data, _cfg(*more), run, resume=True, progress=False, overrides=more)
    assert s["steps"] == 6
    assert read_json(run / "config.json")["config"]["train"]["transformer"]["steps"] == 6


def test_use_saved_config_takes_the_saved_one_as_train_resume_does(tmp_path, token_data):
    run = tmp_path / "run"
    train("transformer", token_data, _cfg("train.transformer.steps=4"), run, progress=False, stop_at=2)
    more = ["train.transformer.steps=5"]
    s = train("transformer", token_data, load_config(["tiny"], more), run, resume=True, progress=False,
              overrides=more, use_saved_config=True)
    assert s["steps"] == 5
    assert read_json(run / "config.json")["config"]["train"]["num_workers"] == 0  # FAST, from the saved config
