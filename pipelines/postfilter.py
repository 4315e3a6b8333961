"""Post-filter of downloaded images (README stage 4): near-duplicates within the set (pHash), overlap with an
evaluation image set, and the CLIP score when filter.clip_model is set. Marks rows of the pairs table in place."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from dalle_eval.pipelines.dedup import eval_overlap, near_duplicates
from dalle_eval.pipelines.shard_images import hash_folder, hash_shards
from tqdm import tqdm

from dalle_eval.artifacts import atomic_path
from dalle_eval.config import Config

# Hash in worker processes when the shards left to hash hold at least this many bytes. A worker is spawned (not
# forked: this process may hold torch and DuckDB threads) and starts in ~1 s (its imports); downloaded 64 px
# samples take ~7.5 KB of tar and ~0.18 ms to hash, so on 2 cores processes break even at ~85 MB (~11,000
# images) and are 1.33x faster at 176 MB (benchmarks/build_dataset.py hash). Below, one shard after the other
# (threads were no faster: reading tars and opening small images hold the GIL).
PROCESSES_FROM_BYTES = 128 << 20


def cache_shard_hashes(shard: Path) -> Path:
    """The pHash table of one downloaded shard, computed once into SHARD.phash.parquet (atomically) -> its path:
    a post-filter run again after a kill hashes only the shards it had not done."""
    cache = shard.with_suffix(".phash.parquet")
    if not cache.exists():
        with atomic_path(cache) as tmp:
            hash_shards([shard], progress=False).to_parquet(tmp, index=False)
    return cache


def _hashes(shards: list[Path]) -> pd.DataFrame:
    """pHash of every downloaded sample, cached beside each shard (a re-run hashes only new shards); in a
    process per core when there is enough to hash (PROCESSES_FROM_BYTES), so the post-filter scales with the
    cores as img2dataset does."""
    todo = [s for s in shards if not s.with_suffix(".phash.parquet").exists()]
    workers = min(os.cpu_count() or 1, len(todo))
    bar = {"total": len(todo), "desc": "phash downloaded shards", "unit": "shard"}
    if workers > 1 and sum(s.stat().st_size for s in todo) >= PROCESSES_FROM_BYTES:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in tqdm(pool.map(cache_shard_hashes, todo), **bar):
                pass
    else:
        for shard in tqdm(todo, **bar):
            cache_shard_hashes(shard)
    parts = [pd.read_parquet(s.with_suffix(".phash.parquet")) for s in shards]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["key", "phash", "status"])


def _mark(table: pd.DataFrame, keys: pd.Series, status: str) -> int:
    """Set `status` on rows still ok whose key is in `keys`; -> how many."""
    hit = table["status"].eq("ok") & table["key"].isin(set(keys))
    table.loc[hit, "status"] = status
    return int(hit.sum())


def postfilter(cfg: Config, table: pd.DataFrame, shards: list[Path], eval_images: Path | None) -> dict:
    """Near-duplicates within the set, overlap with an evaluation image set, CLIP score (in place)."""
    f = cfg.filter
    hashes = _hashes(shards).merge(table[["i2d_key", "key"]].dropna(), left_on="key", right_on="i2d_key",
                                   suffixes=("_i2d", ""))
    unreadable = hashes.loc[hashes["status"] != "ok", "key"]
    counts = {"unreadable_image": _mark(table, unreadable, "unreadable_image")}
    ok = hashes[hashes["key"].isin(table.loc[table["status"] == "ok", "key"])].sort_values("key")
    table["phash"] = table["key"].map(dict(zip(ok["key"], ok["phash"])))
    if "near_duplicate" not in f.skip and len(ok):
        dups = near_duplicates(ok["key"].tolist(), ok["phash"].to_numpy(), f.dedup_threshold)
        table["dup_of"] = table["key"].map(dict(zip(dups["key"], dups["dup_of"])))
        counts["near_duplicate"] = _mark(table, dups.loc[dups["status"] == "near_duplicate", "key"], "near_duplicate")
    if eval_images is not None and "eval_overlap" not in f.skip and len(ok):
        ev = hash_folder(eval_images)
        ev = ev[ev["status"] == "ok"]
        over = eval_overlap(ok["key"].tolist(), ok["phash"].to_numpy(), ev["phash"].to_numpy(), f.eval_threshold,
                            eval_keys=ev["key"].tolist())
        table["eval_match"] = table["key"].map(dict(zip(over["key"], over["eval_match"])))
        counts["eval_overlap"] = _mark(table, over.loc[over["status"] == "eval_overlap", "key"], "eval_overlap")
    if f.clip_model:
        from dalle_eval.model.clip import ClipScorer
        from dalle_eval.pipelines.clip_filter import clip_filter_shards

        scored = clip_filter_shards(shards, ClipScorer(f.clip_model, f.clip_pretrained, cfg.data.device),
                                    f.clip_threshold).merge(table[["i2d_key", "key"]], left_on="key",
                                                            right_on="i2d_key", suffixes=("_i2d", ""))
        table["clip_score"] = table["key"].map(dict(zip(scored["key"], scored["clip_score"])))
        counts["clip_score_low"] = _mark(table, scored.loc[scored["status"] == "clip_score_low", "key"], "clip_score_low")
    return counts
