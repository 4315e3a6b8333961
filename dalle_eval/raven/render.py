"""Draw Raven panels and matrices, and read panels back (exactly, on clean renders of >= 45 px).

Masks are drawn by PIL without anti-aliasing, so the same item gives the same bytes. Objects are regular
polygons (or a circle) centred in their slot, a grey-level interior inside a black outline on a white
canvas: the outline keeps the white colour level (index 0) visible against the background.

Parsing is analysis by synthesis: in every slot the observed object mask (ink pixels, holes filled) is
compared with the masks of all 30 (type, size) pairs drawn by this very module at this panel size; the
colour is the grey level nearest to the median of the best template's interior pixels. So a clean render
parses back exactly whenever a slot's 30 masks are distinct and all have an interior. Measured (every
side from 6 to 300 px): that holds from 15-px panels for center, 30 px for grid2x2 and 45 px for grid3x3
(EXACT_FROM), so 45 px for all configurations, i.e. matrices of >= 137 px.

Smaller matrices are matched in pixel L2, which is exact only if no two candidates of an item draw the same
pixels. Matrices are supported from MIN_RESOLUTION (64 px, 20-px cells: the tiny model's image size) up;
generate.py redraws any item whose candidates render alike at a cell side of a supported matrix
(`distinct_renders`; 7% of grid2x2 and 36% of grid3x3 draws), so the true answer is always matched back to
itself. Smaller matrices are refused: at 48 px, 20% of grid2x2 and 36% of grid3x3 items would have two
candidates drawn alike even so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from dalle_eval.errors import DalleEvalError
from dalle_eval.raven.schema import COLOURS, CONFIGS, GRID_SIDE, SIZES, TYPES, Panel, RavenItem

EXACT_FROM = {"center": 15, "grid2x2": 30, "grid3x3": 45}  # smallest panel side with render -> parse exact
MIN_EXACT_PANEL = max(EXACT_FROM.values())
MIN_RESOLUTION = 64  # smallest supported matrix (20-px cells): items draw 8 distinct candidates from here
WHITE, BLACK = 255, 0
_INK = (COLOURS[0] + COLOURS[1]) // 2  # darker than this = an object's outline or fill (not the canvas)
_HYPOTHESES = [(t, s) for t in TYPES for s in range(len(SIZES))]
# polygon vertex angles start here: triangle and pentagon apex up, square upright, hexagon flat-topped
_START_ANGLE = {"triangle": -90.0, "square": -45.0, "pentagon": -90.0, "hexagon": 0.0}
_SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}


def slot_boxes(config: str, side: int) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x0, y0, x1, y1), end-exclusive, of the config's slots, row-major."""
    g = GRID_SIDE[config]
    edges = [round(i * side / g) for i in range(g + 1)]
    return [(edges[c], edges[r], edges[c + 1], edges[r + 1]) for r in range(g) for c in range(g)]


