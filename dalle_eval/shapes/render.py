"""Draw a scene at any resolution. Pure PIL drawing, no anti-aliasing: same scene => same bytes."""

from __future__ import annotations

from PIL import Image, ImageDraw

from dalle_eval.shapes.scene import BACKGROUND, COLOURS, SIZES, Scene


def object_box(cx: float, cy: float, size: str, resolution: int) -> tuple[float, float, float, float]:
    half = SIZES[size] * resolution / 2
    x, y = cx * resolution, cy * resolution
    return (x - half, y - half, x + half - 1, y + half - 1)


def render(scene: Scene, resolution: int) -> Image.Image:
    img = Image.new("RGB", (resolution, resolution), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        x0, y0, x1, y1 = object_box(o.cx, o.cy, o.size, resolution)
        fill = COLOURS[o.colour]
        if o.shape == "square":
            draw.rectangle((round(x0), round(y0), round(x1), round(y1)), fill=fill)
        elif o.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif o.shape == "triangle":  # isosceles, apex up; fills half its box
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return img
