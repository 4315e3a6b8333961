"""Download url+caption pairs with img2dataset into webdataset shards, and fold its per-sample
status back into the pair table (so every row ends with exactly one documented status).

img2dataset does the heavy lifting (threads, processes, or a pyspark/ray cluster via
`data.download_distributor`), resizing to `data.resolution` with a center crop, the size/aspect/area
limits and incremental mode (a killed run resumes: finished shards are skipped). Around it:

URLs are sent as a browser sends them (`browser_url`): spaces, quotes and non-ASCII characters in path
and query percent-encoded as UTF-8 (existing %XX kept), an IDNA host, no fragment. The pair table keeps
the list's own text in `url`.

Its two catch-alls (`failed_to_download`, `failed_to_resize`) and free-text messages become the status
classes of DOWNLOAD_STATUSES (`http_404`, `timeout`, `empty_body`, ...), the message kept in `error`.

Retries: img2dataset's own `retries` option re-requests a failed URL at once, whatever the failure (a 404
too), with no pause; it is left at 0. Instead, after the whole list, the rows whose latest status is
transient (TRANSIENT: timeout, connection reset, truncated body, HTTP 408, 425, 429, 500, 502, 503, 504)
are downloaded again by one more img2dataset run over just those rows (its `extend` mode: new shards after
the old), until each has had 1 + `data.download_retries` attempts (counted from the shards, so a resumed
run does not start over), the k-th round after RETRY_BACKOFF * 2**(k-1) seconds. The last attempt's status
counts. A host that failed is thus asked again only once the rest of the list is done.
Politeness per domain: img2dataset has none (no per-host limit or queue; Retry-After is not read); at most
processes x threads requests are in flight over all hosts together, so a list sorted by domain sends them
all to one host: shuffle such lists.

EXIF orientation: img2dataset decodes with OpenCV's IMREAD_UNCHANGED, which ignores the EXIF Orientation
tag (a portrait phone photo is stored on its side). Its `exif` column (read with exifread from the
original bytes) has the tag; `apply_exif_orientation` turns those samples upright in the shards (a flip
or rotation of the square center crop is the crop of the turned photo), once: the sample's json records
it. width/height in the table are the original size as shown (swapped for the rotated tags 5-8).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import sys
import time
import unicodedata
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from dalle_eval.pipelines.prefilter import FILTERS

from dalle_eval.config import DataConfig
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import iter_raw_samples, write_shard

# Every status of stage 3 (download); "http_<code>" stands for http_404, http_503, ... (any code).
DOWNLOAD_STATUSES = (
    "http_<code>", "timeout", "connection_reset", "truncated", "empty_body", "redirect_loop", "unreachable",
    "tls_error", "bad_url", "opted_out", "download_error",
    "undecodable", "too_small", "bad_aspect_ratio", "too_large", "resize_error",
    "not_attempted",
)
POSTFILTER_STATUSES = ("near_duplicate", "eval_overlap", "clip_score_low", "unreadable_image")
# Every status a web build's pairs.parquet can hold: the README's stage table lists exactly these.
STATUSES = ("ok", *FILTERS, *DOWNLOAD_STATUSES, *POSTFILTER_STATUSES)
TRANSIENT = ("timeout", "connection_reset", "truncated", "http_408", "http_425", "http_429", "http_500",
             "http_502", "http_503", "http_504")
RETRY_BACKOFF = 1.0  # seconds before the first retry round; doubled for each further round

_DOWNLOAD_CLASSES = [  # (regex on img2dataset's failed_to_download message, status class), first match wins
    (r"X-Robots-Tag", "opted_out"),
    (r"infinite loop", "redirect_loop"),  # "HTTP Error 302: ... would lead to an infinite loop"
    (r"HTTP Error (\d{3})", "http_{0}"),
    (r"IncompleteRead", "truncated"),  # fewer bytes than Content-Length, then the server hung up
    # before the words below: these messages quote the URL or file name, which may hold any word
    (r"unknown url type|no host given|Invalid URL|InvalidURL|can't contain control characters|codec can't encode",
     "bad_url"),
    (r"No such file|Is a directory|Permission denied", "unreachable"),  # file:// URLs (an image folder)
    (r"timed out|timeout", "timeout"),
    (r"Connection reset|Remote end closed connection|Connection aborted|Broken pipe", "connection_reset"),
    (r"SSL|certificate", "tls_error"),
    (r"Name or service not known|nodename nor servname|getaddrinfo|name resolution|Connection refused", "unreachable"),
    (r"Network is unreachable|No route to host", "unreachable"),
]
_RESIZE_CLASSES = [  # (regex on img2dataset's failed_to_resize message, status class)
    (r"!buf\.empty\(\)", "empty_body"),  # OpenCV's assertion on a zero-byte body
    (r"image too small", "too_small"),
    (r"aspect ratio too large", "bad_aspect_ratio"),
    (r"image area too large|CV_IO_MAX_IMAGE_PIXELS", "too_large"),
    (r"decoding error|cannot identify|truncated", "undecodable"),
]


def is_documented_status(status: str) -> bool:
    return status in STATUSES or re.fullmatch(r"http_\d{3}", status) is not None


def error_class(message: str | None, i2d_status: str) -> str:
    """img2dataset's (error message, status) of a failed sample -> one of DOWNLOAD_STATUSES."""
    table, fallback = {"failed_to_resize": (_RESIZE_CLASSES, "resize_error")}.get(
        i2d_status, (_DOWNLOAD_CLASSES, "download_error"))
    for pattern, name in table:
        m = re.search(pattern, message or "", re.IGNORECASE)
        if m:
            return name.format(*m.groups())
    return fallback


