"""Read an image of the shapes world back into objects, so probes measure instead of guess.

Nearest palette colour per pixel -> 3x3 mode filter of the labels (removes pixel noise) -> connected
components per colour -> shape and size from the moments of the colour's coverage around the component,
centre from its centroid.
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
    flat = rgb.reshape(-1, 3).astype(np.float32)  # (H*W, 3)
    d2 = (flat**2).sum(1, keepdims=True) - 2 * flat @ _PALETTE.T + (_PALETTE**2).sum(1)  # (H*W, P): |p - c|^2
    labels = d2.argmin(1)
    labels[d2.min(1) > max_dist**2] = 0
    return labels.reshape(rgb.shape[:2])


def mode_filter(labels: np.ndarray) -> np.ndarray:
    """Each pixel takes the most common label of its 3x3 neighbourhood (its own label wins ties).

    Denoising labels, not colours: a per-channel median of two touching blocks invents a third colour
    along their seam (red | blue -> purple), which ate the corners of stacked blocks.
    """
    counts = np.stack([ndimage.uniform_filter((labels == k).astype(np.float32), size=3, mode="nearest")
                       for k in range(len(_PALETTE))])  # (P, H, W)
    counts += 0.01 * (np.arange(len(_PALETTE))[:, None, None] == labels[None])
    return counts.argmax(0)


def membership(rgb: np.ndarray, colour: int) -> np.ndarray:
    """Soft coverage of each pixel by palette colour `colour` in [0, 1]: its projection on the segment
    background -> colour. Blur and JPEG move coverage between pixels but keep its sum (the area)."""
    bg, c = _PALETTE[0], _PALETTE[colour]
    m = (rgb.astype(np.float32) - bg) @ (c - bg) / float((c - bg) @ (c - bg))
    return np.clip(m, 0.0, 1.0)


# Shape signatures of the coverage moments (continuous shapes): skewness of y (apex-up triangle: density
# ∝ distance from the apex, skew -2√2/5 ≈ -0.57; square, circle: 0) and mu22 / (var_x var_y), the mass
# in the diagonals (square: 1, x and y independent; disc: (R^4/24) / (R^2/4)^2 = 2/3).
_TRIANGLE_SKEW = -0.2
_SQUARE_CROSS = 0.8
_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}  # area / side^2


def shape_and_side(weights: np.ndarray) -> tuple[str, float]:
    """(shape, side in pixels) from an object's coverage map (weights over its neighbourhood)."""
    area = float(weights.sum())
    ys, xs = np.indices(weights.shape, dtype=np.float64)
    my, mx = (weights * ys).sum() / area, (weights * xs).sum() / area
    dy, dx = ys - my, xs - mx
    vy, vx = (weights * dy**2).sum() / area, (weights * dx**2).sum() / area
    skew = (weights * dy**3).sum() / area / max(vy, 1e-9) ** 1.5
    cross = (weights * dx**2 * dy**2).sum() / area / max(vx * vy, 1e-9)
    shape = "triangle" if skew < _TRIANGLE_SKEW else "square" if cross > _SQUARE_CROSS else "circle"
    return shape, float(np.sqrt(area / _FILL[shape]))


def parse_image(image: Image.Image | np.ndarray, denoise: bool = True) -> list[ParsedObj]:
    """Objects of a shapes-world image: colour by nearest palette entry, one object per connected
    component, shape and size from the coverage moments around the component (robust to blur and JPEG)."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    res_y, res_x = rgb.shape[:2]
    labels = classify_pixels(rgb)
    if denoise:
        labels = mode_filter(labels)
    min_area = _MIN_AREA * res_x * res_y
    found = []
    for idx, name in enumerate(_NAMES, start=1):
        comps, n = ndimage.label(labels == idx, structure=np.ones((3, 3)))
        if n == 0:
            continue
        cover = membership(rgb, idx)
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[sl] == k
            if mask.sum() < min_area:
                continue
            y0, x0 = sl[0].start, sl[1].start
            h, w = mask.shape
            # the component grown by 2 px into background: blurred edges belong to the object
            grow = (slice(max(0, y0 - 2), y0 + h + 2), slice(max(0, x0 - 2), x0 + w + 2))
            own = comps[grow] == k
            near = ndimage.binary_dilation(own, iterations=2) & ((labels[grow] == 0) | own)
            shape, side = shape_and_side(np.where(near, cover[grow], 0.0))
            ys, xs = np.nonzero(mask)
            found.append(
                ParsedObj(
                    shape=shape,
                    colour=name,
                    size="large" if side / res_x > _SIZE_SPLIT else "small",
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
