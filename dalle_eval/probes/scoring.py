"""The exact scorer: parse each image back into objects (shapes world) or a Raven panel, check the spec.

A shapes image is parsed (shapes/parse.py) and its objects checked (checks.py); a Raven image is a
completed matrix (or the answer cell alone): its answer cell is matched to the nearest of the item's 8
candidates; a translation image's two panels are parsed and checked by probes/translation.py. Chance levels are
the scores of each suite's random generator (chance.py, translation.py).
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from dalle_eval.artifacts import read_rgb
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.chance import N_CANDIDATES, scene_chance
from dalle_eval.probes.checks import result, scene_checks
from dalle_eval.probes.translation import score_translation_image, translation_chance
from dalle_eval.raven import RavenItem, nearest_candidate
from dalle_eval.shapes import Scene, parse_image, place, render
from dalle_eval.shapes.panels import Translation


def score_scene_image(spec: Scene, image: Image.Image, chance: dict[str, float] | None = None
                      ) -> dict[str, tuple[bool, float]]:
    """{check: (passed, chance)} for one image of a shapes prompt."""
    chance = chance or scene_chance(spec)
    return {c: (ok, chance[c]) for c, ok in scene_checks(spec, parse_image(image)).items()}


def score_raven_image(item: RavenItem, image: Image.Image) -> tuple[dict[str, tuple[bool, float]], int]:
    """({"answer": (correct, 1/8)}, chosen candidate) for a completed matrix of any square size >= 64 px,
    drawn at that size or resized from our render at another (raven.nearest_candidate finds out which)."""
    if image.width != image.height:
        raise DalleEvalError(f"a Raven image must be square, got {image.width}x{image.height}")
    chosen = nearest_candidate(item, image, image.width)
    return {"answer": (chosen == item.answer, 1 / N_CANDIDATES)}, chosen


def oracle_image(prompt: dict, size: int) -> Image.Image:
    """The shapes prompt's spec drawn by the renderer (placement seeded by the prompt id): what a perfect
    generator could draw; likelihood scoring, the dVAE ceiling and the paraphrase oracle column use it."""
    return render(place(Scene.from_json(prompt["spec"]), random.Random(f"oracle-{prompt['prompt_id']}")), size)


def check_samples(prompts: list[dict], samples: list[dict], where: Path, suite: str, known: set[str]) -> None:
    """Every samples.jsonl row names a file and a known probe prompt (rows of other suites are skipped when
    scoring one suite); errors name the file and line."""
    for i, s in enumerate(samples, 1):
        for key in ("prompt_id", "file"):
            if key not in s:
                raise DalleEvalError(f"{where}:{i}: no {key!r} field")
        if str(s["prompt_id"]) not in known:
            raise DalleEvalError(f"{where}:{i}: prompt_id {s['prompt_id']!r} is not a prompt of the {suite} suite "
                                 "(export the prompts with `dalle-eval probes export`; same --seed/--raven-items)")


def score_samples(prompts: list[dict], samples: list[dict], images_dir: Path) -> list[dict]:
    """Parser-score every sample (samples.jsonl rows) of `prompts`: one result per check per image."""
    by_id = {p["prompt_id"]: p for p in prompts}
    chances: dict[str, dict[str, float]] = {}
    results = []
    for s in samples:
        prompt = by_id.get(str(s["prompt_id"]))
        if prompt is None:
            continue
        image = read_rgb(Path(images_dir) / s["file"])
        if image.width != image.height:
            raise DalleEvalError(f"{Path(images_dir) / s['file']}: {image.width}x{image.height} image; the samples-dir "
                                 "contract asks for square images (center-crop them to a square first)")
        extra = {"file": s["file"]}
        if prompt["suite"] == "raven":
            item = RavenItem.from_json(prompt["spec"])
            try:
                checks, chosen = score_raven_image(item, image)
            except DalleEvalError as e:  # e.g. an image under the smallest supported resolution
                raise DalleEvalError(f"{Path(images_dir) / s['file']}: {e}") from None
            extra.update(chosen=chosen, correct=item.answer)
        elif prompt["suite"] == "translation":
            spec = Translation.from_json(prompt["spec"])
            if prompt["prompt_id"] not in chances:
                chances[prompt["prompt_id"]] = translation_chance(spec)
            checks = score_translation_image(spec, image, chances[prompt["prompt_id"]])
        else:
            spec = Scene.from_json(prompt["spec"])
            if prompt["prompt_id"] not in chances:
                chances[prompt["prompt_id"]] = scene_chance(spec)
            checks = score_scene_image(spec, image, chances[prompt["prompt_id"]])
        results += [result(prompt, c, ok, ch, "parser", **extra) for c, (ok, ch) in checks.items()]
    return results
