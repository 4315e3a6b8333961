"""The image stage's record, one writer for every source: OUT/pairs.parquet and OUT/images/manifest.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dalle_eval.artifacts import MANIFEST, atomic_path, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.shards import count_samples


def write_image_stage(out: Path, table: pd.DataFrame, source: str, shards: list[str], cfg: Config,
                      **extra: dict) -> dict:
    """Write pairs.parquet (every input row with its status) and the manifest of the shards in OUT/images
    (names relative to it); `extra` (e.g. prefilter/postfilter counts) goes into the manifest. -> manifest."""
    images = out / "images"
    with atomic_path(out / "pairs.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    manifest = {
        "kind": "images",
        "source": str(source),
        "n_samples": int(counts.get("ok", 0)),
        "n_shards": len(shards),
        "shards": list(shards),
        "shard_sizes": [count_samples(images / s) for s in shards],
        "resolution": cfg.data.resolution,
        "status_counts": {k: int(v) for k, v in counts.items()},
        **extra,
        "config": {"data": config_to_dict(cfg.data), "filter": config_to_dict(cfg.filter)},
    }
    write_json(images / MANIFEST, manifest)
    return manifest
