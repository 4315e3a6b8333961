"""The translation suite's checks, chance levels and report rows (shapes/panels.py draws its scenes).

Each panel of an image is parsed on its own. Objects are matched by position: each object the bottom should
show is matched to the parsed bottom object in its column (mirrored: the mirrored column) nearest to where it
should be. Checks:

- count: the bottom panel holds as many objects as the top;
- transform (not for identity): every matched object shows the transform (the new colour, size or shape; the
  swapped colour; mirrored: the object found in the mirrored column);
- unchanged (not for mirrored): every matched object keeps the attributes the transform does not change;
- position: every object within the parser's margin (0.08 of the side) of where it should be;
- translation: all of the above, all-or-nothing;
- copied (a diagnostic, not part of translation): the bottom panel repeats the parsed top panel, object for
  object (same attributes, same place half an image lower).

Chance is the score of the suite's random generator: the top kept, the bottom 1-3 objects (uniformly) with
uniform attributes in random distinct columns, by seeded Monte Carlo in scene space (the parser reads clean
renders exactly). `alternatives` are the likelihood scorer's candidate bottoms. `translation_table` gives the report's rows with chance, random-generator, copy-the-top and
oracle columns.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter

from PIL import Image

from dalle_eval.probes.checks import ATTRIBUTES, as_parsed, result
from dalle_eval.probes.tables import summarise
from dalle_eval.shapes import COLOURS, SHAPES, SIZES, ParsedObj, Scene
from dalle_eval.shapes.panels import (
    CHANGES,
    LEVELS,
    MARGIN,
    MAX_OBJECTS,
    TRANSFORMS,
    Translation,
    column,
    parse_panels,
    placed,
    render_panels,
)

MC_DRAWS = 2000
ORACLE_RESOLUTION = 64


def _centre(p: ParsedObj) -> tuple[float, float]:
    """Box centre (a triangle's centroid sits below it; its box centre is where it was drawn)."""
    return (p.x0 + p.x1) / 2, (p.y0 + p.y1) / 2


def _near(p: ParsedObj, x: float, y: float) -> bool:
    cx, cy = _centre(p)
    return abs(cx - x) < MARGIN and abs(cy - y) < MARGIN


def _match(want, bottom: list[ParsedObj]) -> list[ParsedObj | None]:
    """Each wanted object's parsed object: the one in its column nearest to where it should be, or None."""
    out = []
    for o in want:
        here = [p for p in bottom if column(_centre(p)[0]) == column(o.cx)]
        out.append(min(here, key=lambda p: sum((a - b) ** 2 for a, b in zip(_centre(p), (o.cx, o.cy))), default=None))
    return out


def copied(top: list[ParsedObj], bottom: list[ParsedObj]) -> bool:
    """Does the bottom panel repeat the top one, object for object, half an image lower?"""
    return len(top) == len(bottom) and all(
        any(b.attrs == t.attrs and _near(b, _centre(t)[0], _centre(t)[1] + 0.5) for b in bottom) for t in top)


def translation_checks(spec: Translation, top: list[ParsedObj], bottom: list[ParsedObj]) -> dict[str, bool]:
    """{check: passed} for the parsed panels of one image of a translation prompt (see the module doc)."""
    want = spec.bottom()
    matched = _match(want, bottom)
    changed = CHANGES[spec.transform]
    kept = [a for a in ATTRIBUTES if a not in changed]

    def agree(names) -> bool:
        return all(m is not None and all(getattr(m, a) == getattr(o, a) for a in names) for m, o in zip(matched, want))

    checks = {"count": len(bottom) == len(want)}
    if changed:
        checks["transform"] = agree(changed)
    if kept:
        checks["unchanged"] = agree(kept)
    checks["position"] = all(m is not None and _near(m, o.cx, o.cy) for m, o in zip(matched, want))
    checks["translation"] = all(checks.values())
    checks["copied"] = copied(top, bottom)
    return checks


def _alternative_value(top: tuple, transform: str) -> tuple[str, ...] | None:
    """A value of `transform` that changes some object of `top` (the first in a fixed order), or None."""
    if transform in ("identity", "mirrored"):
        return ()
    if transform == "colour-swap":
        colours = list(dict.fromkeys(o.colour for o in top))
        return tuple(colours[:2]) if len(colours) >= 2 else None
    attribute = CHANGES[transform][0]
    return next(((v,) for v in LEVELS[transform] if any(getattr(o, attribute) != v for o in top)), None)


def alternatives(spec: Translation) -> list[tuple[str, tuple]]:
    """[(kind, bottom objects)]: the truth first, then the copy of the top and every other transform applied to the
    same top, each drawing a different bottom (objects compared by attributes and column): the likelihood
    scorer's candidates."""
    def key(objs) -> tuple:
        return tuple(sorted((o.attrs, column(o.cx)) for o in objs))

    out = [("truth", spec.bottom())]
    for t in TRANSFORMS:
        value = None if t == spec.transform else _alternative_value(spec.top, t)
        if value is not None:
            bottom = Translation(spec.top, t, value).bottom()
            if all(key(bottom) != key(b) for _, b in out):
                out.append(("copy" if t == "identity" else t, bottom))
    return out


def random_bottom(rng: random.Random) -> tuple:
    """The random generator's bottom panel: 1-3 objects, uniform attributes, random distinct columns."""
    n = rng.randint(1, MAX_OBJECTS)
    attrs = [(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES))) for _ in range(n)]
    return placed(rng, attrs, row=0.75)


