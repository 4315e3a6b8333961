"""Chance = the score of each suite's random generator, exact where a closed form exists, else Monte Carlo.

The random generator of a shapes prompt draws, for that prompt, the same number of objects (a count
prompt, whose caption states the number: 1-4 uniformly) with shape, colour and size drawn uniformly and
independently, laid out like the prompt's kind with random positions: separate objects in random cells
of the layout grid (so a stated relation holds only by chance), stacks as stacks of blocks of different
colours (one colour twice would read as one block; which block ends up on which is down to the draws). A Raven generator picks one of the 8 candidates uniformly.

Every check of the parser scorer then has a closed form below (uniform, independent draws; the parser
reads a clean render exactly). `monte_carlo_chance` scores the same generator by simulation in scene
space; it serves specs outside the closed forms (repeated objects in a binding prompt) and the tests that
hold the closed forms to it. `random_scene` renders the generator, for the "random generator" column. The
translation suite's generator and chance levels are in probes/translation.py.
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter

from dalle_eval.probes.checks import STACKS, as_parsed, result, scene_checks
from dalle_eval.probes.suites import COUNTS
from dalle_eval.probes.translation import random_canvas, score_translation_image
from dalle_eval.shapes import COLOURS, SHAPES, SIZES, Obj, Scene, parse_image, place
from dalle_eval.shapes.panels import Translation
from dalle_eval.shapes.scene import CELLS

SUITE_VERSION = 2  # bump when prompts, the generator or the checks change: keys the Monte Carlo cache
MC_DRAWS = 20_000
N_ATTRS = len(SHAPES) * len(COLOURS) * len(SIZES)
N_CANDIDATES = 8


def multiset_chance(values: list[str], levels: int) -> float:
    """P(n uniform draws from `levels` values form this multiset) = multinomial(n; m_1..m_k) / levels^n."""
    ways = math.factorial(len(values))
    for m in Counter(values).values():
        ways //= math.factorial(m)
    return ways / levels ** len(values)


def _largest_has_size(size: str, n: int) -> float:
    """P(the largest of n random objects has `size`): it is large unless all n are small."""
    p_small = 0.5**n
    return p_small if size == "small" else 1 - p_small


def _p_relation(relation: str) -> float:
    """P(a stated relation holds between two objects in random distinct cells of the 3x3 grid): a above b
    iff a's row is smaller, 3 of the 3x3 row pairs x 3 x 3 columns = 27 of 72 ordered cell pairs; the same
    for below, left of, right of (the jitter inside a cell never crosses the parser's 0.08 margin)."""
    pairs = [(a, b) for a in range(CELLS * CELLS) for b in range(CELLS * CELLS) if a != b]
    axis = 0 if relation in ("above", "below") else 1
    before = sum(divmod(a, CELLS)[axis] < divmod(b, CELLS)[axis] for a, b in pairs)
    return before / len(pairs)


def closed_form_chance(spec: Scene) -> dict[str, float] | None:
    """{check: chance} of the parser scorer's checks for this prompt, or None when no closed form applies."""
    want = spec.objects[0]
    n = len(spec.objects)
    attr = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES)}
    if spec.kind == "single":
        return {**attr, "size": 1 / len(SIZES), "object": 1 / N_ATTRS}
    if spec.kind == "count":
        size = sum(_largest_has_size(want.size, k) for k in COUNTS) / len(COUNTS)
        return {"count": 1 / len(COUNTS), **attr, "size": size}
    if len({o.attrs for o in spec.objects}) < n:
        return None  # repeated objects in a binding prompt: matching is no longer independent
    out = {"count": 1.0}  # the generator draws the stated number of objects
    for name, levels in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES))):
        out[f"{name}s"] = multiset_chance([getattr(o, name) for o in spec.objects], levels)
    p_obj = 1 / N_ATTRS
    if spec.kind in STACKS:
        if len({o.colour for o in spec.objects}) < n:
            return None
        return {**out, **_stack_chance(n, p_obj)}
    for i in range(n):  # some of the n random objects has all of object i's attributes
        out[f"object_{i}"] = 1 - (1 - p_obj) ** n
    if spec.relation is not None:  # both objects drawn (either way round), then the right cells
        out["relation"] = out["image"] = math.factorial(n) * p_obj**n * _p_relation(spec.relation)
    else:  # the n stated objects drawn in any order
        out["image"] = math.factorial(n) * p_obj**n
    return out


