"""Webdataset shard I/O shared by the data pipeline and training (leaf module).

Every shard is written to a temp file and renamed, so a killed run leaves only whole shards and
re-runs skip them.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from dalle_eval.artifacts import atomic_path
from dalle_eval.errors import DalleEvalError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


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


def iter_raw_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of one shard in tar order, undecoded (streamed; hidden files skipped).

    A shard that breaks mid-read yields the samples before the break, then raises the tarfile error."""
    key, files = None, {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                m = _WDS_NAME.match(member.name) if member.isfile() else None
                if m is None or Path(member.name).name.startswith("."):
                    continue
                if m.group(1) != key and key is not None:
                    yield key, files
                    files = {}
                key, files[m.group(2).lower()] = m.group(1), tf.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError):
        if key is not None and files:
            yield key, files
        raise
    if key is not None and files:
        yield key, files


def count_samples(path: Path) -> int:
    """Samples in one shard (distinct webdataset keys), read from the tar index without decoding."""
    with tarfile.open(path) as tf:
        return len({m.name.split(".", 1)[0] for m in tf.getmembers() if m.isfile()})


def iter_shards(paths: Iterable[str | Path]) -> Iterator[dict]:
    """Decoded samples in shard order: images as RGB PIL, npy as arrays, json as dicts, txt as str."""
    paths = [str(p) for p in paths]
    for p in paths:
        if not Path(p).exists():
            raise DalleEvalError(f"shard listed in the manifest is missing: {p}")
    if not paths:
        return
    dataset = wds.WebDataset(paths, shardshuffle=False, empty_check=False, nodesplitter=every_shard,
                             workersplitter=every_shard).decode("pil")
    for sample in dataset:
        for ext in IMAGE_EXTS:
            if ext in sample:
                sample["image"] = sample.pop(ext).convert("RGB")
        yield sample


def image_to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
