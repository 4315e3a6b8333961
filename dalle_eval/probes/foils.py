"""Foil captions, built from a prompt's spec: each differs from the truth in exactly one intended way.

- attribute: one attribute of a single object changed (colour, shape, size);
- count: the number of objects changed by one (1-4);
- swap_colour / swap_shape / swap_size: one attribute swapped between two objects (binding: the same
  words, bound to other objects), only where the swap makes a different scene;
- relation: the stated relation flipped (left of <-> right of, above <-> below).

A paraphrase prompt's foils are written in its own phrasing (shapes/phrasing.py), so truth and foils differ
in the scene only, never in the template.

The likelihood and CLIP scorers rank the true caption against these; chance = 1 / (1 + #foils) for
"ranked first" and 1/2 for each pairwise truth-vs-foil comparison.
"""

from __future__ import annotations

import random
from dataclasses import replace

from dalle_eval.shapes import COLOURS, SHAPES, SIZES, Obj, Scene, caption
from dalle_eval.shapes.phrasing import phrase

FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
LEVELS = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}


def _changed(rng: random.Random, obj: Obj, attribute: str) -> Obj:
    return replace(obj, **{attribute: rng.choice([v for v in LEVELS[attribute] if v != getattr(obj, attribute)])})


def _swap(spec: Scene, i: int, j: int, attribute: str) -> Scene:
    objs = list(spec.objects)
    a, b = getattr(objs[i], attribute), getattr(objs[j], attribute)
    objs[i], objs[j] = replace(objs[i], **{attribute: b}), replace(objs[j], **{attribute: a})
    return Scene(spec.kind, tuple(objs), spec.relation)


def _swap_pair(spec: Scene, attribute: str) -> tuple[int, int] | None:
    """The first pair of objects whose swap of `attribute` gives a different scene, if any.

    Order only matters for relations and stacks; elsewhere swapping the attribute of two objects that
    agree on everything else just reorders the same scene.
    """
    objs, ordered = spec.objects, spec.relation is not None
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            if getattr(a, attribute) == getattr(b, attribute):
                continue
            others_differ = any(getattr(a, k) != getattr(b, k) for k in LEVELS if k != attribute)
            if ordered or others_differ:
                return (i, j)
    return None


def foils_for(prompt: dict) -> list[dict]:
    """[{kind, caption, spec, ...}] for a shapes prompt; no foil's caption equals the truth's."""
    spec = Scene.from_json(prompt["spec"])
    rng = random.Random(f"foils-{prompt['prompt_id']}")
    out: list[dict] = []
    if spec.kind == "single":
        for attribute in ("colour", "shape", "size"):
            foil = Scene(spec.kind, (_changed(rng, spec.objects[0], attribute),))
            out.append({"kind": attribute, "spec": foil, "attribute": attribute})
    elif spec.kind == "count":
        n = len(spec.objects)
        m = rng.choice([k for k in (n - 1, n + 1) if 1 <= k <= 4])
        out.append({"kind": "count", "spec": Scene(spec.kind, (spec.objects[0],) * m), "count": m})
        foil = _changed(rng, spec.objects[0], "colour")
        out.append({"kind": "colour", "spec": Scene(spec.kind, (foil,) * n), "attribute": "colour"})
    else:
        for attribute in ("colour", "shape", "size"):
            pair = _swap_pair(spec, attribute)
            if pair is not None:
                out.append({"kind": f"swap_{attribute}", "spec": _swap(spec, *pair, attribute), "swap": [*pair, attribute]})
        if spec.relation in FLIP:
            out.append({"kind": "relation", "spec": Scene(spec.kind, spec.objects, FLIP[spec.relation])})
    write = (lambda s: phrase(s, prompt["phrasing"])) if "phrasing" in prompt else caption
    truth = write(spec)
    foils = []
    for f in out:
        text = write(f["spec"])
        if text != truth and text not in (g["caption"] for g in foils):
            foils.append({**f, "caption": text, "spec": f["spec"].to_json()})
    return foils