@lru_cache(maxsize=1024)
def object_masks(w: int, h: int, shape: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(region, interior) boolean masks of one object centred in a w x h slot (read-only, cached).

    The region is what PIL covers when filling the polygon and its outline; the outline is the region
    minus its erosion. Painting outline and interior from one region (instead of letting PIL draw a fill
    and an outline, which it rasterises slightly differently) keeps the region a closed, hole-free outline
    of the same pixels whatever the fill colour, so the parser sees the same shape for every colour.
    """
    cx, cy = (w - 1) / 2 + 0.25, (h - 1) / 2 + 0.25  # off the pixel grid: sizes change by 1 px, not 2
    r = SIZES[size] * (min(w, h) - 1) / 2  # RAVEN-style size: circumradius as a fraction of the slot
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1, outline=1)
    else:
        n, a0 = _SIDES[shape], math.radians(_START_ANGLE[shape])
        angles = [a0 + 2 * math.pi * k / n for k in range(n)]
        draw.polygon(
            [(round(cx + r * math.cos(a)), round(cy + r * math.sin(a))) for a in angles], fill=1, outline=1
        )
    region = np.asarray(img, dtype=bool)
    interior = ndimage.binary_erosion(region)
    region.flags.writeable = interior.flags.writeable = False
    return region, interior


def _panel_gray(panel: Panel, config: str, side: int) -> np.ndarray:
    """(side, side) uint8: white canvas, each object a black outline around its grey-level interior."""
    out = np.full((side, side), WHITE, dtype=np.uint8)
    boxes = slot_boxes(config, side)
    for p in panel.positions:
        x0, y0, x1, y1 = boxes[p]
        region, interior = object_masks(x1 - x0, y1 - y0, panel.type, panel.size)
        crop = out[y0:y1, x0:x1]
        crop[region] = BLACK
        crop[interior] = COLOURS[panel.colour]
    return out


def render_panel(panel: Panel, config: str, size_px: int) -> Image.Image:
    """An RGB image of one panel, `size_px` on a side."""
    if config not in CONFIGS or size_px < 1:
        raise DalleEvalError(f"raven: cannot render config {config!r} at {size_px} px")
    return Image.fromarray(_panel_gray(panel, config, size_px)).convert("RGB")


@lru_cache(maxsize=65536)
def _slot_pixels(w: int, h: int, shape: str | None, size: int, colour: int) -> bytes:
    """The bytes one slot of a panel renders to (shape None: an empty slot), as _panel_gray paints it."""
    out = np.full((h, w), WHITE, dtype=np.uint8)
    if shape is not None:
        region, interior = object_masks(w, h, shape, size)
        out[region] = BLACK
        out[interior] = COLOURS[colour]
    return out.tobytes()


def _render_key(panel: Panel, config: str, side: int) -> tuple[bytes, ...]:
    """Equal keys <=> the two panels render to the same pixels at `side` (the slots tile the panel)."""
    return tuple(
        _slot_pixels(x1 - x0, y1 - y0, panel.type if k in panel.positions else None, panel.size, panel.colour)
        for k, (x0, y0, x1, y1) in enumerate(slot_boxes(config, side))
    )


@cache
def matched_sides(config: str) -> tuple[int, ...]:
    """Cell sides of supported matrices at which nearest_candidate matches in pixel L2, not by parsing."""
    return tuple(range(_layout(MIN_RESOLUTION)[0], EXACT_FROM[config]))


def distinct_renders(panels: Sequence[Panel], config: str) -> bool:
    """Do the panels draw pairwise different pixels at every cell side of a matrix >= MIN_RESOLUTION?

    From EXACT_FROM[config] up the parser tells every panel apart, below it they must differ in pixels.
    """
    return all(
        len({_render_key(p, config, side) for p in panels}) == len(panels) for side in matched_sides(config)
    )


# --------------------------------------------------------------------------- 3x3 matrix layout


def _layout(resolution: int) -> tuple[int, int, int]:
    """(cell side, separator width, margin): three cells and two thin lines, centred in the image."""
    if resolution < MIN_RESOLUTION:
        raise DalleEvalError(
            f"raven: a {resolution} px matrix is too small (some candidates draw the same pixels there); "
            f"the smallest supported Raven resolution is {MIN_RESOLUTION} px"
        )
    line = max(1, resolution // 200)
    cell = (resolution - 2 * line) // 3
    return cell, line, (resolution - 3 * cell - 2 * line) // 2


def cell_box(resolution: int, index: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), end-exclusive as for Image.crop, of cell `index` (row-major, 0..8)."""
    cell, line, margin = _layout(resolution)
    r, c = divmod(index, 3)
    x0, y0 = margin + c * (cell + line), margin + r * (cell + line)
    return (x0, y0, x0 + cell, y0 + cell)


def answer_box(resolution: int) -> tuple[int, int, int, int]:
    """The bottom-right cell: where a model completes the matrix (end-exclusive, Image.crop style)."""
    return cell_box(resolution, 8)


def render_matrix(item: RavenItem, resolution: int, answer: Panel | None = None) -> Image.Image:
    """The 8 context panels plus `answer` (blank when None) in a 3x3 layout with thin black separators."""
    cell, line, margin = _layout(resolution)
    img = Image.new("RGB", (resolution, resolution), (WHITE,) * 3)
    draw = ImageDraw.Draw(img)
    for k in (1, 2):  # separators between the cells, across the whole image
        at = margin + k * cell + (k - 1) * line
        draw.rectangle((at, 0, at + line - 1, resolution - 1), fill=(BLACK,) * 3)
        draw.rectangle((0, at, resolution - 1, at + line - 1), fill=(BLACK,) * 3)
    panels = [*item.context, answer]
    for i, panel in enumerate(panels):
        if panel is not None:
            img.paste(render_panel(panel, item.config, cell), cell_box(resolution, i)[:2])
    return img


# --------------------------------------------------------------------------- parsing


@lru_cache(maxsize=16)
def _templates(config: str, side: int) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]:
    """Per slot: its box, the (30, h, w) object regions and (30, h, w) interiors of every (type, size)."""
    out = []
    for box in slot_boxes(config, side):
        w, h = box[2] - box[0], box[3] - box[1]
        masks = [object_masks(w, h, shape, size) for shape, size in _HYPOTHESES]
        out.append((box, np.stack([m[0] for m in masks]), np.stack([m[1] for m in masks])))
    return out


