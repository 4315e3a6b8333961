"""One test per shared I/O helper (issue 14: one copy of each)."""

from __future__ import annotations

import pytest

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
