"""Read an image of the shapes world back into objects, so probes measure instead of guess.

Median filter (removes pixel noise) -> nearest palette colour per pixel -> connected components per
colour -> shape from the component's geometry, size from its extent, centre from its centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from dalle_eval.shapes.scene import BACKGROUND, COLOURS, SIZES

_NAMES = list(COLOURS)
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)  # index 0 = background
_SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2
_MIN_AREA = 0.3 * SIZES["small"] ** 2  # a fraction of the image area; smaller blobs are noise


@dataclass(frozen=True)
class ParsedObj:
    shape: str
    colour: str
    size: str
    cx: float  # centroid, fraction of the image side
    cy: float
    x0: float  # bounding box, fraction of the image side
    y0: float
    x1: float
    y1: float

    @property
    def attrs(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.size)


def classify_pixels(rgb: np.ndarray, max_dist: float = 110.0) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) palette index; pixels far from every colour count as background."""
    d = np.linalg.norm(rgb[:, :, None, :].astype(np.float32) - _PALETTE[None, None], axis=-1)  # (H, W, P)
    labels = d.argmin(-1)
    labels[d.min(-1) > max_dist] = 0
    return labels


def _templates(h: int, w: int) -> dict[str, np.ndarray]:
    """Filled square, inscribed ellipse and apex-up triangle of an h x w bounding box."""
    y = (np.arange(h) + 0.5)[:, None] / h  # 0..1 from the top
    x = (np.arange(w) + 0.5)[None, :] / w
    return {
        "square": np.ones((h, w), dtype=bool),
        "circle": (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25,
        "triangle": np.abs(x - 0.5) <= y / 2,  # half-width grows linearly from apex to base
    }


def _shape_of(mask: np.ndarray) -> str:
    """The template with the best IoU against the component (cropped to its bounding box).

    Robust to blur and rounded corners of generated images; exact on clean renders.
    """
    ious = {}
    for name, t in _templates(*mask.shape).items():
        ious[name] = (mask & t).sum() / max(1, (mask | t).sum())
    return max(ious, key=ious.get)


def parse_image(image: Image.Image | np.ndarray, denoise: bool = True) -> list[ParsedObj]:
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if denoise:
        rgb = ndimage.median_filter(rgb, size=(3, 3, 1))
    res_y, res_x = rgb.shape[:2]
    labels = classify_pixels(rgb)
    min_area = _MIN_AREA * res_x * res_y
    found = []
    for idx, name in enumerate(_NAMES, start=1):
        comps, n = ndimage.label(labels == idx, structure=np.ones((3, 3)))
        if n == 0:
            continue
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[sl] == k
            if mask.sum() < min_area:
                continue
            ys, xs = np.nonzero(mask)
            y0, x0 = sl[0].start, sl[1].start
            h, w = mask.shape
            extent = max(h, w) / res_x
            found.append(
                ParsedObj(
                    shape=_shape_of(mask),
                    colour=name,
                    size="large" if extent > _SIZE_SPLIT else "small",
                    cx=(x0 + xs.mean() + 0.5) / res_x,
                    cy=(y0 + ys.mean() + 0.5) / res_y,
                    x0=x0 / res_x,
                    y0=y0 / res_y,
                    x1=(x0 + w) / res_x,
                    y1=(y0 + h) / res_y,
                )
            )
    found.sort(key=lambda o: (o.cy, o.cx))
    return found


def relation_holds(a: ParsedObj, b: ParsedObj, relation: str, margin: float = 0.08) -> bool:
    """Does `a <relation> b` hold in the image? Margins are fractions of the image side."""
    if relation == "above":
        return a.cy < b.cy - margin
    if relation == "below":
        return a.cy > b.cy + margin
    if relation == "left of":
        return a.cx < b.cx - margin
    if relation == "right of":
        return a.cx > b.cx + margin
    if relation == "on":  # resting on: a's bottom touches b's top, horizontally overlapping
        overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
        return a.cy < b.cy and abs(a.y1 - b.y0) < margin and overlap > 0
    raise ValueError(f"unknown relation {relation!r}")
