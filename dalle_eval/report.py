"""Report helpers: Markdown tables and captioned image grids (leaf module)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dalle_eval.artifacts import read_rgb


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


def _cut(word: str, fits: Callable[[str], bool]) -> list[str]:
    """A word too wide for a line -> the longest prefixes that fit (at least one character each)."""
    pieces = []
    while word:
        n = 1
        while n < len(word) and fits(word[: n + 1]):
            n += 1
        pieces.append(word[:n])
        word = word[n:]
    return pieces


def wrap_caption(text: str, fits: Callable[[str], bool]) -> list[str]:
    """The caption's words in order, each line filled while `fits(line)`; nothing is dropped.

    A word that does not fit on a line of its own starts a new line and is cut into pieces that fit (no
    hyphen); its last piece may be followed by the next words. " ".join(lines) is the caption with single
    spaces when no word is cut. "" -> [].
    """
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and fits(f"{line} {word}"):
            line = f"{line} {word}"
            continue
        if line:
            lines.append(line)
        *full, line = [word] if fits(word) else _cut(word, fits)
        lines += full
    return lines + [line] if line else lines


def image_grid(items: list[tuple[Path | Image.Image, str]], out: Path, cols: int = 6, cell: int = 128) -> Path:
    """Images (paths or PIL) with their caption under each, `cols` per row, saved as one PNG.

    Captions wrap in word order onto as many lines as the longest needs (at least two): the strip under
    every row grows with it, so no word is dropped or moved.
    """
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [wrap_caption(text, lambda s: measure.textlength(s, font=font) <= cell - 4) for _, text in items]
    line_h = font.getbbox("Ag")[3] + 2
    strip = max(2, *(len(lines) for lines in wrapped)) * line_h + 4
    rows = max(1, (len(items) + cols - 1) // cols)
    grid = Image.new("RGB", (cols * cell, rows * (cell + strip)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, ((path, _), lines) in enumerate(zip(items, wrapped)):
        r, c = divmod(i, cols)
        x, y = c * cell, r * (cell + strip)
        im = path if isinstance(path, Image.Image) else read_rgb(path)  # a missing or broken file is named
        grid.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        for k, line in enumerate(lines):
            draw.text((x + 2, y + cell + 1 + k * line_h), line, fill=(0, 0, 0), font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
