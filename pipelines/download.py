"""Download url+caption pairs with img2dataset into webdataset shards, and fold its per-sample
status back into the pair table (so every row ends with exactly one status)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dalle_eval.config import DataConfig


def download_images(pairs: pd.DataFrame, out: Path, cfg: DataConfig) -> tuple[pd.DataFrame, list[Path]]:
    """-> (pair table with status/error/width/height per row, list of image shards)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download  # heavy import (albumentations, cv2): only when downloading

    out.mkdir(parents=True, exist_ok=True)
    url_list = out / "_url_list.parquet"
    pairs.rename(columns={"key": "pair_key"}).to_parquet(url_list, index=False)
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
        timeout=cfg.download_timeout,
        retries=cfg.download_retries,
        number_sample_per_shard=cfg.shard_size,
        incremental_mode="incremental",  # a killed run resumes: finished shards are skipped
        enable_wandb=False,
    )
    stats = [pd.read_parquet(p) for p in sorted(out.glob("[0-9]*.parquet"))]
    got = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame(columns=["pair_key", "status"])
    got = got.rename(columns={"error_message": "error"})
    keep = [c for c in ("pair_key", "status", "error", "width", "height") if c in got.columns]
    table = pairs.merge(got[keep].rename(columns={"pair_key": "key"}), on="key", how="left")
    table["status"] = table["status"].fillna("not_attempted")
    return table, sorted(out.glob("[0-9]*.tar"))
