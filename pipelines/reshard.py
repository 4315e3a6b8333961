"""Re-sharding: the kept samples of the downloaded shards, bytes as downloaded, into the image stage's shards.

The samples are copied, never decoded or re-encoded, and written by tar_reader.write_samples: the bytes
webdataset's TarWriter (shards.write_shard) writes for them, without its ~0.1 ms of tarfile work per file
(tests/test_build_overhead.py: the same shards, byte for byte, for the same clock)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from dalle_eval.artifacts import atomic_path
from dalle_eval.shards import iter_raw_samples, shard_name, write_shard
from dalle_eval.tar_reader import NotPlainSample, write_samples


def write_raw_shard(path: Path, samples) -> int:
    """Write samples ({"__key__", ext: bytes}) to one tar, atomically: shards.write_shard's bytes. A sample it
    would encode (a .gz or _-prefixed file name in a downloaded shard) sends the whole shard through it."""
    samples = list(samples)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb", buffering=1 << 20) as f:
            return write_samples(f, samples)
    except NotPlainSample:
        return write_shard(path, samples)


def reshard(table: pd.DataFrame, shards: list[Path], images: Path, shard_size: int) -> list[str]:
    """Copy the kept samples (bytes as downloaded) into shard-%06d.tar files of `shard_size`, keyed by
    pair key, each written atomically; shards already written by an interrupted run are kept. -> shard names."""
    ok = table["status"] == "ok"
    keep = dict(zip(table.loc[ok, "i2d_key"], table.loc[ok, "key"]))
    order = sorted(keep.values())
    slot = {k: i // shard_size for i, k in enumerate(order)}
    n_out = (len(order) + shard_size - 1) // shard_size
    buckets: dict[int, list[tuple[str, dict[str, bytes]]]] = {i: [] for i in range(n_out)}
    todo = {i for i in range(n_out) if not (images / shard_name(i)).exists()}
    for shard in tqdm(shards if todo else [], desc="write kept image shards", unit="shard"):
        for stem, files in iter_raw_samples(shard):
            key = keep.get(stem)
            if key is not None and slot[key] in todo:
                buckets[slot[key]].append((key, files))
    for i in sorted(todo):
        write_raw_shard(images / shard_name(i), ({"__key__": key, **files} for key, files in sorted(buckets[i])))
    return [shard_name(i) for i in range(n_out)]
