"""coco-fid's report: report.md (FID/IS per blur radius beside published figures), the FID/IS-vs-blur
plot and grids of the best and worst CLIP-scored samples."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dalle_eval.artifacts import atomic_path
from dalle_eval.model.clip import RANDOM_CLIP
from dalle_eval.report import image_grid, md_table

# Published zero-shot MS-COCO FID at blur radius 0 (30,000 captions): NOT measured by this tool.
PUBLISHED = [
    {"model": "DALL·E 12B (Ramesh et al. 2021, fig. 9; best of 512 by CLIP)", "fid": 27.5},
    {"model": "CogView 4B (Ding et al. 2021, table 1)", "fid": 27.1},
    {"model": "minDALL-E 1.3B (Kakao Brain 2021, model card)", "fid": 14.7},
]
NOT_RECORDED = "not recorded"  # a sampling setting the samples dir does not record (another generator's rows)
CAVEAT_RANDOM = "random Inception weights: not comparable to published FID"


def sweep_figure(sweep: list[dict], caveat: str | None = None) -> Figure:
    """FID and IS against the blur radius; `caveat` (e.g. CAVEAT_RANDOM) is drawn as the figure's title."""
    fig = Figure(figsize=(8, 3.6 if caveat else 3.2), dpi=100)
    FigureCanvasAgg(fig)
    radii = [s["blur_radius"] for s in sweep]
    for i, (key, label) in enumerate((("fid", "FID (lower is better)"), ("is_mean", "Inception score"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(radii, [s[key] for s in sweep], marker="o")
        if key == "is_mean":
            ax.fill_between(radii, [s["is_mean"] - s["is_std"] for s in sweep], [s["is_mean"] + s["is_std"] for s in sweep],
                            alpha=0.2)
        ax.set_xlabel("Gaussian blur radius (px, both sets)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if caveat:
        fig.suptitle(caveat[0].upper() + caveat[1:], color="tab:red", fontweight="bold")
    fig.tight_layout()
    return fig


def plot_sweep(sweep: list[dict], out: Path, caveat: str | None = None) -> Path:
    """The sweep figure as PNG; the caveat is also stored in the PNG's Description text chunk."""
    fig = sweep_figure(sweep, caveat)
    meta = {"Title": "FID and IS vs Gaussian blur radius (coco-fid)", "Description": caveat or ""}
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata=meta)
    return out


def _values(v: float | list) -> str:
    return ", ".join(f"{x:g}" for x in (v if isinstance(v, list) else [v]))


def sampling_sentence(p: dict, samples_dir: str) -> str:
    """Where the images come from and how they were drawn, saying only what the samples dir records."""
    rerank, temp = p["rerank"], p["temperature"]
    if rerank == NOT_RECORDED and temp == NOT_RECORDED:
        return f"Images from `{samples_dir}`; sampling settings (reranking, temperature) not recorded."
    if rerank == NOT_RECORDED:
        how = "reranking not recorded"
    elif rerank == 1:
        how = "one sample per caption (no reranking)"
    elif isinstance(rerank, list):
        how = f"best of N by CLIP, N varying over the samples ({_values(rerank)})"
    else:
        how = f"best of {rerank} by CLIP" + (" (a random CLIP)" if p.get("random_clip") else "")
    t = "temperature not recorded" if temp == NOT_RECORDED else f"temperature {_values(temp)}"
    return f"Images from `{samples_dir}`: {how}, {t}."


def write_report(report: dict, rows: list[dict], clip: list[float] | None, folder: Path, out: Path) -> Path:
    p, sweep = report["protocol"], report["sweep"]
    table = []
    for s in sweep:
        row = {"blur radius": f"{s['blur_radius']:g}", "FID": f"{s['fid']:.3f}", "IS": f"{s['is_mean']:.3f} ± {s['is_std']:.3f}",
               "real statistics": "cache" if s["reference_cached"] else "computed"}
        if "kid_mean" in s:
            row["KID"] = f"{s['kid_mean']:.5f} ± {s['kid_std']:.5f}"
        table.append(row)
    caveat = CAVEAT_RANDOM if p.get("random_inception") else None
    md = "# Zero-shot MS-COCO-format FID / IS\n\n"
    if caveat:
        md += f"> **{caveat[0].upper() + caveat[1:]}** (`--random-inception`: offline tests and demo only).\n\n"
    if p.get("random_clip"):
        md += f"> **{RANDOM_CLIP[0].upper() + RANDOM_CLIP[1:]}** (`--random-clip`: offline smoke tests only).\n\n"
    md += (f"{p['n_captions']:,} captions ({p['captions_per_image']} per image, seed {p['seed']}, ids in `{p['subset']}`) → "
           f"{p['n_generated']:,} generated images, against {p['n_real_images']:,} real images of `{report['coco']}`. "
           f"{sampling_sentence(p, report['samples_dir'])}\n\n")
    md += md_table(table, list(table[0]))
    if report["clip_score"] is not None:
        md += f"\nCLIP score (100 × cosine, image vs its caption; {report['clip_model']}): **{report['clip_score']:.2f}**\n"
    md += (f"\nResize policy: {p['resize_policy']}, then the Inception's own TF1-compatible bilinear resize to 299 px."
           f" Inception weights: {p['inception_weights']}. FID: 2048-d pool features, float64 statistics; IS: "
           f"{p['is_splits']} splits (torch-fidelity's order, seed 2020).\n\n![FID and IS vs blur](fid_is_vs_blur.png)\n")
    md += "\n## Published figures (not measured here; for comparison only)\n\n"
    if caveat:
        md += f"The FID above was measured with {caveat}.\n\n"
    md += md_table([{"model": r["model"], "published FID (blur 0)": f"{r['fid']:.1f}"} for r in PUBLISHED],
                   ["model", "published FID (blur 0)"])
    plot_sweep(sweep, out / "fid_is_vs_blur.png", caveat)
    if clip:
        order = sorted(range(len(rows)), key=lambda i: clip[i])
        for name, idx in (("best", order[::-1][:12]), ("worst", order[:12])):
            items = [(folder / rows[i]["file"], f"{clip[i]:.1f} {rows[i]['caption']}") for i in idx]
            image_grid(items, out / f"clip_{name}.png")
            md += f"\n## {name.capitalize()} CLIP-scored samples\n\n![{name}](clip_{name}.png)\n"
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(md)
    return out / "report.md"


# --- coco-fid --rerank-curve: metric vs k, best of k by CLIP from one pool ---

CURVE_PLOT = "rerank_curve.png"


def curve_figure(rows: list[dict], caveats: list[str] = ()) -> Figure:
    """FID, IS and CLIP score of the best-of-k sets against k (log-2 axis), each with its 95% band (IS: ± SD)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    fig = Figure(figsize=(12, 3.8 + 0.3 * len(caveats)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ks = [r["k"] for r in rows]
    panels = (("fid", "ci95", "FID (lower is better)", "C0"),
              ("is_mean", None, "Inception score (higher is better)", "C1"),
              ("clip_score", "clip_ci95", "CLIP score of the pick (100 × cosine)", "C2"))
    for ax, (key, band, title, colour) in zip(fig.subplots(1, 3), panels):
        ys = [r[key] for r in rows]
        ax.plot(ks, ys, marker="o", color=colour, label=f"best of k (pool of {rows[0]['pool_per_caption']})")
        if band is None:
            lo, hi = [r["is_mean"] - r["is_std"] for r in rows], [r["is_mean"] + r["is_std"] for r in rows]
            label = "± SD over splits"
        else:
            lo = [r.get(band, [y, y])[0] for r, y in zip(rows, ys)]
            hi = [r.get(band, [y, y])[1] for r, y in zip(rows, ys)]
            label = "95% interval" + (" (bootstrap over captions)" if key == "fid" else "")
        ax.fill_between(ks, lo, hi, color=colour, alpha=0.2, linewidth=0, label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("k (log 2)")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    head = "What reranking buys: best of k by CLIP from one pool per caption"
    fig.suptitle("\n".join([head, *(c[0].upper() + c[1:] for c in caveats)]),
                 color="tab:red" if caveats else "black")
    fig.supxlabel("k: candidates drawn per caption, the best kept by CLIP (the first k of one pool)", fontsize=10)
    return fig


def _interval(lo_hi: list[float] | None, digits: int = 2) -> str:
    return f"[{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]" if lo_hi else "—"


def _seconds(s: float | None) -> str:
    if s is None:
        return "not measured (a given pool)"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def write_curve_report(report: dict, out: Path) -> Path:
    """report.md of a --rerank-curve run (a row per k: what it costs, FID, IS, CLIP score) and its PNG."""
    p, rows, sampling = report["protocol"], report["rerank_curve"], report["sampling"]
    caveats = [c for c, on in ((CAVEAT_RANDOM, p["random_inception"]), (RANDOM_CLIP, p["random_clip"])) if on]
    fig = curve_figure(rows, caveats)
    with atomic_path(out / CURVE_PLOT) as tmp:
        fig.savefig(tmp, format="png", metadata={"Title": "FID, IS and CLIP score vs k (coco-fid --rerank-curve)",
                                                 "Description": "; ".join(caveats)})
    first = rows[0]["k"]
    table = [{"k": str(r["k"]), "draws per caption": str(r["draws_per_caption"]),
              "sampling time for k": _seconds(r["sampling_seconds_for_k"]),
              "FID": f"{r['fid']:.3f}", "FID 95%": _interval(r.get("ci95")),
              f"FID − FID(k={first})": f"{r['vs_first']:+.3f} {_interval(r.get('vs_first_ci95'))}"
              if r["k"] != first and "vs_first" in r else "—",
              "IS": f"{r['is_mean']:.3f} ± {r['is_std']:.3f}",
              "CLIP score": f"{r['clip_score']:.2f} {_interval(r['clip_ci95'])}"} for r in rows]
    md = "# What reranking buys: zero-shot MS-COCO-format FID / IS / CLIP score vs best of k\n\n"
    for c in caveats:
        md += f"> **{c[0].upper() + c[1:]}** (offline tests and demo only).\n\n"
    drawn = (f"drawn in {_seconds(sampling['seconds'])} on {sampling['device']}" if sampling
             else f"read from `{report['samples_dir']}`")
    md += (f"{p['n_captions']:,} captions ({p['captions_per_image']} per image, seed {p['seed']}, ids in `{p['subset']}`). "
           f"One pool of {p['pool']} images per caption ({p['n_pool_images']:,} images, {drawn}) was sampled once and "
           f"scored once by CLIP {p['clip_model']}; best of k is the top-scored of each caption's first k draws, so every "
           f"k reuses the same draws (no resampling). The pool cost {p['pool']} draws per caption for all rows; a user "
           f"wanting only best of k pays k draws per caption (the sampling-time column, at this run's measured "
           f"seconds per image). The DALL·E blog shows the best 32 of 512; the paper's COCO FID reranks 512.\n\n")
    md += md_table(table, list(table[0]))
    md += (f"\nIntervals (95%): {p['intervals']} ({p['bootstrap']} bootstrap replicates). The CLIP score is that of "
           f"the CLIP that picked the image, so it rises with k by construction; FID and IS are the independent check. "
           f"Blur radius {p['blur_radius']:g}; resize policy: {p['resize_policy']}; Inception weights: "
           f"{p['inception_weights']}.\n\n![FID, IS and CLIP score vs k]({CURVE_PLOT})\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(md)
    return out / "report.md"
