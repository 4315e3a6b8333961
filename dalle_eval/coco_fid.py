"""`coco-fid`: the DALL·E paper's zero-shot MS-COCO protocol, for this project's model or any generator.

    subset (coco.py) -> generate, best of N by CLIP, sharded over torchrun ranks, resumable
        -> Inception features of both sets at each blur radius (real statistics cached: fid_reference.py)
        -> FID, IS, optional KID, CLIP score per radius -> report.json + report.md (coco_report.py)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from dalle_eval.artifacts import read_jsonl, read_rgb, write_json
from dalle_eval.coco import export_captions, load_or_choose_subset
from dalle_eval.coco_report import NOT_RECORDED, write_report
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import (
    frechet_distance_to_features,
    inception_score,
    kernel_inception_distance,
    load_inception,
    save_random_inception,
    torch_fidelity_order,
)
from dalle_eval.fid_reference import (
    default_cache_dir,
    reference_stats,
    resize_policy,
    sweep_features,
    weights_id,
)
from dalle_eval.outputs import on_rank0
from dalle_eval.samples import SAMPLES, claim_samples


def generate_sharded(ckpt: Path, prompts: list[dict], out: Path, cfg: Config, progress: bool,
                     overwrite: bool = False, n: int = 1, name: str = "samples") -> tuple[Path, bool]:
    """n images per caption (best of sample.rerank by CLIP when > 1) into OUT/`name`; under torchrun each
    rank draws prompts[rank::world] into its own row file, merged by rank 0. -> (samples dir, is rank 0).
    Rank 0 alone claims the folder for this checkpoint, subset and sampling settings (hashing the weights once);
    another run's folder stops every rank, or with `overwrite` is cleared by rank 0 before any rank samples."""
    from dalle_eval.generate import merge_rank_rows, prompts_id, run_sample, sample_fingerprint
    from dalle_eval.model import distributed

    d = distributed.setup(cfg.sample.device)
    folder = Path(out) / name

    def claim() -> bool:
        fp = {**sample_fingerprint(ckpt, cfg.sample), "prompts": prompts_id(prompts)}
        return claim_samples(folder, fp, overwrite, f"coco-fid --ckpt {ckpt}")

    try:
        on_rank0(d, claim)
    except DalleEvalError:
        distributed.teardown(d)  # every rank stops here together
        raise
    sample_cfg = dataclasses.replace(cfg.sample, device=str(d.device))
    rows = SAMPLES if d.world == 1 else f"samples.rank{d.rank}.jsonl"
    run_sample(ckpt, prompts[d.rank :: d.world], n, folder, sample_cfg, progress and d.is_main, rows_file=rows,
               claim=False)
    distributed.barrier(d)
    if d.is_main:
        merge_rank_rows(folder)
    distributed.teardown(d)
    return folder, d.is_main


def _generated(folder: Path, prompts: list[dict]) -> list[dict]:
    """The samples-dir rows for the subset's prompts (every prompt must have at least one image), in
    torch-fidelity's order of their files (sorted resolved paths), not the row order of samples.jsonl."""
    rows = read_jsonl(Path(folder) / SAMPLES)
    if not rows:
        raise DalleEvalError(f"--images {folder}: no {SAMPLES} (expected a samples dir; see README: artifact layout)")
    wanted = {p["prompt_id"] for p in prompts}
    mine = [r for r in rows if str(r.get("prompt_id")) in wanted]
    missing = sorted(wanted - {str(r["prompt_id"]) for r in mine})
    if missing:
        raise DalleEvalError(f"{folder}: {len(missing)} of the {len(wanted)} subset prompts have no image "
                             f"(first: {', '.join(missing[:5])}); generate for every line of --export-captions")
    for r in mine:
        if not (Path(folder) / r["file"]).exists():
            raise DalleEvalError(f"{Path(folder) / r['file']}: listed in {SAMPLES} but missing")
    order = {p: i for i, p in enumerate(torch_fidelity_order({Path(folder) / r["file"] for r in mine}))}
    return sorted(mine, key=lambda r: order[Path(folder) / r["file"]])


