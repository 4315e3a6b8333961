"""The exact scorer: parse each image back into objects (shapes world) or a Raven panel, check the spec.

Checks of a shapes image: colour/shape/size of the largest object and count (attributes); per-attribute
multisets (colours, shapes, sizes: right attributes, wherever they are), count, each object with all its
attributes (object_i), the stated relation or stacking, and the whole image all-or-nothing (binding).
A Raven image is a completed matrix (or the answer cell alone): its answer cell is matched to the nearest
of the item's 8 candidates. Chance levels are those of a generator drawing objects uniformly at random.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

from PIL import Image

from dalle_eval.artifacts import read_rgb
from dalle_eval.errors import DalleEvalError
from dalle_eval.raven import RavenItem, nearest_candidate
from dalle_eval.shapes import COLOURS, SHAPES, SIZES, Scene, parse_image, relation_holds

N_CANDIDATES = 8
P_OBJECT = 1 / (len(COLOURS) * len(SHAPES) * len(SIZES))  # a random object has all three attributes
P_COUNT = 1 / 4  # counts 1-4
P_RELATION = 1 / 2  # a random placement satisfies a stated relation about half the time


def multiset_chance(values: list[str], levels: int) -> float:
    """P(n uniform draws from `levels` values form this multiset) = multinomial(n; m_1..m_k) / levels^n."""
    ways = math.factorial(len(values))
    for m in Counter(values).values():
        ways //= math.factorial(m)
    return ways / levels ** len(values)


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
    if spec.kind in ("stack", "stack3"):  # each block rests on the next one
        pairs = list(itertools.pairwise(matched))
        return all(a is not None and b is not None and bool(relation_holds(a, b, "on")) for a, b in pairs)
    if spec.relation is not None:
        a, b = matched[0], matched[1]
        return a is not None and b is not None and bool(relation_holds(a, b, spec.relation))
    return None


def score_scene_image(spec: Scene, image: Image.Image) -> dict[str, tuple[bool, float]]:
    """{check: (passed, chance)} for one image of a shapes prompt."""
    parsed = parse_image(image)
    main = max(parsed, key=lambda p: (p.x1 - p.x0) * (p.y1 - p.y0), default=None)
    want = spec.objects[0]
    attr = {name: (main is not None and getattr(main, name) == getattr(want, name), 1 / levels)
            for name, levels in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES)))}
    if spec.kind == "single":
        return {**attr, "object": (len(parsed) == 1 and parsed[0].attrs == want.attrs, P_OBJECT)}
    if spec.kind == "count":
        return {"count": (len(parsed) == len(spec.objects), P_COUNT), **attr}
    n = len(spec.objects)
    checks = {"count": (len(parsed) == n, P_COUNT)}
    for name, levels in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES))):
        want_set = sorted(getattr(o, name) for o in spec.objects)
        checks[f"{name}s"] = (sorted(getattr(p, name) for p in parsed) == want_set, multiset_chance(want_set, levels))
    matched = _match(spec.objects, parsed)
    checks.update({f"object_{i}": (m is not None, P_OBJECT) for i, m in enumerate(matched)})
    relation = _relation_checks(spec, matched)
    p_image = P_OBJECT**n
    if relation is not None:
        n_rel = n - 1 if spec.kind in ("stack", "stack3") else 1
        checks["relation"] = (relation, P_OBJECT ** (n_rel + 1) * P_RELATION**n_rel)
        p_image *= P_RELATION**n_rel
    bound = all(m is not None for m in matched) and relation is not False  # None: no relation stated
    checks["image"] = (bound and len(parsed) == n, p_image)
    return checks


def score_raven_image(item: RavenItem, image: Image.Image) -> tuple[dict[str, tuple[bool, float]], int]:
    """({"answer": (correct, 1/8)}, chosen candidate) for a completed matrix or an answer-cell image."""
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
    results = []
    for s in samples:
        prompt = by_id.get(str(s["prompt_id"]))
        if prompt is None:
            continue
        image = read_rgb(Path(images_dir) / s["file"])
        extra = {"file": s["file"]}
        if prompt["suite"] == "raven":
            checks, chosen = score_raven_image(RavenItem.from_json(prompt["spec"]), image)
            extra["chosen"] = chosen
        else:
            checks = score_scene_image(Scene.from_json(prompt["spec"]), image)
        results += [result(prompt, c, ok, ch, "parser", **extra) for c, (ok, ch) in checks.items()]
    return results
