"""`demo`: every stage on the shapes world (the `tiny` config; `shapes-long` for the capability recipe), then one report (report.json + report.md).

Each stage writes its own artifact under OUT; a re-run resumes or skips finished stages.
"""

from __future__ import annotations

import time
from pathlib import Path

from dalle_eval.artifacts import read_json, read_jsonl, write_json
from dalle_eval.coco_fid import run_coco_fid
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.generate import run_sample
from dalle_eval.pipelines.build import build_dataset
from dalle_eval.plots import load_probes, plot_capabilities
from dalle_eval.probe_run import run_probes
from dalle_eval.probes import make_prompts
from dalle_eval.probes.in_training import train
from dalle_eval.probes.report_md import display_row
from dalle_eval.report import image_grid, md_table, pct

PROBE_COLUMNS = ["suite", "scorer", "category", "check", "split", "n", "accuracy", "ci95", "chance", "random generator"]
SUITE_ROWS = {  # the demo report's probe summary: (suite, scorer, check)
    *(("attributes", "parser", c) for c in ("colour", "shape", "size", "count", "object")),
    *(("binding", "parser", c) for c in ("colours", "shapes", "count", "object", "relation", "image")),
    ("raven", "parser", "answer"), ("raven", "likelihood", "answer"), ("raven", "dvae_ceiling", "answer"),
    *(("attributes", "dvae_ceiling", c) for c in ("colour", "shape", "size", "object")),
    ("binding", "dvae_ceiling", "object"), ("binding", "dvae_ceiling", "image"),
    ("attributes", "likelihood", "ranked_first"), ("binding", "likelihood", "ranked_first"),
}


STAGE_TIMES = "stage_times.json"  # each stage's seconds from the run that did its work (kept across re-runs)


def _clock() -> float:
    return time.time()


