"""How `dataset-stats` shows its numbers: terminal tables, Markdown and PNG plots (pipelines/stats.py
computes them)."""

from __future__ import annotations

from pathlib import Path

from dalle_eval.artifacts import atomic_path
from dalle_eval.report import md_table, pct

# --------------------------------------------------------------------------- tables (Markdown, terminal)


def _n(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"


def _short(text, width: int = 40) -> str:
    s = "–" if text is None else " ".join(str(text).split()).replace("|", "/")
    return s if len(s) <= width else s[: width - 1] + "…"


def _tab(items: list[dict], cols: dict[str, str], width: int = 40) -> list[dict]:
    """Table rows of strings: header -> key; *share keys as percentages, numbers with separators."""

    def cell(key: str, v) -> str:
        if key.endswith("share"):
            return pct(v)
        return _n(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _short(v, width)

    return [{h: cell(k, r[k]) for h, k in cols.items()} for r in items]


def _hist(hist: list[dict], label: str, counts: list[str], compact: bool) -> list[dict]:
    """Histogram rows; compact: empty bins at either end dropped, a text bar of the last count."""
    if compact:
        bins, extra = [r for r in hist if r["lo"] is not None], [r for r in hist if r["lo"] is None]
        full = [i for i, r in enumerate(bins) if any(r[c] for c in counts)]
        hist = (bins[full[0] : full[-1] + 1] if full else []) + extra
    rows = _tab(hist, {label: "bin"} | {c: c for c in counts})
    top = max([r[counts[-1]] for r in hist] + [1])
    for row, r in zip(rows, hist) if compact else ():
        row[""] = "#" * round(24 * r[counts[-1]] / top)
    return rows


SUMMARY = {"": "name", "n": "n", "min": "min", "median": "median", "mean": "mean", "p95": "p95", "max": "max"}


def _summary(parts: dict[str, dict]) -> list[dict]:
    return _tab([{"name": k} | v for k, v in parts.items()], SUMMARY)


def _sections(stats: dict, compact: bool) -> list[tuple[str, str, list[dict]]]:
    """(title, note, rows of strings) for each table; `compact` (terminal): fewer rows, text bars."""
    sec: list[tuple[str, str, list[dict]]] = []
    st = stats["status"]
    t, c = st["totals"], st["checks"]
    note = f"{t['rows']:,} rows: {t['kept']:,} kept ({pct(t['kept_share'])}), "
    note += f"{t['rejected']:,} rejected ({pct(t['rejected_share'])})."
    if c["all_passed"]:
        note += (
            f"\nChecks: the status counts add up to the {c['rows']:,} rows, one status per row, keys unique"
        )
        note += "; images/manifest.json agrees." if c.get("manifest_agrees") else "."
    note += "".join(f"\nWarning: {w}" for w in stats["warnings"])
    sec.append(
        (
            "Status",
            note,
            _tab(st["table"], {"status": "status", "rows": "rows", "share": "share", "": "kind"}),
        )
    )
    if "sources" in stats:
        src, limit = stats["sources"], 10 if compact else 200
        more = f" (first {limit} of {len(src)})" if len(src) > limit else ""
        cols = {"source": "source", "rows": "rows", "kept": "kept", "kept share": "kept_share"}
        rows = _tab(src[:limit], cols | {"top rejection": "top_rejection", "(rows)": "top_rejection_rows"})
        sec.append((f"Per source file{more}", "", rows))
    if "caption_length" in stats:
        cl = stats["caption_length"]
        parts = {f"{u}, {w} rows": cl[u][w] for u in ("chars", "words") for w in ("all", "kept")}
        sec.append(("Caption length", "characters and whitespace-separated words", _summary(parts)))
        for unit, name in (("chars", "characters"), ("words", "words")):
            rows = _hist(cl[unit]["histogram"], unit, ["all", "kept"], compact)
            sec.append((f"Caption length histogram ({name})", "", rows))
    if "resolution" in stats:
        res = stats["resolution"]
        parts = {k.replace("_", " "): res[k] for k in ("width", "height", "shorter_side", "aspect_ratio")}
        sec.append(
            (
                "Original resolution (kept rows)",
                "before resizing; aspect ratio = width / height",
                _summary(parts),
            )
        )
        rows = _hist(res["histogram"], "side (px)", ["longer", "shorter"], compact)
        sec.append(("Resolution histogram (kept rows)", "shorter and longer side of each image", rows))
    if "domains" in stats:
        d = stats["domains"]
        top = d["top"][: 10 if compact else None]  # stats.py already keeps the top TOP_DOMAINS
        note = f"{d['distinct']:,} distinct hosts; {d['other_rows']:,} rows from hosts outside the top {len(d['top'])}"
        cols = {"domain": "domain", "rows": "rows", "kept": "kept", "kept share": "kept_share"}
        sec.append((f"Top {len(top)} domains", note, _tab(top, cols)))
    if "near_duplicates" in stats:
        nd = stats["near_duplicates"]
        note = f"{nd['clusters']:,} clusters with more than one image hold {nd['rows_in_clusters']:,} rows; "
        note += f"{nd['near_duplicate_rows']:,} rows rejected as near_duplicate"
        sec.append(
            (
                "Near-duplicate clusters",
                note,
                _hist(nd["size_histogram"], "cluster size", ["clusters"], compact),
            )
        )
        cols = {
            "cluster": "cluster",
            "size": "size",
            "kept key": "kept_key",
            "removed": "near_duplicate_rows",
        }
        rows = _tab(
            nd["largest"][: 5 if compact else None],
            cols | {"kept caption": "kept_caption"},
            40 if compact else 80,
        )
        if rows:
            sec.append(
                ("Largest clusters", "each keeps one image (kept key); the others are near_duplicate", rows)
            )
    if "eval_overlap" in stats:
        e = stats["eval_overlap"]
        note = f"{e['rows_matching_eval']:,} rows match an evaluation image; {e['eval_overlap_rows']:,} rejected as eval_overlap"
        sec.append(("Evaluation-set overlap", note, []))
    if "clip_score" in stats:
        cs = stats["clip_score"]
        sec.append(
            (
                "CLIP score",
                "image-caption cosine similarity, scored rows",
                _summary({"all": cs["all"], "kept": cs["kept"]}),
            )
        )
        sec.append(("CLIP score histogram", "", _hist(cs["histogram"], "score", ["all", "kept"], compact)))
    shards = []
    if i := stats.get("images"):
        detail = f"resolution {i.get('resolution', '–')} px, source {i.get('source', '–')}"
        shards.append(
            {
                "artifact": "images/",
                "samples": i.get("n_samples"),
                "shards": i.get("n_shards"),
                "detail": detail,
            }
        )
    if k := stats.get("tokens"):
        trunc, n = k.get("truncated_captions"), k.get("n_samples")
        detail = (
            f"text_len {k.get('text_len', '–')}, grid {k.get('grid', '–')}, vocab {k.get('text_vocab', '–')} "
        )
        detail += f"text + {k.get('image_vocab', '–')} image; {_n(trunc)} captions truncated"
        detail += f" ({pct(trunc / n)})" if trunc is not None and n else ""
        shards.append({"artifact": "tokens/", "samples": n, "shards": k.get("n_shards"), "detail": detail})
    if shards:
        cols = {"artifact": "artifact", "samples": "samples", "shards": "shards", "detail": "detail"}
        sec.append(("Shards", "as recorded in the manifests", _tab(shards, cols, 200)))
    return sec


def _text_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    left = {cols[0], "top rejection", "kept key", "kept caption", "detail", ""}

    def line(cells: dict) -> str:
        return (
            "  "
            + "  ".join(
                cells[c].ljust(width[c]) if c in left else cells[c].rjust(width[c]) for c in cols
            ).rstrip()
        )

    return "\n".join([line({c: c for c in cols})] + [line(r) for r in rows])


def format_stats(stats: dict) -> str:
    """Compact tables for the terminal (the full tables are in OUT/stats/stats.md)."""
    parts = []
    for title, note, rows in _sections(stats, compact=True):
        parts.append(
            f"== {title} =="
            + ("\n  " + note.replace("\n", "\n  ") if note else "")
            + (f"\n{_text_table(rows)}" if rows else "")
        )
    return "\n\n".join(parts)


def format_markdown(stats: dict) -> str:
    md = [f"# Dataset statistics: {stats['out']}\n"] + [f"> warning: {w}\n" for w in stats["warnings"]]
    for title, note, rows in _sections(stats, compact=False):
        md.append(
            f"## {title}\n\n"
            + (note.replace("\n", "\n\n") + "\n\n" if note else "")
            + (md_table(rows, list(rows[0])) if rows else "")
        )
    if plots := [Path(p) for p in stats["files"]["plots"]]:
        md.append("## Plots\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    return "\n".join(md)


# --------------------------------------------------------------------------- plots


def _bars(ax, labels: list[str], series: list[tuple[str, list, object]], horizontal: bool = False) -> None:
    """Grouped bars, one group per label; series = [(name, values, colour or one colour per bar)]."""
    width = 0.8 / len(series)
    for j, (name, values, color) in enumerate(series):
        pos = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = (ax.barh if horizontal else ax.bar)(pos, values, width, color=color, label=name)
        if horizontal:
            ax.bar_label(bars, fmt="{:,.0f}", fontsize=7, padding=2)
    if horizontal:
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.margins(x=0.08)
    else:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.grid(True, axis="x" if horizontal else "y", alpha=0.3)
    ax.set_xlabel("rows") if horizontal else ax.set_ylabel("rows")
    if len(series) > 1:
        ax.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1, 1)} if horizontal else {}))


