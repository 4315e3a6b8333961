"""A web server on 127.0.0.1, so img2dataset can download without the internet: tests, benchmarks, try-outs.

    serve_folder(folder)                 -> base URL serving the files under `folder` (GET /a/b.jpg = folder/a/b.jpg;
                                            index=True: a folder's URL lists its entries, as `python -m http.server`)
    serve(slow_seconds, n_pictures, delay) -> base URL serving the web's bad inputs (routes()) and /pic/{i}.png

Both are context managers: a threaded server on a free port, stopped on exit; the URL's `.hits` counts the
GET requests per path (a HEAD is answered as the next GET would be, without the body, and not counted). Write `base + "/" + name` into a url+caption list and `build-dataset --source LIST` downloads
local images as it would the web's, e.g. to try the download stage offline:

    files = sorted(Path("my_images").glob("*.jpg"))
    with serve_folder("my_images") as base:
        urls = [f"{base}/{urllib.parse.quote(p.name)}" for p in files]
        pd.DataFrame({"url": urls, "caption": [p.stem for p in files]}).to_parquet("list.parquet")
        build_dataset(cfg, "list.parquet", "runs/local")   # dalle_eval.pipelines.build

`serve()` is the download stage's test battery: every path maps to a list of answers built once from images
rendered here; the first request gets the first answer, the next the second, ..., the last one repeats (a server
that fails once, then serves). Paths are matched after percent-decoding (path and query), as a web server maps
them to files: a client must send `/with%20space/a%20b.jpg` for the route `/with space/a b.jpg`; a raw space or
non-ASCII byte in the request line does not reach it.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import io
import mimetypes
import random
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    length: int | None = None  # the Content-Length sent (default len(body)); larger: the server hangs up early
    reset: bool = False  # no answer at all: the connection is reset (TCP RST)


# EXIF orientation tag -> the PIL transpose that turns an upright picture into the stored pixels
# (the inverse of what a viewer applies when showing it)
EXIF_STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def picture(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """A distinct picture per seed (different layouts, so perceptual hashes differ too)."""
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
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * side
    data = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def upright_photo(w: int = 96, h: int = 128) -> Image.Image:
    """A portrait picture that no flip or rotation maps onto itself (a dark corner top left, a bar on
    the right, a horizontal gradient)."""
    img = Image.new("RGB", (w, h))
    img.putdata([(int(255 * x / w), 128, 60) for y in range(h) for x in range(w)])
    draw = ImageDraw.Draw(img)
    draw.rectangle((w // 6, h // 6, w // 2, h // 2 - 8), fill=(0, 0, 0))
    draw.rectangle((w - w // 5, h // 3, w - 4, h - h // 3), fill=(255, 255, 255))
    return img


def exif_photo(orientation: int) -> bytes:
    """upright_photo() stored as a camera would: pixels transposed, EXIF Orientation = `orientation`."""
    stored = upright_photo()
    if EXIF_STORED[orientation] is not None:
        stored = stored.transpose(EXIF_STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def web_routes(slow_seconds: float) -> dict[str, tuple[int, dict, bytes, float]]:
    jpg = _encode(picture(seed=1), "JPEG", quality=90)
    gif = io.BytesIO()
    frames = [picture(seed=i).convert("P") for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = {"Content-Type": "image/jpeg"}
    table = {
        "/good.jpg": (200, img, jpg, 0.0),
        "/good.png": (200, {"Content-Type": "image/png"}, _encode(picture(seed=2), "PNG"), 0.0),
        "/good.webp": (200, {"Content-Type": "image/webp"}, _encode(picture(seed=3), "WEBP"), 0.0),
        "/gray.png": (200, {"Content-Type": "image/png"}, _encode(picture(seed=4).convert("L"), "PNG"), 0.0),
        "/cmyk.jpg": (200, img, _encode(picture(seed=5).convert("CMYK"), "JPEG"), 0.0),
        "/alpha.png": (200, {"Content-Type": "image/png"}, _encode(picture(seed=6).convert("RGBA"), "PNG"), 0.0),
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


def routes(slow_seconds: float) -> dict[str, list[Answer]]:
    """web_routes() plus broken connections, flaky servers, paths that need percent-encoding and
    EXIF-rotated photos (each good image a different picture, so none is a near-duplicate of another)."""
    table = {path: [Answer(*answer)] for path, answer in web_routes(slow_seconds).items()}
    img = {"Content-Type": "image/jpeg"}

    def pic(seed: int) -> bytes:
        return _encode(picture(seed=seed), "JPEG", quality=90)

    ok = [Answer(200, img, pic(seed)) for seed in range(20, 30)]
    table.update({
        "/empty.jpg": [Answer(200, img, b"")],
        "/short.jpg": [Answer(200, img, pic(11)[:3000], length=len(pic(11)))],
        "/reset.jpg": [Answer(reset=True)],
        "/always/503.jpg": [Answer(503, {"Retry-After": "1"}, b"busy")],
        "/flaky/503.jpg": [Answer(503, {"Retry-After": "1"}, b"busy"), ok[0]],
        "/flaky/429.jpg": [Answer(429, {"Retry-After": "1"}, b"slow down"), ok[1]],
        "/flaky/reset.jpg": [Answer(reset=True), ok[2]],
        "/flaky/timeout.jpg": [Answer(200, img, pic(12), delay=slow_seconds), ok[3]],
        "/with space/a b.jpg": [ok[4]],
        "/ünïcödé/café.jpg": [ok[5]],
        "/search.jpg?q=red car&lang=ü": [ok[6]],
        "/pct ok.jpg": [ok[7]],  # listed already encoded (/pct%20ok.jpg): must not be encoded twice
        "/tiny.png": [Answer(200, {"Content-Type": "image/png"}, _encode(picture(62, 62, seed=13), "PNG"))],
        "/wide.png": [Answer(200, {"Content-Type": "image/png"}, _encode(picture(300, 100, seed=14), "PNG"))],
        "/noai.jpg": [Answer(200, {**img, "X-Robots-Tag": "noai"}, pic(15))],
    })
    for tag in EXIF_STORED:
        table[f"/exif/{tag}.jpg"] = [Answer(200, img, exif_photo(tag))]
    return table


class BaseURL(str):
    """The server's base URL; `.hits` counts the requests per route (percent-decoded path)."""

    hits: dict[str, int]


