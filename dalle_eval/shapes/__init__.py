"""The shapes world: the embedded default data and the exact ground truth for probes (leaf package)."""

from dalle_eval.shapes.parse import ParsedObj, parse_image, relation_holds
from dalle_eval.shapes.render import render
from dalle_eval.shapes.scene import (
    COLOURS,
    HELDOUT,
    KINDS,
    PROBE_KINDS,
    RELATIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    caption,
    place,
    sample_scene,
    sample_spec,
)

__all__ = [
    "COLOURS", "HELDOUT", "KINDS", "PROBE_KINDS", "RELATIONS", "SHAPES", "SIZES", "Obj", "ParsedObj", "Scene",
    "caption", "parse_image", "place", "relation_holds", "render", "sample_scene", "sample_spec",
]
