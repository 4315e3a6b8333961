"""Webdataset shard I/O shared by the data pipeline and training (leaf module).

Every shard is written to a temp file and renamed, so a killed run leaves only whole shards and
re-runs skip them.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from dalle_eval.artifacts import atomic_path
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def write_shard(path: Path, samples: Iterable[dict]) -> int:
    """Write samples ({"__key__", "png"/"txt"/"json"/"x.npy": value}) to one tar, atomically."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f, wds.TarWriter(f) as sink:
        for sample in samples:
            sink.write(sample)
            n += 1
    return n


def every_shard(urls):
    """webdataset splitter that keeps every shard: callers split work over ranks/workers themselves."""
    return urls


_WDS_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key / extension split


def sample_key(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a tar member as webdataset splits it; None for a member that is no
    sample's file (no extension, or a hidden file)."""
    m = _WDS_NAME.match(name)
    if m is None or Path(name).name.startswith("."):
        return None
    return m.group(1), m.group(2).lower()


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax(data: bytes) -> dict[str, str]:
    """POSIX pax records "<len> <key>=<value>\n" (only path and size matter here)."""
    out, i = {}, 0
    while i < len(data) and data[i:i + 1] != b"\0":
        space = data.index(b" ", i)
        end = i + int(data[i:space])
        k, _, v = data[space + 1:end - 1].partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        i = end
    return out


def _exact(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise tarfile.ReadError(f"unexpected end of data in {what}")
    return data


def iter_tar_files(path: str | Path, read: bool = True) -> Iterator[tuple[str, bytes | None, int]]:
    """(name, data or None, size) of each regular file of a tar, in order (POSIX ustar/pax, GNU long names).

    A reader of our own because tarfile spends ~0.3 ms per member on pax headers, which is most of
    the time of hashing or re-sharding small downloaded images. Headers are checksum-verified; a
    truncated or corrupt tar raises tarfile.ReadError after the members before the break.
    """
    with open(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
        raw.seek(0)
        pending: dict[str, str] = {}
        while True:
            header = f.read(512)
            if not header.strip(b"\0"):  # end-of-archive blocks (or a tar with no end marker)
                return
            if len(header) < 512:
                raise tarfile.ReadError("truncated header")
            stored = _octal(header[148:156])
            if stored != sum(header[:148]) + 256 + sum(header[156:]):  # checksum field counted as spaces
                raise tarfile.ReadError("bad header checksum")
            kind, size = header[156:157], _octal(header[124:136])
            size = int(pending.get("size", size))
            padded = (size + 511) // 512 * 512
            if kind in (b"x", b"L", b"g"):  # metadata for the next member (pax, GNU long name, global)
                data = _exact(f, padded, "a pax/long-name header")[:size]
                if kind == b"x":
                    pending.update(_pax(data))
                elif kind == b"L":
                    pending["path"] = data.rstrip(b"\0").decode("utf-8", "replace")
                continue
            name = pending.get("path") or (
                (header[345:500].rstrip(b"\0") + b"/" if header[257:262] == b"ustar" and header[345] else b"")
                + header[:100].rstrip(b"\0")
            ).decode("utf-8", "replace")
            pending = {}
            if kind in (b"0", b"\0", b"7"):  # regular file
                if read:
                    data = _exact(f, padded, name)[:size]
                    yield name, data, size
                    continue
                yield name, None, size
            if f is raw:
                f.seek(padded, 1)
            else:
                _exact(f, padded, name)


def iter_raw_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of one shard in tar order, undecoded (streamed; hidden files skipped).

    A shard that breaks mid-read yields the samples before the break, then raises tarfile.ReadError."""
    key, files = None, {}
    try:
        for name, data, _ in iter_tar_files(path):
            split = sample_key(name)
            if split is None:
                continue
            if split[0] != key and key is not None:
                yield key, files
                files = {}
            key, files[split[1]] = split[0], data
    except (tarfile.TarError, OSError, EOFError):
        if key is not None and files:
            yield key, files
        raise
    if key is not None and files:
        yield key, files


def count_samples(path: Path) -> int:
    """Samples in one shard (distinct webdataset keys, as iter_raw_samples groups them), from the tar headers
    (data is skipped)."""
    keys = (sample_key(name) for name, _, _ in iter_tar_files(path, read=False))
    return len({k[0] for k in keys if k is not None})


def iter_shards(paths: Iterable[str | Path]) -> Iterator[dict]:
    """Decoded samples in shard order: images as RGB PIL, npy as arrays, json as dicts, txt as str."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise DalleEvalError(f"shard listed in the manifest is missing: {p}")
    for p in paths:
        for key, files in iter_raw_samples(p):
            sample = {"__key__": key, **{ext: decode_file(ext, data) for ext, data in files.items()}}
            for ext in IMAGE_EXTS:
                if ext in sample:
                    sample["image"] = sample.pop(ext)
            yield sample


def decode_file(ext: str, data: bytes):
    """One sample file as webdataset's decode("pil") reads it, by its last extension: an image as RGB PIL,
    npy as an array, json as its value, txt as str, cls as int, anything else as bytes."""
    kind = ext.rsplit(".", 1)[-1]
    if kind in IMAGE_EXTS:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    if kind == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "json":
        return json.loads(data)
    if kind in ("txt", "text"):
        return data.decode("utf-8")
    if kind in ("cls", "cls2", "index"):
        return int(data)
    return data
