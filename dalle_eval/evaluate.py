"""`probes` and `coco-fid`: generate with a checkpoint (or take any samples dir), score, report."""

from __future__ import annotations

import random
import time
from pathlib import Path

from dalle_eval.artifacts import read_json, read_jsonl, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import fid_is, save_random_inception
from dalle_eval.probes import IMPLEMENTED, make_prompts, score_samples, summarise
from dalle_eval.report import ci, image_grid, md_table, pct

SAMPLES = "samples.jsonl"


def _samples_dir(ckpt: Path | None, images: Path | None, prompts: list[dict], n: int, out: Path, cfg: Config, progress: bool) -> Path:
    if (ckpt is None) == (images is None):
        raise DalleEvalError("give exactly one of --ckpt (generate with a model) or --images (a samples dir)")
    if images is not None:
        if not (Path(images) / SAMPLES).exists():
            raise DalleEvalError(f"--images {images}: no {SAMPLES}; expected a samples dir (see README: artifact layout)")
        return Path(images)
    from dalle_eval.generate import run_sample  # model code only when generating

    run_sample(ckpt, prompts, n, out / "samples", cfg.sample, progress)
    return out / "samples"


def run_probes(suite: str, out: Path, cfg: Config, ckpt: Path | None = None, images: Path | None = None,
               progress: bool = True) -> dict:
    out = Path(out)
    suites = list(IMPLEMENTED) if suite == "all" else [suite]
    prompts = [p for s in suites for p in make_prompts(s, cfg.eval.seed)]
    folder = _samples_dir(ckpt, images, prompts, cfg.eval.probe_samples, out, cfg, progress)
    samples = read_jsonl(folder / SAMPLES)
    results = score_samples(prompts, samples, folder)
    if not results:
        raise DalleEvalError(f"{folder}: none of its samples belong to the {suite} suite's prompt ids")
    rows = summarise(results)
    report = {"suite": suite, "samples_dir": str(folder), "n_prompts": len(prompts), "n_images": len({r["file"] for r in results}),
              "table": rows, "not_implemented": ["raven"] if suite == "all" else [], "config": config_to_dict(cfg)}
    write_json(out / "report.json", report)
    _probe_markdown(report, results, folder, out)
    return report


def _probe_markdown(report: dict, results: list[dict], folder: Path, out: Path) -> None:
    rows = report["table"]
    md = f"# Probes: {report['suite']}\n\nImages: `{report['samples_dir']}` ({report['n_images']} images, {report['n_prompts']} prompts). "
    md += "Each check is exact (the shapes-world parser reads the image); 95% Wilson intervals; chance beside each.\n\n"
    md += md_table(rows, ["suite", "category", "check", "split", "n", "accuracy", "ci95", "chance"],
                   {"accuracy": pct, "ci95": ci, "chance": pct})
    if report["not_implemented"]:
        md += f"\nNot implemented yet: {', '.join(report['not_implemented'])}.\n"
    image_ok: dict[str, bool] = {}
    for r in results:
        image_ok[r["file"]] = image_ok.get(r["file"], True) and r["passed"]
    captions = {s["file"]: s["caption"] for s in read_jsonl(folder / SAMPLES)}
    ok = [f for f, v in image_ok.items() if v][:18]
    bad = [f for f, v in image_ok.items() if not v][:18]
    for name, files in (("successes", ok), ("failures", bad)):
        if files:
            image_grid([(folder / f, captions.get(f, "")) for f in files], out / f"{name}.png")
            md += f"\n## {name.capitalize()}\n\n![{name}]({name}.png)\n"
    (out / "report.md").write_text(md)


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
    folder = _samples_dir(ckpt, images, prompts, 1, out, cfg, progress)
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
