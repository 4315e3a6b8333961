"""One test per shared I/O helper (issue 14: one copy of each)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dalle_eval.model.dvae import pixels_to_pil
from PIL import Image

from dalle_eval.artifacts import iter_jsonl, read_json, read_jsonl
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import center_square_resize, is_image_file
from dalle_eval.shards import count_samples, iter_raw_samples, sample_key


def test_read_jsonl_names_file_line_and_expectation(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(DalleEvalError) as err:
        read_jsonl(path)
    msg = str(err.value)
    assert f"{path}:3" in msg and "not valid JSON" in msg and "expected one JSON object per line" in msg, msg


def test_read_jsonl_refuses_non_objects_and_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DalleEvalError, match=r"rows.jsonl:3: expected a JSON object per line, got list"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert [w for w, _ in iter_jsonl(path, "--prompts ")] == [f"--prompts {path}:1", f"--prompts {path}:3"]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_pixels_to_pil_rounds_to_nearest_and_round_trips_bytes():
    data = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.stack([data, data[::-1], data.T], axis=-1)
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    (out,) = pixels_to_pil(pixels)
    assert out.mode == "RGB" and (np.asarray(out) == img).all()  # uint8 / 255 comes back as the same bytes
    edge = torch.tensor([0.499 / 255, 0.501 / 255, 254.6 / 255, 1.2, -0.1]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert np.asarray(pixels_to_pil(edge)[0])[0, :, 0].tolist() == [0, 1, 255, 255, 0]


def test_center_square_resize_crops_the_middle_then_bicubic():
    arr = np.zeros((40, 100, 3), dtype=np.uint8)
    arr[:, 30:70] = 255  # the middle 40 columns: the crop keeps exactly them
    out = center_square_resize(Image.fromarray(arr), 20)
    assert out.size == (20, 20) and (np.asarray(out) == 255).all()
    same = Image.fromarray(arr[:, :40])
    assert center_square_resize(same, 40) is same
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    want = big.crop((16, 0, 80, 64)).resize((32, 32), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(center_square_resize(big, 32)), np.asarray(want))


def test_one_list_of_image_types():
    assert is_image_file(Path("a/b.JPG")) and is_image_file(Path("x.tiff")) and not is_image_file(Path("x.txt"))


def test_sample_key_is_webdatasets_split(tmp_path):
    assert sample_key("a/b.c/000001.seg.png") == ("a/b.c/000001", "seg.png")
    assert sample_key("000001.JPG") == ("000001", "jpg")
    assert sample_key("dir/.hidden.txt") is None and sample_key("README") is None
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("d.x/1.png", "d.x/1.txt", "d.x/2.png", ".hidden.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    assert count_samples(path) == len(list(iter_raw_samples(path))) == 2


def test_one_image_stage_writer_for_every_source(tmp_path):
    from dalle_eval.pipelines.image_manifest import write_image_stage

    from dalle_eval.config import Config
    from dalle_eval.shards import write_shard

    (tmp_path / "images").mkdir()
    write_shard(tmp_path / "images" / "shard-000000.tar", [{"__key__": "a", "txt": "x"}, {"__key__": "b", "txt": "y"}])
    table = pd.DataFrame({"key": ["a", "b", "c"], "status": ["ok", "ok", "caption_empty"]})
    m = write_image_stage(tmp_path, table, "shapes", ["shard-000000.tar"], Config(), prefilter={"caption_empty": 1})
    assert read_json(tmp_path / "images" / "manifest.json") == m
    assert (m["n_samples"], m["shard_sizes"], m["status_counts"]) == (2, [2], {"ok": 2, "caption_empty": 1})
    assert set(m["config"]) == {"data", "filter"} and m["prefilter"] == {"caption_empty": 1}
    assert len(pd.read_parquet(tmp_path / "pairs.parquet")) == 3


def test_iter_shards_reads_as_webdataset_decodes(tmp_path):
    import webdataset as wds

    from dalle_eval.images import png_bytes
    from dalle_eval.shards import iter_shards, write_shard

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.uint16).reshape(2, 3))
    path = tmp_path / "shard-000000.tar"
    write_shard(path, [{"__key__": f"k{i}", "png": png_bytes(img), "txt": f"caption {i}", "json": {"i": i},
                        "codes.npy": buf.getvalue()} for i in range(3)])
    ours = list(iter_shards([path]))
    theirs = list(wds.WebDataset([str(path)], shardshuffle=False, empty_check=False).decode("pil"))
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a["__key__"] == b["__key__"] and a["txt"] == b["txt"] and a["json"] == b["json"]
        assert np.array_equal(a["codes.npy"], b["codes.npy"]) and a["codes.npy"].dtype == b["codes.npy"].dtype
        assert a["image"].mode == "RGB" and np.array_equal(np.asarray(a["image"]), np.asarray(b["png"].convert("RGB")))


def test_serve_folder_serves_the_files_under_it_and_nothing_else(tmp_path):
    """pipelines/local_http.serve_folder: GET /name (percent-encoded) = the file's bytes with its type; a missing
    file or a path out of the folder is a 404."""
    import http.client
    import urllib.parse

    from dalle_eval.pipelines.local_http import picture, serve_folder

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    picture(96, 64, seed=1).save(folder / "sub" / "a b ü.png")
    (tmp_path / "secret.txt").write_text("outside")

    def get(base: str, path: str) -> tuple[int, str | None, bytes]:
        c = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        out = r.status, r.getheader("Content-Type"), r.read()
        c.close()
        return out

    with serve_folder(folder) as base:
        assert base.startswith("http://127.0.0.1:")
        status, kind, body = get(base, "/" + urllib.parse.quote("sub/a b ü.png"))
        assert (status, kind, body) == (200, "image/png", (folder / "sub" / "a b ü.png").read_bytes())
        assert get(base, "/sub/missing.png")[0] == 404
        assert get(base, "/../secret.txt")[0] == 404
        assert get(base, "/sub")[0] == 404
        assert base.hits["/sub/a b ü.png"] == 1
    with pytest.raises(NotADirectoryError), serve_folder(tmp_path / "secret.txt"):
        pass
