"""Translation by completion (the blog's protocol): the top panel is given as image tokens (the top half of the
token rows kept, as `sample --keep-rows` does) and the model samples the bottom half under the caption; other
generators get the same context image and the box to draw (`export_context`)."""

from __future__ import annotations

from pathlib import Path

from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.completion import complete_prompts
from dalle_eval.shapes.panels import Translation, bottom_box, render_panels

MIN_RESOLUTION = 64  # the shapes parser reads the smallest objects (0.22 of the side) from 64 px up


def complete_translation(prompts: list[dict], pm, out: Path, n: int, sample_cfg, progress: bool = False) -> Path:
    """n completions per translation prompt into the samples dir `out` (completion.complete_prompts: resumable):
    the context image's top token rows kept, the bottom sampled."""
    from dalle_eval.generate import codes_to_images
    from dalle_eval.model.sampling import completion_keep, sample_codes
    from dalle_eval.probes.likelihood import panel_rows

    s = sample_cfg
    keep = completion_keep(pm.grid, keep_rows=panel_rows(pm.grid))

    def draw(p: dict, seeds: list[int]):
        context = render_panels(Translation.from_json(p["spec"]), pm.image_size, ())
        known = pm.encode([context]).expand(len(seeds), -1, -1)
        text = pm.text([p["caption"]]).expand(len(seeds), -1)
        codes = sample_codes(pm.model, text, seeds, s.temperature, s.top_k, known=known, keep=keep, top_p=s.top_p)
        return codes_to_images(pm.dvae, codes)

    mine = [p for p in prompts if p["suite"] == "translation"]
    return complete_prompts(mine, draw, out, n, s.seed, progress, "translation bottom panel")


def export_context(prompt: dict, folder: Path, resolution: int) -> dict:
    """Write the context image (top panel and divider, bottom blank) for another model; -> the fields the export
    adds: where the image is and where to draw, nothing from which the answer follows."""
    if resolution < MIN_RESOLUTION or resolution % 2:
        raise DalleEvalError(f"probes export --resolution {resolution}: translation context images need an even "
                             f"size >= {MIN_RESOLUTION} px (two panels the parser reads)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prompt['prompt_id']}.png"
    render_panels(Translation.from_json(prompt["spec"]), resolution, ()).save(path)
    box = bottom_box(resolution)
    return {"context_image": f"{folder.name}/{path.name}", "image_size": resolution, "answer_box": list(box),
            "region": [box[0] / resolution, box[1] / resolution]}
