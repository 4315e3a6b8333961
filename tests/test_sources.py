"""Reading url+caption lists: every format, globs, image folders with sidecars, bad bytes (real DuckDB)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from dalle_eval.pipelines.prefilter import prefilter
from dalle_eval.pipelines.sources import read_pairs, source_files, source_fingerprint
from PIL import Image

from dalle_eval.artifacts import sha256_file
from dalle_eval.config import FilterConfig
from dalle_eval.errors import DalleEvalError

ROWS = [
    ("http://x/0.jpg", "a red car"),
    ("http://x/1.jpg", "two dogs, one ball"),
    ("http://x/2.jpg", 'a "quoted" word'),
]


def _write(path: Path, rows, url_col="url", caption_col="caption") -> Path:
    df = pd.DataFrame(rows, columns=[url_col, caption_col])
    suffix = path.suffix
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        path.write_text("\n".join([f"{url_col}\t{caption_col}"] + [f"{u}\t{c}" for u, c in rows]) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({url_col: u, caption_col: c}) + "\n" for u, c in rows))
    elif suffix == ".json":
        path.write_text(json.dumps([{url_col: u, caption_col: c} for u, c in rows]))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv", ".jsonl", ".json"])
def test_every_format_reads_the_same_table(tmp_path, suffix):
    src = _write(tmp_path / f"pairs{suffix}", ROWS, "link", "text")
    pairs = read_pairs(src, url_col="link", caption_col="text")
    assert list(pairs.columns) == ["key", "url", "caption", "source"]
    assert pairs["key"].tolist() == ["000000000", "000000001", "000000002"]
    assert list(zip(pairs["url"], pairs["caption"])) == ROWS
    assert (pairs["source"] == f"pairs{suffix}").all()
    assert read_pairs(str(src), "link", "text").equals(pairs)  # same input, same keys


def test_glob_over_three_files_of_mixed_rows(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    _write(lists / "part-0.parquet", [("http://x/a.jpg", "a red car"), ("http://x/b.jpg", "")])
    (lists / "part-1.csv").write_bytes(
        b"url,caption\nhttp://x/c.jpg,caf\xff broken\nhttp://x/a.jpg,a red car again\n"
    )
    _write(
        lists / "part-2.jsonl",
        [("http://x/d.jpg", "Ein roter Wagen parkt vor dem Haus"), ("http://x/e.jpg", "A red car!")],
    )
    (lists / "part-3.csv").write_text("url,caption\n")  # header only: adds no rows, not an error in a glob
    (lists / "notes.txt").write_text("not matched by the pattern")
    pairs = read_pairs(str(lists / "part-*.*"))
    assert pairs["key"].is_unique and pairs["key"].tolist() == [f"{i:09d}" for i in range(6)]
    assert pairs["source"].tolist() == ["part-0.parquet"] * 2 + ["part-1.csv"] * 2 + ["part-2.jsonl"] * 2
    table = prefilter(pairs, FilterConfig())
    assert table["status"].tolist() == [
        "ok",
        "caption_empty",
        "caption_invalid",
        "duplicate_url",
        "not_english",
        "duplicate_caption",
    ]
    assert source_files(str(lists / "part-*.*")) == sorted(lists.glob("part-*"))


def test_glob_errors_name_the_pattern_or_the_file(tmp_path):
    with pytest.raises(DalleEvalError, match=r"no files match this pattern"):
        read_pairs(str(tmp_path / "lists" / "part-*.parquet"))
    (tmp_path / "a.csv").write_text("url,caption\nhttp://x/a.jpg,a red car\n")
    (tmp_path / "b.xlsx").write_text("x")
    with pytest.raises(DalleEvalError, match=r"b\.xlsx: unknown format '\.xlsx'"):
        read_pairs(str(tmp_path / "*"))
    (tmp_path / "b.xlsx").unlink()
    (tmp_path / "c.csv").write_text("link,text\nhttp://x/a.jpg,a cat\n")
    with pytest.raises(DalleEvalError, match=r"c\.csv: missing column\(s\) url, caption; found link, text"):
        read_pairs(str(tmp_path / "*.csv"))
    with pytest.raises(DalleEvalError, match="file not found"):
        read_pairs(tmp_path / "nope.csv")


def test_invalid_utf8_survives_to_the_prefilter(tmp_path):
    """Bad bytes become U+FFFD (no crash, no dropped row); the pre-filter marks exactly that row."""
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        src = tmp_path / f"bad{suffix}"
        lines = [b"url", b"http://x/0.jpg", b"http://x/1.jpg", b"http://x/2.jpg"]
        captions = [
            b"caption",
            b"a red car",
            b"bad \xff\xfe bytes",
            "a small caf\u00e9 on a busy street".encode(),
        ]
        src.write_bytes(b"".join(u + sep.encode() + c + b"\n" for u, c in zip(lines, captions)))
        pairs = read_pairs(src)
        assert len(pairs) == 3 and pairs.loc[1, "caption"] == "bad \ufffd\ufffd bytes"
        assert (
            pairs.loc[2, "caption"] == "a small caf\u00e9 on a busy street"
        )  # valid UTF-8 around it is intact
        assert prefilter(pairs, FilterConfig())["status"].tolist() == ["ok", "caption_invalid", "ok"]


def test_csv_quoted_newlines_and_short_rows_keep_every_row(tmp_path):
    src = tmp_path / "pairs.csv"
    src.write_text(
        'url,caption\nhttp://x/0.jpg,"two\nlines, and a comma"\nhttp://x/1.jpg\nhttp://x/2.jpg,"say ""hi"""\n'
    )
    pairs = read_pairs(src)
    assert pairs["caption"].tolist()[0] == "two\nlines, and a comma" and pd.isna(pairs["caption"][1])
    assert pairs["caption"][2] == 'say "hi"' and len(pairs) == 3


