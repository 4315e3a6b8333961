"""Raven by generation (the blog's protocol): the model completes the bottom-right cell of the context
matrix (image completion), the completion is matched to the nearest candidate, and that is scored.

A completer is any function (item, caption, seeds) -> one image per seed; the model's is
`model_completer`, tests pass oracles. Completions land in a samples dir like any other generator's
images, so the same parser path scores them (and rescoring needs no model).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.completion import complete_prompts
from dalle_eval.raven import MIN_RESOLUTION, RavenItem, answer_box, render_matrix

Completer = Callable[[RavenItem, str, list[int]], list[Image.Image]]


def model_completer(pm, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Completer:
    """Image completion of the token rectangle covering the answer cell; the rest is the context's codes."""
    from dalle_eval.generate import codes_to_images
    from dalle_eval.model.sampling import completion_keep, sample_codes
    from dalle_eval.probes.likelihood import answer_region

    keep = completion_keep(pm.grid, region=answer_region(pm.image_size, pm.grid))

    def complete(item: RavenItem, caption: str, seeds: list[int]) -> list[Image.Image]:
        known = pm.encode([render_matrix(item, pm.image_size)]).expand(len(seeds), -1, -1)
        text = pm.text([caption]).expand(len(seeds), -1)
        codes = sample_codes(pm.model, text, seeds, temperature, top_k, known=known, keep=keep, top_p=top_p)
        return codes_to_images(pm.dvae, codes)

    return complete


def complete_raven(prompts: list[dict], completer: Completer, out: Path, n: int, seed: int = 0,
                   progress: bool = False) -> Path:
    """n completions per Raven prompt into the samples dir `out` (completion.complete_prompts: resumable)."""
    raven = [p for p in prompts if p["suite"] == "raven"]
    return complete_prompts(raven, lambda p, seeds: completer(RavenItem.from_json(p["spec"]), p["caption"], seeds),
                            out, n, seed, progress, "raven answer cell")


def export_context(prompt: dict, folder: Path, resolution: int) -> dict:
    """Write the context matrix (answer cell blank) for another model; -> the fields the export adds: where
    the image is and where to draw, nothing from which the answer follows (no candidates, rules, answer)."""
    if resolution < MIN_RESOLUTION:
        raise DalleEvalError(f"probes export --resolution {resolution}: Raven context images need >= "
                             f"{MIN_RESOLUTION} px (the smallest resolution where no two candidates draw alike)")
    item = RavenItem.from_json(prompt["spec"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prompt['prompt_id']}.png"
    render_matrix(item, resolution).save(path)
    box = answer_box(resolution)
    return {"context_image": f"{folder.name}/{path.name}", "image_size": resolution, "answer_box": list(box),
            "region": [box[0] / resolution, box[1] / resolution]}
