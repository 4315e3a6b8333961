"""`probes`: generate with a checkpoint (or take any samples dir), score every check, report."""

from __future__ import annotations

from pathlib import Path

from dalle_eval.artifacts import read_jsonl, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes import IMPLEMENTED, make_prompts, score_samples, summarise
from dalle_eval.report import ci, image_grid, md_table, pct
from dalle_eval.samples import SAMPLES, resolve_samples_dir


def run_probes(suite: str, out: Path, cfg: Config, ckpt: Path | None = None, images: Path | None = None,
               progress: bool = True) -> dict:
    out = Path(out)
    suites = list(IMPLEMENTED) if suite == "all" else [suite]
    prompts = [p for s in suites for p in make_prompts(s, cfg.eval.seed)]
    folder = resolve_samples_dir(ckpt, images, prompts, cfg.eval.probe_samples, out, cfg, progress)
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