def _inception(out: Path, weights: Path | None, random_inception: bool):
    """-> (network, its identity for the cache key, a note for the report)."""
    if random_inception:  # the same seeded values every time (torch.save's bytes are not: id by seed)
        weights = save_random_inception(Path(out) / "random_inception.pth", seed=0)
        return load_inception(weights), "random-init seed 0", "RANDOM-INIT Inception (offline demo/tests): not comparable to published FID"
    note = f"local file {weights}" if weights else "torchmetrics default (downloaded FID Inception)"
    return load_inception(weights), weights_id(weights), note


def _clip_scores(cfg: Config, folder: Path, rows: list[dict], progress: bool) -> tuple[list[float] | None, str, bool]:
    """CLIP score per image (cosine x 100 with its caption): from reranking when it used the same CLIP,
    else computed when eval.clip_score is "on", or "auto" with CLIP weights given. -> (scores, note, whether a
    random-init CLIP made them or reranked the samples)."""
    from dalle_eval.model.clip import RANDOM_CLIP

    s, mode = cfg.sample, cfg.eval.clip_score
    reranked_randomly = any(r.get("random_clip") for r in rows)
    if all("clip_score" in r for r in rows) and rows and mode != "off":
        note = f"{rows[0].get('clip_model', s.clip_model)} (from reranking)"
        return [100 * r["clip_score"] for r in rows], note + (f"; {RANDOM_CLIP}" if reranked_randomly else ""), \
            reranked_randomly
    if mode == "off" or (mode == "auto" and not s.clip_pretrained):
        return None, "not computed (set sample.clip_pretrained, or eval.clip_score=on)", reranked_randomly
    from dalle_eval.model.clip import ClipScorer

    scorer = ClipScorer(s.clip_model, s.clip_pretrained or None, s.device, allow_random=s.random_clip)
    images = [read_rgb(Path(folder) / r["file"]) for r in rows]  # a missing or broken file is named
    scores = scorer.scores(images, [r["caption"] for r in rows]).tolist()
    note = f"{s.clip_model} ({s.clip_pretrained or RANDOM_CLIP})"
    return [100 * v for v in scores], note, scorer.random or reranked_randomly


