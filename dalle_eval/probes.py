"""Probe suites on the shapes world, scored exactly by the parser (first version: attributes, binding).

Every prompt carries its structured spec; a generated image is parsed back into objects and each
check (colour, shape, size, count, object binding, relation, whole image) is right or wrong.
Accuracy comes with a 95% Wilson interval and the chance level of the check.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from pathlib import Path

from dalle_eval.errors import DalleEvalError
from dalle_eval.shapes import COLOURS, SHAPES, SIZES, Scene, caption, parse_image, relation_holds
from dalle_eval.shapes.scene import Obj, sample_spec

SUITES = ("attributes", "binding", "raven")
IMPLEMENTED = ("attributes", "binding")
N_COLOURS, N_SHAPES, N_SIZES = len(COLOURS), len(SHAPES), len(SIZES)
P_OBJECT = 1 / (N_COLOURS * N_SHAPES * N_SIZES)  # chance that a random object has all three attributes
CHANCE = {
    "colour": 1 / N_COLOURS,
    "shape": 1 / N_SHAPES,
    "size": 1 / N_SIZES,
    "count": 1 / 3,  # counts 2, 3, 4
    "object": P_OBJECT,
    # relation: both objects present with all attributes and the stated relation holding; a random
    # placement satisfies a stated relation about half the time
    "relation": P_OBJECT**2 / 2,
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (Wilson 1927)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _prompt(suite: str, category: str, spec: Scene, pid: str) -> dict:
    return {"prompt_id": pid, "suite": suite, "category": category, "caption": caption(spec),
            "spec": spec.to_json(), "heldout": spec.heldout}


def make_prompts(suite: str, seed: int = 0) -> list[dict]:
    """The prompts of a suite, each with its spec; held-out colour-shape pairs are marked."""
    if suite not in SUITES:
        raise DalleEvalError(f"--suite must be one of {', '.join(SUITES)} or all, got {suite!r}")
    if suite == "raven":
        raise DalleEvalError("the raven suite is not implemented yet (it is planned in the probes issue)")
    rng = random.Random(f"probes-{suite}-{seed}")
    prompts = []
    if suite == "attributes":
        for shape, colour, size in itertools.product(SHAPES, COLOURS, SIZES):
            spec = Scene("single", (Obj(shape, colour, size),))
            prompts.append(_prompt(suite, "single", spec, f"attr-{shape}-{colour}-{size}"))
        for i in range(18):
            spec = sample_spec(rng, "count", allow_heldout=True)
            prompts.append(_prompt(suite, "count", spec, f"count-{i:03d}"))
    else:
        for kind, n in (("relation", 16), ("stack", 8), ("multi", 8)):
            for i in range(n):
                spec = sample_spec(rng, kind, allow_heldout=True)
                prompts.append(_prompt(suite, kind, spec, f"{kind}-{i:03d}"))
    return prompts


def _match(spec_objs, parsed) -> list:
    """Assign each spec object a distinct parsed object with all its attributes (None if none left)."""
    free, out = list(parsed), []
    for o in spec_objs:
        hit = next((p for p in free if p.attrs == o.attrs), None)
        if hit is not None:
            free.remove(hit)
        out.append(hit)
    return out


def score_image(prompt: dict, image) -> dict[str, bool]:
    """Checks for one generated image of a prompt: {check name: passed}."""
    spec = Scene.from_json(prompt["spec"])
    parsed = parse_image(image)
    main = max(parsed, key=lambda p: (p.x1 - p.x0) * (p.y1 - p.y0), default=None)
    if spec.kind == "single":
        want = spec.objects[0]
        return {
            "colour": main is not None and main.colour == want.colour,
            "shape": main is not None and main.shape == want.shape,
            "size": main is not None and main.size == want.size,
            "object": len(parsed) == 1 and parsed[0].attrs == want.attrs,
        }
    if spec.kind == "count":
        want = spec.objects[0]
        return {
            "count": len(parsed) == len(spec.objects),
            "colour": main is not None and main.colour == want.colour,
            "shape": main is not None and main.shape == want.shape,
        }
    matched = _match(spec.objects, parsed)
    checks = {f"object_{i}": m is not None for i, m in enumerate(matched)}
    if spec.relation is not None:
        a, b = matched[0], matched[1]
        checks["relation"] = a is not None and b is not None and relation_holds(a, b, spec.relation)
    checks["image"] = all(checks.values()) and len(parsed) == len(spec.objects)
    return checks


def chance_of(check: str, prompt: dict) -> float:
    if check.startswith("object_"):
        return P_OBJECT
    if check == "image":
        n = len(prompt["spec"]["objects"])
        return P_OBJECT**n * (0.5 if prompt["spec"]["relation"] else 1.0)
    return CHANCE[check]


def summarise(results: list[dict]) -> list[dict]:
    """results: {suite, category, check, heldout, passed, chance} per check -> table rows."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in results:
        check = "object" if r["check"].startswith("object_") else r["check"]
        for split in ("all", "heldout" if r["heldout"] else "seen"):
            groups[(r["suite"], r["category"], check, split)].append(r)
    rows = []
    for (suite, category, check, split), rs in sorted(groups.items()):
        k, n = sum(r["passed"] for r in rs), len(rs)
        lo, hi = wilson(k, n)
        rows.append({"suite": suite, "category": category, "check": check, "split": split, "n": n,
                     "accuracy": k / n, "ci95": [lo, hi], "chance": sum(r["chance"] for r in rs) / n})
    return rows


def score_samples(prompts: list[dict], samples: list[dict], images_dir: Path) -> list[dict]:
    """Score every sample (samples.jsonl rows) whose prompt_id is one of `prompts`."""
    by_id = {p["prompt_id"]: p for p in prompts}
    from PIL import Image

    results = []
    for s in samples:
        prompt = by_id.get(str(s["prompt_id"]))
        if prompt is None:
            continue
        path = Path(images_dir) / s["file"]
        try:
            with Image.open(path) as im:
                checks = score_image(prompt, im.convert("RGB"))
        except OSError as e:
            raise DalleEvalError(f"{path}: unreadable image ({e})") from None
        for check, passed in checks.items():
            results.append({"suite": prompt["suite"], "category": prompt["category"], "check": check,
                            "heldout": prompt["heldout"], "passed": bool(passed), "chance": chance_of(check, prompt),
                            "prompt_id": prompt["prompt_id"], "file": s["file"]})
    return results
