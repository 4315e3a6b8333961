"""Report helpers: Markdown tables and captioned image grids (leaf module)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw


def md_table(rows: list[dict], columns: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = ""
    for r in rows:
        cells = [fmt[c](r[c]) if c in fmt else str(r[c]) for c in columns]
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def pct(x: float) -> str:
    return f"{100 * x:.2g}%" if 0 < x < 0.001 else f"{100 * x:.1f}%"


def ci(x: list[float]) -> str:
    return f"[{100 * x[0]:.1f}, {100 * x[1]:.1f}]"


def image_grid(items: list[tuple[Path | Image.Image, str]], out: Path, cols: int = 6, cell: int = 128) -> Path:
    """Images (paths or PIL) with a caption strip under each, `cols` per row, saved as one PNG."""
    rows = max(1, (len(items) + cols - 1) // cols)
    strip = 28
    grid = Image.new("RGB", (cols * cell, rows * (cell + strip)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (path, text) in enumerate(items):
        r, c = divmod(i, cols)
        with path if isinstance(path, Image.Image) else Image.open(path) as im:
            grid.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (c * cell, r * (cell + strip)))
        words, lines = text.split(), ["", ""]
        for w in words:  # two short lines of caption
            k = 0 if len(lines[0]) + len(w) < cell // 6 else 1
            lines[k] = (lines[k] + " " + w).strip()
        draw.text((c * cell + 2, r * (cell + strip) + cell + 1), "\n".join(lines), fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
