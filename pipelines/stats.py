"""`dataset-stats`: what a build kept, what it rejected and why — DuckDB SQL over OUT/pairs.parquet.

    dataset_stats(out, plots=True) -> dict   also writes OUT/stats/stats.json, stats.md and PNG plots
    format_stats(stats) -> str               the same numbers as compact tables for the terminal

Reads only the build's artifacts: the pair table and, when present, the image and token manifests.
Optional pair-table columns add their sections: source (per input file), width/height (original
size), cluster/dup_of (near-duplicates), eval_match, clip_score. Status names are an open set.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from dalle_eval.artifacts import MANIFEST, atomic_path, read_json, write_json
from dalle_eval.errors import DalleEvalError
from dalle_eval.report import md_table, pct

STATS_DIR = "stats"
OK = "ok"
KEPT = f"status = '{OK}'"
TOP_DOMAINS = 20
TOP_CLUSTERS = 10
LOCAL_SCHEMES = ("file", "shapes")  # no network host: one "domain" per scheme
# Bin i holds [edges[i], edges[i+1]); the last bin is open-ended.
CHAR_EDGES = (0, 1, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500, 1000)
WORD_EDGES = (0, 1, 3, 5, 8, 10, 15, 20, 30, 50, 100)
SIDE_EDGES = (0, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
CLUSTER_EDGES = (2, 3, 4, 6, 11, 101)
# ViT-B/32 cosine similarities of real pairs sit around 0.2-0.4; LAION kept >= 0.28-0.3 (issue 5).
CLIP_EDGES = (-1.0, 0.1, 0.15, 0.2, 0.22, 0.24, 0.26, 0.28, 0.3, 0.32, 0.34, 0.36, 0.4)
NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER"}
NUMERIC |= {"UBIGINT", "FLOAT", "DOUBLE", "DECIMAL"}
TEXT_COLUMNS = ("key", "status", "url", "caption", "source", "dup_of", "cluster", "eval_match")
NUMBER_COLUMNS = ("width", "height", "clip_score")
IMAGE_KEYS = ("source", "n_samples", "n_shards", "resolution", "status_counts")  # read from the manifests
TOKEN_KEYS = ("n_samples", "n_shards", "text_len", "grid", "text_vocab", "image_vocab", "truncated_captions")

_SCHEME = r"^([A-Za-z][A-Za-z0-9+.\-]*):"
_HOST = r"^[^:]+://(?:[^/?#@]*@)?(\[[^\]]*\]|[^/?#:]*)"  # after any user@, before :port or the path
_DOMAIN_MACRO = f"""CREATE MACRO url_domain(u) AS CASE
    WHEN u IS NULL OR u = '' THEN '(no url)'
    WHEN NOT regexp_matches(u, '{_SCHEME}') THEN '(no scheme)'
    WHEN lower(regexp_extract(u, '{_SCHEME}', 1)) IN ({", ".join(f"'{s}'" for s in LOCAL_SCHEMES)})
        THEN lower(regexp_extract(u, '{_SCHEME}', 1)) || '://'
    WHEN NOT regexp_matches(u, '^[^:]+://') THEN lower(regexp_extract(u, '{_SCHEME}', 1)) || ':'
    ELSE coalesce(nullif(rtrim(lower(regexp_extract(u, '{_HOST}', 1)), '.'), ''), '(no host)') END"""


def _col(name: str, types: dict[str, str], number: bool) -> str:
    """One column normalised for the queries: text (NULL for missing, NaN, or '' except in captions) or a
    finite double."""
    q = f'"{name}"'
    if name not in types:
        return f"CAST(NULL AS {'DOUBLE' if number else 'VARCHAR'}) AS {name}"
    if number:
        return f"CASE WHEN isfinite(TRY_CAST({q} AS DOUBLE)) THEN TRY_CAST({q} AS DOUBLE) END AS {name}"
    if types[name].upper().split("(")[0] in NUMERIC:  # a cluster id stored as float for its NaNs: 3.0 -> '3'
        return (
            f"CAST(CASE WHEN isfinite(CAST({q} AS DOUBLE)) THEN CAST({q} AS BIGINT) END AS VARCHAR) AS {name}"
        )
    if name == "caption":  # an empty caption is a caption of length 0, not a missing one
        return f"CAST({q} AS VARCHAR) AS {name}"
    return f"nullif(CAST({q} AS VARCHAR), '') AS {name}"


def _connect(pairs: Path) -> tuple[duckdb.DuckDBPyConnection, set[str]]:
    """A connection with view `p` (the pair table, every column the queries use, normalised)."""
    if not pairs.is_file():
        raise DalleEvalError(
            f"{pairs}: no pair table — run `dalle-eval build-dataset --out {pairs.parent}` first"
        )
    con = duckdb.connect()
    literal = "'" + str(pairs).replace("'", "''") + "'"
    try:
        types = dict(
            con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE FROM read_parquet({literal}))"
            ).fetchall()
        )
        missing = [c for c in ("key", "status") if c not in types]
        if missing:
            raise DalleEvalError(
                f"{pairs}: missing column(s) {', '.join(missing)}; found {', '.join(types)} (not a build-dataset pair table)"
            )
        cols = [_col(c, types, False) for c in TEXT_COLUMNS] + [_col(c, types, True) for c in NUMBER_COLUMNS]
        con.execute(f"CREATE VIEW p AS SELECT {', '.join(cols)} FROM read_parquet({literal})")
        con.execute(_DOMAIN_MACRO)
    except duckdb.Error as e:
        con.close()
        raise DalleEvalError(f"{pairs}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    except DalleEvalError:
        con.close()
        raise
    return con, set(types)


def _label(lo: float, hi: float | None, integer: bool) -> str:
    if not integer:
        return f"< {hi:g}" if lo <= -1 else (f">= {lo:g}" if hi is None else f"{lo:g}-{hi:g}")
    return f"{lo:g}+" if hi is None else (f"{lo:g}" if hi - lo == 1 else f"{lo:g}-{hi - 1:g}")


def _histogram(
    con,
    value: str,
    edges: tuple,
    counts: dict[str, str],
    source: str = "p",
    integer: bool = True,
    missing: str | None = None,
) -> list[dict]:
    """Rows {bin, lo, hi, <name>: count for each (name, SQL condition)} over fixed `edges`; NULL values
    make a `missing` row (listed when any of its counts is non-zero)."""
    case = " ".join(f"WHEN _v < {e} THEN {i}" for i, e in enumerate(edges[1:]))
    aggs = ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in counts.values())
    got = {
        r[0]: r[1:]
        for r in con.execute(
            f"SELECT CASE WHEN _v IS NULL THEN -1 {case} ELSE {len(edges) - 1} END AS bin, {aggs} "
            f"FROM (SELECT {value} AS _v, * FROM {source}) GROUP BY bin"
        ).fetchall()
    }
    rows = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        n = got.get(i, (0,) * len(counts))
        rows.append({"bin": _label(lo, hi, integer), "lo": lo, "hi": hi, **dict(zip(counts, n))})
    if missing is not None and any(got.get(-1, ())):
        rows.append({"bin": missing, "lo": None, "hi": None, **dict(zip(counts, got[-1]))})
    return rows


def _describe(con, value: str, where: str = "TRUE") -> dict:
    """n, min, median, mean, p95, max of the non-NULL values of an expression over `p`."""
    r = con.execute(
        "SELECT count(_v), min(_v), quantile_cont(_v, 0.5), avg(_v), quantile_cont(_v, 0.95), max(_v) "
        f"FROM (SELECT CAST({value} AS DOUBLE) AS _v FROM p WHERE {where})"
    ).fetchone()
    return {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in zip(("n", "min", "median", "mean", "p95", "max"), r)
    }


def _status(con, recorded: dict | None) -> tuple[dict, dict, list[str]]:
    """Counts per status (kept first), the kept/rejected split, and the checks that they add up."""
    n_rows, n_keys, no_key = con.execute(
        "SELECT count(*), count(DISTINCT key), count(*) - count(key) FROM p"
    ).fetchone()
    counts = dict(
        con.execute(
            f"SELECT coalesce(status, '(missing)') AS s, count(*) AS n FROM p GROUP BY s ORDER BY s = '{OK}' DESC, n DESC, s"
        ).fetchall()
    )
    share = (lambda n: n / n_rows) if n_rows else (lambda n: 0.0)
    table = [
        {"status": s, "rows": n, "share": share(n), "kind": "kept" if s == OK else "rejected"}
        for s, n in counts.items()
    ]
    kept = counts.get(OK, 0)
    checks = {
        "rows": n_rows,
        "status_sum": sum(counts.values()),
        "missing_status": counts.get("(missing)", 0),
        "duplicate_keys": n_rows - no_key - n_keys,
        "missing_keys": no_key,
    }
    problems = []
    if checks["status_sum"] != n_rows:
        problems.append(f"status counts add up to {checks['status_sum']}, not the {n_rows} rows")
    if checks["missing_status"]:
        problems.append(f"{checks['missing_status']} rows have no status (each row needs exactly one)")
    if checks["duplicate_keys"] or no_key:
        problems.append(f"keys not unique: {checks['duplicate_keys']} repeated, {no_key} missing")
    if recorded is not None:  # the image manifest's status_counts
        checks["manifest_agrees"] = recorded == counts
        if not checks["manifest_agrees"]:
            problems.append(
                f"images/{MANIFEST}: status_counts differ from pairs.parquet (table changed after the manifest?)"
            )
    checks["adds_up"] = checks["status_sum"] == n_rows and not checks["missing_status"]
    checks["all_passed"] = not problems
    totals = {"rows": n_rows, "kept": kept, "rejected": n_rows - kept}
    totals |= {"kept_share": share(kept), "rejected_share": share(n_rows - kept)}
    return {"totals": totals, "table": table, "checks": checks}, counts, problems


def _sources(con) -> list[dict]:
    """Per input file: rows, kept, and its most frequent rejection."""
    rows = con.execute(
        f"""WITH s AS (SELECT coalesce(source, '(none)') AS source, status, count(*) AS n FROM p GROUP BY ALL),
                 r AS (SELECT *, row_number() OVER (PARTITION BY source ORDER BY n DESC, status) AS i
                       FROM s WHERE status IS DISTINCT FROM '{OK}')
            SELECT s.source, sum(s.n)::BIGINT, (coalesce(sum(s.n) FILTER (WHERE s.status = '{OK}'), 0))::BIGINT,
                   any_value(r.status), coalesce(any_value(r.n), 0)
            FROM s LEFT JOIN r ON r.source = s.source AND r.i = 1 GROUP BY s.source ORDER BY s.source"""
    ).fetchall()
    keys = ("source", "rows", "kept", "top_rejection", "top_rejection_rows")
    return [dict(zip(keys, r)) | {"kept_share": r[2] / r[1]} for r in rows]


def _clusters(con, counts: dict) -> dict:
    """Near-duplicate clusters (rows sharing `cluster`): how many, the largest with the key each kept."""
    sizes = "(SELECT count(*) AS size FROM p WHERE cluster IS NOT NULL GROUP BY cluster)"
    n, rows = con.execute(
        f"SELECT count(*), coalesce(sum(size), 0)::BIGINT FROM {sizes} WHERE size > 1"
    ).fetchone()
    top = con.execute(
        f"""WITH c AS (SELECT cluster, count(*) AS size,
                              coalesce(min(dup_of), min(key) FILTER (WHERE {KEPT}), min(key)) AS kept_key,
                              count(*) FILTER (WHERE status = 'near_duplicate') AS removed
                       FROM p WHERE cluster IS NOT NULL GROUP BY cluster HAVING count(*) > 1)
            SELECT c.*, (SELECT any_value(caption) FROM p WHERE p.key = c.kept_key)
            FROM c ORDER BY c.size DESC, c.kept_key LIMIT {TOP_CLUSTERS}"""
    ).fetchall()
    hist = _histogram(con, "size", CLUSTER_EDGES, {"clusters": "size > 1"}, sizes)
    keys = ("cluster", "size", "kept_key", "near_duplicate_rows", "kept_caption")
    return {
        "clusters": n,
        "rows_in_clusters": rows,
        "near_duplicate_rows": counts.get("near_duplicate", 0),
        "largest": [dict(zip(keys, r)) for r in top],
        "size_histogram": hist,
    }


def _manifest(path: Path, keys: tuple[str, ...], warnings: list[str]) -> dict | None:
    """The recorded numbers of a manifest (never re-derived from the shards), or None without one."""
    if not path.exists():
        return None
    try:
        m = read_json(path, "manifest")
    except DalleEvalError as e:
        warnings.append(str(e))
        return None
    return {k: m[k] for k in keys if k in m}


def _compute(con, columns: set[str], recorded: dict | None) -> dict:
    status, counts, warnings = _status(con, recorded)
    stats: dict = {"rows": status["totals"]["rows"], "status": status, "warnings": warnings}
    if "source" in columns:
        stats["sources"] = _sources(con)
    if "caption" in columns:
        both = {"all": "TRUE", "kept": KEPT}
        stats["caption_length"] = {
            unit: {
                "all": _describe(con, sql),
                "kept": _describe(con, sql, KEPT),
                "histogram": _histogram(con, sql, edges, both, missing="(no caption)"),
            }
            for unit, sql, edges in (
                ("chars", "length(caption)", CHAR_EDGES),
                ("words", r"length(regexp_extract_all(caption, '\S+'))", WORD_EDGES),
            )
        }
    if "width" in columns and "height" in columns:
        sides = {"shorter": "least(width, height)", "longer": "greatest(width, height)"}
        hists = [_histogram(con, sql, SIDE_EDGES, {k: KEPT}, missing="(unknown)") for k, sql in sides.items()]
        stats["resolution"] = {
            "width": _describe(con, "width", KEPT),
            "height": _describe(con, "height", KEPT),
            "shorter_side": _describe(con, sides["shorter"], KEPT),
            "aspect_ratio": _describe(con, "width / nullif(height, 0)", KEPT),
            "histogram": [a | b for a, b in zip(*hists)],
        }
    if "url" in columns:
        (distinct,) = con.execute("SELECT count(DISTINCT url_domain(url)) FROM p").fetchone()
        top = con.execute(
            f"SELECT url_domain(url) AS d, count(*) AS n, count(*) FILTER (WHERE {KEPT}) FROM p "
            f"GROUP BY d ORDER BY n DESC, d LIMIT {TOP_DOMAINS}"
        ).fetchall()
        stats["domains"] = {
            "distinct": distinct,
            "top": [{"domain": d, "rows": n, "kept": k, "kept_share": k / n} for d, n, k in top],
            "other_rows": stats["rows"] - sum(n for _, n, _ in top),
        }
    if "cluster" in columns:
        stats["near_duplicates"] = _clusters(con, counts)
    if "eval_match" in columns:
        (n,) = con.execute("SELECT count(eval_match) FROM p").fetchone()
        stats["eval_overlap"] = {"rows_matching_eval": n, "eval_overlap_rows": counts.get("eval_overlap", 0)}
    if "clip_score" in columns:
        scored = "clip_score IS NOT NULL"
        stats["clip_score"] = {
            "all": _describe(con, "clip_score"),
            "kept": _describe(con, "clip_score", KEPT),
            "histogram": _histogram(
                con, "clip_score", CLIP_EDGES, {"all": scored, "kept": KEPT}, integer=False
            ),
        }
    return stats


def dataset_stats(out: Path, plots: bool = True) -> dict:
    """Statistics of a build dir (OUT of build-dataset); writes OUT/stats/{stats.json, stats.md, *.png}."""
    out = Path(out)
    con, columns = _connect(out / "pairs.parquet")
    warnings: list[str] = []
    images = _manifest(out / "images" / MANIFEST, IMAGE_KEYS, warnings)
    recorded = images.pop("status_counts", None) if images else None
    try:
        stats = {"out": str(out)} | _compute(con, columns, recorded if isinstance(recorded, dict) else None)
    finally:
        con.close()
    warnings = stats["warnings"] = warnings + stats["warnings"]
    stats["images"] = images
    stats["tokens"] = _manifest(out / "tokens" / MANIFEST, TOKEN_KEYS, warnings)
    kept = stats["status"]["totals"]["kept"]
    if stats["images"] and stats["images"].get("n_samples") not in (None, kept):
        warnings.append(
            f"images/manifest.json has {stats['images']['n_samples']} samples; pairs.parquet {kept} kept rows"
        )
    folder = out / STATS_DIR
    stats["files"] = {"json": str(folder / "stats.json"), "markdown": str(folder / "stats.md"), "plots": []}
    if plots:
        stats["files"]["plots"] = [str(p) for p in write_plots(stats, folder)]
    write_json(folder / "stats.json", stats)
    with atomic_path(folder / "stats.md") as tmp:
        tmp.write_text(format_markdown(stats))
    return stats


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
        top = d["top"][: 10 if compact else TOP_DOMAINS]
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
            nd["largest"][: 5 if compact else TOP_CLUSTERS],
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
