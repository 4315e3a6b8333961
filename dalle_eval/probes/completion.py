"""Image completion into a samples dir, for the suites whose prompts come with an image (Raven, translation).

`complete_prompts` draws n completions per prompt with a function (prompt, seeds) -> one image per seed and
writes them as any generator's images (samples.jsonl rows + PNGs), so the parser scores them like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from dalle_eval.artifacts import append_jsonl_rows, atomic_path
from dalle_eval.samples import SAMPLES

Draw = Callable[[dict, list[int]], list[Image.Image]]


def complete_prompts(prompts: list[dict], draw: Draw, out: Path, n: int, seed: int, progress: bool,
                     what: str) -> Path:
    """n completions per prompt into the samples dir `out`, rows marked {"completion": what} (resumable as
    `sample` is: rows whose image file exists are skipped; a listed row whose file was lost is drawn again, same
    seed, and not listed twice)."""
    from dalle_eval.generate import done_rows, finished_rows, image_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    listed = {(str(r["prompt_id"]), r["index"]) for r in done_rows(out)}
    have = {(str(r["prompt_id"]), r["index"]) for r in finished_rows(out)}
    todo = [p for p in prompts if any((p["prompt_id"], j) not in have for j in range(n))]
    for p in tqdm(todo, desc=f"{what} completion", unit="prompt", disable=not progress):
        seeds = [image_seed(seed, p["prompt_id"], j) for j in range(n)]
        rows = []
        for j, (s, img) in enumerate(zip(seeds, draw(p, seeds))):
            if (p["prompt_id"], j) in have:
                continue
            name = f"{p['prompt_id']}_{j}.png"
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
            if (p["prompt_id"], j) in listed:  # its row is there: only the file was lost
                continue
            rows.append({"prompt_id": p["prompt_id"], "index": j, "caption": p["caption"], "file": name, "seed": s,
                         "completion": what})
        if rows:
            append_jsonl_rows(out / SAMPLES, rows)
    return out / SAMPLES
