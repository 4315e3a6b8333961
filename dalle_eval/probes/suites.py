"""The probe prompts: attributes, binding, Raven, paraphrase and translation, each carrying its full structured spec.

A prompt is a plain dict (it is also the line `probes export` writes): prompt_id, suite, category,
groups (every table row it counts towards), caption, spec, heldout. Shapes prompts hold a
`Scene.to_json()` spec with no positions (any placement that makes the caption true is right); Raven
prompts hold the whole manifest record of the item. Paraphrase prompts are binding specs, each written in
every phrasing of shapes/phrasing.py: one prompt per phrasing, sharing the spec's `spec_id`, with its
`phrasing` (also the group "phrasing:<family>"). Translation prompts hold a `Translation.to_json()` spec
(shapes/panels.py: the placed top panel, the transform and its value), grouped by transform and by whether
data.translation_fraction trains it ("training-arm:trained" / "training-arm:new"). Same seed => same prompts.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from dalle_eval.artifacts import iter_jsonl
from dalle_eval.errors import DalleEvalError
from dalle_eval.raven import CAPTION as RAVEN_CAPTION
from dalle_eval.raven import RavenItem, generate_items
from dalle_eval.shapes import COLOURS, RELATIONS, SHAPES, SIZES, Obj, Scene, caption
from dalle_eval.shapes.panels import TRAINED, TRANSFORMS, sample_translation
from dalle_eval.shapes.phrasing import families, phrase

SUITES = ("attributes", "binding", "raven", "paraphrase", "translation")
ALL = ("attributes", "binding", "raven")  # --suite all; paraphrase and translation run when asked for by name
COMPLETION_SUITES = ("raven", "translation")  # prompts that come with an image to complete: no caption foils
RAVEN_ITEMS = 60  # default items (20 per configuration): ±13 points of Wilson half-width at chance
BINDING_KINDS = {  # table category -> (scene kind, number of objects, prompts)
    "two": ("multi", 2, 10),
    "three": ("multi", 3, 10),
    "four": ("multi", 4, 10),
    "relation": ("relation", 2, 16),
    "stack2": ("stack", 2, 10),
    "stack3": ("stack3", 3, 8),
    "multi-attribute": ("described", 3, 10),
}
PARAPHRASE_KINDS = {  # table category -> (scene kind, number of objects, specs); 5-6 phrasings each
    "two": ("multi", 2, 8),
    "three": ("multi", 3, 8),
    "relation": ("relation", 2, 8),
    "stack2": ("stack", 2, 8),
}
COUNTS = (1, 2, 3, 4)
COUNT_PROMPTS = 6  # per count
TRANSLATION_PROMPTS = 10  # per transform


def resolve_suites(suite: str) -> list[str]:
    if suite == "all":
        return list(ALL)
    if suite not in SUITES:
        raise DalleEvalError(f"--suite must be one of {', '.join(SUITES)} or all ({', '.join(ALL)}), got {suite!r}")
    return [suite]


def shapes_prompt(suite: str, category: str, spec: Scene, pid: str) -> dict:
    return {"prompt_id": pid, "suite": suite, "category": category, "groups": ["all", category],
            "caption": caption(spec), "spec": spec.to_json(), "heldout": spec.heldout}


def paraphrase_prompts(category: str, spec: Scene, spec_id: str) -> list[dict]:
    """One prompt per phrasing of `spec`: same spec and spec_id, the caption in that phrasing."""
    return [{**shapes_prompt("paraphrase", category, spec, f"{spec_id}-{family}"), "caption": phrase(spec, family),
             "groups": ["all", category, f"phrasing:{family}"], "spec_id": spec_id, "phrasing": family}
            for family in families(spec)]


def translation_prompt(transform: str, i: int, rng: random.Random) -> dict:
    spec = sample_translation(rng, transform)
    arm = "trained" if transform in TRAINED else "new"
    return {"prompt_id": f"transl-{transform}-{i:02d}", "suite": "translation", "category": transform,
            "groups": ["all", transform, f"training-arm:{arm}"], "caption": spec.caption(), "spec": spec.to_json(),
            "heldout": spec.heldout}


def raven_prompt(item: RavenItem) -> dict:
    rules = sorted({r["rule"] for r in item.rules.values()})
    return {"prompt_id": item.item_id, "suite": "raven", "category": item.config,
            "groups": ["all", item.config, *(f"rule:{r}" for r in rules)], "caption": RAVEN_CAPTION,
            "spec": item.to_json(), "heldout": False}


def _distinct_objects(rng: random.Random, n: int, shape: str | None = None, size: str | None = None,
                      distinct_shapes: bool = False) -> list[Obj]:
    """n objects with distinct colours (so each colour names one object: binding is then testable)."""
    colours = rng.sample(list(COLOURS), n)
    shapes = rng.sample(SHAPES, n) if distinct_shapes else [shape or rng.choice(SHAPES) for _ in range(n)]
    return [Obj(s, c, size or rng.choice(list(SIZES))) for s, c in zip(shapes, colours)]


def _binding_spec(rng: random.Random, kind: str, n: int) -> Scene:
    if kind == "relation":
        return Scene(kind, tuple(_distinct_objects(rng, 2)), rng.choice(RELATIONS))
    if kind == "stack":
        return Scene(kind, tuple(_distinct_objects(rng, 2, shape="square")), "on")
    if kind == "stack3":  # three small blocks: a stack of large ones would not fit under the image top
        return Scene(kind, tuple(_distinct_objects(rng, 3, shape="square", size="small")), "on")
    if kind == "described":
        return Scene(kind, tuple(_distinct_objects(rng, rng.randint(2, n), distinct_shapes=True)))
    while True:  # every pair also differs in shape or size, so swapping a colour makes a different scene
        objs = _distinct_objects(rng, n)
        if len({(o.shape, o.size) for o in objs}) == n:
            return Scene(kind, tuple(objs))


def make_prompts(suite: str, seed: int = 0, raven_items: int = RAVEN_ITEMS) -> list[dict]:
    """The prompts of one suite, or of the suites in ALL for "all"; held-out colour-shape pairs are marked."""
    if suite == "all":
        return [p for s in ALL for p in make_prompts(s, seed, raven_items)]
    resolve_suites(suite)
    rng = random.Random(f"probes-{suite}-{seed}")
    prompts = []
    if suite == "attributes":
        for shape, colour, size in itertools.product(SHAPES, COLOURS, SIZES):
            spec = Scene("single", (Obj(shape, colour, size),))
            prompts.append(shapes_prompt(suite, "single", spec, f"attr-{shape}-{colour}-{size}"))
        for n, i in itertools.product(COUNTS, range(COUNT_PROMPTS)):
            obj = Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)))
            spec = Scene("count", (obj,) * n)
            prompts.append(shapes_prompt(suite, "count", spec, f"count-{n}-{i:02d}"))
    elif suite == "binding":
        for category, (kind, n, k) in BINDING_KINDS.items():
            for i in range(k):
                prompts.append(shapes_prompt(suite, category, _binding_spec(rng, kind, n), f"{category}-{i:03d}"))
    elif suite == "paraphrase":
        for category, (kind, n, k) in PARAPHRASE_KINDS.items():
            for i in range(k):
                prompts += paraphrase_prompts(category, _binding_spec(rng, kind, n), f"para-{category}-{i:03d}")
    elif suite == "translation":
        prompts = [translation_prompt(t, i, rng) for t in TRANSFORMS for i in range(TRANSLATION_PROMPTS)]
    else:
        if raven_items < 1:
            raise DalleEvalError(f"--raven-items must be >= 1, got {raven_items}")
        prompts = [raven_prompt(item) for item in generate_items(raven_items, seed)]
    return prompts


def read_custom_prompts(path: Path) -> list[dict]:
    """Your own prompts for CLIP multiple choice (e.g. real-world ones): JSONL, one per line, with "caption"
    and "foils" (captions that must score lower), optional "prompt_id", "category", "heldout"."""
    path = Path(path)
    if not path.is_file():
        raise DalleEvalError(f"--prompts {path}: file not found")
    prompts = []
    for i, (where, row) in enumerate(iter_jsonl(path, "--prompts ")):
        foils = row.get("foils")
        if not isinstance(row.get("caption"), str) or not foils or not isinstance(foils, list):
            raise DalleEvalError(f"{where}: need a 'caption' and a non-empty list of 'foils'")
        captions = [f["caption"] if isinstance(f, dict) else f for f in foils]
        if not all(isinstance(c, str) for c in captions) or row["caption"] in captions:
            raise DalleEvalError(f"{where}: foils must be captions different from the true one")
        category = str(row.get("category", "custom"))
        prompts.append({"prompt_id": str(row.get("prompt_id", i)), "suite": "custom", "category": category,
                        "groups": ["all", category], "caption": row["caption"],
                        "foils": [f if isinstance(f, dict) else {"kind": "foil", "caption": f} for f in foils],
                        "spec": None, "heldout": bool(row.get("heldout", False))})
    if not prompts:
        raise DalleEvalError(f"--prompts {path}: no prompts in the file")
    return prompts