def write_plots(stats: dict, folder: Path) -> list[Path]:
    """status.png, caption_length.png, resolution.png, domains.png, clip_score.png — each when its data
    exists; written atomically. A Figure per plot, no pyplot state (as dalle_eval/plots.py)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []

    def plot(
        name: str, title: str, size: tuple[float, float], panels: list[tuple[str, list, list, bool]]
    ) -> None:
        fig = Figure(figsize=size, dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        for ax, (sub, labels, series, horizontal) in zip(
            fig.subplots(1, len(panels), squeeze=False)[0], panels
        ):
            _bars(ax, labels, series, horizontal)
            ax.set_title(sub or title)
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png")
        written.append(folder / name)

    def pair(h: list[dict], a: str, b: str, names: tuple[str, str] = ("all rows", "kept")) -> list:
        return [(names[0], [r[a] for r in h], "C7"), (names[1], [r[b] for r in h], "C0")]

    table, t = stats["status"]["table"], stats["status"]["totals"]
    colours = ["C2" if r["kind"] == "kept" else "C3" for r in table]
    series = [("rows", [r["rows"] for r in table], colours)]
    title = f"status of {t['rows']:,} pairs: {pct(t['kept_share'])} kept"
    plot("status.png", title, (8, 1.4 + 0.3 * len(table)), [("", [r["status"] for r in table], series, True)])
    if cl := stats.get("caption_length"):
        panels = [
            (
                f"caption length ({name})",
                [r["bin"] for r in cl[u]["histogram"]],
                pair(cl[u]["histogram"], "all", "kept"),
                False,
            )
            for u, name in (("chars", "characters"), ("words", "words"))
        ]
        plot("caption_length.png", "", (12, 4.5), panels)
    if res := stats.get("resolution"):
        h = res["histogram"]
        series = pair(h, "longer", "shorter", ("longer side", "shorter side"))
        plot(
            "resolution.png",
            "original size of kept images (px)",
            (8, 4.5),
            [("", [r["bin"] for r in h], series, False)],
        )
    if top := stats.get("domains", {}).get("top"):
        title = f"top {len(top)} of {stats['domains']['distinct']:,} domains"
        labels = [_short(r["domain"]) for r in top]
        plot("domains.png", title, (8, 1.4 + 0.3 * len(top)), [("", labels, pair(top, "rows", "kept"), True)])
    if stats.get("clip_score", {}).get("all", {}).get("n"):
        h = stats["clip_score"]["histogram"]
        title = "CLIP score (image-caption cosine similarity)"
        plot("clip_score.png", title, (8, 4.5), [("", [r["bin"] for r in h], pair(h, "all", "kept"), False)])
    return written
