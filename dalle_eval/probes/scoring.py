"""The exact scorer: parse each image back into objects (shapes world) or a Raven panel, check the spec.

Checks of a shapes image: colour/shape/size of the largest object and count (attributes); per-attribute
multisets (colours, shapes, sizes: right attributes, wherever they are), count, each object with all its
attributes (object_i), the stated relation or stacking, and the whole image all-or-nothing (binding).
A Raven image is a completed matrix (or the answer cell alone): its answer cell is matched to the nearest
of the item's 8 candidates. Chance levels are the scores of each suite's random generator (chance.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image

from dalle_eval.artifacts import read_rgb
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.chance import N_CANDIDATES, STACKS, scene_chance
from dalle_eval.raven import RavenItem, nearest_candidate
from dalle_eval.shapes import ParsedObj, Scene, parse_image, relation_holds
from dalle_eval.shapes.scene import CELLS

ATTRIBUTES = ("colour", "shape", "size")

def _match(spec_objs, parsed) -> list:
    """Assign each spec object a distinct parsed object with all its attributes (None if none left)."""
    free, out = list(parsed), []
    for o in spec_objs:
        hit = next((p for p in free if p.attrs == o.attrs), None)
        if hit is not None:
            free.remove(hit)
        out.append(hit)
    return out


def _relation_checks(spec: Scene, matched: list) -> bool | None:
    if spec.kind in STACKS:  # each block rests on the next one
        pairs = list(itertools.pairwise(matched))
        return all(a is not None and b is not None and bool(relation_holds(a, b, "on")) for a, b in pairs)
    if spec.relation is not None:
        a, b = matched[0], matched[1]
        return a is not None and b is not None and bool(relation_holds(a, b, spec.relation))
    return None


def _main_order(p: ParsedObj) -> tuple:
    """The main object of an image is a large one if any, then the first by layout cell (row, column) of its
    box centre: never by pixel extent or exact position, which differ by shape and would favour one."""
    cell = (int((p.y0 + p.y1) / 2 * CELLS), int((p.x0 + p.x1) / 2 * CELLS))
    return (p.size != "large", cell)


def scene_checks(spec: Scene, parsed: list[ParsedObj]) -> dict[str, bool]:
    """{check: passed} for the objects read from one image of a shapes prompt."""
    main = min(parsed, key=_main_order, default=None)
    want = spec.objects[0]
    attr = {name: main is not None and getattr(main, name) == getattr(want, name) for name in ATTRIBUTES}
    if spec.kind == "single":
        return {**attr, "object": len(parsed) == 1 and parsed[0].attrs == want.attrs}
    if spec.kind == "count":
        return {"count": len(parsed) == len(spec.objects), **attr}
    n = len(spec.objects)
    checks = {"count": len(parsed) == n}
    for name in ATTRIBUTES:
        checks[f"{name}s"] = sorted(getattr(p, name) for p in parsed) == sorted(getattr(o, name) for o in spec.objects)
    matched = _match(spec.objects, parsed)
    checks.update({f"object_{i}": m is not None for i, m in enumerate(matched)})
    relation = _relation_checks(spec, matched)
    if relation is not None:
        checks["relation"] = relation
    bound = all(m is not None for m in matched) and relation is not False  # None: no relation stated
    checks["image"] = bound and len(parsed) == n
    return checks


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


def result(prompt: dict, check: str, passed: bool, chance: float, scorer: str, **extra) -> dict:
    return {"suite": prompt["suite"], "category": prompt["category"], "groups": prompt["groups"], "check": check,
            "heldout": prompt["heldout"], "passed": bool(passed), "chance": chance, "prompt_id": prompt["prompt_id"],
            "scorer": scorer, **extra}


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
        else:
            spec = Scene.from_json(prompt["spec"])
            if prompt["prompt_id"] not in chances:
                chances[prompt["prompt_id"]] = scene_chance(spec)
            checks = score_scene_image(spec, image, chances[prompt["prompt_id"]])
        results += [result(prompt, c, ok, ch, "parser", **extra) for c, (ok, ch) in checks.items()]
    return results
