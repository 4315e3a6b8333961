"""Webdataset shard I/O shared by the data pipeline and training (core): writing shards, the sample key, reading
samples raw or decoded (through the raw tar reader, tar_reader.py), and where shards are read from.

Every shard is written to a temp file and renamed, so a killed run leaves only whole shards and
re-runs skip them. Shards are read from a local path or any fsspec URL (s3://, gs://, https://, memory://;
file:// is a local path): `data_location` tells which, and a remote shard is streamed, never copied to disk.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image

from dalle_eval.artifacts import MANIFEST, atomic_path, read_manifest
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS
from dalle_eval.tar_reader import iter_tar_files

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_T = TypeVar("_T")


class RemoteLocation:
    """A folder or file behind an fsspec URL, joined with `/` as a Path is; read as a stream (open) or whole
    (read_bytes), never downloaded to disk. Not a str, so Path() of it fails instead of mangling the URL."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def __truediv__(self, name: str) -> RemoteLocation:
        return RemoteLocation(f"{self.url}/{name}")

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteLocation({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemoteLocation) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def exists(self) -> bool:
        fs, path = _filesystem(self.url)
        return _remote(lambda: fs.exists(path))

    def open(self) -> BinaryIO:
        """A buffered stream: whole reads, peek(), every failure of the store an OSError."""
        return io.BufferedReader(_RemoteReader(self.url), buffer_size=1 << 20)

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()


def data_location(where: str | Path | RemoteLocation) -> Path | RemoteLocation:
    """A local path (file:// URLs included), or a RemoteLocation for any other URL; a URL whose fsspec
    protocol is unknown or not installed is refused here, naming the package to install."""
    if isinstance(where, (Path, RemoteLocation)):
        return where
    m = _SCHEME.match(str(where))
    if m is None:
        return Path(where)
    if m.group(1).lower() == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(str(where)).path))
    _check_protocol(str(where), m.group(1).lower())
    return RemoteLocation(str(where))


def _check_protocol(url: str, protocol: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:  # fsspec names the class, the missing module is the package (s3fs, gcsfs, aiohttp)
        package = getattr(e.__cause__, "name", None) or str(e)
        raise DalleEvalError(f"{url}: reading {protocol}:// needs the {package} package: pip install {package}") from None
    except ValueError:
        raise DalleEvalError(f"{url}: no fsspec filesystem for {protocol}:// (expected a local path, s3://, "
                             "gs://, https://, memory://, or another fsspec protocol)") from None


def _filesystem(url: str):
    import fsspec.core

    return _remote(lambda: fsspec.core.url_to_fs(url))


def _remote(call: Callable[[], _T]) -> _T:
    """call(), any failure of the store (aiohttp's, botocore's) re-raised as an OSError (callers name the URL)."""
    try:
        return call()
    except OSError:
        raise
    except Exception as e:  # each fsspec backend raises its own client errors: one kind for the callers
        raise OSError(f"{type(e).__name__}: {e}") from e


class _RemoteReader(io.RawIOBase):
    """One remote file read front to back; over HTTP a single streamed GET (block_size=0), not range requests."""

    def __init__(self, url: str):
        super().__init__()
        fs, path = _filesystem(url)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        options = {"block_size": 0} if protocols & {"http", "https"} else {}
        self._f = _remote(lambda: fs.open(path, "rb", **options))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = _remote(lambda: self._f.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def local_files(folder: Path | RemoteLocation, names: Iterable[str], dest: Path) -> Path:
    """The local folder holding `names` (files or folders) of a dataset folder: the folder itself when it is
    local; a URL's are copied into `dest` first (small files beside the shards: tokenizer, dVAE)."""
    if isinstance(folder, Path):
        return folder
    for name in names:
        _fetch(folder / name, dest / name)
    return dest


def _fetch(src: RemoteLocation, dest: Path) -> None:
    """Copy a remote file, or a folder and everything under it, to dest; each file is renamed into place whole,
    so ranks fetching the same files at once do no harm."""
    fs, path = _filesystem(src.url)
    try:
        if _remote(lambda: fs.isdir(path)):  # over HTTP: listed from the folder's index page
            files = {f: dest / f[len(path) :].strip("/") for f in _remote(lambda: fs.find(path))}
        else:
            files = {path: dest}
        for remote, local in files.items():
            with atomic_path(local) as tmp:
                _remote(functools.partial(fs.get_file, remote, str(tmp)))
    except OSError as e:
        raise DalleEvalError(f"{src}: cannot be copied to {dest} ({e}); over HTTP a folder needs an index page "
                             "listing its files") from None


def read_location_manifest(folder: Path | RemoteLocation, what: str) -> dict:
    """The manifest.json of a local folder (artifacts.read_manifest) or of a URL prefix."""
    if isinstance(folder, Path):
        return read_manifest(folder, what)
    try:
        text = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise DalleEvalError(f"{folder}: no {MANIFEST} — not a {what} location (run the stage that makes it "
                             "first, then copy the folder to the store)") from None
    except OSError as e:
        raise DalleEvalError(f"{folder / MANIFEST}: cannot be read ({e})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise DalleEvalError(f"{folder / MANIFEST}: not valid JSON ({e})") from None


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def write_shard(path: Path, samples: Iterable[dict]) -> int:
    """Write samples ({"__key__", "png"/"txt"/"json"/"x.npy": value}) to one tar, atomically."""
    import webdataset as wds  # here: it imports torch, which a shard reader (a pHash worker) does not need

    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f, wds.TarWriter(f) as sink:
        for sample in samples:
            sink.write(sample)
            n += 1
    return n


_WDS_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key / extension split


def sample_key(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a tar member as webdataset splits it; None for a member that is no
    sample's file (no extension, or a hidden file)."""
    m = _WDS_NAME.match(name)
    if m is None or Path(name).name.startswith("."):
        return None
    return m.group(1), m.group(2).lower()


def iter_raw_samples(path: str | Path | RemoteLocation) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of one shard in tar order, undecoded (streamed; hidden files skipped).

    path: a local path or a URL (data_location). A shard that breaks mid-read yields the samples before
    the break, then raises tarfile.ReadError (or OSError: a store that fails mid-stream)."""
    where = data_location(path)
    if isinstance(where, RemoteLocation):
        with where.open() as stream:
            yield from _group_samples(iter_tar_files(stream))
    else:
        yield from _group_samples(iter_tar_files(where))


def _group_samples(members: Iterator[tuple[str, bytes | None, int]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    key, files = None, {}
    try:
        for name, data, _ in members:
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


def iter_shards(paths: Iterable[str | Path | RemoteLocation]) -> Iterator[dict]:
    """Decoded samples in shard order (local paths or URLs): images as RGB PIL, npy as arrays, json as dicts,
    txt as str."""
    paths = [data_location(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise DalleEvalError(f"shard listed in the manifest is missing: {p}")
    for p in paths:
        for key, files in iter_raw_samples(p):
            sample = decode_sample(key, files)
            for ext in IMAGE_EXTS:
                if ext in sample:
                    sample["image"] = sample.pop(ext)
            yield sample


def decode_sample(key: str, files: dict[str, bytes]) -> dict:
    """{"__key__", extension: decoded value} as webdataset's decode("pil") gives it (see decode_file)."""
    return {"__key__": key, **{ext: decode_file(ext, data) for ext, data in files.items()}}


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
