"""The samples dir (README "Artifacts"): `{prompt_id}_{index}.png` + samples.jsonl, made here or by any generator."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from dalle_eval.outputs import FINGERPRINT, claim_output

SAMPLES = "samples.jsonl"
MADE_HERE = ("grid.png", "sample_config.json")  # besides rows and images, what `sample` writes into a samples dir


def row_files(folder: Path) -> list[Path]:
    """samples.jsonl and the per-rank row files of an unfinished sharded run."""
    return [p for p in [Path(folder) / SAMPLES, *sorted(Path(folder).glob("samples.rank*.jsonl"))] if p.exists()]


def clear_samples(folder: Path) -> None:
    """--overwrite: delete what a samples dir's rows list and the files written with them, nothing else (the
    folder may be the user's: --out anywhere)."""
    folder = Path(folder)
    names = set()
    for f in row_files(folder):
        for line in f.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                names.add(str(json.loads(line).get("file")))
    for name in names | set(MADE_HERE) | {FINGERPRINT}:
        path = folder / name
        if path.parent.resolve() == folder.resolve() and path.is_file():
            path.unlink()
    for f in row_files(folder):
        f.unlink()


def claim_samples(folder: Path, fingerprint: dict, overwrite: bool, made_by: str) -> bool:
    """A samples dir for this run (outputs.claim_output): -> True when resuming the same run's images."""
    return claim_output(folder, fingerprint, overwrite, made_by, clear=clear_samples,
                        holds_results=lambda f: bool(row_files(f)))

