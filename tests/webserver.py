"""A real HTTP server on 127.0.0.1 serving the web's bad inputs, for download tests.

Every path maps to a (status, headers, body, delay) answer built once from images rendered here.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import threading
import time
import zlib
from collections.abc import Iterator

from PIL import Image, ImageDraw


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _picture(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """A distinct picture per seed (different layouts, so perceptual hashes differ too)."""
    import random

    rng = random.Random(seed)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.randrange(w - 40), rng.randrange(h - 40)
        box = (x, y, x + rng.randrange(30, w // 2), y + rng.randrange(30, h // 2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


def _png_bomb(side: int = 20_000) -> bytes:
    """A small PNG that claims side x side 8-bit grey pixels (compresses ~1000:1)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * side
    data = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def routes(slow_seconds: float) -> dict[str, tuple[int, dict, bytes, float]]:
    jpg = _encode(_picture(seed=1), "JPEG", quality=90)
    gif = io.BytesIO()
    frames = [_picture(seed=i).convert("P") for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = {"Content-Type": "image/jpeg"}
    table = {
        "/good.jpg": (200, img, jpg, 0.0),
        "/good.png": (200, {"Content-Type": "image/png"}, _encode(_picture(seed=2), "PNG"), 0.0),
        "/good.webp": (200, {"Content-Type": "image/webp"}, _encode(_picture(seed=3), "WEBP"), 0.0),
        "/gray.png": (200, {"Content-Type": "image/png"}, _encode(_picture(seed=4).convert("L"), "PNG"), 0.0),
        "/cmyk.jpg": (200, img, _encode(_picture(seed=5).convert("CMYK"), "JPEG"), 0.0),
        "/alpha.png": (200, {"Content-Type": "image/png"}, _encode(_picture(seed=6).convert("RGBA"), "PNG"), 0.0),
        "/anim.gif": (200, {"Content-Type": "image/gif"}, gif.getvalue(), 0.0),
        "/missing.jpg": (404, {}, b"not found", 0.0),
        "/error.jpg": (500, {}, b"server error", 0.0),
        "/slow.jpg": (200, img, jpg, slow_seconds),
        "/truncated.jpg": (200, img, jpg[: len(jpg) // 3], 0.0),
        "/page.jpg": (200, img, b"<html><body>Sorry, this image is gone</body></html>", 0.0),
        "/bomb.png": (200, {"Content-Type": "image/png"}, _png_bomb(), 0.0),
        "/loop.jpg": (302, {"Location": "/loop.jpg"}, b"", 0.0),
    }
    for i in range(5):  # the same image under many URLs
        table[f"/copy/{i}.jpg"] = (200, img, jpg, 0.0)
    return table


@contextlib.contextmanager
def serve(slow_seconds: float = 6.0, n_pictures: int = 0, delay: float = 0.0) -> Iterator[str]:
    """Yield the base URL of a threaded server answering `routes()` plus /pic/{i}.png for i < n_pictures
    (distinct images, each answered after `delay` seconds); stopped on exit."""
    table = routes(slow_seconds)
    for i in range(n_pictures):
        body = _encode(_picture(96, 96, seed=100 + i), "PNG")
        table[f"/pic/{i}.png"] = (200, {"Content-Type": "image/png"}, body, delay)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, headers, body, delay = table.get(self.path, (404, {}, b"no route", 0.0))
            if delay:
                time.sleep(delay)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
