"""`coco-fid`: MS-COCO-format captions -> generated images (or any samples dir) -> FID / IS report."""

from __future__ import annotations

import random
import time
from pathlib import Path

from dalle_eval.artifacts import read_json, read_jsonl, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import fid_is, save_random_inception
from dalle_eval.samples import SAMPLES, resolve_samples_dir


def read_coco(coco: Path, n: int, seed: int) -> list[dict]:
    """COCO captions JSON (captions_val*.json) + images/ -> [{prompt_id, caption, image}], one per image."""
    coco = Path(coco)
    files = sorted(coco.glob("captions_val*.json")) or sorted(coco.glob("annotations/captions_val*.json"))
    if not files:
        raise DalleEvalError(f"--coco {coco}: no captions_val*.json (expected MS-COCO layout: captions JSON + images/)")
    data = read_json(files[0], "COCO captions")
    images = {im["id"]: im["file_name"] for im in data.get("images", [])}
    image_dir = next((d for d in (coco / "images", coco / files[0].stem.replace("captions_", "")) if d.exists()), coco / "images")
    chosen, seen = [], set()
    for a in sorted(data.get("annotations", []), key=lambda a: a["id"]):
        if a["image_id"] in seen or a["image_id"] not in images:
            continue
        seen.add(a["image_id"])
        chosen.append({"prompt_id": str(a["image_id"]), "caption": a["caption"], "image": str(image_dir / images[a["image_id"]])})
    random.Random(seed).shuffle(chosen)
    return sorted(chosen[:n], key=lambda c: int(c["prompt_id"]) if c["prompt_id"].isdigit() else c["prompt_id"])


def run_coco_fid(coco: Path, out: Path, cfg: Config, ckpt: Path | None = None, images: Path | None = None,
                 inception_weights: Path | None = None, random_inception: bool = False, progress: bool = True) -> dict:
    out = Path(out)
    t0 = time.time()
    prompts = read_coco(coco, cfg.eval.n_captions, cfg.eval.seed)
    folder = resolve_samples_dir(ckpt, images, prompts, 1, out, cfg, progress)
    fakes = [folder / s["file"] for s in read_jsonl(folder / SAMPLES)]
    real = [Path(p["image"]) for p in prompts]
    missing = [p for p in real + fakes if not p.exists()]
    if missing:
        raise DalleEvalError(f"image not found: {missing[0]} ({len(missing)} missing)")
    weights_note = "torchmetrics default (downloaded FID Inception)"
    if random_inception:
        inception_weights = save_random_inception(out / "random_inception.pth")
        weights_note = "RANDOM-INIT Inception (offline demo/tests): not comparable to published FID"
    elif inception_weights is not None:
        weights_note = f"local file {inception_weights}"
    metrics = fid_is(real, fakes, inception_weights, cfg.eval.fid_batch, progress)
    report = {**metrics, "inception_weights": weights_note, "coco": str(coco), "samples_dir": str(folder),
              "seconds": round(time.time() - t0, 1), "config": config_to_dict(cfg)}
    write_json(out / "report.json", report)
    md = (f"# COCO-format FID / IS\n\nReal: `{coco}` ({metrics['n_real']} images); generated: `{folder}` ({metrics['n_fake']}).\n\n"
          f"| metric | value |\n|---|---|\n| FID | {metrics['fid']:.3f} |\n| IS | {metrics['is_mean']:.3f} ± {metrics['is_std']:.3f} |\n\n"
          f"Inception weights: {weights_note}. Resize: {metrics['resize_policy']}.\n")
    (out / "report.md").write_text(md)
    return report
