"""A samples dir as any generator writes it (tests' helper): {prompt_id}_{index}.png and samples.jsonl."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def samples_dir(folder: Path, images) -> Path:
    """Write (prompt, PIL image) pairs; a prompt's images are numbered in the order given."""
    folder.mkdir(parents=True)
    rows, index = [], Counter()
    for p, image in images:
        name = f"{p['prompt_id']}_{index[p['prompt_id']]}.png"
        image.save(folder / name)
        rows.append({"prompt_id": p["prompt_id"], "index": index[p["prompt_id"]], "caption": p["caption"], "file": name})
        index[p["prompt_id"]] += 1
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
