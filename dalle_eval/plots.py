"""Curves of a training run: RUN_DIR/metrics.jsonl -> loss_curves.png (losses, lr, grad norm) and, when the run
scored probes while training, capability_curves.png (probe accuracy vs step).

Each panel puts the same quantity side by side. Transformer: train and val cross-entropy (model.loss on
both). dVAE: the training objective (recon + beta KL) has no held-out counterpart (validation measures
the pixel MSE of argmax-code reconstructions), so it is plotted alone, and the held-out MSE against the
training batches' pixel MSE (logged as "mse"; in older runs the recon term when recon_loss was "mse").

Probe records (`"split": "probe"`, one per check per probe pass; dalle_eval/probes/in_training.py writes them)
are left out of the loss plot and drawn by plot_capabilities: one panel per suite, a line per (scorer, check)
with its 95% interval shaded and its chance level dashed in the same colour.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from dalle_eval.artifacts import atomic_path, iter_jsonl, read_json
from dalle_eval.errors import DalleEvalError

METRICS = "metrics.jsonl"
PLOT = "loss_curves.png"
CAPABILITY_PLOT = "capability_curves.png"
PROBE = "probe"  # the split of probe records
SUITE_ORDER = ("attributes", "binding", "raven")  # panels top to bottom; other suites follow, sorted
SCORER_ORDER = ("likelihood", "parser", "dvae_ceiling")
SCORER_MARKERS = {"likelihood": "o", "parser": "s", "dvae_ceiling": "^"}
PARTS = ("recon", "kl")  # dVAE loss parts that do not end in "loss"

Series = dict[str, dict[str, dict[int, float]]]  # split -> key -> step -> value


def _split(rec: dict) -> str | None:
    if "split" in rec:
        return rec["split"] if rec["split"] in ("train", "val") else None  # other splits: not plotted
    rest = [k for k in rec if k != "step"]
    return "val" if rest and all(k.startswith("val_") for k in rest) else "train"


def load_metrics(path: Path) -> Series:
    """Finite numeric values by split and key ("val_*" keys go to "val" without the prefix); a step
    logged twice (after a resume) keeps its last value."""
    if not path.exists():
        raise DalleEvalError(f"metrics not found: {path}")
    series: Series = {"train": {}, "val": {}}
    n = 0
    for where, rec in iter_jsonl(path):
        step = _step(where, rec)
        n += 1
        split = _split(rec)
        if split is None:
            continue
        for k, v in rec.items():
            if k in ("step", "split") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):  # NaN/inf points are dropped, not plotted
                target = "val" if k.startswith("val_") else split
                series[target].setdefault(k.removeprefix("val_"), {})[step] = float(v)
    if n == 0:
        raise DalleEvalError(f"{path}: empty — no metrics records")
    return series


def _step(where: str, rec: dict) -> int:
    step = rec.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
        raise DalleEvalError(f"{where}: record has no numeric 'step'")
    return int(step)


def _xy(points: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _panel(ax, title: str, ylabel: str, lines: list[tuple[str, dict[int, float] | None, dict]], log: bool = False) -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    lines = [(label, pts, style) for label, pts, style in lines if pts]
    if not lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    for label, pts, style in lines:
        ax.plot(*_xy(pts), label=label, **style)
    if log and all(v > 0 for _, pts, _ in lines for v in pts.values()):
        ax.set_yscale("log")
    ax.legend(fontsize=8)


VAL = {"marker": "o", "linestyle": "--"}


def _transformer_panels(ax_loss, ax_parts, train: dict, val: dict) -> None:
    """Train and val are both model.loss: next-token cross-entropy, text 1/8 + image 7/8 (paper 2.2)."""
    _panel(ax_loss, "total loss (text/8 + 7 image/8)", "cross-entropy (nats / token)",
           [("train", train.get("loss"), {}), ("val", val.get("loss"), VAL)], log=True)
    parts = sorted({k for s in (train, val) for k in s if k != "loss" and k.endswith("loss")})
    lines = []
    for j, k in enumerate(parts):
        lines.append((f"train {k}", train.get(k), {"color": f"C{j % 10}"}))
        lines.append((f"val {k}", val.get(k), {"color": f"C{j % 10}", "linestyle": "--", "marker": "."}))
    _panel(ax_parts, "loss parts", "cross-entropy (nats / token)", lines, log=True)


def _dvae_panels(ax_loss, ax_mse, train: dict, val: dict, recon_loss: str | None) -> None:
    """The objective (train only; val recon/kl too if a run logged them) and pixel MSE, train vs held-out."""
    lines = [("train loss = recon + β·KL·codes/subpixels", train.get("loss"), {"color": "C0"})]
    for j, k in enumerate(PARTS, 1):
        lines.append((f"train {k}", train.get(k), {"color": f"C{j}"}))
        lines.append((f"val {k}", val.get(k), {"color": f"C{j}", "linestyle": "--", "marker": "."}))
    recon = {"logit_laplace": "logit-Laplace NLL", "mse": "MSE"}.get(recon_loss or "", "reconstruction")
    _panel(ax_loss, "training objective (no held-out counterpart)", f"recon: {recon} / subpixel; KL: nats / code",
           lines, log=True)
    train_mse, title = train.get("mse"), "reconstruction error: train vs held-out"
    if train_mse is None and recon_loss == "mse":  # runs before "mse" was logged: the recon term is that MSE
        train_mse = train.get("recon")
    elif train_mse is None:
        title = "reconstruction error: held-out (train MSE not logged by this run)"
    _panel(ax_mse, title, "pixel MSE (pixels in [0, 1])",
           [("train batches (relaxed codes)", train_mse, {}), ("held-out images (argmax codes)", val.get("mse"), VAL)],
           log=True)


def _lookup(d, *keys: str):
    """d[k1][k2]... or None when a level is missing or not a dict."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _run_config(run_dir: Path) -> dict:
    cfg = read_json(run_dir / "config.json", "run config") if (run_dir / "config.json").exists() else {}
    return cfg if isinstance(cfg, dict) else {}