@contextlib.contextmanager
def serve_answers(answer: Callable[[str, int], Answer]) -> Iterator[BaseURL]:
    """Yield the base URL of a threaded server on 127.0.0.1 (a free port) that answers each GET with
    answer(route, n): route = the percent-decoded path and query, n = this route's request count so far
    (1 for the first); stopped on exit."""
    hits: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            route = urllib.parse.unquote(self.path)
            with lock:
                n = hits.get(route, 0) + 1
            self._send(answer(route, n), body=False)  # at once: a delay or reset shows on the GET

        def do_GET(self):
            route = urllib.parse.unquote(self.path)
            with lock:
                hits[route] = hits.get(route, 0) + 1
                n = hits[route]
            a = answer(route, n)
            if a.delay:
                time.sleep(a.delay)
            if a.reset:  # linger 0: closing sends RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.rfile.close()  # its reference would keep the socket open until after a FIN
                self.connection.close()
                return
            self._send(a, body=True)

        def _send(self, a: Answer, body: bool) -> None:
            self.send_response(a.status)
            for k, v in a.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(a.body) if a.length is None else a.length))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if body:
                    self.wfile.write(a.body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = BaseURL(f"http://127.0.0.1:{server.server_port}")
        url.hits = hits
        yield url
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_folder(folder: str | Path, index: bool = False) -> Iterator[BaseURL]:
    """Yield the base URL of a server answering GET /a/b.jpg with the file folder/a/b.jpg (read when asked,
    Content-Type from its extension; the URL percent-encodes the name, no query), with index=True GET /a or
    /a/ with an HTML index of a's entries (folders end in /: what fsspec's HTTP filesystem lists, as from
    `python -m http.server`); 404 for anything else, paths leading out of the folder included."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"serve_folder {folder}: not a folder")

    def answer(route: str, n: int) -> Answer:
        path = (root / route.lstrip("/")).resolve()
        if index and path.is_relative_to(root) and path.is_dir():
            return Answer(200, {"Content-Type": "text/html; charset=utf-8"}, _index(path))
        if not path.is_relative_to(root) or not path.is_file():
            return Answer(404, {}, b"not found")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Answer(200, {"Content-Type": kind}, path.read_bytes())

    with serve_answers(answer) as url:
        yield url


def _index(folder: Path) -> bytes:
    """An HTML page linking each entry of `folder` by its percent-encoded name relative to the folder."""
    links = "".join(f'<a href="{urllib.parse.quote(p.name)}{"/" if p.is_dir() else ""}">{html.escape(p.name)}</a>\n'
                    for p in sorted(folder.iterdir()))
    return f"<html><body>\n{links}</body></html>\n".encode()


@contextlib.contextmanager
def serve(slow_seconds: float = 6.0, n_pictures: int = 0, delay: float = 0.0) -> Iterator[BaseURL]:
    """Yield the base URL of a server answering `routes()` plus /pic/{i}.png for i < n_pictures
    (distinct images, each answered after `delay` seconds); stopped on exit. Answer lists advance per
    server: a flaky route fails once for each new server."""
    table = routes(slow_seconds)
    for i in range(n_pictures):
        body = _encode(picture(96, 96, seed=100 + i), "PNG")
        table[f"/pic/{i}.png"] = [Answer(200, {"Content-Type": "image/png"}, body, delay)]

    def answer(route: str, n: int) -> Answer:
        answers = table.get(route, [Answer(404, {}, b"no route")])
        return answers[min(n, len(answers)) - 1]

    with serve_answers(answer) as url:
        yield url
