import http.server
import io
import json
import threading

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.shapes import HELDOUT
from dalle_eval.shards import iter_shards


def test_shapes_build_round_trip(shapes_data):
    """pair table -> shards -> webdataset reader: every ok row comes back with its caption."""
    table = pd.read_parquet(shapes_data / "pairs.parquet")
    manifest = json.loads((shapes_data / "images" / "manifest.json").read_text())
    samples = list(iter_shards(shapes_data / "images" / s for s in manifest["shards"]))
    assert len(table) == len(samples) == manifest["n_samples"] == 160
    by_key = dict(zip(table["key"], table["caption"]))
    for s in samples:
        assert by_key[s["__key__"]] == s["txt"]
        assert s["image"].size == (64, 64)
        assert not any(f"{c} {sh}" in s["txt"] for c, sh in HELDOUT)
    coco = json.loads((shapes_data / "coco" / "captions_val.json").read_text())
    assert len(coco["images"]) == 16 and all((shapes_data / "coco" / "images" / i["file_name"]).exists() for i in coco["images"])


def test_token_shards_and_manifest(token_data, fast_cfg):
    manifest = json.loads((token_data / "tokens" / "manifest.json").read_text())
    assert manifest["n_samples"] == 160 and manifest["grid"] == 8 and manifest["image_vocab"] == fast_cfg.dvae.vocab_size
    assert len(manifest["tokenizer_sha256"]) == 64 and len(manifest["dvae_sha256"]) == 64
    sample = next(iter_shards([token_data / "tokens" / manifest["shards"][0]]))
    assert sample["codes.npy"].shape == (8, 8) and str(sample["codes.npy"].dtype) == "uint16"
    assert sample["text.npy"].dtype.name == "int32" and 0 < len(sample["text.npy"]) <= fast_cfg.transformer.text_len


def test_rebuild_skips_finished_stages(shapes_data, fast_cfg, capsys):
    from pipelines.build import build_dataset

    before = (shapes_data / "images" / "shard-000000.tar").stat().st_mtime_ns
    build_dataset(fast_cfg, "shapes", shapes_data, n=160)
    assert "already built" in capsys.readouterr().out
    assert (shapes_data / "images" / "shard-000000.tar").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("link,text\nhttp://x/a.png,a cat\n", "pairs.csv", "missing column(s) url, caption; found link, text"),
        ("", "pairs.csv", "the file is empty"),
        ("url,caption\n", "pairs.csv", "no rows after the header"),
        ("a\tb\n", "pairs.xlsx", "unknown format '.xlsx'"),
    ],
)
def test_bad_source_gives_one_clear_line(tmp_path, content, name, message):
    src = tmp_path / name
    src.write_text(content)
    result = CliRunner().invoke(main, ["build-dataset", "--source", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: --source") and message in last and "Traceback" not in result.output


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/img/"):
            buf = io.BytesIO()
            Image.new("RGB", (80, 60), (200, 30, 30)).save(buf, format="PNG")
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(buf.getvalue())
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_list_downloads_with_img2dataset(tmp_path, image_server, fast_cfg):
    """A real img2dataset run against a local server: every row ends with one status."""
    from pipelines.build import build_dataset

    rows = [{"url": f"{image_server}/img/{i}.png", "caption": f"red picture {i}"} for i in range(6)]
    rows.append({"url": f"{image_server}/missing.png", "caption": "gone"})
    src = tmp_path / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(src)
    report = build_dataset(fast_cfg, str(src), tmp_path / "out")
    table = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert len(table) == 7 and table["status"].notna().all()
    assert (table["status"] == "ok").sum() == 6 and report["images"]["status_counts"]["ok"] == 6
    assert table.loc[table["caption"] == "gone", "status"].item() == "failed_to_download"
    manifest = json.loads((tmp_path / "out" / "images" / "manifest.json").read_text())
    samples = list(iter_shards(tmp_path / "out" / "images" / s for s in manifest["shards"]))
    assert sorted(s["txt"] for s in samples) == sorted(r["caption"] for r in rows[:6])
    assert all(s["image"].size == (64, 64) for s in samples)


def test_shapes_without_n_is_refused_before_touching_out(tmp_path):
    result = CliRunner().invoke(main, ["build-dataset", "--source", "shapes", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "needs --n" in result.output
    assert not (tmp_path / "out").exists()
