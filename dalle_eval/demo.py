"""`demo`: every stage on the shapes world at tiny size, then one report (report.json + report.md).

Each stage writes its own artifact under OUT; a re-run resumes or skips finished stages.
"""

from __future__ import annotations

import time
from pathlib import Path

from dalle_eval.artifacts import read_jsonl, write_json
from dalle_eval.coco_fid import run_coco_fid
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.generate import run_sample
from dalle_eval.probe_run import run_probes
from dalle_eval.probes import make_prompts
from dalle_eval.report import ci, image_grid, md_table, pct
from model.train import train
from pipelines.build import build_dataset

SUITE_ROWS = {  # the demo report's probe summary: (suite, scorer, check)
    *(("attributes", "parser", c) for c in ("colour", "shape", "size", "count", "object")),
    *(("binding", "parser", c) for c in ("colours", "shapes", "count", "object", "relation", "image")),
    ("raven", "parser", "answer"), ("raven", "likelihood", "answer"), ("raven", "likelihood", "dvae_ceiling"),
    ("attributes", "likelihood", "ranked_first"), ("binding", "likelihood", "ranked_first"),
}


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t = time.time()
    print(f"\n--- demo: {name} ---", flush=True)
    result = fn(*args, **kwargs)
    timings[name] = round(time.time() - t, 1)
    return result


def _stop_if_preempted(summary: dict) -> dict:
    """Training saved a checkpoint on SIGTERM/SIGINT: stop here; re-running the demo continues it."""
    if summary.get("preempted"):
        raise DalleEvalError(f"demo interrupted by {summary['preempted']} at step {summary['stopped_at']} of "
                             f"{summary['stage']}; run the same command again to continue")
    return summary


def run_demo(cfg: Config, out: Path, n: int = 6000) -> dict:
    out = Path(out)
    data, dvae, transformer = out / "data", out / "dvae", out / "transformer"
    timings: dict[str, float] = {}
    t0 = time.time()
    _timed(timings, "build images", build_dataset, cfg, "shapes", data, n)
    dvae_summary = _stop_if_preempted(_timed(timings, "train dVAE", train, "dvae", data, cfg, dvae, resume=True))
    _timed(timings, "encode tokens", build_dataset, cfg, "shapes", data, n, dvae=dvae)
    tf_summary = _stop_if_preempted(
        _timed(timings, "train transformer", train, "transformer", data, cfg, transformer, resume=True))
    heldout = [p for p in make_prompts("attributes") if p["heldout"] and p["category"] == "single"]
    _timed(timings, "sample held-out prompts", run_sample, transformer, heldout, 2, out / "samples_heldout", cfg.sample)
    probes = _timed(timings, "probes", run_probes, "all", out / "probes", cfg, ckpt=transformer)
    fid = _timed(timings, "coco-fid", run_coco_fid, data / "coco", out / "fid", cfg, ckpt=transformer, random_inception=True)
    total = round(time.time() - t0, 1)

    rows = [r for r in probes["table"] if r["category"] == "single" and r["scorer"] == "parser"
            and r["check"] in ("colour", "shape", "size", "object")]
    suites = [r for r in probes["table"] if r["category"] == "all" and (r["suite"], r["scorer"], r["check"]) in SUITE_ROWS]
    samples = read_jsonl(out / "samples_heldout" / "samples.jsonl")
    image_grid([(out / "samples_heldout" / s["file"], s["caption"]) for s in samples], out / "heldout_grid.png")
    headline = {
        "total minutes": round(total / 60, 1),
        **{f"attributes {r['check']} ({r['split']})": f"{pct(r['accuracy'])} (chance {pct(r['chance'])})"
           for r in rows if r["split"] in ("seen", "heldout")},
        **{f"{r['suite']} {r['check']} ({r['scorer']})": f"{pct(r['accuracy'])} (chance {pct(r['chance'])})"
           for r in suites if r["split"] == "all" and r["check"] in ("image", "answer", "ranked_first")},
        "FID (random Inception)": f"{fid['fid']:.2f}",
        "dVAE val PSNR": f"{dvae_summary['eval']['val_psnr_db']:.1f} dB",
        "transformer val image loss": f"{tf_summary['eval']['val_image_loss']:.3f}",
    }
    report = {"headline": headline, "timings_s": timings, "total_s": total, "dvae": dvae_summary,
              "transformer": tf_summary, "probes": probes["table"], "fid": {k: v for k, v in fid.items() if k != "config"},
              "config": config_to_dict(cfg)}
    write_json(out / "report.json", report)
    md = "# dalle-eval demo (shapes world, tiny config, CPU)\n\n"
    md += md_table([{"what": k, "value": v} for k, v in headline.items()], ["what", "value"])
    md += "\n## Probes: attributes, binding, Raven (parser: exact on generated images; likelihood: true vs foils)\n\n"
    md += md_table(suites, ["suite", "scorer", "check", "split", "n", "accuracy", "ci95", "chance"],
                   {"accuracy": pct, "ci95": ci, "chance": pct})
    cut = (probes.get("text_window") or {}).get("truncated", [])
    if cut:
        md += (f"\n{len(cut)} probe prompts are longer than the tiny model's {probes['text_window']['text_len']}-token "
               "text window and were cut (see probes/report.md).\n")
    md += "\n## Attribute probes on single objects (exact parser scoring)\n\n"
    md += md_table(rows, ["check", "split", "n", "accuracy", "ci95", "chance"], {"accuracy": pct, "ci95": ci, "chance": pct})
    md += f"\nFull probe tables: [probes/report.md](probes/report.md). FID: [fid/report.md](fid/report.md) — {fid['protocol']['inception_weights']}.\n"
    md += "\n## Samples for held-out colour-shape pairs (never seen in training)\n\n![held-out](heldout_grid.png)\n"
    md += "\n## Stage times (s)\n\n" + md_table([{"stage": k, "seconds": v} for k, v in timings.items()], ["stage", "seconds"])
    (out / "report.md").write_text(md)
    return report
