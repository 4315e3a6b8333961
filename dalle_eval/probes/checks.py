"""The checks of a shapes image, on the objects read from it (pure: no parsing, no chance levels).

Attributes: colour/shape/size of the main object and count. Binding: per-attribute multisets (colours,
shapes, sizes: right attributes, wherever they are), count, each object with all its attributes (object_i),
the stated relation or stacking, and the whole image all-or-nothing. `result` is one scored check as every
scorer reports it; `as_parsed` is what the parser reads from a clean render (chance levels simulate with it).
"""

from __future__ import annotations

import itertools
import random

from dalle_eval.shapes import SIZES, ParsedObj, Scene, relation_holds
from dalle_eval.shapes.scene import CELLS

STACKS = ("stack", "stack3")
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


def as_parsed(scene: Scene) -> list[ParsedObj]:
    """What the parser reads from a clean render of `scene`: boxes, and the centroid (a triangle's is a
    sixth of its side below its box centre)."""
    out = []
    for o in scene.objects:
        half = SIZES[o.size] / 2
        cy = o.cy + (SIZES[o.size] / 6 if o.shape == "triangle" else 0.0)
        out.append(ParsedObj(o.shape, o.colour, o.size, o.cx, cy, o.cx - half, o.cy - half, o.cx + half, o.cy + half))
    return sorted(out, key=lambda p: (p.cy, p.cx))


def result(prompt: dict, check: str, passed: bool, chance: float, scorer: str, **extra) -> dict:
    return {"suite": prompt["suite"], "category": prompt["category"], "groups": prompt["groups"], "check": check,
            "heldout": prompt["heldout"], "passed": bool(passed), "chance": chance, "prompt_id": prompt["prompt_id"],
            "scorer": scorer, **extra}


def ranked_first(scores: list[float], truth: int, key: str) -> tuple[bool, int, int]:
    """Is scores[truth] the highest? -> (passed, chosen index, candidates tied at the top). A tie at the top is
    broken by a draw seeded by `key` (the same every time): a scorer that cannot tell k tied candidates apart
    earns 1/k on average, so chance stays 1/len(scores). Counting a tie as wrong would put such a scorer below
    chance (e.g. a coarse tokenizer that gives two Raven candidates the same codes)."""
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    chosen = tied[0] if len(tied) == 1 else random.Random(key).choice(tied)
    return chosen == truth, chosen, len(tied)


def ranked_checks(prompt: dict, truth: float, others: list[tuple[str, float]], scorer: str, detail: dict | None = None,
                  **common) -> list[dict]:
    """The ranking checks of one prompt against (kind, score) alternatives: "ranked_first" (truth above all,
    chance 1/(1+k); `detail` goes into its record) and "vs_<kind>" per alternative (chance 1/2), ties broken by
    ranked_first's seeded draw. `common` goes into every record."""
    key = f"{prompt['prompt_id']}/{scorer}"
    passed, _, tied = ranked_first([truth, *(o for _, o in others)], 0, f"{key}/ranked_first")
    out = [result(prompt, "ranked_first", passed, 1 / (1 + len(others)), scorer, tied=tied, **(detail or {}), **common)]
    for j, (kind, o) in enumerate(others):
        out.append(result(prompt, f"vs_{kind}", ranked_first([truth, o], 0, f"{key}/{j}")[0], 0.5, scorer, **common))
    return out
