"""One test per shared I/O helper (issue 14: one copy of each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dalle_eval.model.dvae import pixels_to_pil

from dalle_eval.artifacts import iter_jsonl, read_jsonl
from dalle_eval.errors import DalleEvalError


def test_read_jsonl_names_file_line_and_expectation(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(DalleEvalError) as err:
        read_jsonl(path)
    msg = str(err.value)
    assert f"{path}:3" in msg and "not valid JSON" in msg and "expected one JSON object per line" in msg, msg


def test_read_jsonl_refuses_non_objects_and_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DalleEvalError, match=r"rows.jsonl:3: expected a JSON object per line, got list"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert [w for w, _ in iter_jsonl(path, "--prompts ")] == [f"--prompts {path}:1", f"--prompts {path}:3"]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_pixels_to_pil_rounds_to_nearest_and_round_trips_bytes():
    data = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.stack([data, data[::-1], data.T], axis=-1)
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    (out,) = pixels_to_pil(pixels)
    assert out.mode == "RGB" and (np.asarray(out) == img).all()  # uint8 / 255 comes back as the same bytes
    edge = torch.tensor([0.499 / 255, 0.501 / 255, 254.6 / 255, 1.2, -0.1]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert np.asarray(pixels_to_pil(edge)[0])[0, :, 0].tolist() == [0, 1, 255, 255, 0]
