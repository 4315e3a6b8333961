"""Output folders record what made them (FOLDER/fingerprint.json), so a re-run never mixes two runs' results.

A run whose fingerprint equals the recorded one resumes (its finished parts are kept); any other run is
refused with one line naming the keys that differ and how to go on (another --out, or --overwrite, which
clears the folder first). A fingerprint holds only what changes the folder's contents: checkpoint and prompt
hashes, sampling settings, seed, the artifact format; keys a newer fingerprint no longer holds are ignored.
Core module: under torchrun, `on_rank0` gathers through the process group the caller passes in.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dalle_eval.artifacts import MANIFEST, STAGE_INPUTS, read_json, sha256_file, write_json
from dalle_eval.errors import DalleEvalError


class Ranks(Protocol):
    """What on_rank0 needs of a process group (dalle_eval.model.distributed.Dist has it)."""

    active: bool
    is_main: bool

    def gather(self, obj: Any) -> list: ...

FINGERPRINT = "fingerprint.json"
T = TypeVar("T")
_MISSING = object()
_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """artifacts.sha256_file, once per process for a file whose size, mtime and inode are unchanged (weights)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b": value}: differences are named by their full key."""
    if not isinstance(obj, dict) or not obj:
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 16 and all(c in "0123456789abcdef" for c in value)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "not recorded"
    if _is_hash(value):
        return f"{value[:10]}…"
    return value if isinstance(value, str) else json.dumps(value)


def differences(recorded: dict, current: dict) -> list[str]:
    """"key (recorded vs current)" for every key of `current` whose recorded value differs."""
    old, new = flatten(recorded), flatten(current)
    diff = []
    for key, value in new.items():
        was = old.get(key, _MISSING)
        if was != value:
            kind = "sha256 " if _is_hash(value) or _is_hash(was) else ""
            diff.append(f"{key} ({kind}{_show(was)} vs {_show(value)})")
    return diff


def read_record(folder: Path) -> dict | None:
    """{"made_by", "fingerprint"} of a folder, or None. A build stage's stage_inputs.json (what stages recorded
    before fingerprint.json) counts as its fingerprint."""
    folder = Path(folder)
    if (folder / FINGERPRINT).exists():
        record = read_json(folder / FINGERPRINT, "fingerprint")
        if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), dict):
            raise DalleEvalError(f"{folder / FINGERPRINT}: not a fingerprint record")
        return record
    if (folder / STAGE_INPUTS).exists():
        return {"made_by": "an earlier build-dataset", "fingerprint": read_json(folder / STAGE_INPUTS, "stage inputs")}
    return None


def recorded_differences(folder: Path, fingerprint: dict) -> list[str] | None:
    """What differs between the folder's record and `fingerprint` ([] = nothing), None when it has no record."""
    record = read_record(folder)
    return None if record is None else differences(record["fingerprint"], _as_read_back(fingerprint))


def _as_read_back(fingerprint: dict) -> dict:
    return json.loads(json.dumps(fingerprint))  # tuples -> lists, as the record reads back


def _nothing(folder: Path) -> bool:
    return False


def claim_output(folder: str | Path, fingerprint: dict, overwrite: bool, made_by: str = "",
                 clear: Callable[[Path], None] = shutil.rmtree,
                 holds_results: Callable[[Path], bool] = _nothing) -> bool:
    """Make `folder` this run's output; -> True when it already holds results of this very fingerprint (resume),
    False when it starts empty. A folder made by another run, or holding results (`holds_results`) but no
    record, is refused naming what differs; with `overwrite` it is cleared (`clear`) first. The fingerprint
    is written atomically, with `made_by` (e.g. the command and checkpoint path) for the message."""
    folder, current = Path(folder), _as_read_back(fingerprint)
    try:
        record, problem = read_record(folder), None
    except DalleEvalError as e:
        record, problem = None, str(e)
    if record is not None:
        diff = differences(record["fingerprint"], current)
        if not diff:
            if record["fingerprint"] != current or not (folder / FINGERPRINT).exists():
                _write_record(folder, record.get("made_by") or made_by, current)  # keys of this version only
            return True
        problem = f"{folder} was made by {record.get('made_by') or 'another run'}; this run differs in: {', '.join(diff)}"
    elif problem is None and holds_results(folder):
        problem = f"{folder} holds results but no {FINGERPRINT} (made before output folders recorded what made them)"
    if problem is not None:
        if not overwrite:
            raise DalleEvalError(f"{problem}; use another --out, or --overwrite to replace it")
        print(f"--overwrite: {problem}; replacing it")
        clear(folder)
    _write_record(folder, made_by, current)
    return False


def _write_record(folder: Path, made_by: str, fingerprint: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / FINGERPRINT, {"made_by": made_by, "fingerprint": fingerprint})
    (folder / STAGE_INPUTS).unlink(missing_ok=True)


def on_rank0(d: Ranks, fn: Callable[[], T]) -> T:
    """Run `fn` (a claim, anything that may delete) on rank 0 only and give every rank its result or its error,
    so no rank goes on before rank 0 has finished, and all stop together when it fails. One process: fn()."""
    if not d.active:
        return fn()
    result, error = None, None
    if d.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - any failure: shared as text (others must not wait), re-raised here
            error = e
    shared, message = d.gather((result, None if error is None else str(error)))[0]
    if error is not None:
        raise error
    if message is not None:
        raise DalleEvalError(message)
    return shared


def prepare_stage(folder: str | Path, inputs: dict, overwrite: bool = True, made_by: str = "") -> bool:
    """True if `folder` is complete (has its manifest) for exactly these inputs; an incomplete one is kept (its
    finished parts are reused). A folder built from other inputs is refused naming them, or with `overwrite`
    wiped first (a cache such as the download folder); the inputs are recorded (outputs.claim_output)."""
    same = claim_output(folder, inputs, overwrite, made_by or f"build-dataset ({Path(folder).name} stage)")
    return same and (Path(folder) / MANIFEST).exists()
