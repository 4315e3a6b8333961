"""The image stage's record, one writer for every source: OUT/pairs.parquet and OUT/images/manifest.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dalle_eval.artifacts import MANIFEST, atomic_path, write_json
from dalle_eval.config import Config, config_to_dict


def write_image_stage(out: Path, table: pd.DataFrame, source: str, shards: list[str], cfg: Config,
                      **extra: dict) -> dict:
    """Write pairs.parquet (every input row with its status) and the manifest of the shards in OUT/images
    (names relative to it); `extra` (e.g. prefilter/postfilter counts) goes into the manifest. -> manifest.

    Every source writes its kept samples in key order, `data.shard_size` to a shard (the last one holds the rest),
    so the shard sizes follow from the count of "ok" rows without re-reading the shards (tests count them)."""
    images = out / "images"
    with atomic_path(out / "pairs.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    n_ok, size = int(counts.get("ok", 0)), cfg.data.shard_size
    if len(shards) != -(-n_ok // size):
        raise AssertionError(f"{len(shards)} image shards for {n_ok} samples of {size} a shard in {images}")
    manifest = {
        "kind": "images",
        "source": str(source),
        "n_samples": n_ok,
        "n_shards": len(shards),
        "shards": list(shards),
        "shard_sizes": [min(size, n_ok - i * size) for i in range(len(shards))],
        "resolution": cfg.data.resolution,
        "status_counts": {k: int(v) for k, v in counts.items()},
        **extra,
        "config": {"data": config_to_dict(cfg.data), "filter": config_to_dict(cfg.filter)},
    }
    write_json(images / MANIFEST, manifest)
    return manifest
