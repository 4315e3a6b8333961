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
items.py redraws any item whose candidates render alike at a cell side of a supported matrix
(`distinct_renders`; 7% of grid2x2 and 36% of grid3x3 draws), so the true answer is always matched back to
itself. Smaller matrices are refused: at 48 px, 20% of grid2x2 and 36% of grid3x3 items would have two
candidates drawn alike even so.

A matrix drawn at one size and resized to another (another generator's pipeline) is matched by finding the
source size and the resize (PIL's nearest, box, bilinear, hamming, bicubic or Lanczos; torch's and OpenCV's
nearest) that reproduce its context, then drawing the candidates the same way ("resized matrices" below).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def _match_drawn_here(item: RavenItem, cell: np.ndarray) -> int:
    """The candidate of a cell drawn at its own size: its parse from EXACT_FROM px up, else pixel L2."""
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


def nearest_candidate(item: RavenItem, image: Image.Image | np.ndarray, resolution: int) -> int:
    """Index of the candidate closest to the completed bottom-right cell of `image`.

    `image` is a whole square matrix of any size >= MIN_RESOLUTION (read at its own size; a non-square one
    is resized to `resolution`), or just the answer cell of a matrix drawn at `resolution` px. A matrix
    whose context is clearly better explained as a resize of our render at another size is read that way:
    the size and the resize are found (`_find_source`), the candidates are drawn and resized the same way
    and the nearest in pixel L2 around the answer cell wins. A matrix drawn at its own size (or a lone cell)
    is parsed from EXACT_FROM[config] px up (exact on clean renders) and, below that or when the parse
    fails or matches no candidate, the candidate whose render is nearest in pixel L2 wins.
    """
    img = _gray_image(image)
    side = answer_box(resolution)[2] - answer_box(resolution)[0]  # refuses resolutions under 64 px
    if img.size == (side, side):
        return _match_drawn_here(item, np.asarray(img, dtype=np.int16))
    if img.width != img.height:
        img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    t = img.width
    gray = np.asarray(img, dtype=np.float32)
    source = _find_source(item, gray)
    if source is None:
        x0, y0, x1, y1 = answer_box(t)
        return _match_drawn_here(item, gray[y0:y1, x0:x1].astype(np.int16))
    return _match_resized(item, gray, *source)


# --------------------------------------------------------------------------- resized matrices
#
# Another generator gets our context matrix at the export resolution s and may resize it to its own size t
# before drawing the answer. Read at t, our layout and renders are then off by up to a few pixels (the cell
# is 84/256 of the side at s = 256, 20/64 at t = 64) and the rasterisation of every edge differs, so neither
# the parse nor a pixel distance to renders at t is reliable (64 -> 256 px bicubic: 65-69% of true answers
# read right). So the analysis by synthesis goes one level up: find the source size s and the resize that
# make our render at s reproduce the image's context, then draw every candidate into the answer cell at s,
# resize the same way and take the nearest. PIL's resizes are deterministic, so a resized render is
# reproduced exactly (up to round-off); for any other image the best explanation tried wins, and an image
# that no resize explains clearly better than our render at its own size is read as drawn at its own size.

_SMOOTH = {  # filters that average pixels: PIL's antialiased resizes
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_NEAREST = ("nearest", "nearest-floor")  # PIL's (pixel centres, as torch 'nearest-exact'), torch/OpenCV's
_PALETTE = np.isin(np.arange(256), [WHITE, BLACK, *COLOURS])  # the grey levels a render is made of
_SEARCH = 6144  # a smooth resize's source is searched among the _SEARCH / t (>= 24) likeliest sizes,
_FILTERS = 2  # each with the _FILTERS likeliest filters
_EXACT_MSE = 1.0  # context reproduced up to PIL's round-off: the source is found, stop searching
_CLEARLY = 0.5  # a resize must halve the context error of our render at the image's size, sharp or blurred
_BLURS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)  # (Gaussian sigma: a decoder's output is not sharp)


def _gray_image(image: Image.Image | np.ndarray) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return img.convert("L")


def _reach(t: int) -> int:
    """How far (t px) a resize filter spreads a pixel: Lanczos' 3 lobes, widened by upscaling from >= 64."""
    return math.ceil(3 * max(1.0, t / MIN_RESOLUTION)) + 1


def _answer_zone(t: int) -> int:
    """First row/column of a t-px image that a resized answer cell can touch, whatever the source size."""
    return 2 * t // 3 - _reach(t)  # the answer cell starts at >= 2/3 of the side at every resolution


def _sources(t: int) -> np.ndarray:
    """Source sizes considered for a t-px image: 64 px up to a 4x downscale (within 256..1024), t excluded."""
    return np.array([s for s in range(MIN_RESOLUTION, max(256, min(4 * t, 1024)) + 1) if s != t])


@lru_cache(maxsize=4096)
def _nearest_index(s: int, t: int, name: str) -> np.ndarray:
    """The source pixel of each target pixel of a nearest-neighbour resize s -> t.

    "nearest": PIL's (its affine loop, accumulated step by step, so the same float round-off);
    "nearest-floor": floor(i * s / t), torch's default 'nearest' and OpenCV's INTER_NEAREST.
    """
    step = s / t
    if name == "nearest-floor":
        return np.minimum(np.floor(np.arange(t) * step), s - 1).astype(np.intp)
    return np.floor(np.add.accumulate(np.r_[step * 0.5, np.full(t - 1, step)])).astype(np.intp)


@lru_cache(maxsize=256)
def _panel_pixels(panel: Panel, config: str, side: int) -> np.ndarray:
    out = _panel_gray(panel, config, side)
    out.flags.writeable = False
    return out


def _matrix_corner(item: RavenItem, s: int, x0: int, answer: Panel | None) -> np.ndarray:
    """render_matrix(item, s, answer)[x0:, x0:] (grey), drawing only the cells that reach into it."""
    cell, line, margin = _layout(s)
    out = np.full((s - x0, s - x0), WHITE, dtype=np.uint8)
    for k in (1, 2):
        at = margin + k * cell + (k - 1) * line - x0
        if at + line > 0:
            out[:, max(at, 0) : at + line] = BLACK
            out[max(at, 0) : at + line, :] = BLACK
    for i, panel in enumerate([*item.context, answer]):
        bx, by, _, _ = cell_box(s, i)
        if panel is None or bx + cell <= x0 or by + cell <= x0:
            continue
        pixels = _panel_pixels(panel, item.config, cell)
        cx, cy = max(bx, x0), max(by, x0)
        out[cy - x0 : by + cell - x0, cx - x0 : bx + cell - x0] = pixels[cy - by :, cx - bx :]
    return out


def _resized_corner(item: RavenItem, s: int, t: int, r0: int, answer: Panel | None, filters: Sequence[str]
                    ) -> list[np.ndarray]:
    """Rows and columns r0.. of render_matrix(item, s, answer) resized to t px, once per filter."""
    if s == t or not filters:
        return [_matrix_corner(item, t, r0, answer).astype(np.float32)] * len(filters)
    if all(name in _NEAREST for name in filters):
        x0 = min(int(_nearest_index(s, t, name)[r0]) for name in filters)
    else:  # the source pixels a smooth filter reaches beyond the corner too
        x0 = max(0, math.floor(r0 * s / t) - math.ceil(3 * max(1.0, s / t)) - 2)
    corner = _matrix_corner(item, s, x0, answer)
    out = []
    for name in filters:
        if name in _NEAREST:
            at = _nearest_index(s, t, name)[r0:] - x0
            out.append(corner[np.ix_(at, at)].astype(np.float32))
        else:
            box = (r0 * s / t - x0,) * 2 + (s - x0,) * 2
            resized = Image.fromarray(corner).resize((t - r0, t - r0), _SMOOTH[name], box=box)
            out.append(np.asarray(resized, dtype=np.float32))
    return out


def _separator_columns(s: int) -> np.ndarray:
    """(s,) bool: the columns (and rows) of an s-px matrix that its two separators cover."""
    cell, line, margin = _layout(s)
    out = np.zeros(s, dtype=bool)
    for k in (1, 2):
        out[margin + k * cell + (k - 1) * line : margin + k * (cell + line)] = True
    return out


@lru_cache(maxsize=16)
def _line_windows(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns around the two separators, rows away from every separator and the border) of a t-px image."""
    h = math.ceil(0.01 * t) + _reach(t)
    cols = np.concatenate([np.arange(round(k * t / 3) - h, round(k * t / 3) + h + 1) for k in (1, 2)])
    rows = np.ones(t, dtype=bool)
    for k in range(4):
        rows[max(0, round(k * t / 3) - h) : round(k * t / 3) + h + 1] = False
    return cols, np.flatnonzero(rows)


@lru_cache(maxsize=16)
def _smooth_profiles(t: int) -> tuple[np.ndarray, np.ndarray]:
    """((source size x smooth filter, window) darkness of the separators resized to t px, squared norms).

    A separator spans the image, so its resized profile is the 1-D resize of a row that crosses no object.
    """
    cols, _ = _line_windows(t)
    rows = []
    for s in _sources(t):
        row = Image.fromarray(np.where(_separator_columns(int(s)), BLACK, WHITE).astype(np.uint8)[None, :])
        for f in _SMOOTH.values():
            rows.append(1 - np.asarray(row.resize((t, 1), f), dtype=np.float32)[0, cols] / 255)
    table = np.stack(rows)
    return table, (table**2).sum(axis=1)


def _separator_darkness(gray: np.ndarray) -> np.ndarray:
    """(2, window) darkness across the vertical and the horizontal separators, objects mostly left out.

    Per column, a low quantile over the rows away from the other separators: a separator darkens every row,
    an object only some.
    """
    cols, rows = _line_windows(gray.shape[0])
    k = len(rows) // 10
    return 1 - np.stack([np.partition(g[np.ix_(rows, cols)], k, axis=0)[k] for g in (gray, gray.T)]) / 255


def _smooth_sources(gray: np.ndarray) -> list[tuple[int, tuple[str, ...]]]:
    """The source sizes whose separators, resized by their best-fitting smooth filter, look most like the
    image's, best first, each with its _FILTERS best-fitting filters.

    As many as cost about the same at every image size, _SEARCH / t but at least 24: more at small sizes,
    where a separator of a 4x downscale is a quarter pixel wide and objects touching it blur the ranking.
    """
    t = gray.shape[0]
    table, norms = _smooth_profiles(t)
    seen = _separator_darkness(gray)
    loss = (2 * norms - 2 * table @ (seen[0] + seen[1])).reshape(-1, len(_SMOOTH))  # + a constant
    names, sources = list(_SMOOTH), _sources(t)
    return [
        (int(sources[j]), tuple(names[i] for i in np.argsort(loss[j], kind="stable")[:_FILTERS]))
        for j in np.argsort(loss.min(axis=1), kind="stable")[: max(24, _SEARCH // t)]
    ]


@lru_cache(maxsize=16)
def _nearest_separators(t: int, name: str) -> np.ndarray:
    """(source size, t) bool: the columns of a t-px nearest-neighbour resize that show a separator."""
    return np.stack([_separator_columns(int(s))[_nearest_index(int(s), t, name)] for s in _sources(t)])


def _nearest_sources(gray: np.ndarray) -> list[tuple[int, str]]:
    """The (source size, convention) from which a nearest-neighbour resize can give this image, smallest
    first (an upscale by f is also consistent with most sizes up to 2f times larger, not smaller).

    Black across the whole image is a separator and nothing else; and two different neighbouring rows or
    columns cannot come from one source pixel.
    """
    t = gray.shape[0]
    black_cols, black_rows = gray.max(axis=0) == BLACK, gray.max(axis=1) == BLACK
    differ = (np.diff(gray, axis=0) != 0).any(axis=1) | (np.diff(gray, axis=1) != 0).any(axis=0)
    changes = np.flatnonzero(differ)  # i such that rows or columns i and i + 1 differ
    out = []
    for name in _NEAREST:
        separators = _nearest_separators(t, name)
        fit = (separators == black_cols).all(axis=1) & (separators == black_rows).all(axis=1)
        for s in _sources(t)[fit]:
            at = _nearest_index(int(s), t, name)
            if (at[changes + 1] != at[changes]).all():
                out.append((int(s), name))
    return out


def _find_source(item: RavenItem, gray: np.ndarray) -> tuple[int, str] | None:
    """(source size, filter) whose resized render explains the image's context, or None if it is best read
    as drawn at its own size.

    Only a nearest-neighbour resize keeps a render's grey levels (and reproduces it exactly); otherwise the
    smooth filters are tried.
    """
    t = gray.shape[0]
    context = np.ones((t, t), dtype=bool)
    context[_answer_zone(t) :, _answer_zone(t) :] = False
    native = _matrix_corner(item, t, 0, None)
    if np.array_equal(native[context], gray[context]):
        return None
    if _PALETTE[gray[context].astype(np.uint8)].all():
        return _fit_nearest(item, gray, context, native)
    return _fit_smooth(item, gray, context, native)


def _corner_error(gray: np.ndarray, context: np.ndarray, r0: int) -> Callable[[np.ndarray], float]:
    """Mean squared difference from the image over the context, rows and columns r0.. only."""
    keep, seen = context[r0:, r0:], gray[r0:, r0:][context[r0:, r0:]]
    return lambda predicted: float(((predicted[keep] - seen) ** 2).mean())


def _fit_smooth(item: RavenItem, gray: np.ndarray, context: np.ndarray, native: np.ndarray
                ) -> tuple[int, str] | None:
    """The best (size, smooth filter) on the context around the answer cell (rows and columns from t/2 on:
    the geometry and rasterisation that matter) among the likeliest sizes and filters (_smooth_sources);
    if none reproduces it exactly, every filter at the best size and its two neighbours too."""
    t = gray.shape[0]
    r0 = t // 2
    mse = _corner_error(gray, context, r0)
    corner = native[r0:, r0:].astype(np.float32)
    here = min(mse(ndimage.gaussian_filter(corner, sigma)) if sigma else mse(corner) for sigma in _BLURS)
    fits: dict[tuple[int, str], float] = {}

    def fit(s: int, filters: Sequence[str]) -> None:
        fits.update(zip(((s, f) for f in filters), map(mse, _resized_corner(item, s, t, r0, None, filters))))

    for s, filters in _smooth_sources(gray):
        fit(s, filters)
        if min(fits.values()) <= _EXACT_MSE:
            break
    else:
        best = min(fits, key=fits.get)[0]
        for s in (best - 1, best, best + 1):
            if s != t and s >= MIN_RESOLUTION:
                fit(s, [f for f in _SMOOTH if (s, f) not in fits])
    best = min(fits, key=fits.get)
    return best if fits[best] < _CLEARLY * here else None


def _fit_nearest(item: RavenItem, gray: np.ndarray, context: np.ndarray, native: np.ndarray
                 ) -> tuple[int, str] | None:
    """The first (size, convention) whose nearest-neighbour resize reproduces the whole context, else the
    best on the context right of and below the first row and column of cells (cells 4, 5 and 7)."""
    t = gray.shape[0]
    r0 = t // 3 + 1
    mse = _corner_error(gray, context, r0)
    best, best_err = None, _CLEARLY * mse(native[r0:, r0:].astype(np.float32))
    for s, name in _nearest_sources(gray):
        err = mse(_resized_corner(item, s, t, r0, None, (name,))[0])
        if err == 0:
            whole = _resized_corner(item, s, t, 0, None, (name,))[0]
            if np.array_equal(whole[context], gray[context]):
                return s, name
        if err < best_err:
            best, best_err = (s, name), err
    return best


def _match_resized(item: RavenItem, gray: np.ndarray, s: int, name: str) -> int:
    """The candidate whose render at s px, resized like the image, is nearest to it around the answer cell."""
    t = gray.shape[0]
    q0 = _answer_zone(t)
    seen = gray[q0:, q0:]
    drawn = [_resized_corner(item, s, t, q0, c, (name,))[0] for c in item.candidates]
    return int(np.argmin([((d - seen) ** 2).sum() for d in drawn]))
