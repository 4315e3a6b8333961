"""`coco-fid --rerank-curve 1,2,4,...,N`: what best-of-k by CLIP buys on the zero-shot COCO protocol, for every k.

One pool of N = max(k) images per caption is drawn once (OUT/pool, a samples dir: resumable, sharded under
torchrun; draw j has the seed of candidate j of `--rerank`, so k = N picks what `--rerank N` keeps), scored by
CLIP once and passed through the Inception once (at the first blur radius). For every k the best-of-k image
per caption (rerank_curve.best_of_k: the top-scored of the first k draws) makes the set whose FID, IS and CLIP
score are reported, with what a user pays for it: k draws per caption.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dalle_eval.artifacts import read_json, read_jsonl, read_rgb, write_json
from dalle_eval.coco import load_or_choose_subset
from dalle_eval.coco_fid import _inception, generate_sharded
from dalle_eval.coco_report import write_curve_report
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import inception_score, torch_fidelity_order
from dalle_eval.fid_reference import default_cache_dir, reference_stats, resize_policy, sweep_features
from dalle_eval.outputs import read_record
from dalle_eval.rerank_curve import best_of_k, fid_curve, mean_curve
from dalle_eval.samples import SAMPLES

POOL = "pool"
TIMING = "pool_timing.json"


def pool_rows(folder: Path, prompts: list[dict], n: int) -> list[list[dict]]:
    """The samples-dir rows of each prompt's candidates 0..n-1 (pool order), prompts in torch-fidelity's order of
    their first candidate's file; a prompt short of n candidates, or a listed file missing, is an error."""
    rows = read_jsonl(Path(folder) / SAMPLES)
    if not rows:
        raise DalleEvalError(f"{folder}: no {SAMPLES} (expected a samples dir with {n} images per caption)")
    by_prompt: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_prompt.setdefault(str(r.get("prompt_id")), {})[r.get("index")] = r
    pools, short = [], []
    for p in prompts:
        have = by_prompt.get(str(p["prompt_id"]), {})
        if any(j not in have for j in range(n)):
            short.append(str(p["prompt_id"]))
            continue
        pools.append([have[j] for j in range(n)])
    if short:
        raise DalleEvalError(f"{folder}: {len(short)} of the {len(prompts)} subset prompts have fewer than {n} images "
                             f"(indices 0..{n - 1}; first: {', '.join(short[:5])}): the largest --rerank-curve k needs "
                             "that many per caption")
    for r in (r for pool in pools for r in pool):
        if not (Path(folder) / r["file"]).is_file():
            raise DalleEvalError(f"{Path(folder) / r['file']}: listed in {SAMPLES} but missing")
    order = {f: i for i, f in enumerate(torch_fidelity_order(Path(folder) / pool[0]["file"] for pool in pools))}
    return sorted(pools, key=lambda pool: order[Path(folder) / pool[0]["file"]])


def _clip_scores(scorer, folder: Path, pools: list[list[dict]], batch: int = 256) -> np.ndarray:
    """CLIP cosine of every candidate with its caption -> (P, N) scores."""
    flat = [r for pool in pools for r in pool]
    scores = []
    for i in range(0, len(flat), batch):  # a few hundred images in memory at a time
        chunk = flat[i : i + batch]
        scores.append(scorer.scores([read_rgb(Path(folder) / r["file"]) for r in chunk], [r["caption"] for r in chunk]).numpy())
    return np.concatenate(scores).reshape(len(pools), -1)


def _pool_state(folder: Path) -> tuple[dict | None, int]:
    """What made the pool (its fingerprint record) and how many rows it holds."""
    try:
        record = read_record(folder)
    except DalleEvalError:
        record = None
    rows = len(read_jsonl(folder / SAMPLES)) if (folder / SAMPLES).exists() else 0
    return (record or {}).get("fingerprint"), rows


def _timing(out: Path, seconds: float, drawn: int, device: str, fresh: bool) -> dict:
    """The pool's sampling time, summed over the runs that drew it (OUT/pool_timing.json: a resumed run adds its
    own draws) -> {seconds, images_drawn, seconds_per_image, device}."""
    path = out / TIMING
    done = read_json(path, "pool timing") if path.exists() and not fresh else {"seconds": 0.0, "images_drawn": 0}
    total = {"seconds": round(done["seconds"] + seconds, 2), "images_drawn": done["images_drawn"] + drawn}
    total["seconds_per_image"] = total["seconds"] / total["images_drawn"] if total["images_drawn"] else None
    total["device"] = device
    write_json(path, total)
    return total


