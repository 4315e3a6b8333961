"""The shapes world: scene structure, deterministic sampling and captions written from the structure.

A scene is 1-4 objects (shape, colour, size, centre) on a plain background. Objects sit in the cells
of a 3x3 layout grid (so they never touch) except in stacks, where blocks rest on each other.
Same seed => same scenes => same bytes (see render.py).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

SHAPES = ("square", "circle", "triangle")
COLOURS = {  # name -> RGB; far apart so a parser can tell them under noise
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
BACKGROUND = (128, 128, 128)
# side / diameter as a fraction of the image side: as large as the 3x3 layout allows (at 0.30 the parser merges
# adjacent same-colour objects under noise), so an 8x8 code grid at 64 px still sees a small object's shape
SIZES = {"small": 0.22, "large": 0.29}
RELATIONS = ("above", "below", "left of", "right of")
RELATION_WORDS = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
KINDS = ("single", "count", "relation", "stack", "multi")
KIND_WEIGHTS = (0.3, 0.2, 0.25, 0.1, 0.15)
# Probe-only kinds: never drawn by sample_spec (training data), written and placed like the others.
# stack3: three blocks resting on each other, colours from top to bottom; described: the paper's style of
# multi-attribute prompts, each object named by its shape and given its attributes in its own clause.
PROBE_KINDS = ("stack3", "described")

# Compositional generalisation: these (colour, shape) pairs never appear in training scenes or captions.
HELDOUT = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})

CELLS = 3  # layout grid


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cx: float = 0.5  # centre, as a fraction of the image side
    cy: float = 0.5

    @property
    def attrs(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.size)


@dataclass(frozen=True)
class Scene:
    kind: str
    objects: tuple[Obj, ...]
    relation: str | None = None  # relation of objects[0] to objects[1]; "on" for stacks
    meta: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {"kind": self.kind, "relation": self.relation, "objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_json(d: dict) -> Scene:
        return Scene(d["kind"], tuple(Obj(**o) for o in d["objects"]), d.get("relation"))

    @property
    def heldout(self) -> bool:
        return any((o.colour, o.shape) in HELDOUT for o in self.objects)


def caption(scene: Scene) -> str:
    """The caption is written from the structure, so it carries every attribute and the relation."""
    objs = scene.objects
    if scene.kind == "single":
        o = objs[0]
        return f"a {o.size} {o.colour} {o.shape}"
    if scene.kind == "count":
        o = objs[0]
        if len(objs) == 1:  # probes ask for counts 1-4; training scenes (2-4) never reach this line
            return f"one {o.size} {o.colour} {o.shape}"
        return f"{NUMBER_WORDS[len(objs)]} {o.size} {o.colour} {o.shape}s"
    if scene.kind == "relation":
        a, b = objs
        return f"a {a.size} {a.colour} {a.shape} {RELATION_WORDS[scene.relation]} a {b.size} {b.colour} {b.shape}"
    if scene.kind == "stack":
        a, b = objs
        return f"a {a.size} {a.colour} block sitting on a {b.size} {b.colour} block"
    if scene.kind == "multi":
        parts = [f"a {o.size} {o.colour} {o.shape}" for o in objs]
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    if scene.kind == "stack3":
        colours = [o.colour for o in objs]
        return f"a stack of three {objs[0].size} blocks: {colours[0]} on top, {colours[1]} in the middle, {colours[2]} at the bottom"
    if scene.kind == "described":
        return ", ".join(f"the {o.shape} is {o.size} and {o.colour}" for o in objs)
    raise ValueError(f"unknown scene kind {scene.kind!r}")


# --------------------------------------------------------------------------- sampling


def _attrs(rng: random.Random, allow_heldout: bool, shape: str | None = None) -> tuple[str, str, str]:
    while True:
        s = shape or rng.choice(SHAPES)
        c = rng.choice(list(COLOURS))
        if allow_heldout or (c, s) not in HELDOUT:
            return s, c, rng.choice(list(SIZES))


def sample_spec(rng: random.Random, kind: str | None = None, allow_heldout: bool = False) -> Scene:
    """Objects and relation without positions (the thing a caption pins down)."""
    kind = kind or rng.choices(KINDS, KIND_WEIGHTS)[0]
    if kind == "single":
        objs = [Obj(*_attrs(rng, allow_heldout))]
        return Scene(kind, tuple(objs))
    if kind == "count":
        s, c, z = _attrs(rng, allow_heldout)
        return Scene(kind, tuple(Obj(s, c, z) for _ in range(rng.randint(2, 4))))
    if kind in ("relation", "stack"):
        shape = "square" if kind == "stack" else None
        while True:
            a, b = _attrs(rng, allow_heldout, shape), _attrs(rng, allow_heldout, shape)
            if a[:2] != b[:2] and (kind == "relation" or a[1] != b[1]):  # stacked blocks differ in colour
                break
        rel = "on" if kind == "stack" else rng.choice(RELATIONS)
        return Scene(kind, (Obj(*a), Obj(*b)), rel)
    if kind == "multi":
        n = rng.randint(3, 4)
        seen: list[tuple[str, str, str]] = []
        while len(seen) < n:
            a = _attrs(rng, allow_heldout)
            if all(a[:2] != s[:2] for s in seen):
                seen.append(a)
        return Scene(kind, tuple(Obj(*a) for a in seen))
    raise ValueError(f"unknown scene kind {kind!r}; known: {', '.join(KINDS)}")


def _cell_centre(rng: random.Random, cell: int, size: str) -> tuple[float, float]:
    row, col = divmod(cell, CELLS)
    slack = (1 / CELLS - SIZES[size]) / 2 * 0.3  # jitter inside the cell, never touching a neighbour
    return ((col + 0.5) / CELLS + rng.uniform(-slack, slack), (row + 0.5) / CELLS + rng.uniform(-slack, slack))


def _cells_for_relation(rng: random.Random, rel: str) -> tuple[int, int]:
    while True:
        a, b = rng.sample(range(CELLS * CELLS), 2)
        (ra, ca), (rb, cb) = divmod(a, CELLS), divmod(b, CELLS)
        ok = {"above": ra < rb, "below": ra > rb, "left of": ca < cb, "right of": ca > cb}[rel]
        if ok:
            return a, b


def place(spec: Scene, rng: random.Random) -> Scene:
    """Give every object of a spec a position that makes its caption true."""
    objs = spec.objects
    if spec.kind == "stack":
        top, bottom = objs
        bw, tw = SIZES[bottom.size], SIZES[top.size]
        bx = rng.uniform(0.2, 0.8)
        by = rng.uniform(0.62, 0.8)
        tx = bx + rng.uniform(-0.15, 0.15) * min(bw, tw)
        ty = by - bw / 2 - tw / 2
        placed = (Obj(*top.attrs, cx=tx, cy=ty), Obj(*bottom.attrs, cx=bx, cy=by))
        return Scene(spec.kind, placed, spec.relation)
    if spec.kind == "stack3":  # (probe kind) bottom block first, each next one resting on the one below
        x, y = rng.uniform(0.25, 0.75), rng.uniform(0.7, 0.8)
        out = [Obj(*objs[-1].attrs, cx=x, cy=y)]
        for below, o in zip(objs[::-1], objs[-2::-1]):
            w_below, w = SIZES[below.size], SIZES[o.size]
            x, y = x + rng.uniform(-0.15, 0.15) * min(w_below, w), y - w_below / 2 - w / 2
            out.append(Obj(*o.attrs, cx=x, cy=y))
        return Scene(spec.kind, tuple(out[::-1]), spec.relation)
    if spec.kind == "relation":
        cells = list(_cells_for_relation(rng, spec.relation))
    else:
        cells = rng.sample(range(CELLS * CELLS), len(objs))
    placed = tuple(Obj(*o.attrs, *_cell_centre(rng, c, o.size)) for o, c in zip(objs, cells))
    return Scene(spec.kind, placed, spec.relation)


def sample_scene(rng: random.Random, kind: str | None = None, allow_heldout: bool = False) -> Scene:
    return place(sample_spec(rng, kind, allow_heldout), rng)