# --------------------------------------------------------------------------- URLs as browsers send them

_C0_SPACE = "".join(map(chr, range(0x21)))
_PATH_ENCODE = set(_C0_SPACE + '"#<>?`{}\x7f')  # WHATWG's path percent-encode set
_QUERY_ENCODE = set(_C0_SPACE + "\"#<>'\x7f")  # its special-query percent-encode set
_USERINFO_ENCODE = set(_C0_SPACE + '"#<>?`{}/:;=@[\\]^|\x7f')


def _percent_encode(text: str, encode: set[str]) -> str:
    """Characters in `encode` and non-ASCII ones as UTF-8 %XX; everything else, % included, as is."""
    return "".join(
        "".join(f"%{b:02X}" for b in c.encode("utf-8", "replace")) if c in encode or ord(c) > 0x7E else c
        for c in text
    )


def _host(host: str) -> str:
    """A non-ASCII host name in IDNA (punycode), as browsers send it; an unencodable one unchanged."""
    if host.isascii():
        return host
    try:
        return unicodedata.normalize("NFC", host).encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _netloc(netloc: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = (hostport, "", "") if hostport.startswith("[") else hostport.partition(":")  # [IPv6]
    return (_percent_encode(userinfo, _USERINFO_ENCODE) + at if at else "") + _host(host) + colon + port


def browser_url(url: str) -> str:
    """The URL a browser requests for `url` as written in a list (WHATWG URL serialisation, simplified):
    leading/trailing spaces and controls trimmed, tabs and newlines dropped, the fragment left off,
    path and query percent-encoded (UTF-8; an existing %XX is kept, so encoding twice changes nothing),
    a non-ASCII host in IDNA. A URL Python cannot split is returned trimmed, for img2dataset to reject."""
    text = re.sub("[\t\n\r]", "", url.strip(_C0_SPACE))
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text
    path = parts.path.replace("\\", "/") if parts.scheme.lower() in ("http", "https") else parts.path
    return urllib.parse.urlunsplit((parts.scheme, _netloc(parts.netloc), _percent_encode(path, _PATH_ENCODE),
                                    _percent_encode(parts.query, _QUERY_ENCODE), ""))


# --------------------------------------------------------------------------- download


def download_images(pairs: pd.DataFrame, out: Path, cfg: DataConfig) -> tuple[pd.DataFrame, list[Path]]:
    """-> (DataFrame[key, i2d_key, status, error, width, height], one row per pair; the image shards).

    Nothing of ours runs beside img2dataset: on 2 cores a thread hashing finished shards during the download,
    even at the lowest CPU priority, slowed the download by about twice what it saved (benchmarks/README.md)."""
    if cfg.download_retries < 0:
        raise DalleEvalError(f"data.download_retries must be >= 0 (rounds of retries), got {cfg.download_retries}")
    if pairs.empty:  # nothing to download (the pre-filter rejected every row): img2dataset is not started
        return _fold_status(pairs, _read_stats(out, [])), []
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download  # heavy import (albumentations, cv2): only when downloading

    out.mkdir(parents=True, exist_ok=True)
    url_list = out / "_url_list.parquet"
    urls = pairs[["key", "url", "caption"]].rename(columns={"key": "pair_key"})
    urls["url"] = [browser_url(u) for u in urls["url"]]
    urls.to_parquet(url_list, index=False)
    stats = None
    with _cluster(cfg.download_distributor):
        _download(download, url_list, out, cfg, "incremental")  # a killed run resumes: finished shards skipped
        if _main_pass_finished(out, len(urls), cfg.shard_size):
            stats = _retry_transient(download, out, cfg)
    shards = _finished_shards(out)
    for shard in shards:  # a turned sample is not turned again (a resumed run)
        _orient_shard(out, shard)
    if stats is None:
        stats = _read_stats(out, shards)
    return _fold_status(pairs, stats), [out / f"{s}.tar" for s in shards]


@contextmanager
def _cluster(distributor: str) -> Iterator[None]:
    """Check that a pyspark/ray distributor is installed; stop the local Spark session or Ray instance that
    img2dataset starts when none is running, so the caller's process is left as it was found."""
    if distributor == "multiprocessing":
        yield
        return
    extra = {"pyspark": "spark", "ray": "ray"}[distributor]
    try:
        module = importlib.import_module("pyspark.sql" if distributor == "pyspark" else "ray")
    except ImportError:
        raise DalleEvalError(f"data.download_distributor={distributor} needs {distributor}: "
                             f"pip install 'dalle-eval[{extra}]' (or use multiprocessing)") from None
    if distributor == "ray":
        running = module.is_initialized()
        try:
            yield
        finally:
            if not running and module.is_initialized():
                module.shutdown()
        return
    # Spark starts its Python workers with `python3` from PATH unless told: outside this venv they cannot
    # import img2dataset. A cluster's own setting (spark-env.sh / the environment) wins.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    running = module.SparkSession.getActiveSession()
    try:
        yield
    finally:
        session = module.SparkSession.getActiveSession()
        if running is None and session is not None:
            session.stop()


def _download(download, url_list: Path, out: Path, cfg: DataConfig, mode: str) -> None:
    """One img2dataset run over `url_list` into `out`: mode "incremental" (skip finished shards) or
    "extend" (new shards after the existing ones: a retry round)."""
    download(
        url_list=str(url_list),
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        save_additional_columns=["pair_key"],
        output_format="webdataset",
        output_folder=str(out),
        image_size=cfg.resolution,
        resize_mode="center_crop",  # paper: center crop to a square
        processes_count=cfg.download_processes,
        thread_count=cfg.download_threads,
        distributor=cfg.download_distributor,
        timeout=cfg.download_timeout,
        retries=0,  # its retries are immediate and for any error: ours are rounds over transient ones
        extract_exif=True,  # the Orientation tag, applied by apply_exif_orientation
        min_image_size=cfg.min_image_size,
        max_aspect_ratio=cfg.max_aspect_ratio,
        max_image_area=cfg.max_image_area,
        number_sample_per_shard=cfg.shard_size,
        incremental_mode=mode,
        enable_wandb=False,
    )


def _retry_transient(download, out: Path, cfg: DataConfig) -> pd.DataFrame | None:
    """Rounds of img2dataset over the rows whose latest status is transient, each after a backoff, until
    none is left or each has had 1 + data.download_retries attempts (counted from the shards, so a resumed
    run does not start the count again) -> the stats of every finished shard if no round ran last (read once,
    not again by the caller), else None."""
    for _ in range(cfg.download_retries):
        stats = _read_stats(out, _finished_shards(out))
        latest = _latest(stats)
        todo = latest[latest["class"].isin(TRANSIENT) & (latest["attempts"] <= cfg.download_retries)]
        if todo.empty:
            return stats
        wait = RETRY_BACKOFF * 2 ** (int(todo["attempts"].min()) - 1)
        reasons = ", ".join(f"{k} {v}" for k, v in todo["class"].value_counts().items())
        print(f"download: {len(todo)} transient failure(s) ({reasons}); retrying in {wait:.0f} s")
        time.sleep(wait)
        retry_list = out / "_retry_list.parquet"
        todo[["pair_key", "url", "caption"]].to_parquet(retry_list, index=False)
        _download(download, retry_list, out, cfg, "extend")
    return None


def _main_pass_finished(out: Path, n_rows: int, shard_size: int) -> bool:
    """Whether img2dataset finished every shard of the list. Retry rounds add shards after the highest
    finished one, so they wait: one of them could take the id of an unfinished list shard."""
    missing = sorted(set(range(-(-n_rows // shard_size))) - {int(s) for s in _finished_shards(out)})
    if missing:
        warnings.warn(f"{out}: img2dataset did not finish shard(s) {', '.join(map(str, missing[:10]))}; their rows "
                      "are not_attempted and no retry round runs: run the same command again")
    return not missing


def _finished_shards(out: Path) -> list[str]:
    """Shards img2dataset finished (it writes {id}_stats.json last), in id order: retry rounds come later.
    A shard killed mid-write has no stats file; its partial tar and parquet are ignored."""
    ids = [p.name.split("_")[0] for p in out.glob("[0-9]*_stats.json")]
    return sorted((i for i in ids if (out / f"{i}.parquet").exists() and (out / f"{i}.tar").exists()), key=int)


def _read_stats(out: Path, shards: list[str]) -> pd.DataFrame:
    """img2dataset's per-sample rows (pair_key, key, status, error_message, ...) of `shards`, in order."""
    frames = [pd.read_parquet(out / f"{s}.parquet") for s in shards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["pair_key", "url", "caption", "key", "status", "error_message", "original_width",
                 "original_height", "exif"])


def _latest(stats: pd.DataFrame) -> pd.DataFrame:
    """The last attempt per pair key, with `attempts` (how many rows it has) and its status `class`."""
    attempts = stats.groupby("pair_key").size()
    latest = stats.drop_duplicates("pair_key", keep="last").copy()
    latest["attempts"] = latest["pair_key"].map(attempts)
    latest["class"] = [s if s == "success" else error_class(e, s)
                       for e, s in zip(latest["error_message"], latest["status"])]
    return latest


# --------------------------------------------------------------------------- EXIF orientation

# exifread's names of the Orientation values (its tags/exif.py) -> the PIL transpose that shows the
# stored pixels upright (what PIL's ImageOps.exif_transpose does for the tag)
_ORIENTATION = {
    "Mirrored horizontal": 2,
    "Rotated 180": 3,
    "Mirrored vertical": 4,
    "Mirrored horizontal then rotated 90 CCW": 5,
    "Rotated 90 CW": 6,
    "Mirrored horizontal then rotated 90 CW": 7,
    "Rotated 90 CCW": 8,
}
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}
APPLIED = "exif_orientation_applied"  # key in a sample's json once its pixels were turned


def exif_orientation(exif: str | None) -> int:
    """img2dataset's `exif` column (JSON of exifread's tags) -> the Orientation tag, 1 if none/unknown."""
    try:
        tags = json.loads(exif) if exif else {}
    except (TypeError, ValueError):
        return 1
    return _ORIENTATION.get(str(tags.get("Image Orientation", "")).strip(), 1) if isinstance(tags, dict) else 1


def apply_exif_orientation(out: Path) -> int:
    """Turn upright every finished shard's samples whose EXIF Orientation is 2-8 -> how many were turned.
    A shard is rewritten atomically; a sample whose json records APPLIED is left alone (a resumed run)."""
    return sum(_orient_shard(out, shard) for shard in _finished_shards(out))


def _orient_shard(out: Path, shard: str) -> int:
    """apply_exif_orientation for one finished shard (its id) -> how many samples were turned."""
    stats = pd.read_parquet(out / f"{shard}.parquet", columns=["key", "status", "exif"])
    todo = {k: exif_orientation(e) for k, s, e in stats.itertuples(index=False) if s == "success"}
    todo = {k: tag for k, tag in todo.items() if tag != 1}
    return _turn_shard(out / f"{shard}.tar", todo) if todo else 0


def _turn_shard(tar_path: Path, orientation: dict[str, int]) -> int:
    """Turn the samples in `orientation` (i2d key -> tag) not yet turned; the shard is rewritten (atomically,
    through shards.write_shard) only if one was turned. Two passes of the raw tar reader: the first only
    decides, so a shard is never held in memory."""
    turned = sum(_pending_turn(files, orientation.get(key)) is not None for key, files in iter_raw_samples(tar_path))
    if turned:
        write_shard(tar_path, ({"__key__": key, **_turn_sample(files, orientation.get(key))}
                               for key, files in iter_raw_samples(tar_path)))
    return turned


def _pending_turn(files: dict[str, bytes], tag: int | None) -> tuple[str, dict] | None:
    """(image extension, json record) of a sample still to turn, else None (no tag, turned before, or no
    image or json: img2dataset writes both; without a json the turn is not recorded)."""
    image = next((e for e in ("jpg", "png", "webp") if e in files), None)
    if tag is None or image is None or "json" not in files:
        return None
    meta = json.loads(files["json"])
    return None if meta.get(APPLIED) else (image, meta)


def _turn_sample(files: dict[str, bytes], tag: int | None) -> dict[str, bytes]:
    """A sample's files with the image turned upright and the turn recorded in its json (unchanged if not due)."""
    pending = _pending_turn(files, tag)
    if pending is None:
        return files
    image, meta = pending
    return {**files, image: _turn_image(files[image], tag, image),
            "json": json.dumps(_turned_meta(meta, tag), indent=4).encode()}


def _turn_image(data: bytes, tag: int, ext: str) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    upright = image.transpose(getattr(Image.Transpose, _UPRIGHT[tag]))
    buf = io.BytesIO()
    fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    upright.save(buf, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))  # img2dataset's encode_quality
    return buf.getvalue()


def _turned_meta(meta: dict, tag: int) -> dict:
    if tag >= 5:  # a quarter turn: the shown width is the stored height
        for w, h in (("width", "height"), ("original_width", "original_height")):
            meta[w], meta[h] = meta.get(h), meta.get(w)
    return {**meta, APPLIED: tag}


# --------------------------------------------------------------------------- the pair table


def _fold_status(pairs: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """img2dataset's per-sample rows (the last attempt of each) joined back onto the pair table by pair key:
    DataFrame[key, i2d_key, status, error, width, height] (width/height: the original size as shown)."""
    got = _latest(stats) if len(stats) else pd.DataFrame(columns=[*stats.columns, "class", "attempts"])
    exif = got["exif"] if "exif" in got else pd.Series(None, index=got.index, dtype=object)
    quarter = pd.Series([exif_orientation(e) >= 5 for e in exif], index=got.index, dtype=bool)
    w, h = got["original_width"], got["original_height"]
    got = pd.DataFrame({"key": got["pair_key"], "i2d_key": got["key"], "status": got["class"],
                        "error": got["error_message"], "width": w.where(~quarter, h), "height": h.where(~quarter, w)})
    table = pairs[["key"]].merge(got, on="key", how="left")
    table["status"] = table["status"].replace({"success": "ok"}).fillna("not_attempted")
    return table


def check_rows_left(manifest: dict, out: Path) -> None:
    """An image stage that kept no row is an error (after the table is written): which stage emptied the
    set, why (the commonest statuses), and where every row's status is."""
    if manifest.get("n_samples", 0) > 0:
        return
    counts = {k: int(v) for k, v in manifest.get("status_counts", {}).items()}
    if manifest.get("prefilter", {}).get("ok", 0) == 0 and "prefilter" in manifest:
        stage = "the pre-filter"
    elif any(s in POSTFILTER_STATUSES for s in counts):
        stage = "the post-filter"
    else:
        stage = "the download"
    reasons = ", ".join(f"{s} {n:,}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
    raise DalleEvalError(f"0 rows left after {stage} (of {sum(counts.values()):,} rows: {reasons}); "
                         f"every row's status is in {out / 'pairs.parquet'}")