def test_image_folder_with_sidecars(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub dir").mkdir(parents=True)
    for name, fmt in (("a.jpg", "JPEG"), ("sub dir/b é.png", "PNG"), ("c.webp", "WEBP"), ("d.JPEG", "JPEG")):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / name, format=fmt)
    (folder / "a.txt").write_text("a red square\n")
    (folder / "sub dir" / "b é.txt").write_bytes(b"\xef\xbb\xbfa blue \xff square")  # BOM + a bad byte
    (folder / "d.txt").write_text("a photo of a dog")
    (folder / ".hidden.jpg").write_bytes(b"")  # hidden: skipped
    (folder / "notes.md").write_text("not an image")
    pairs = read_pairs(folder)
    assert pairs["key"].tolist() == [f"{i:09d}" for i in range(4)]
    paths = [folder / "a.jpg", folder / "c.webp", folder / "d.JPEG", folder / "sub dir" / "b é.png"]
    assert pairs["url"].tolist() == [p.resolve().as_uri() for p in paths]
    assert pairs["url"].str.startswith("file:///").all() and "%20" in pairs["url"][3]
    assert pairs["caption"][0] == "a red square" and pd.isna(pairs["caption"][1])  # c.webp has no sidecar
    assert pairs["caption"][3] == "a blue \ufffd square" and (pairs["source"] == "photos").all()
    assert prefilter(pairs, FilterConfig())["status"].tolist() == [
        "ok",
        "caption_empty",
        "ok",
        "caption_invalid",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DalleEvalError, match="no images"):
        read_pairs(tmp_path / "empty")


def test_source_fingerprint(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("url,caption\nhttp://x/a.jpg,a red car\n")
    assert source_fingerprint(a) == sha256_file(a)  # what build.py records today for one file
    (tmp_path / "b.csv").write_text("url,caption\nhttp://x/b.jpg,a blue car\n")
    before = source_fingerprint(str(tmp_path / "*.csv"))
    (tmp_path / "b.csv").write_text("url,caption\nhttp://x/b.jpg,a green car\n")
    assert source_fingerprint(str(tmp_path / "*.csv")) != before


def test_headerless_tsv_like_cc3m(tmp_path):
    """CC3M's Train_GCC-training.tsv: caption<TAB>url, no header row."""
    src = tmp_path / "Train_GCC-training.tsv"
    src.write_text("a dog on a beach\thttp://x/1.jpg\nthe city at night, seen from above\thttp://x/2.jpg\n")
    pairs = read_pairs(src, url_col="column1", caption_col="column0", header=False)
    assert pairs["url"].tolist() == ["http://x/1.jpg", "http://x/2.jpg"]
    assert pairs["caption"].tolist() == ["a dog on a beach", "the city at night, seen from above"]
