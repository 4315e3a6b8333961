"""`dataset-stats`: what a build kept, what it rejected and why — DuckDB SQL over OUT/pairs.parquet.

    dataset_stats(out, plots=True) -> dict   also writes OUT/stats/stats.json, stats.md and PNG plots
    pipelines/stats_report.py                the same numbers as terminal tables, Markdown and plots

Reads only the build's artifacts: the pair table and, when present, the image and token manifests.
Optional pair-table columns add their sections: source (per input file), width/height (original
size), cluster/dup_of (near-duplicates), eval_match, clip_score. Status names are an open set.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from dalle_eval.artifacts import MANIFEST, atomic_path, read_json, write_json
from dalle_eval.errors import DalleEvalError

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
    from dalle_eval.pipelines.stats_report import format_markdown, write_plots  # the rendering half

    if plots:
        stats["files"]["plots"] = [str(p) for p in write_plots(stats, folder)]
    write_json(folder / "stats.json", stats)
    with atomic_path(folder / "stats.md") as tmp:
        tmp.write_text(format_markdown(stats))
    return stats