def _parsed(objs) -> list[ParsedObj]:
    return as_parsed(Scene("multi", tuple(objs)))


@functools.lru_cache(maxsize=1024)
def _monte_carlo(spec_json: str, draws: int) -> tuple[tuple[str, float], ...]:
    spec = Translation.from_json(json.loads(spec_json))
    rng, top, hits = random.Random(f"translation-chance-{spec_json}"), _parsed(spec.top), Counter()
    for _ in range(draws):
        hits.update(c for c, ok in translation_checks(spec, top, _parsed(random_bottom(rng))).items() if ok)
    return tuple((c, hits[c] / draws) for c in translation_checks(spec, top, []))


def translation_chance(spec: Translation, draws: int = MC_DRAWS) -> dict[str, float]:
    """{check: chance} of a translation prompt: the random generator simulated `draws` times (seeded, cached)."""
    return dict(_monte_carlo(json.dumps(spec.to_json(), sort_keys=True), draws))


def score_translation_image(spec: Translation, image: Image.Image, chance: dict[str, float] | None = None
                            ) -> dict[str, tuple[bool, float]]:
    """{check: (passed, chance)} for one two-panel image (any square size the parser reads, >= 64 px)."""
    chance = chance or translation_chance(spec)
    return {c: (ok, chance[c]) for c, ok in translation_checks(spec, *parse_panels(image)).items()}


def random_canvas(spec: Translation, rng: random.Random, resolution: int) -> Image.Image:
    return render_panels(spec, resolution, random_bottom(rng))


def copy_canvas(spec: Translation, resolution: int) -> Image.Image:
    """The copy-the-top baseline: the top panel repeated below."""
    return render_panels(spec, resolution, Translation(spec.top, "identity").bottom())


def _results(prompts: list[dict], draw) -> list[dict]:
    out = []
    for p in prompts:
        spec = Translation.from_json(p["spec"])
        checks = score_translation_image(spec, draw(spec))
        out += [result(p, c, ok, ch, "parser") for c, (ok, ch) in checks.items()]
    return out


def translation_table(prompts: list[dict], table: list[dict]) -> list[dict]:
    """The parser rows of the translation suite (split all) with two more baselines on the same prompts:
    copy (the top repeated below) and oracle (the correct bottom drawn), beside chance and the random generator."""
    rows = [r for r in table if r["suite"] == "translation" and r["scorer"] == "parser" and r["split"] == "all"]
    mine = [p for p in prompts if p["suite"] == "translation"]
    if not rows or not mine:
        return []
    baselines = {name: {(r["category"], r["check"]): r["accuracy"] for r in summarise(_results(mine, draw))}
                 for name, draw in (("copy", lambda s: copy_canvas(s, ORACLE_RESOLUTION)),
                                    ("oracle", lambda s: render_panels(s, ORACLE_RESOLUTION)))}
    return [{"transform": r["category"], "check": r["check"], "accuracy": r["accuracy"], "n": r["n"],
             "chance": r["chance"], "random": r.get("random"),
             **{name: b.get((r["category"], r["check"])) for name, b in baselines.items()}} for r in rows]