def _gray(image: Image.Image | np.ndarray) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("L")
    if img.width != img.height:
        img = img.resize((img.width, img.width), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.int16)


def parse_panel(image: Image.Image | np.ndarray, config: str) -> Panel:
    """Read (type, size, colour, positions) back from a panel image; DalleEvalError if nothing fits."""
    gray = _gray(image)
    if config not in CONFIGS:
        raise DalleEvalError(f"raven: unknown config {config!r}; known: {', '.join(CONFIGS)}")
    templates = _templates(config, gray.shape[0])
    errors = np.zeros(len(_HYPOTHESES), dtype=np.int64)
    occupied, area = [], 0
    for k, (box, masks, _) in enumerate(templates):
        x0, y0, x1, y1 = box
        seen = ndimage.binary_fill_holes(gray[y0:y1, x0:x1] < _INK)
        if seen.sum() < 0.5 * masks.sum(axis=(1, 2)).min():  # specks are noise, not an object
            continue
        occupied.append(k)
        area += int(seen.sum())
        errors += (masks != seen).sum(axis=(1, 2))
    if not occupied:
        raise DalleEvalError("raven: no object found in the panel")
    best = int(errors.argmin())
    if errors[best] > 0.5 * area:
        raise DalleEvalError(
            f"raven: no shape fits the panel ({errors[best]} of {area} object pixels differ)"
        )
    inside = [
        gray[b[1] : b[3], b[0] : b[2]][interiors[best]]
        for b, _, interiors in (templates[k] for k in occupied)
    ]
    values = np.concatenate(inside)
    if values.size == 0:
        raise DalleEvalError("raven: objects too small to read their colour")
    colour = int(np.abs(np.array(COLOURS) - np.median(values)).argmin())
    shape, size = _HYPOTHESES[best]
    return Panel(shape, size, colour, tuple(occupied))


def _answer_cell(image: Image.Image | np.ndarray, resolution: int) -> np.ndarray:
    """The bottom-right cell of a matrix image (resized to `resolution` if needed), or a cell given alone."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    x0, y0, x1, y1 = answer_box(resolution)
    if img.size != (x1 - x0, y1 - y0):
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
        img = img.crop((x0, y0, x1, y1))
    return _gray(img)


def nearest_candidate(item: RavenItem, image: Image.Image | np.ndarray, resolution: int) -> int:
    """Index of the candidate closest to the completed bottom-right cell of `image`.

    `image` is a whole matrix (any size; resized to `resolution`) or just the answer cell. Parsing is
    trusted from EXACT_FROM[config] px up, where it is exact on clean renders; below that, or when the parse
    fails or matches no candidate, the candidate whose render is nearest in pixel L2 wins.
    """
    cell = _answer_cell(image, resolution)
    if cell.shape[0] >= EXACT_FROM[item.config]:
        try:
            parsed = parse_panel(cell.astype(np.uint8), item.config)
        except DalleEvalError:
            parsed = None
        if parsed in item.candidates:
            return item.candidates.index(parsed)
    side = cell.shape[0]
    renders = [_panel_gray(c, item.config, side).astype(np.float64) for c in item.candidates]
    return int(np.argmin([((r - cell) ** 2).sum() for r in renders]))