def run_coco_fid(coco: Path, out: Path, cfg: Config, ckpt: Path | None = None, images: Path | None = None,
                 inception_weights: Path | None = None, random_inception: bool = False, subset: Path | None = None,
                 export: Path | None = None, progress: bool = True, verify_cache: bool = False,
                 overwrite: bool = False) -> dict | None:
    """Evaluate, write OUT/report.{json,md}; -> the report (None on torchrun ranks other than 0).
    verify_cache: re-hash every real image before trusting cached statistics (else only files whose stat changed).
    overwrite: replace OUT/samples made by another checkpoint or other sampling settings (else refused)."""

    out, e, t0 = Path(out), cfg.eval, time.time()
    if not e.blur_radii or any(r < 0 for r in e.blur_radii):
        raise DalleEvalError(f"eval.blur_radii must be a non-empty list of radii >= 0, got {list(e.blur_radii)}")
    prompts = load_or_choose_subset(coco, out, e.n_captions, e.seed, e.captions_per_image, subset)
    if export is not None:
        export_captions(prompts, export)
        if ckpt is None and images is None:
            return {"exported": str(export), "n_captions": len(prompts)}
    if (ckpt is None) == (images is None):
        raise DalleEvalError("give exactly one of --ckpt (generate with a model) or --images (a samples dir)")
    if images is not None:
        folder, main = Path(images), True
    else:
        folder, main = generate_sharded(ckpt, prompts, out, cfg, progress, overwrite)
    if not main:
        return None
    rows = _generated(folder, prompts)
    real = torch_fidelity_order({p["image"] for p in prompts})
    missing = [p for p in real if not p.exists()]
    if missing:
        raise DalleEvalError(f"real image not found: {missing[0]} ({len(missing)} missing)")
    fakes = [folder / r["file"] for r in rows]
    if len(real) < 2 or len(fakes) < 2:
        raise DalleEvalError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fakes)} generated)")
    radii = list(e.blur_radii)
    net, extractor, weights_note = _inception(out, inception_weights, random_inception)
    cache_dir = Path(e.cache_dir) if e.cache_dir else default_cache_dir()
    t_ref = time.time()
    ref, cache, content = reference_stats(net, extractor, real, e.resolution, radii, e.fid_batch, cache_dir, progress,
                                          verify_cache)
    t_ref = time.time() - t_ref
    gen = sweep_features(net, fakes, e.resolution, radii, e.fid_batch, "inception: generated images", progress)
    sweep, is_splits = [], min(e.is_splits, len(fakes))
    for r in radii:
        feats, logits = gen[r]
        is_mean, is_std = inception_score(logits, splits=is_splits)
        raw = frechet_distance_to_features(*ref[r], feats)
        # FID is a squared distance (>= 0): a value below 0 is sqrtm round-off (e.g. generated = real), reported as 0
        sweep.append({"blur_radius": r, "fid": max(raw, 0.0), "fid_raw": raw,
                      "is_mean": is_mean, "is_std": is_std, "reference_cached": cache[r]["hit"]})
    if e.kid:  # needs the real features themselves (not cached): at the first radius only
        r0 = radii[0]
        real_feats = sweep_features(net, real, e.resolution, [r0], e.fid_batch, "inception: real (KID)", progress)
        kid = kernel_inception_distance(gen[r0][0], real_feats[r0][0], e.kid_subsets, e.kid_subset_size)
        sweep[0].update(kid_mean=kid[0], kid_std=kid[1])
    clip, clip_note, random_clip = _clip_scores(cfg, folder, rows, progress)
    report = {
        "protocol": {"n_captions": len(prompts), "n_real_images": len(real), "n_generated": len(fakes),
                     "captions_per_image": e.captions_per_image, "seed": e.seed, "subset": str(subset or out / "subset.json"),
                     "rerank": _rerank_used(rows), "temperature": _recorded(rows, "temperature"),
                     "resolution": e.resolution, "resize_policy": resize_policy(e.resolution),
                     "inception_weights": weights_note, "random_inception": random_inception,
                     "feature_extractor": extractor, "is_splits": is_splits, "random_clip": random_clip},
        "sweep": sweep,
        "fid": sweep[0]["fid"], "is_mean": sweep[0]["is_mean"], "is_std": sweep[0]["is_std"],
        "clip_score": float(np.mean(clip)) if clip else None, "clip_model": clip_note,
        "coco": str(coco), "samples_dir": str(folder), "reference_cache": {str(r): v for r, v in cache.items()},
        "reference_images": content,
        "seconds": {"total": round(time.time() - t0, 2), "reference": round(t_ref, 2)}, "config": config_to_dict(cfg),
    }
    write_json(out / "report.json", report)
    write_report(report, rows, clip, folder, out)
    return report


def _rerank_used(rows: list[dict]) -> int | list | str:
    """The N of best-of-N reranking recorded in the samples (this project's sampler records a seed, and `rerank`
    only when it reranked: else 1), or "not recorded" (another generator's rows)."""
    ns = {r.get("rerank", 1 if "seed" in r else None) for r in rows}
    if None in ns or not ns:
        return NOT_RECORDED
    return ns.pop() if len(ns) == 1 else sorted(ns)


def _recorded(rows: list[dict], field: str) -> float | list | str:
    """A sampling setting as recorded in every row (one value, or the sorted values), else "not recorded"."""
    values = {r.get(field) for r in rows}
    if None in values or not values:
        return NOT_RECORDED
    return values.pop() if len(values) == 1 else sorted(values)
