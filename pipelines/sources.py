"""Read url+caption lists into the pair table, with DuckDB: one list file (parquet, csv, tsv, jsonl,
json), a glob of many (`lists/part-*.parquet`), or a local folder of images with caption sidecars
(`x.jpg` + `x.txt`).

The pair table has one row per input pair: `key` (zero-padded row number over the whole input, in
sorted-file order, so the same input gives the same keys on every run), `url`, `caption` and `source`
(the list file the row came from, relative to the glob's folder; the folder's name for a folder).

Nothing is dropped here. Text that is not valid UTF-8 is decoded with U+FFFD for the bad bytes, so the
row reaches the pre-filter (pipelines/prefilter.py), which marks it `caption_invalid`. A csv row with
fewer fields than the header gets NULLs (the pre-filter marks it `caption_empty`). An image without a
sidecar gets a NULL caption. Problems with the input itself (missing file, unknown format, empty file,
missing column, glob matching nothing) are reported in one line that names the file and what was
expected.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import tempfile
from pathlib import Path

import duckdb
import pandas as pd

from dalle_eval.artifacts import sha256_file
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS, is_image_file

# {path} is a quoted SQL string literal, {options} extra options. null_padding: a short csv row gets
# NULLs instead of making DuckDB's sniffer fall back to one column (or to no rows at all).
READERS = {
    ".parquet": "read_parquet({path}{options})",
    ".csv": "read_csv({path}, header={header}, delim=',', quote='\"', escape='\"', all_varchar=true, null_padding=true{options})",
    ".tsv": "read_csv({path}, header={header}, delim='\t', quote='', all_varchar=true, null_padding=true{options})",
    ".jsonl": "read_json({path}, format='newline_delimited'{options})",
    ".json": "read_json({path}, format='auto'{options})",
}
TEXT_FORMATS = (".csv", ".tsv", ".jsonl", ".json")
GLOB_CHARS = "*?["
KEY_WIDTH = 9  # today's keys: 000000000, 000000001, ... (wider only past a billion rows)


def read_pairs(source: str | Path, url_col: str = "url", caption_col: str = "caption", header: bool = True) -> pd.DataFrame:
    """-> DataFrame with columns key, url, caption, source (string dtype), one row per input pair.

    header=False: csv/tsv files without a header row (CC3M's tsv: caption, url); their columns are then
    named column0, column1, ... (e.g. url_col="column1", caption_col="column0")."""
    path = Path(source)
    if path.is_dir():
        return _with_keys(read_image_folder(path))
    if path.exists():
        files, root = [path], path.parent
    elif any(c in str(source) for c in GLOB_CHARS):
        files, root = _glob(str(source))
    else:
        raise DalleEvalError(f"--source {path}: file not found")
    for f in files:  # check every format before reading any file
        _reader(f)
    frames = []
    for f in files:
        df = _read_list(f, url_col, caption_col, single=len(files) == 1, header=header)
        df["source"] = f.relative_to(root).as_posix()
        frames.append(df)
    pairs = pd.concat(frames, ignore_index=True)
    if len(pairs) == 0:
        raise DalleEvalError(f"--source {source}: no rows in any of the {len(files)} files it matches")
    return _with_keys(pairs)


def source_files(source: str | Path) -> list[Path]:
    """The list files a source reads (a folder: its images and sidecars), in reading order."""
    path = Path(source)
    if path.is_dir():
        images = _folder_images(path)
        sidecars = [p.with_suffix(".txt") for p in images]
        return images + [p for p in sidecars if p.is_file()]
    if path.exists():
        return [path]
    if any(c in str(source) for c in GLOB_CHARS):
        return _glob(str(source))[0]
    raise DalleEvalError(f"--source {path}: file not found")


def source_fingerprint(source: str | Path) -> str:
    """sha256 of what a source reads: a single file's bytes (as `sha256_file`), a glob's files' names and
    bytes, or a folder's file names, sizes and mtimes (hashing every image would take longer than reading)."""
    path = Path(source)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in source_files(path):
            st = f.stat()
            h.update(f"{f.relative_to(path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    elif any(c in str(source) for c in GLOB_CHARS):
        files, root = _glob(str(source))
        for f in files:
            h.update(f"{f.relative_to(root).as_posix()}\t{sha256_file(f)}\n".encode())
    else:
        raise DalleEvalError(f"--source {path}: file not found")
    return h.hexdigest()


# --------------------------------------------------------------------------- list files


def _glob(pattern: str) -> tuple[list[Path], Path]:
    """-> (matching files, sorted; the folder before the first wildcard, for relative source names)."""
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise DalleEvalError(f"--source {pattern}: no files match this pattern")
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
    return files, Path(*parts[:fixed]) if fixed else Path(".")


def _reader(path: Path) -> str:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DalleEvalError(
            f"--source {path}: unknown format '{path.suffix}'; expected one of {', '.join(READERS)}, "
            "a glob of them, a folder of images with .txt captions (or --source shapes)"
        )
    return reader


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_list(path: Path, url_col: str, caption_col: str, single: bool, header: bool = True) -> pd.DataFrame:
    """One list file -> DataFrame(url, caption). `single`: an empty file is an error (in a glob, an
    empty part just adds no rows)."""
    if path.stat().st_size == 0:
        if single:
            raise DalleEvalError(
                f"--source {path}: the file is empty; expected a header and url,caption rows"
            )
        return pd.DataFrame({"url": pd.Series(dtype="string"), "caption": pd.Series(dtype="string")})
    with tempfile.TemporaryDirectory(prefix="dalle-eval-source-") as tmp:
        df = _duckdb_read(path, Path(tmp), url_col, caption_col, header)
    if len(df) == 0 and single:
        raise DalleEvalError(f"--source {path}: no rows after the header")
    return pd.DataFrame({"url": _as_text(df.iloc[:, 0]), "caption": _as_text(df.iloc[:, 1])})


def _duckdb_read(path: Path, tmp: Path, url_col: str, caption_col: str, header: bool = True) -> pd.DataFrame:
    """Read the two columns with DuckDB. Text that is not UTF-8 is re-read from a copy decoded with
    U+FFFD for the bad bytes; quoted newlines in a csv are re-read with DuckDB's serial reader."""
    reader = _reader(path)
    read_from, options = path, ""
    for _ in range(3):  # at most: as is, + parallel=false, + the repaired copy
        table = reader.format(path=_sql_string(str(read_from)), options=options, header=str(header).lower())
        try:
            with duckdb.connect() as con:
                found = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {table}").fetchall()]
                missing = [c for c in (url_col, caption_col) if c not in found]
                if missing:
                    raise DalleEvalError(
                        f"--source {path}: missing column(s) {', '.join(missing)}; found {', '.join(found)} "
                        f"(set data.url_col / data.caption_col to use other names)"
                    )
                return con.execute(f"SELECT {_sql_name(url_col)}, {_sql_name(caption_col)} FROM {table}").df()
        except duckdb.Error as e:
            message = str(e)
            if "parallel=false" in message and not options:
                options = ", parallel=false"
            elif _is_encoding_error(message) and read_from == path and path.suffix.lower() in TEXT_FORMATS:
                read_from = _utf8_copy(path, tmp)
            else:
                first = message.strip().splitlines()[0]
                raise DalleEvalError(
                    f"--source {path}: could not be read as {path.suffix[1:]} ({first})"
                ) from None
    raise DalleEvalError(f"--source {path}: could not be read as {path.suffix[1:]}")  # pragma: no cover


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_encoding_error(message: str) -> bool:
    m = message.lower()
    return "invalid unicode" in m or "utf-8" in m or "utf8" in m


def _utf8_copy(path: Path, tmp: Path) -> Path:
    """Stream `path` into a UTF-8 copy, each undecodable byte sequence replaced by U+FFFD."""
    out = tmp / ("utf8" + path.suffix.lower())
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(path, "rb") as src, open(out, "w", encoding="utf-8", newline="") as dst:
        while chunk := src.read(1 << 20):
            dst.write(decoder.decode(chunk))
        dst.write(decoder.decode(b"", final=True))
    return out


def _as_text(col: pd.Series) -> pd.Series:
    """Any column type -> pandas string dtype (bytes decoded with U+FFFD, like a bad csv)."""
    if col.dtype == object:
        col = col.map(
            lambda v: v.decode("utf-8", errors="replace") if isinstance(v, (bytes, bytearray)) else v
        )
    return col.astype("string").reset_index(drop=True)


def _with_keys(pairs: pd.DataFrame) -> pd.DataFrame:
    width = max(KEY_WIDTH, len(str(len(pairs) - 1)))
    keys = pd.Series([f"{i:0{width}d}" for i in range(len(pairs))], dtype="string")
    return pd.DataFrame(
        {
            "key": keys,
            "url": pairs["url"],
            "caption": pairs["caption"],
            "source": pairs["source"].astype("string"),
        }
    )


# --------------------------------------------------------------------------- image folders


def _folder_images(folder: Path) -> list[Path]:
    """Images under `folder` (recursively, hidden files skipped), sorted by relative path."""
    found = (
        p
        for p in folder.rglob("*")
        if is_image_file(p)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def read_image_folder(folder: Path) -> pd.DataFrame:
    """A folder of images with caption sidecars (`x.jpg` + `x.txt`) -> DataFrame(url, caption, source).
    url is the image's absolute `file://` URI (img2dataset's urllib downloader opens those); an image
    without a sidecar gets a NULL caption, so the pre-filter marks it `caption_empty`."""
    folder = Path(folder)
    images = _folder_images(folder)
    if not images:
        raise DalleEvalError(
            f"--source {folder}: no images ({', '.join(IMAGE_EXTS)}) in this folder; "
            "for a folder of url+caption lists pass a glob such as 'lists/*.parquet'"
        )
    captions = []
    for image in images:
        sidecar = image.with_suffix(".txt")
        # utf-8-sig drops a byte-order mark; bad bytes become U+FFFD for the pre-filter to mark
        captions.append(
            sidecar.read_bytes().decode("utf-8-sig", errors="replace").strip() if sidecar.is_file() else None
        )
    return pd.DataFrame(
        {
            "url": pd.Series([p.resolve().as_uri() for p in images], dtype="string"),
            "caption": pd.Series(captions, dtype="string"),
            "source": folder.resolve().name,
        }
    )
