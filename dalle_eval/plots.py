"""Loss curves of a training run: RUN_DIR/metrics.jsonl -> one PNG (losses, lr, grad norm).

Each panel puts the same quantity side by side. Transformer: train and val cross-entropy (model.loss on
both). dVAE: the training objective (recon + beta KL) has no held-out counterpart (validation measures
the pixel MSE of argmax-code reconstructions), so it is plotted alone, and the held-out MSE against the
training batches' pixel MSE (logged as "mse"; in older runs the recon term when recon_loss was "mse").
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dalle_eval.artifacts import atomic_path, iter_jsonl, read_json
from dalle_eval.errors import DalleEvalError

METRICS = "metrics.jsonl"
PLOT = "loss_curves.png"
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
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
            raise DalleEvalError(f"{where}: record has no numeric 'step'")
        n += 1
        split = _split(rec)
        if split is None:
            continue
        for k, v in rec.items():
            if k in ("step", "split") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):  # NaN/inf points are dropped, not plotted
                target = "val" if k.startswith("val_") else split
                series[target].setdefault(k.removeprefix("val_"), {})[int(step)] = float(v)
    if n == 0:
        raise DalleEvalError(f"{path}: empty — no metrics records")
    return series


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
