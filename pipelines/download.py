"""Download url+caption pairs with img2dataset into webdataset shards, and fold its per-sample
status back into the pair table (so every row ends with exactly one status).

img2dataset does the heavy lifting (threads, processes, or a pyspark/ray cluster via
`data.download_distributor`), resizing to `data.resolution` with a center crop, the size/aspect/area
limits and incremental mode (a killed run resumes: finished shards are skipped). Its free-text
errors become short status classes (`http_404`, `timeout`, `undecodable`, ...) with the original
message kept in `error`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from dalle_eval.config import DataConfig
from dalle_eval.errors import DalleEvalError

DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
_CLASSES = [  # (regex on img2dataset's error message, status class), first match wins
    (r"infinite loop", "redirect_loop"),
    (r"HTTP Error (\d{3})", "http_{0}"),
    (r"timed out|timeout", "timeout"),
    (r"image too small", "too_small"),
    (r"aspect ratio too large", "bad_aspect_ratio"),
    (r"image area too large", "too_large"),
    (r"decoding error|cannot identify|truncated", "undecodable"),
    (r"X-Robots-Tag", "opted_out"),
    (r"Name or service not known|nodename nor servname|getaddrinfo|Connection refused|unreachable", "unreachable"),
    (r"unknown url type|no host given|Invalid URL", "bad_url"),
]


def error_class(message: str | None, fallback: str) -> str:
    for pattern, name in _CLASSES:
        m = re.search(pattern, message or "", re.IGNORECASE)
        if m:
            return name.format(*m.groups())
    return fallback


def download_images(pairs: pd.DataFrame, out: Path, cfg: DataConfig) -> tuple[pd.DataFrame, list[Path]]:
    """-> (DataFrame[key, i2d_key, status, error, width, height], one row per pair; the image shards)."""
    if cfg.download_distributor not in DISTRIBUTORS:
        raise DalleEvalError(f"data.download_distributor must be one of {', '.join(DISTRIBUTORS)}, "
                             f"got {cfg.download_distributor!r}")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download  # heavy import (albumentations, cv2): only when downloading

    out.mkdir(parents=True, exist_ok=True)
    url_list = out / "_url_list.parquet"
    pairs[["key", "url", "caption"]].rename(columns={"key": "pair_key"}).to_parquet(url_list, index=False)
    with _cluster(cfg.download_distributor):
        _download(download, url_list, out, cfg)
    return _fold_status(pairs, out)


@contextmanager
def _cluster(distributor: str) -> Iterator[None]:
    """Check that a pyspark/ray distributor is installed; stop the local Spark session or Ray instance that
    img2dataset starts when none is running, so the caller's process is left as it was found."""
    if distributor == "multiprocessing":
        yield
        return
    extra = {"pyspark": "spark", "ray": "ray"}[distributor]
    try:
        module = importlib.import_module("pyspark.sql" if distributor == "pyspark" else "ray")
    except ImportError:
        raise DalleEvalError(f"data.download_distributor={distributor} needs {distributor}: "
                             f"pip install 'dalle-eval[{extra}]' (or use multiprocessing)") from None
    if distributor == "ray":
        running = module.is_initialized()
        try:
            yield
        finally:
            if not running and module.is_initialized():
                module.shutdown()
        return
    # Spark starts its Python workers with `python3` from PATH unless told: outside this venv they cannot
    # import img2dataset. A cluster's own setting (spark-env.sh / the environment) wins.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    running = module.SparkSession.getActiveSession()
    try:
        yield
    finally:
        session = module.SparkSession.getActiveSession()
        if running is None and session is not None:
            session.stop()


def _download(download, url_list: Path, out: Path, cfg: DataConfig) -> None:
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
        distributor=cfg.download_distributor,
        timeout=cfg.download_timeout,
        retries=cfg.download_retries,
        min_image_size=cfg.min_image_size,
        max_aspect_ratio=cfg.max_aspect_ratio,
        max_image_area=cfg.max_image_area,
        number_sample_per_shard=cfg.shard_size,
        incremental_mode="incremental",  # a killed run resumes: finished shards are skipped
        enable_wandb=False,
    )


def _fold_status(pairs: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, list[Path]]:
    """img2dataset's per-shard parquet (status, error) joined back onto the pair table by pair key."""
    stats = [pd.read_parquet(p) for p in sorted(out.glob("[0-9]*.parquet"))]
    got = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame(columns=["pair_key", "status"])
    got = got.drop(columns=[c for c in ("width", "height") if c in got.columns])  # the resized size: known
    got = got.rename(columns={"error_message": "error", "original_width": "width", "original_height": "height"})
    got = got.drop_duplicates("pair_key", keep="last")  # a shard retried by incremental mode
    got = got.rename(columns={"key": "i2d_key"})  # img2dataset's own sample key (its shards use it)
    keep = [c for c in ("pair_key", "i2d_key", "status", "error", "width", "height") if c in got.columns]
    table = pairs[["key"]].merge(got[keep].rename(columns={"pair_key": "key"}), on="key", how="left")
    failed = table["status"].notna() & (table["status"] != "success")
    table.loc[failed, "status"] = [error_class(e, s) for e, s in zip(table.loc[failed, "error"], table.loc[failed, "status"])]
    table["status"] = table["status"].replace({"success": "ok"}).fillna("not_attempted")
    return table, sorted(out.glob("[0-9]*.tar"))
