"""Read url+caption lists (parquet, csv, tsv, jsonl) into the pair table, with DuckDB.

Problems with the input (missing file, unknown format, empty file, missing column) are reported in
one line that names the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from dalle_eval.errors import DalleEvalError

READERS = {
    ".parquet": "read_parquet(?)",
    ".csv": "read_csv(?, header=true, all_varchar=true)",
    ".tsv": "read_csv(?, header=true, delim='\t', all_varchar=true, quote='')",
    ".jsonl": "read_json(?, format='newline_delimited')",
    ".json": "read_json(?, format='auto')",
}


def read_pairs(path: str | Path, url_col: str = "url", caption_col: str = "caption") -> pd.DataFrame:
    """-> DataFrame with columns key (row index, zero-padded), url, caption."""
    path = Path(path)
    if not path.exists():
        raise DalleEvalError(f"--source {path}: file not found")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DalleEvalError(
            f"--source {path}: unknown format '{path.suffix}'; expected one of {', '.join(READERS)} "
            "(or --source shapes)"
        )
    if path.stat().st_size == 0:
        raise DalleEvalError(f"--source {path}: the file is empty; expected a header and url,caption rows")
    try:
        df = duckdb.execute(f"SELECT * FROM {reader}", [str(path)]).df()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        raise DalleEvalError(f"--source {path}: could not be read as {path.suffix[1:]} ({first})") from None
    missing = [c for c in (url_col, caption_col) if c not in df.columns]
    if missing:
        raise DalleEvalError(
            f"--source {path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))} "
            f"(set data.url_col / data.caption_col to use other names)"
        )
    if len(df) == 0:
        raise DalleEvalError(f"--source {path}: no rows after the header")
    out = pd.DataFrame(
        {
            "key": [f"{i:09d}" for i in range(len(df))],
            "url": df[url_col].astype("string"),
            "caption": df[caption_col].astype("string"),
        }
    )
    return out