def _stack_chance(n: int, p_obj: float) -> dict[str, float]:
    """Stacks of n blocks of n different colours (one colour twice would be one block): colours are
    drawn without replacement, so at most one block has a stated block's colour."""
    ordered = math.perm(len(COLOURS), n)  # ordered colour draws
    p_rest = p_obj * len(COLOURS)  # shape and size of one block
    out = {f"object_{i}": n * p_obj for i in range(n)}  # block j has object i's colour w.p. 1/6: disjoint events
    out["colours"] = math.factorial(n) / ordered
    out["relation"] = out["image"] = p_rest**n / ordered  # exactly the stated stack, top to bottom
    return out


def random_scene(spec: Scene, rng: random.Random) -> Scene:
    """One draw of the suite's random generator for a prompt with this spec (positions included)."""
    n = rng.choice(COUNTS) if spec.kind == "count" else len(spec.objects)
    stack = spec.kind in STACKS
    colours = rng.sample(list(COLOURS), n) if stack else [rng.choice(list(COLOURS)) for _ in range(n)]
    objs = tuple(Obj(rng.choice(SHAPES), c, rng.choice(list(SIZES))) for c in colours)
    if stack:
        return place(Scene("stack" if n == 2 else "stack3", objs, "on"), rng)
    return place(Scene("multi", objs), rng)  # random distinct cells


@functools.lru_cache(maxsize=4096)
def _monte_carlo(spec_key: tuple, draws: int, seed: int, version: int) -> tuple[tuple[str, float], ...]:
    kind, relation, objs = spec_key
    spec = Scene(kind, tuple(Obj(*a) for a in objs), relation)
    rng = random.Random(f"chance-{version}-{seed}-{spec_key}")
    hits: Counter = Counter()
    for _ in range(draws):
        for check, passed in scene_checks(spec, as_parsed(random_scene(spec, rng))).items():
            hits[check] += passed
    checks = scene_checks(spec, as_parsed(random_scene(spec, rng)))
    return tuple((c, hits[c] / draws) for c in checks)


def monte_carlo_chance(spec: Scene, draws: int = MC_DRAWS, seed: int = 0) -> dict[str, float]:
    """{check: chance} by simulating the random generator `draws` times (seeded; cached per suite version)."""
    key = (spec.kind, spec.relation, tuple(o.attrs for o in spec.objects))
    return dict(_monte_carlo(key, draws, seed, SUITE_VERSION))


def scene_chance(spec: Scene) -> dict[str, float]:
    """{check: chance} of a shapes prompt: closed form, else seeded Monte Carlo."""
    return closed_form_chance(spec) or monte_carlo_chance(spec)


def random_images(prompts: list[dict], per_prompt: int, resolution: int, seed: int = 0):
    """Yield (prompt, image) of the random generator for the shapes and translation prompts (translation: the
    top panel kept, a random bottom; probes/translation.py)."""
    from dalle_eval.shapes import render

    for p in prompts:
        if p["suite"] == "raven" or p.get("spec") is None:
            continue
        rng = random.Random(f"random-generator-{seed}-{p['prompt_id']}")
        if p["suite"] == "translation":
            spec = Translation.from_json(p["spec"])
            yield from ((p, random_canvas(spec, rng, resolution)) for _ in range(per_prompt))
            continue
        spec = Scene.from_json(p["spec"])
        for _ in range(per_prompt):
            yield p, render(random_scene(spec, rng), resolution)


def random_generator_results(prompts: list[dict], per_prompt: int = 8, resolution: int = 64,
                             seed: int = 0) -> list[dict]:
    """Parser results of the random generator on `prompts` (rendered and parsed; a Raven generator picks a
    candidate uniformly): the "random generator" column beside chance in every report."""
    out = []
    for i, (p, image) in enumerate(random_images(prompts, per_prompt, resolution, seed)):
        if p["suite"] == "translation":
            scored = score_translation_image(Translation.from_json(p["spec"]), image)
            out += [result(p, c, ok, ch, "parser", file=f"random-{i}") for c, (ok, ch) in scored.items()]
            continue
        spec = Scene.from_json(p["spec"])
        chance = scene_chance(spec)
        checks = scene_checks(spec, parse_image(image))
        out += [result(p, c, ok, chance[c], "parser", file=f"random-{i}") for c, ok in checks.items()]
    for p in (p for p in prompts if p["suite"] == "raven"):
        rng = random.Random(f"random-generator-{seed}-{p['prompt_id']}")
        answer = p["spec"]["answer"]
        out += [result(p, "answer", rng.randrange(N_CANDIDATES) == answer, 1 / N_CANDIDATES, "parser")
                for _ in range(per_prompt)]
    return out
