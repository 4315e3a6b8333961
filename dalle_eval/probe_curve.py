"""`probes run --rerank-curve 1,2,4,...,N`: probe accuracy of the best-of-k image by CLIP, for every k (issue 17 §3).

The shapes prompts of the suite (Raven and translation complete a panel: left out) get N = max(k) samples each,
drawn once into OUT/samples (the folder `probes run` uses; its first eval.probe_samples images are the same
draws), each candidate parser-scored and CLIP-scored with its caption once. At every k the image scored is the
top-scored of the prompt's first k candidates (rerank_curve.best_of_k): all k share the same draws. A row is a
suite's check ("all checks": the image passes every check of its prompt) with its Wilson 95% interval per k.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dalle_eval.artifacts import atomic_path, read_jsonl, read_rgb, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.rerank_curve import accuracy_curve, mean_curve
from dalle_eval.samples import SAMPLES

ALL_CHECKS = "all checks"
REPORT, PLOT = "rerank_curve", "rerank_curve.png"


def _outcomes(results: list[dict], index: dict[str, int], n: int) -> dict[tuple[str, str], list[tuple]]:
    """Parser results -> {(suite, check): [(prompt_id, (n,) passed per candidate, chance), ...]}: a unit is one check
    of one prompt (object_0, object_1, ... are units of "object"), or a prompt for ALL_CHECKS (every check passed)."""
    from dalle_eval.probes.tables import check_name

    per_prompt: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    info: dict[tuple[str, str], tuple[str, float]] = {}
    for r in results:
        per_prompt[r["prompt_id"]].setdefault(r["check"], np.zeros(n, dtype=bool))[index[r["file"]]] = r["passed"]
        info[(r["prompt_id"], r["check"])] = (r["suite"], r["chance"])
    units: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for pid, checks in per_prompt.items():
        for check, passed in checks.items():
            suite, chance = info[(pid, check)]
            units[(suite, check_name(check))].append((pid, passed, chance))
        units[(suite, ALL_CHECKS)].append((pid, np.logical_and.reduce(list(checks.values())), None))
    return units


def run_probe_curve(suite: str, out: Path, cfg: Config, ckpt: Path, ks: list[int], clip_model: str | None,
                    clip_pretrained: str | None, progress: bool = True, overwrite: bool = False) -> dict:
    """Sample max(ks) images per shapes prompt of `suite`, score them, write OUT/rerank_curve.{json,md,png}."""
    from dalle_eval.model.clip import RANDOM_CLIP, ClipScorer
    from dalle_eval.plots import plot_probe_rerank_curve
    from dalle_eval.probe_run import _generate
    from dalle_eval.probes.scoring import score_samples
    from dalle_eval.probes.suites import COMPLETION_SUITES, RAVEN_ITEMS, make_prompts

    if ckpt is None:
        raise DalleEvalError("--rerank-curve needs --ckpt: it draws the pool of candidates with the model")
    if not clip_model:
        raise DalleEvalError("--rerank-curve needs --clip-model and --clip-pretrained (the CLIP that reranks)")
    if cfg.sample.rerank > 1:
        raise DalleEvalError(f"--rerank-curve draws one pool and reranks it for every k; sample.rerank="
                             f"{cfg.sample.rerank} would rerank each draw again: leave it out")
    s = cfg.sample
    scorer = ClipScorer(clip_model, clip_pretrained or None, s.device, allow_random=s.random_clip)
    prompts = [p for p in make_prompts(suite, cfg.eval.seed, RAVEN_ITEMS) if p["suite"] not in COMPLETION_SUITES]
    if not prompts:
        raise DalleEvalError(f"--rerank-curve: the {suite} suite has no prompts drawn from a caption alone (Raven and "
                             "translation complete a panel); use attributes, binding, paraphrase or all")
    n = max(ks)
    pool_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, probe_samples=n))
    before = Path(out) / "samples" / SAMPLES
    before = len(read_jsonl(before)) if before.exists() and not overwrite else 0
    t = time.time()
    folder = _generate(Path(ckpt), prompts, Path(out), pool_cfg, None, progress,
                       make_prompts("all", cfg.eval.seed, RAVEN_ITEMS), overwrite)
    seconds, drawn = time.time() - t, max(0, len(read_jsonl(folder / SAMPLES)) - before)
    wanted = {p["prompt_id"] for p in prompts}
    rows = [r for r in read_jsonl(folder / SAMPLES) if str(r["prompt_id"]) in wanted and r["index"] < n]
    by_prompt = {(str(r["prompt_id"]), r["index"]): r for r in rows}
    pools = [[by_prompt[(p["prompt_id"], j)] for j in range(n)] for p in prompts]
    flat = [r for pool in pools for r in pool]
    scores = np.concatenate([scorer.scores([read_rgb(folder / r["file"]) for r in flat[i : i + 256]],
                                           [r["caption"] for r in flat[i : i + 256]]).numpy()
                             for i in range(0, len(flat), 256)]).reshape(len(prompts), n)
    row_of = {p["prompt_id"]: i for i, p in enumerate(prompts)}
    curves = []
    units = _outcomes(score_samples(prompts, rows, folder), {r["file"]: r["index"] for r in rows}, n)
    for (suite_name, check), cell in sorted(units.items(), key=lambda kv: (kv[0][0], kv[0][1] != ALL_CHECKS, kv[0][1])):
        chances = [c for _, _, c in cell if c is not None]
        passed = np.stack([p for _, p, _ in cell])
        for r in accuracy_curve(scores[[row_of[pid] for pid, _, _ in cell]], passed, ks):
            curves.append({"suite": suite_name, "check": check, "chance": float(np.mean(chances)) if chances else None,
                           **r})
    clip = {name: mean_curve(scores[[row_of[p["prompt_id"]] for p in prompts if p["suite"] == name]],
                             100 * scores[[row_of[p["prompt_id"]] for p in prompts if p["suite"] == name]], ks)
            for name in sorted({p["suite"] for p in prompts})}
    report = {"suite": suite, "ckpt": str(ckpt), "samples_dir": str(folder), "pool": n, "ks": list(ks),
              "n_prompts": len(prompts), "clip_model": f"{clip_model} ({clip_pretrained or RANDOM_CLIP})",
              "random_clip": scorer.random, "rows": curves, "clip_score": clip,
              "sampling": {"seconds": round(seconds, 2), "images_drawn": drawn, "device": s.device,
                           "seconds_per_image": seconds / drawn if drawn else None},
              "intervals": "Wilson 95% over units (a check of a prompt; a prompt for 'all checks')",
              "config": config_to_dict(cfg)}
    out = Path(out)
    write_json(out / f"{REPORT}.json", report)
    plot_probe_rerank_curve(report, out / PLOT)
    _write_md(report, out / f"{REPORT}.md")
    return report


def _write_md(report: dict, path: Path) -> None:
    from dalle_eval.report import md_table, pct

    ks, table = report["ks"], []
    for suite in dict.fromkeys(r["suite"] for r in report["rows"]):  # each suite: its checks, then the CLIP score
        cells: dict[str, dict] = {}
        for r in (r for r in report["rows"] if r["suite"] == suite):
            row = cells.setdefault(r["check"], {"suite": suite, "check": r["check"], "units": str(r["n"]),
                                                "chance": "—" if r["chance"] is None else pct(r["chance"])})
            row[f"k={r['k']}"] = f"{pct(r['accuracy'])} [{pct(r['ci95'][0])}, {pct(r['ci95'][1])}]"
        clip = report["clip_score"][suite]
        cells["clip"] = {"suite": suite, "check": "CLIP score of the pick (100 × cosine)", "units": str(clip[0]["n"]),
                         "chance": "—", **{f"k={r['k']}": f"{r['mean']:.2f}" for r in clip}}
        table += cells.values()
    md = ("# What reranking buys: probe accuracy of the best of k by CLIP\n\n"
          + (f"> **{report['clip_model']}**\n\n" if report["random_clip"] else "")
          + f"{report['n_prompts']} prompts of `{report['suite']}` (shapes prompts; Raven and translation left out), "
          f"a pool of {report['pool']} samples each drawn once into `{report['samples_dir']}` and ranked by CLIP "
          f"{report['clip_model']}; at each k the top-scored of the first k draws is parser-scored, so every k reuses "
          f"the same draws (cost: k draws per prompt; the pool: {report['pool']}). Intervals: {report['intervals']}.\n\n")
    per_image = report["sampling"]["seconds_per_image"]
    if per_image:  # what best of k costs a user who draws only k: k x this per prompt
        md += (f"Sampling cost measured by this run: {report['sampling']['images_drawn']:,} images in "
               f"{report['sampling']['seconds']:.1f} s on {report['sampling']['device']} ({per_image:.3f} s per image): "
               + ", ".join(f"best of {k} costs {k * per_image * report['n_prompts']:.1f} s for these prompts" for k in ks)
               + ".\n\n")
    md += md_table(table, ["suite", "check", "units", "chance", *[f"k={k}" for k in ks]])
    paired = [{"suite": r["suite"], "k": str(r["k"]), "prompts gained": str(r["gained"]), "prompts lost": str(r["lost"]),
               f"change vs k={ks[0]}": f"{100 * r['vs_first']:+.1f} points [{100 * r['vs_first_ci95'][0]:+.1f}, "
                                      f"{100 * r['vs_first_ci95'][1]:+.1f}]"}
              for r in report["rows"] if r["check"] == ALL_CHECKS and "vs_first" in r]
    if paired:
        md += (f"\n## All checks: best of k against best of {ks[0]}, paired (the same prompts and draws)\n\n"
               "Prompts that pass at k but failed at the smallest k (gained) and the reverse (lost); the interval is "
               "Newcombe's (1998) for paired proportions.\n\n" + md_table(paired, list(paired[0])))
    md += f"\n![probe accuracy vs k]({PLOT})\n"
    with atomic_path(path) as tmp:
        tmp.write_text(md)
