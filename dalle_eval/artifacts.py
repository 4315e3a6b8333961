"""Artifact I/O shared by every stage: atomic writes, manifests, fingerprints (leaf module)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dalle_eval.errors import DalleEvalError

MANIFEST = "manifest.json"
STAGE_INPUTS = "stage_inputs.json"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp made it owner-only: give it the mode a plain open() would (shared clusters)
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), else set and restored."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise DalleEvalError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DalleEvalError(f"{path}: not valid JSON ({e})") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (used to tell whether a stage's inputs changed)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(folder: str | Path, what: str) -> dict:
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        raise DalleEvalError(f"{folder}: no {MANIFEST} — not a {what} directory (run the stage that makes it first)")
    return read_json(folder / MANIFEST, what)


def append_jsonl(path: str | Path, record: dict) -> None:
    append_jsonl_rows(path, [record])


def append_jsonl_rows(path: str | Path, records: list[dict]) -> None:
    """Append rows in one write (a group of rows lands together or, on a crash, is redone)."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()


def iter_jsonl(path: str | Path, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(where, row) for each non-blank line of a JSONL file; `where` is "<prefix><path>:<line>" for the
    caller's own field errors. A line that is not a JSON object stops with one error naming file:line and
    what was expected."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{prefix}{path}:{i}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DalleEvalError(
                    f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise DalleEvalError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
            yield where, row


def read_jsonl(path: str | Path) -> list[dict]:
    """All rows of a JSONL file ([] when it does not exist); errors as iter_jsonl."""
    path = Path(path)
    if not path.exists():
        return []
    return [row for _, row in iter_jsonl(path)]


def read_rgb(path: str | Path):
    """An image file as an RGB PIL image; a missing or undecodable file is one error naming it."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DalleEvalError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DalleEvalError(f"{path}: unreadable image ({e})") from None
