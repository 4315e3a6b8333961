"""Re-sharding: the kept samples of the downloaded shards, bytes as downloaded, into the image stage's shards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from dalle_eval.shards import iter_raw_samples, shard_name, write_shard


def reshard(table: pd.DataFrame, shards: list[Path], images: Path, shard_size: int) -> list[str]:
    """Copy the kept samples (bytes as downloaded) into shard-%06d.tar files of `shard_size`, keyed by
    pair key, each written atomically; shards already written by an interrupted run are kept. -> shard names."""
    keep = dict(zip(table.loc[table["status"] == "ok", "i2d_key"], table.loc[table["status"] == "ok", "key"]))
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
        write_shard(images / shard_name(i), ({"__key__": key, **files} for key, files in sorted(buckets[i])))
    return [shard_name(i) for i in range(n_out)]
