"""Webdataset shard I/O shared by the data pipeline and training (core): writing shards, the sample key, reading
samples raw or decoded (through the raw tar reader, tar_reader.py).

Every shard is written to a temp file and renamed, so a killed run leaves only whole shards and
re-runs skip them.
"""

from __future__ import annotations

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
from dalle_eval.tar_reader import iter_tar_files


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
