"""Two-panel scenes: zero-shot image-to-image translation in the shapes world (issue 17 §1).

The DALL·E blog (OpenAI 2021) asks for "the exact same cat on the top as a sketch on the bottom" with the top
half given as image tokens. Here the canvas is split at its middle (the middle token row of any even grid:
at 64 px with an 8x8 grid, the top panel is token rows 0-3 and the bottom rows 4-7); a thin dark divider closes
the top panel. The top panel holds 1-3 objects, each in its own column of a 1x3 layout; the bottom panel should
hold the same objects, transformed:

- identity: "the exact same shapes on the top and on the bottom";
- recolour / resize / reshape: every object red / large / a circle ("... but red on the bottom");
- mirrored: left and right exchanged (an object in column c moves to column 2 - c);
- colour-swap: two colours exchanged between the objects (binding: each object keeps its shape and size).

Positions are fractions of the image side, as in scene.py; a bottom object sits half an image below its
top object (mirrored: at 1 - x). Same seed => same scenes => same bytes.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from PIL import Image, ImageDraw

from dalle_eval.errors import DalleEvalError
from dalle_eval.shapes.parse import ParsedObj, parse_image
from dalle_eval.shapes.render import render
from dalle_eval.shapes.scene import COLOURS, HELDOUT, SHAPES, SIZES, Obj, Scene

TRANSFORMS = ("identity", "recolour", "resize", "reshape", "mirrored", "colour-swap")
TRAINED = ("identity", "recolour")  # what data.translation_fraction puts into training; the others stay new
CHANGES = {  # the attributes each transform changes (mirrored moves whole objects)
    "identity": (), "recolour": ("colour",), "resize": ("size",), "reshape": ("shape",),
    "mirrored": ("shape", "colour", "size"), "colour-swap": ("colour",),
}
LEVELS = {"recolour": tuple(COLOURS), "resize": tuple(SIZES), "reshape": SHAPES}
PLURAL = {"square": "squares", "circle": "circles", "triangle": "triangles"}
COLUMNS = 3  # a panel's layout: one row of 3 cells
TOP_ROW = 0.25  # centre of the top panel's row (fraction of the image side); the bottom's is 0.75
DIVIDER = (20, 20, 20)  # far from every palette colour and the background: the parser never reads it
MAX_OBJECTS = 3
# the relation margin of shapes/parse.py: how far a drawn object may sit from where it should be
MARGIN = 0.08


@dataclass(frozen=True)
class Translation:
    """A two-panel prompt: the top panel's placed objects, the transform and its value (recolour: the colour,
    resize: the size, reshape: the shape, colour-swap: the two colours; identity and mirrored: none)."""

    top: tuple[Obj, ...]
    transform: str
    value: tuple[str, ...] = ()

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise DalleEvalError(f"unknown transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")
        if not 1 <= len(self.top) <= MAX_OBJECTS:
            raise DalleEvalError(f"a translation top panel holds 1-{MAX_OBJECTS} objects, got {len(self.top)}")
        want = 2 if self.transform == "colour-swap" else 1 if self.transform in LEVELS else 0
        levels = COLOURS if self.transform == "colour-swap" else LEVELS.get(self.transform, ())
        if len(self.value) != want or any(v not in levels for v in self.value):
            raise DalleEvalError(f"transform {self.transform} takes {want} value(s) of {', '.join(levels) or '-'}, "
                                 f"got {list(self.value)}")

    def to_json(self) -> dict:
        return {"kind": "translation", "transform": self.transform, "value": list(self.value),
                "top": [asdict(o) for o in self.top]}

    @staticmethod
    def from_json(d: dict) -> Translation:
        return Translation(tuple(Obj(**o) for o in d["top"]), d["transform"], tuple(d["value"]))

    @property
    def heldout(self) -> bool:
        return any((o.colour, o.shape) in HELDOUT for o in (*self.top, *self.bottom()))

    def bottom(self) -> tuple[Obj, ...]:
        """The bottom panel a correct translation draws, left to right."""
        return tuple(sorted((apply(self.transform, self.value, o) for o in self.top), key=lambda o: o.cx))

    def caption(self) -> str:
        return translation_caption(self.transform, self.value)


def apply(transform: str, value: tuple[str, ...], o: Obj) -> Obj:
    """Object `o` of the top panel as the bottom panel shows it."""
    o = replace(o, cy=o.cy + 0.5)
    if transform == "mirrored":
        return replace(o, cx=1 - o.cx)
    if transform == "colour-swap":
        a, b = value
        return replace(o, colour={a: b, b: a}.get(o.colour, o.colour))
    if transform in LEVELS:
        return replace(o, **{CHANGES[transform][0]: value[0]})
    return o


def translation_caption(transform: str, value: tuple[str, ...]) -> str:
    if transform == "identity":
        return "the exact same shapes on the top and on the bottom"
    if transform == "colour-swap":
        return f"the exact same shapes on the top but with {value[0]} and {value[1]} swapped on the bottom"
    said = "mirrored" if transform == "mirrored" else PLURAL[value[0]] if transform == "reshape" else value[0]
    return f"the exact same shapes on the top but {said} on the bottom"


def column(x: float) -> int:
    return min(COLUMNS - 1, max(0, int(x * COLUMNS)))


def panel_centre(rng: random.Random, col: int, size: str, row: float = TOP_ROW) -> tuple[float, float]:
    """A jittered centre in a panel cell (1/3 wide, 1/2 high), never touching a neighbour or the divider."""
    x_slack, y_slack = (1 / COLUMNS - SIZES[size]) / 2 * 0.3, (0.5 - SIZES[size]) / 2 * 0.3
    return (col + 0.5) / COLUMNS + rng.uniform(-x_slack, x_slack), row + rng.uniform(-y_slack, y_slack)


def placed(rng: random.Random, attrs: list[tuple[str, str, str]], row: float = TOP_ROW) -> tuple[Obj, ...]:
    """Objects with these attributes in random distinct columns of a panel, left to right."""
    cols = sorted(rng.sample(range(COLUMNS), len(attrs)))
    return tuple(Obj(*a, *panel_centre(rng, c, a[2], row)) for a, c in zip(attrs, cols))


def _attrs(rng: random.Random, colours: list[str], shapes=SHAPES, sizes=tuple(SIZES)) -> list[tuple[str, str, str]]:
    return [(rng.choice(shapes), c, rng.choice(sizes)) for c in colours]


def sample_translation(rng: random.Random, transform: str, allow_heldout: bool = False) -> Translation:
    """A seeded prompt of this transform whose bottom differs from its top in every object the transform
    touches: a copy of the top fails every transform but identity. Objects have distinct colours."""
    while True:
        n = rng.randint(2 if transform in ("mirrored", "colour-swap") else 1, MAX_OBJECTS)
        colours = rng.sample(list(COLOURS), n)
        value: tuple[str, ...] = ()
        if transform == "recolour":
            attrs, value = _attrs(rng, colours), (rng.choice([c for c in COLOURS if c not in colours]),)
        elif transform == "resize":
            value = (rng.choice(list(SIZES)),)
            attrs = _attrs(rng, colours, sizes=[z for z in SIZES if z != value[0]])
        elif transform == "reshape":
            value = (rng.choice(SHAPES),)
            attrs = _attrs(rng, colours, shapes=[s for s in SHAPES if s != value[0]])
        else:
            attrs = _attrs(rng, colours)
            if transform == "colour-swap":
                value = tuple(rng.sample(colours, 2))
        spec = Translation(placed(rng, attrs), transform, value)
        if transform == "mirrored" and [o.attrs for o in spec.bottom()] == [o.attrs for o in spec.top]:
            continue  # a symmetric row reads the same mirrored
        if allow_heldout or not spec.heldout:
            return spec


def _divider_rows(resolution: int) -> tuple[int, int]:
    """Pixel rows of the divider: the last rows of the top panel (1 px at 64 px)."""
    half = resolution // 2
    return half - max(1, resolution // 64), half


def render_panels(spec: Translation, resolution: int, bottom: tuple[Obj, ...] | None = None) -> Image.Image:
    """The two-panel canvas: the top objects, the divider and `bottom` (default: the correct translation;
    () = the blank bottom panel of the context image a completion starts from)."""
    if resolution % 2:
        raise DalleEvalError(f"a two-panel canvas splits at its middle: the resolution must be even, got {resolution}")
    objs = (*spec.top, *(spec.bottom() if bottom is None else bottom))
    image = render(Scene("multi", objs), resolution)
    y0, y1 = _divider_rows(resolution)
    ImageDraw.Draw(image).rectangle((0, y0, resolution - 1, y1 - 1), fill=DIVIDER)
    return image


def bottom_box(resolution: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixels of the bottom panel: where a completion draws."""
    return (0, resolution // 2, resolution, resolution)


def parse_panels(image: Image.Image) -> tuple[list[ParsedObj], list[ParsedObj]]:
    """(top, bottom) objects, each panel parsed on its own, coordinates as fractions of the whole image."""
    w, h = image.size
    out = []
    for y0, y1 in ((0, h // 2), (h // 2, h)):
        dy, scale = y0 / h, (y1 - y0) / h
        out.append([replace(p, cy=dy + p.cy * scale, y0=dy + p.y0 * scale, y1=dy + p.y1 * scale)
                    for p in parse_image(image.crop((0, y0, w, y1)))])
    return out[0], out[1]


def training_translation(rng: random.Random) -> Translation:
    """A training pair of data.translation_fraction: identity or recolour, never a held-out colour-shape pair."""
    return sample_translation(rng, rng.choice(TRAINED))
