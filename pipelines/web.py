"""`build-dataset` for url+caption lists: read -> pre-filter -> download -> post-filter -> kept image shards
(orchestration only: the post-filter is postfilter.py, the re-sharding reshard.py, the record image_manifest.py).

    OUT/download/img2dataset/ its webdataset output (incremental: a killed run resumes) and
                             a pHash table per shard (computed once, while the later shards download)
    OUT/images/              the kept samples only, re-sharded (key = the pair key) + manifest.json
    OUT/pairs.parquet        every input row with exactly one status: "ok" or the first stage's reason

Statuses are set once: a row rejected by the pre-filter is never downloaded; a download error or a
post-filter (near_duplicate, eval_overlap, clip_score_low) marks only rows still "ok".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from dalle_eval.pipelines.download import download_images
from dalle_eval.pipelines.image_manifest import write_image_stage
from dalle_eval.pipelines.postfilter import postfilter
from dalle_eval.pipelines.prefilter import filter_counts, prefilter
from dalle_eval.pipelines.reshard import reshard

from dalle_eval.config import Config
from dalle_eval.outputs import prepare_stage


def build_web_images(cfg: Config, source: str, pairs: pd.DataFrame, out: Path, eval_captions: Path | None = None,
                     eval_images: Path | None = None) -> dict:
    """pairs: read_pairs(source) (the first --n rows)."""
    d = cfg.data
    table = prefilter(pairs, cfg.filter, eval_captions)
    pre = filter_counts(table)
    print("pre-filter: " + ", ".join(f"{k} {v}" for k, v in pre.items() if v))

    download = out / "download"
    todo = table[table["status"] == "ok"]
    urls = hashlib.sha256("\n".join(todo["key"] + "\t" + todo["url"]).encode()).hexdigest()
    dl_keys = ("resolution", "shard_size", "min_image_size", "max_aspect_ratio", "max_image_area")
    prepare_stage(download, {"urls_sha256": urls, **{k: getattr(d, k) for k in dl_keys}})  # new urls: wipe
    got, raw = download_images(todo, download / "img2dataset", d)  # it owns its folder (reads every *.json)
    table = table.merge(got[["key", "i2d_key", "status", "error", "width", "height"]].rename(
        columns={"status": "download_status"}), on="key", how="left")
    table["status"] = table["download_status"].where(table["status"] == "ok", table["status"])
    table = table.drop(columns=["download_status"])
    post = postfilter(cfg, table, raw, eval_images)

    images = out / "images"  # build.py recorded its inputs: the kept set is a function of them
    names = reshard(table, raw, images, d.shard_size)
    return write_image_stage(out, table, source, names, cfg, prefilter=pre, postfilter=post)