def plot_metrics(run_dir: Path, out: Path | None = None) -> Path:
    """Plot RUN_DIR/metrics.jsonl to `out` (default RUN_DIR/loss_curves.png), written atomically."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / PLOT
    series = load_metrics(run_dir / METRICS)
    train, val = series["train"], series["val"]
    meta = _run_config(run_dir)
    stage = meta.get("stage")
    title = run_dir.resolve().name + (f" — stage: {stage}" if stage else "")

    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_parts, ax_lr, ax_grad = fig.subplots(2, 2).flat
    fig.suptitle(title)
    if stage == "dvae" or (stage is None and any(k in train for k in (*PARTS, "mse"))):  # legacy: no config.json
        _dvae_panels(ax_loss, ax_parts, train, val, _lookup(meta, "config", "train", "dvae", "recon_loss"))
    else:
        _transformer_panels(ax_loss, ax_parts, train, val)
    _panel(ax_lr, "learning rate", "learning rate", [("lr", train.get("lr"), {})])
    _panel(ax_grad, "grad norm", "gradient L2 norm (before clipping)", [("grad_norm", train.get("grad_norm"), {})],
           log=True)

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


# --- capability curves: probe accuracy while training ---


class ProbePoint(NamedTuple):
    """One probe check at one step: accuracy, its 95% interval (lo, hi) and chance (None: not given)."""

    accuracy: float
    lo: float
    hi: float
    chance: float | None
    n: int | None


Probes = dict[str, dict[tuple[str, str], dict[int, ProbePoint]]]  # suite -> (scorer, check) -> step -> point


def _fraction(where: str, rec: dict, key: str, value, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 1):
        got = "missing" if key not in rec else repr(value)
        raise DalleEvalError(f"{where}: probe record's {key!r} is {got}, expected a number in [0, 1]"
                             + (" or null" if optional else ""))
    return float(value)


def _probe_point(where: str, rec: dict) -> tuple[str, str, str, ProbePoint]:
    """(suite, scorer, check, point) of a probe record; a field missing or of the wrong type names file:line."""
    names = []
    for key in ("suite", "scorer", "check"):
        value = rec.get(key)
        if not isinstance(value, str) or not value:
            got = "missing" if key not in rec else repr(value)
            raise DalleEvalError(f"{where}: probe record's {key!r} is {got}, expected a name")
        names.append(value)
    acc = _fraction(where, rec, "accuracy", rec.get("accuracy"))
    lo = hi = acc
    ci = rec.get("ci95")
    if ci is not None:
        if not isinstance(ci, (list, tuple)) or len(ci) != 2:
            raise DalleEvalError(f"{where}: probe record's 'ci95' is {ci!r}, expected [low, high]")
        lo, hi = (_fraction(where, rec, "ci95", v) for v in ci)
        if not lo <= acc <= hi:
            raise DalleEvalError(f"{where}: probe record's 'ci95' {ci!r} does not hold its accuracy {acc!r}")
    chance = _fraction(where, rec, "chance", rec.get("chance"), optional=True)
    n = rec.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) else None
    return names[0], names[1], names[2], ProbePoint(acc, lo, hi, chance, n)


def load_probes(path: Path) -> Probes:
    """The probe records of a metrics.jsonl (`"split": "probe"`) by suite, (scorer, check) and step; {} when
    it holds none. A step recorded again (after a resume) keeps its last value. A record without a numeric
    step, suite/scorer/check names, an accuracy in [0, 1], a [low, high] ci95 around it (or none) and a chance
    in [0, 1] (or none) is an error naming file:line."""
    path = Path(path)
    if not path.exists():
        raise DalleEvalError(f"metrics not found: {path}")
    probes: Probes = {}
    for where, rec in iter_jsonl(path):
        if rec.get("split") != PROBE:
            continue
        step = _step(where, rec)
        suite, scorer, check, point = _probe_point(where, rec)
        probes.setdefault(suite, {}).setdefault((scorer, check), {})[step] = point
    return probes


def _order(names, first: tuple[str, ...]) -> list[str]:
    return sorted(names, key=lambda x: (first.index(x) if x in first else len(first), x))


def _probe_lines(lines: dict[tuple[str, str], dict[int, ProbePoint]]) -> list[tuple[str, str]]:
    """(scorer, check) in panel order: by scorer, then checks as the producer first wrote them."""
    scorers = _order({s for s, _ in lines}, SCORER_ORDER)
    return sorted(lines, key=lambda sc: scorers.index(sc[0]))  # stable: dict order (first appearance) within one


def _percent(x: float) -> str:
    """50%, 12.5%, 4.2%, 0.014%: whole percents when exact, else one decimal, two significant digits below 1%."""
    if abs(x * 100 - round(x * 100)) < 1e-9:
        return f"{x:.0%}"
    return f"{x:.1%}" if x >= 0.01 else f"{100 * x:.2g}%"


def _capability_panel(ax, suite: str, lines: dict[tuple[str, str], dict[int, ProbePoint]]) -> None:
    keys = _probe_lines(lines)
    scorers = _order({s for s, _ in keys}, SCORER_ORDER)
    ax.set_title(f"{suite} — {', '.join(scorers)} probes", loc="left", fontsize=11)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)  # 0 and 100% stay visible, not cut by the frame
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    band_alpha = max(0.05, 0.18 / math.sqrt(len(keys)))  # many overlapping bands stay see-through
    for j, (scorer, check) in enumerate(keys):
        pts = lines[(scorer, check)]
        steps = sorted(pts)
        acc = [pts[s].accuracy for s in steps]
        colour = cmap(j % cmap.N)
        chances = {pts[s].chance for s in steps if pts[s].chance is not None}
        label = f"{scorer} · {check}" + (f" (chance {_percent(min(chances))})" if len(chances) == 1 else "")
        ax.plot(steps, acc, color=colour, marker=SCORER_MARKERS.get(scorer, "D"), markersize=4, linewidth=1.6,
                label=label, zorder=3)
        lo, hi = [pts[s].lo for s in steps], [pts[s].hi for s in steps]
        if len(steps) > 1:
            ax.fill_between(steps, lo, hi, color=colour, alpha=band_alpha, linewidth=0, zorder=1)
        else:  # a single step (e.g. only the untrained model so far): the interval as an error bar
            ax.errorbar(steps, acc, yerr=[[acc[0] - lo[0]], [hi[0] - acc[0]]], color=colour, capsize=3, zorder=2)
        if len(chances) == 1:
            ax.axhline(min(chances), color=colour, linestyle="--", linewidth=1.1, alpha=0.8, zorder=2)
        elif chances:  # chance changed between passes: follow it
            cs = [s for s in steps if pts[s].chance is not None]
            ax.plot(cs, [pts[s].chance for s in cs], color=colour, linestyle="--", linewidth=1.1, alpha=0.8, zorder=2)
    if len(set().union(*(lines[k].keys() for k in keys))) == 1:  # one step only: give the point some room
        (only,) = set().union(*(lines[k].keys() for k in keys))
        ax.set_xlim(only - 1, only + 1)
        ax.set_xticks([only])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0,
              ncol=1 if len(keys) <= 12 else 2, title="scorer · check (dashed: chance)", title_fontsize=8)


def capability_figure(probes: Probes, title: str = "") -> Figure:
    """The capability-curves figure: one panel per suite (attributes, binding, raven, then others), stacked."""
    if not probes:
        raise DalleEvalError("no probe records to plot")
    suites = _order(probes, SUITE_ORDER)
    fig = Figure(figsize=(12, 0.6 + 3.4 * len(suites)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(suites), 1, squeeze=False)[:, 0]
    for ax, suite in zip(axes, suites):
        _capability_panel(ax, suite, probes[suite])
    fig.suptitle((title + " — " if title else "") + "probe accuracy while training (band: 95% interval)")
    return fig


def plot_capabilities(run_dir_or_metrics: Path, out: Path | None = None) -> Path:
    """Plot the probe records of RUN_DIR/metrics.jsonl (or of the metrics.jsonl given) to `out` (default
    capability_curves.png beside the metrics), written atomically. No probe records is an error: check with
    load_probes first (plot-metrics does)."""
    src = Path(run_dir_or_metrics)
    metrics = src / METRICS if src.is_dir() else src
    out = Path(out) if out is not None else metrics.parent / CAPABILITY_PLOT
    probes = load_probes(metrics)
    if not probes:
        raise DalleEvalError(f"{metrics}: no probe records (\"split\": \"probe\"); train with train.probe_every > 0")
    meta = _run_config(metrics.parent)
    stage = meta.get("stage")
    name = metrics.parent.resolve().name
    fig = capability_figure(probes, name + (f" ({stage})" if stage and stage != name else ""))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


# --- probes --rerank-curve: accuracy of the best of k by CLIP, against k ---


def plot_probe_rerank_curve(report: dict, out: Path) -> Path:
    """One panel per suite: a line per check (accuracy of the best-of-k image, Wilson band, chance dashed) against
    k on a log-2 axis; written atomically. `report` is probe_curve.run_probe_curve's."""
    from matplotlib.ticker import FixedLocator, NullLocator

    suites = list(dict.fromkeys(r["suite"] for r in report["rows"]))
    if not suites:
        raise DalleEvalError("no probe rows to plot")
    fig = Figure(figsize=(11, 0.8 + 3.4 * len(suites)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ks = report["ks"]
    for ax, suite in zip(fig.subplots(len(suites), 1, squeeze=False)[:, 0], suites):
        rows = [r for r in report["rows"] if r["suite"] == suite]
        checks = list(dict.fromkeys(r["check"] for r in rows))
        cmap = colormaps["tab10" if len(checks) <= 10 else "tab20"]
        for j, check in enumerate(checks):
            pts = sorted((r for r in rows if r["check"] == check), key=lambda r: r["k"])
            colour = cmap(j % cmap.N)
            x = [r["k"] for r in pts]
            ax.plot(x, [r["accuracy"] for r in pts], marker="o", markersize=4, color=colour, label=check,
                    linewidth=2.2 if j == 0 else 1.4)
            ax.fill_between(x, [r["ci95"][0] for r in pts], [r["ci95"][1] for r in pts], color=colour, alpha=0.12,
                            linewidth=0)
            if pts[0]["chance"] is not None:
                ax.axhline(pts[0]["chance"], color=colour, linestyle="--", linewidth=1, alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(f"k: samples drawn per prompt, the best kept by CLIP (the first k of a pool of {report['pool']})")
        ax.set_ylabel("parser accuracy of the pick")
        ax.set_title(f"{suite}", loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="check (band: 95% Wilson; dashed: chance)",
                  title_fontsize=8)
    title = "What reranking buys: probe accuracy of the best of k by CLIP"
    fig.suptitle(title + (f"\n{report['clip_model']}" if report["random_clip"] else ""),
                 color="tab:red" if report["random_clip"] else "black")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Title": title, "Description": report["clip_model"]})
    return out