def _stamp(path: Path) -> tuple[int, int] | None:
    """What changes when a stage does work: its product's size and mtime (None while it does not exist)."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


class StageClock:
    """Times the demo's stages. A stage whose product is unchanged was skipped (a re-run found it done): it keeps
    the time measured when it ran, read from OUT/stage_times.json, and is marked skipped; a stage that ran (or
    finished a run that was interrupted) records its time there as soon as it ends."""

    def __init__(self, out: Path):
        self.path = Path(out) / STAGE_TIMES
        self.measured: dict[str, dict] = self._read()
        self.stages: dict[str, dict] = {}

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = read_json(self.path)
        except DalleEvalError as e:
            print(f"{e}: stage times of earlier runs unknown")
            return {}
        return data if isinstance(data, dict) else {}

    def run(self, name: str, product: Path, fn, *args, **kwargs):
        print(f"\n--- demo: {name} ---", flush=True)
        before, t = _stamp(product), _clock()
        result = fn(*args, **kwargs)
        took = round(_clock() - t, 1)
        earlier = self.measured.get(name, {})
        if before is not None and _stamp(product) == before:
            self.stages[name] = {"seconds": earlier.get("seconds"), "skipped": True, "this_run_s": took}
            return result
        partial = bool(isinstance(result, dict) and result.get("preempted"))
        resumed = (earlier.get("seconds") or 0) if earlier.get("partial") else 0  # the interrupted run's part
        seconds = round(took + resumed, 1)
        self.measured[name] = {"seconds": seconds, "partial": partial}
        self.stages[name] = {"seconds": seconds, "skipped": False, "this_run_s": took}
        write_json(self.path, self.measured)
        return result

    def total(self) -> tuple[float, list[str]]:
        """-> (seconds of every stage as measured when it ran, the stages whose time is unknown)."""
        unknown = [k for k, v in self.stages.items() if v["seconds"] is None]
        return round(sum(v["seconds"] or 0 for v in self.stages.values()), 1), unknown

    def table(self) -> list[dict]:
        return [{"stage": k, "seconds": "unknown" if v["seconds"] is None else v["seconds"],
                 "this run": (f"skipped: already done ({v['this_run_s']} s)" if v["skipped"] else f"ran ({v['this_run_s']} s)")}
                for k, v in self.stages.items()]


def _stop_if_preempted(summary: dict) -> dict:
    """Training saved a checkpoint on SIGTERM/SIGINT: stop here; re-running the demo continues it."""
    if summary.get("preempted"):
        raise DalleEvalError(f"demo interrupted by {summary['preempted']} at step {summary['stopped_at']} of "
                             f"{summary['stage']}; run the same command again to continue")
    return summary


def run_demo(cfg: Config, out: Path, n: int = 6000) -> dict:
    out = Path(out)
    data, dvae, transformer = out / "data", out / "dvae", out / "transformer"
    clock, t0 = StageClock(out), _clock()
    clock.run("build images", data / "images" / "manifest.json", build_dataset, cfg, "shapes", data, n)
    dvae_summary = _stop_if_preempted(clock.run("train dVAE", dvae / "latest", train, "dvae", data, cfg, dvae, resume=True))
    clock.run("encode tokens", data / "tokens" / "manifest.json", build_dataset, cfg, "shapes", data, n, dvae=dvae)
    tf_summary = _stop_if_preempted(clock.run("train transformer", transformer / "latest", train, "transformer", data,
                                              cfg, transformer, resume=True))
    heldout = [p for p in make_prompts("attributes") if p["heldout"] and p["category"] == "single"]
    clock.run("sample held-out prompts", out / "samples_heldout" / "samples.jsonl", run_sample, transformer, heldout, 2,
              out / "samples_heldout", cfg.sample)
    probes = clock.run("probes", out / "probes" / "samples" / "samples.jsonl", run_probes, "all", out / "probes", cfg,
                       ckpt=transformer)
    fid = clock.run("coco-fid", out / "fid" / "samples" / "samples.jsonl", run_coco_fid, data / "coco", out / "fid", cfg,
                    ckpt=transformer, random_inception=True)
    total, unknown = clock.total()
    timings = {k: v["seconds"] for k, v in clock.stages.items()}

    rows = [r for r in probes["table"] if r["category"] == "single" and r["scorer"] == "parser"
            and r["check"] in ("colour", "shape", "size", "object")]
    suites = [r for r in probes["table"] if r["category"] == "all" and (r["suite"], r["scorer"], r["check"]) in SUITE_ROWS]
    samples = read_jsonl(out / "samples_heldout" / "samples.jsonl")
    image_grid([(out / "samples_heldout" / s["file"], s["caption"]) for s in samples], out / "heldout_grid.png")
    curves = {name: plot_capabilities(run, out / f"{name}_capability_curves.png")
              for name, run in (("transformer", transformer), ("dvae", dvae))
              if (run / "metrics.jsonl").is_file() and load_probes(run / "metrics.jsonl")}
    minutes = round(total / 60, 1)
    headline = {
        "total minutes": minutes if not unknown else f"{minutes} + unknown ({', '.join(unknown)})",
        **{f"attributes {r['check']} ({r['split']})": f"{pct(r['accuracy'])} (chance {pct(r['chance'])})"
           for r in rows if r["split"] in ("seen", "heldout")},
        **{f"{r['suite']} {r['check']} ({r['scorer']})": f"{pct(r['accuracy'])} (chance {pct(r['chance'])})"
           for r in suites if r["split"] == "all" and (r["check"] in ("image", "answer", "ranked_first")
                                                        or r["scorer"] == "dvae_ceiling" and r["check"] == "shape")},
        "FID (random Inception)": f"{fid['fid']:.2f}",
        "dVAE val PSNR": f"{dvae_summary['eval']['val_psnr_db']:.1f} dB",
        "transformer val image loss": f"{tf_summary['eval']['val_image_loss']:.3f}",
    }
    report = {"headline": headline, "timings_s": timings, "total_s": total, "stages": clock.stages,
              "capability_curves": {k: str(v) for k, v in curves.items()},
              "this_run_s": round(_clock() - t0, 1), "dvae": dvae_summary,
              "transformer": tf_summary, "probes": probes["table"], "fid": {k: v for k, v in fid.items() if k != "config"},
              "config": config_to_dict(cfg)}
    write_json(out / "report.json", report)
    t = cfg.transformer
    md = (f"# dalle-eval demo (shapes world: {n:,} scenes at {cfg.data.resolution} px, {t.grid}x{t.grid} codes of "
          f"{t.image_vocab}, {t.n_layer}-layer transformer, {cfg.train.transformer.steps:,} steps)\n\n")
    md += md_table([{"what": k, "value": v} for k, v in headline.items()], ["what", "value"])
    md += "\n## Probes: attributes, binding, Raven (parser: exact on generated images; likelihood: true vs foils)\n\n"
    md += md_table([display_row(r) for r in suites], PROBE_COLUMNS)
    cut = (probes.get("text_window") or {}).get("truncated", [])
    if cut:
        md += (f"\n{len(cut)} probe prompts are longer than the model's {probes['text_window']['text_len']}-token "
               "text window and were cut (see probes/report.md).\n")
    md += "\n## Attribute probes on single objects (exact parser scoring; the rows above count all 60 prompts)\n\n"
    md += md_table([display_row(r) for r in rows], PROBE_COLUMNS)
    md += f"\nFull probe tables: [probes/report.md](probes/report.md). FID: [fid/report.md](fid/report.md) — {fid['protocol']['inception_weights']}.\n"
    if curves:
        md += ("\n## Capability curves (probes inside training, `train.probe_every`)\n\nThe transformer's likelihood "
               "probes at every probe step (accuracy, 95% interval, dashed chance); the dVAE's ceiling as it trained.\n\n"
               + "".join(f"![{name}]({path.name})\n" for name, path in curves.items()))
    md += "\n## Samples for held-out colour-shape pairs (never seen in training)\n\n![held-out](heldout_grid.png)\n"
    md += ("\n## Stage times (s)\n\nEach stage's time as measured when it ran; a re-run skips finished stages "
           "and keeps their time.\n\n" + md_table(clock.table(), ["stage", "seconds", "this run"]))
    (out / "report.md").write_text(md)
    return report