def run_rerank_curve(coco: Path, out: Path, cfg: Config, ks: list[int], ckpt: Path | None = None,
                     images: Path | None = None, inception_weights: Path | None = None, random_inception: bool = False,
                     subset: Path | None = None, progress: bool = True, verify_cache: bool = False,
                     overwrite: bool = False) -> dict | None:
    """Draw (or read from `images`) max(ks) images per caption, write OUT/report.{json,md} and
    OUT/rerank_curve.png; -> the report (None on torchrun ranks other than 0)."""
    out, e, t0 = Path(out), cfg.eval, time.time()
    if (ckpt is None) == (images is None):
        raise DalleEvalError("give exactly one of --ckpt (draw the pool with a model) or --images (a samples dir "
                             "holding the pool: indices 0..N-1 per caption, in draw order)")
    if cfg.sample.rerank > 1:
        raise DalleEvalError(f"--rerank-curve draws one pool and reranks it for every k; sample.rerank="
                             f"{cfg.sample.rerank} (--rerank) would rerank each draw again: leave it out")
    from dalle_eval.model.clip import RANDOM_CLIP, ClipScorer

    s = cfg.sample  # the CLIP first: no weights is refused before anything is drawn
    scorer = ClipScorer(s.clip_model, s.clip_pretrained or None, s.device, allow_random=s.random_clip)
    clip_note = f"{s.clip_model} ({s.clip_pretrained or RANDOM_CLIP})"
    n = max(ks)
    prompts = load_or_choose_subset(coco, out, e.n_captions, e.seed, e.captions_per_image, subset)
    sampling = None
    if images is not None:
        folder, main = Path(images), True
    else:
        made, rows = _pool_state(out / POOL)
        t = time.time()
        folder, main = generate_sharded(ckpt, prompts, out, cfg, progress, overwrite, n=n, name=POOL)
        if main:
            fresh = _pool_state(folder)[0] != made  # a new pool (or one --overwrite replaced): its own timing
            drawn = len(read_jsonl(folder / SAMPLES)) - (0 if fresh else rows)
            sampling = _timing(out, time.time() - t, drawn, cfg.sample.device, fresh)
    if not main:
        return None
    pools = pool_rows(folder, prompts, n)
    P = len(pools)
    if P < 2:
        raise DalleEvalError(f"FID needs at least 2 captions (got {P})")
    t_clip = time.time()
    scores = _clip_scores(scorer, folder, pools)
    t_clip = time.time() - t_clip
    net, extractor, weights_note = _inception(out, inception_weights, random_inception)
    r0 = e.blur_radii[0] if e.blur_radii else 0
    real = torch_fidelity_order({p["image"] for p in prompts})
    missing = [p for p in real if not p.exists()]
    if missing:
        raise DalleEvalError(f"real image not found: {missing[0]} ({len(missing)} missing)")
    cache_dir = Path(e.cache_dir) if e.cache_dir else default_cache_dir()
    ref, cache, content = reference_stats(net, extractor, real, e.resolution, [r0], e.fid_batch, cache_dir, progress,
                                          verify_cache)
    files = [folder / r["file"] for pool in pools for r in pool]
    feats, logits = sweep_features(net, files, e.resolution, [r0], e.fid_batch, "inception: pool", progress)[r0]
    feats, logits = feats.reshape(P, n, -1), logits.reshape(P, n, -1)
    fids = fid_curve(*ref[r0], feats, scores, ks, e.rerank_bootstrap, e.seed)
    clips = mean_curve(scores, 100 * scores, ks)
    picks = best_of_k(scores, ks)
    is_splits = min(e.is_splits, P)
    per_image = (sampling or {}).get("seconds_per_image")
    curve = []
    for fid, clip in zip(fids, clips):
        k = fid["k"]
        is_mean, is_std = inception_score(logits[np.arange(P), picks[k]], splits=is_splits)
        curve.append({**fid, "is_mean": is_mean, "is_std": is_std, "clip_score": clip["mean"], "clip_ci95": clip["ci95"],
                      "draws_per_caption": k, "pool_per_caption": n,
                      "sampling_seconds_for_k": per_image * k * P if per_image else None})
    report = {
        "protocol": {"n_captions": P, "n_real_images": len(real), "pool": n, "ks": list(ks), "n_pool_images": P * n,
                     "captions_per_image": e.captions_per_image, "seed": e.seed, "subset": str(subset or out / "subset.json"),
                     "blur_radius": r0, "resolution": e.resolution, "resize_policy": resize_policy(e.resolution),
                     "inception_weights": weights_note, "random_inception": random_inception, "feature_extractor": extractor,
                     "is_splits": is_splits, "random_clip": scorer.random, "clip_model": clip_note,
                     "bootstrap": e.rerank_bootstrap,
                     "intervals": "FID: value ± 1.96 bootstrap SD over captions (the same resampled captions at every k; "
                                  "FID - FID(k_min) paired); CLIP score: mean ± 1.96 SE; IS: ± SD over splits"},
        "rerank_curve": curve, "sampling": sampling,
        "coco": str(coco), "samples_dir": str(folder), "reference_cache": {str(r): v for r, v in cache.items()},
        "reference_images": content,
        "seconds": {"total": round(time.time() - t0, 2), "clip": round(t_clip, 2)}, "config": config_to_dict(cfg),
    }
    write_json(out / "report.json", report)
    write_curve_report(report, out)
    return report

