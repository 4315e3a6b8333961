"""The images in image shards (as downloaded) and in image folders (an evaluation set), decoded for pHash dedup
and CLIP filtering.

    iter_shard_samples(shards) -> Sample per webdataset key, image decoded (or the decoder's error)
    hash_shards(shards)        -> DataFrame[key, source, phash, status, error], hashed in batches
    hash_folder(folder)        -> the same for every image file under a folder (key = relative path)
"""

from __future__ import annotations

import io
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from dalle_eval.pipelines.dedup import gray32, phash_gray
from PIL import Image, ImageOps
from tqdm import tqdm

from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS, is_image_file
from dalle_eval.shards import data_location, iter_raw_samples

EXIF_ORIENTATION = 0x0112


@dataclass
class Sample:
    key: str
    source: str  # shard or file name
    image: Image.Image | None
    caption: str | None
    error: str | None


def _message(e: Exception) -> str:
    """One line naming the error, without the object addresses some decoders put in it (PIL: "cannot identify
    image file <_io.BytesIO object at 0x...>"), so a report reads the same from run to run."""
    return re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", f"{type(e).__name__}: {e}".splitlines()[0])[:200]


def _decode(data: bytes) -> tuple[Image.Image | None, str | None]:
    """The image as shown: EXIF orientation applied (an evaluation set's photos; downloaded samples were
    turned upright by pipelines/download.py and carry no EXIF)."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        return im, None
    except Exception as e:  # noqa: BLE001 — any decoder failure (truncated, bomb, not an image) is reported
        return None, _message(e)


def iter_shard_samples(shards: Iterable[str | Path], bad_shards: list[str] | None = None) -> Iterator[Sample]:
    """Samples of webdataset tars (local paths or URLs; files grouped by key, as webdataset does), images decoded
    one by one. A shard that breaks mid-read keeps the samples before the break and is added to `bad_shards`."""
    for shard in shards:
        where = data_location(shard)
        if not (where.is_file() if isinstance(where, Path) else where.exists()):
            raise DalleEvalError(f"{shard}: image shard not found")
        name, key = where.name, None
        try:
            for key, files in iter_raw_samples(where):
                yield _sample(key, name, files)
        except (tarfile.TarError, OSError, EOFError) as e:
            warnings.warn(
                f"{shard}: unreadable shard after {key or 'its start'} ({e}); kept what came before"
            )
            if bad_shards is not None:
                bad_shards.append(str(shard))


def _sample(key: str, shard: str, files: dict[str, bytes]) -> Sample:
    ext = next((e for e in IMAGE_EXTS if e in files), None)
    image, error = _decode(files[ext]) if ext else (None, "no image file in the sample")
    caption = files["txt"].decode("utf-8", "replace") if "txt" in files else None
    return Sample(key, shard, image, caption, error)


def _hash_samples(samples: Iterable[Sample], batch_size: int, bar: tqdm) -> pd.DataFrame:
    rows, batch = (
        [],
        [],
    )  # rows: (order, key, source, phash, status, error); batch: (order, key, source, grey)

    def flush():
        hashes = phash_gray(np.stack([g for *_, g in batch])).view(np.int64) if batch else []
        rows.extend((n, key, src, int(v), "ok", None) for (n, key, src, _), v in zip(batch, hashes))
        bar.update(len(batch))
        batch.clear()

    for n, s in enumerate(samples):
        grey, error = None, s.error
        if s.image is not None:
            try:
                grey = gray32(s.image)  # only the 32x32 grey image waits for the batch
            except Exception as e:  # noqa: BLE001 — a mode PIL cannot convert to grey is reported too
                error = _message(e)
        if grey is None:
            rows.append((n, s.key, s.source, None, "unreadable_image", error))
            bar.update(1)
            continue
        batch.append((n, s.key, s.source, grey))
        if len(batch) >= batch_size:
            flush()
    flush()
    rows.sort(key=lambda row: row[0])
    _, keys, sources, hashes, status, errors = zip(*rows) if rows else ([],) * 6
    df = pd.DataFrame(
        {
            "key": list(keys),
            "source": list(sources),
            "phash": pd.array(hashes, dtype="Int64"),
            "status": list(status),
            "error": list(errors),
        }
    )  # Int64 built directly: no float round trip
    bad = df[df.status != "ok"]
    if len(bad):
        names = ", ".join(
            f"{s}:{k} ({e})" for k, s, e in bad[["key", "source", "error"]].head(5).itertuples(False)
        )
        warnings.warn(f"{len(bad)} unreadable image(s), status unreadable_image: {names}")
    return df


def hash_shards(shards: Sequence[str | Path], batch_size: int = 256, progress: bool = True) -> pd.DataFrame:
    """pHash every sample of webdataset image shards -> DataFrame[key, source (shard), phash (Int64,
    null if unreadable), status ('ok' | 'unreadable_image'), error]; attrs['bad_shards']."""
    bad: list[str] = []
    with tqdm(desc=f"phash {len(shards)} shard(s)", unit="img", disable=not progress) as bar:
        df = _hash_samples(iter_shard_samples(shards, bad), batch_size, bar)
    df.attrs["bad_shards"] = bad
    return df


def hash_folder(folder: str | Path, batch_size: int = 256, progress: bool = True) -> pd.DataFrame:
    """pHash every image file under `folder` (recursive; key = relative path), e.g. an evaluation set."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DalleEvalError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())

    def samples():
        for p in files:
            rel = p.relative_to(folder).as_posix()
            image, error = _decode(p.read_bytes())
            yield Sample(rel, folder.name, image, None, error)

    with tqdm(total=len(files), desc=f"phash {folder.name}", unit="img", disable=not progress) as bar:
        return _hash_samples(samples(), batch_size, bar)
