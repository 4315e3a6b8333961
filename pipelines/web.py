"""`build-dataset` for url+caption lists: read -> pre-filter -> download -> post-filter -> kept image shards.

    OUT/download/img2dataset/ its webdataset output (incremental: a killed run resumes) and
                             a pHash table per shard (computed once)
    OUT/images/              the kept samples only, re-sharded (key = the pair key) + manifest.json
    OUT/pairs.parquet        every input row with exactly one status: "ok" or the first stage's reason

Statuses are set once: a row rejected by the pre-filter is never downloaded; a download error or a
post-filter (near_duplicate, eval_overlap, clip_score_low) marks only rows still "ok".
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from dalle_eval.pipelines.dedup import eval_overlap, near_duplicates
from dalle_eval.pipelines.download import download_images
from dalle_eval.pipelines.image_reader import hash_folder, hash_shards
from dalle_eval.pipelines.prefilter import filter_counts, prefilter
from tqdm import tqdm

from dalle_eval.artifacts import MANIFEST, atomic_path, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.outputs import prepare_stage
from dalle_eval.shards import count_samples, iter_raw_samples, shard_name


def _shard_hashes(shard: Path) -> pd.DataFrame:
    cache = shard.with_suffix(".phash.parquet")
    if not cache.exists():
        with atomic_path(cache) as tmp:
            hash_shards([shard], progress=False).to_parquet(tmp, index=False)
    return pd.read_parquet(cache)


def _hashes(shards: list[Path]) -> pd.DataFrame:
    """pHash of every downloaded sample, cached beside each shard (a re-run hashes only new shards).

    A thread per core: PIL's decoders and resizers release the GIL, and threads start in microseconds
    where worker processes would cost more than hashing a few thousand small images.
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        parts = list(tqdm(pool.map(_shard_hashes, shards), total=len(shards), desc="phash downloaded shards",
                          unit="shard"))
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


def reshard(table: pd.DataFrame, shards: list[Path], images: Path, shard_size: int) -> tuple[list[str], list[int]]:
    """Copy the kept samples (bytes as downloaded) into shard-%06d.tar files of `shard_size`, keyed by
    pair key, each written atomically; shards already written by an interrupted run are kept."""
    keep = dict(zip(table.loc[table["status"] == "ok", "i2d_key"], table.loc[table["status"] == "ok", "key"]))
    order = sorted(keep.values())
    slot = {k: i // shard_size for i, k in enumerate(order)}
    n_out = (len(order) + shard_size - 1) // shard_size
    buckets: dict[int, list[tuple[str, list[tuple[str, bytes]]]]] = {i: [] for i in range(n_out)}
    todo = {i for i in range(n_out) if not (images / shard_name(i)).exists()}
    for shard in tqdm(shards if todo else [], desc="write kept image shards", unit="shard"):
        for stem, files in iter_raw_samples(shard):
            key = keep.get(stem)
            if key is not None and slot[key] in todo:
                buckets[slot[key]].append((key, sorted(files.items())))
    for i in sorted(todo):
        with atomic_path(images / shard_name(i)) as tmp, tarfile.open(tmp, "w") as out:
            for key, files in sorted(buckets[i]):
                for ext, data in files:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    out.addfile(info, io.BytesIO(data))
    names = [shard_name(i) for i in range(n_out)]
    return names, [count_samples(images / name) for name in names]


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
    names, sizes = reshard(table, raw, images, d.shard_size)
    with atomic_path(out / "pairs.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    manifest = {
        "kind": "images", "source": str(source), "n_samples": int(counts.get("ok", 0)), "n_shards": len(names),
        "shards": names, "shard_sizes": sizes, "resolution": d.resolution,
        "status_counts": {k: int(v) for k, v in counts.items()}, "prefilter": pre, "postfilter": post,
        "config": {"data": config_to_dict(d), "filter": config_to_dict(cfg.filter)},
    }
    write_json(images / MANIFEST, manifest)
    return manifest
