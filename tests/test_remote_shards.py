"""Shards from object stores: training and reading shards from fsspec URLs (a local HTTP server, memory://, file://)
gives what the local folder gives, resumes exactly, and treats a shard that breaks mid-stream per --on-bad-shard."""

import contextlib
import importlib.util
import json
import mimetypes
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from dalle_eval.model.train import train
from dalle_eval.pipelines.local_http import Answer, serve_answers, serve_folder
from dalle_eval.pipelines.shard_images import iter_shard_samples

from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import RemoteLocation, data_location, iter_shards
from tests.conftest import FAST


def cfg_with(*overrides):
    return load_config(["tiny"], FAST + list(overrides))


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


@contextlib.contextmanager
def in_memory(folder: Path):
    """The folder copied into fsspec's in-memory filesystem -> its memory:// URL (removed on exit)."""
    fs, root = fsspec.filesystem("memory"), f"/{uuid.uuid4().hex}"
    fs.put(str(folder), root, recursive=True)
    try:
        yield f"memory://{root}"
    finally:
        fs.rm(root, recursive=True)


@pytest.fixture(scope="module")
def local_dvae_run(tmp_path_factory, shapes_data):
    out = tmp_path_factory.mktemp("local-dvae")
    train("dvae", shapes_data, cfg_with(), out, progress=False)
    return out


def test_dvae_trains_from_http_memory_and_file_urls_as_from_the_folder(tmp_path, shapes_data, local_dvae_run):
    with serve_folder(shapes_data) as base, in_memory(shapes_data / "images") as mem:
        train("dvae", f"{base}/", cfg_with(), tmp_path / "http", progress=False)
        assert base.hits["/images/shard-000000.tar"] >= 1  # read from the server, not from disk
        train("dvae", mem, cfg_with(), tmp_path / "memory", progress=False)
    train("dvae", shapes_data.as_uri(), cfg_with(), tmp_path / "file", progress=False)
    want = losses(local_dvae_run)
    for run in ("http", "memory", "file"):
        assert losses(tmp_path / run) == want, run
    folder = json.loads((tmp_path / "http" / "config.json").read_text())["data"]["folder"]
    assert folder == f"{base}/images"


def test_transformer_trains_from_http_and_memory_urls_as_from_the_folder(tmp_path, token_data):
    """The tokenizer and dvae/ beside the token shards are copied into OUT (over HTTP listed from the folder's
    index page); the shards are streamed."""
    train("transformer", token_data, cfg_with(), tmp_path / "local", progress=False)
    with serve_folder(token_data, index=True) as base, in_memory(token_data / "tokens") as mem:
        train("transformer", base, cfg_with(), tmp_path / "http", progress=False)
        train("transformer", mem, cfg_with(), tmp_path / "memory", progress=False)
    for run in ("http", "memory"):
        assert losses(tmp_path / run) == losses(tmp_path / "local"), run
        for name in ("tokenizer.json", "dvae/model.safetensors"):
            assert (tmp_path / run / name).read_bytes() == (token_data / "tokens" / name).read_bytes()


def test_train_cli_takes_a_url(tmp_path, shapes_data, local_dvae_run):
    """`dalle-eval train --data URL`: the option keeps the URL as given (a Path would fold https:// to https:/)."""
    from click.testing import CliRunner

    from dalle_eval.cli import main

    sets = [a for f in FAST for a in ("--set", f)]
    with serve_folder(shapes_data) as base:
        r = CliRunner().invoke(main, ["train", "--stage", "dvae", "--data", f"{base}/", "--out", str(tmp_path / "cli"),
                                      *sets])
    assert r.exit_code == 0, r.output
    assert losses(tmp_path / "cli") == losses(local_dvae_run)


def test_a_folder_over_http_without_an_index_is_named(tmp_path, token_data):
    with serve_folder(token_data) as base, pytest.raises(DalleEvalError, match="over HTTP a folder needs an index page"):
        train("transformer", base, cfg_with(), tmp_path / "run", progress=False)


def test_exact_resume_from_an_http_url(tmp_path, shapes_data, local_dvae_run):
    with serve_folder(shapes_data) as base:
        train("dvae", base, cfg_with(), tmp_path / "part", progress=False, stop_at=3)
        train("dvae", base, cfg_with(), tmp_path / "part", resume=True, progress=False)
    assert losses(tmp_path / "part") == losses(local_dvae_run)


def test_dataloader_workers_stream_from_http_as_from_the_folder(shapes_data):
    """Forked DataLoader workers open their own connections (fsspec resets its event loop in a child)."""
    from dalle_eval.model.stage1 import decode_image
    from dalle_eval.model.stream import ShardStream, StreamLoader

    m = json.loads((shapes_data / "images" / "manifest.json").read_text())

    def batches(folder, workers):
        stream = ShardStream(folder, m["shards"], m["shard_sizes"], decode_image, 2, window=2, seed=0)
        loader = StreamLoader(stream, 0, 1, batch=8, workers=workers)
        return [loader.next()[0] for _ in range(6)]

    with serve_folder(shapes_data / "images") as base:
        remote = batches(data_location(base), workers=2)
    assert all(a.equal(b) for a, b in zip(remote, batches(shapes_data / "images", workers=0)))


@contextlib.contextmanager
def serve_with_broken_shard(folder: Path, broken: str):
    """serve_folder, except that `broken` is cut off halfway: its full Content-Length, then the server hangs up."""
    def answer(route: str, n: int) -> Answer:
        path = folder / route.lstrip("/")
        if not path.is_file():
            return Answer(404, {}, b"not found")
        body = path.read_bytes()
        kind = {"Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream"}
        if path.name == broken:
            return Answer(200, kind, body[: len(body) // 2], length=len(body))
        return Answer(200, kind, body)

    with serve_answers(answer) as base:
        yield base


def test_a_shard_that_breaks_mid_stream_follows_on_bad_shard(tmp_path, shapes_data):
    images = shapes_data / "images"
    broken = json.loads((images / "manifest.json").read_text())["shards"][0]
    cfg = cfg_with("train.val_shards=0", "train.dvae.steps=3")
    with serve_with_broken_shard(images, broken) as base:
        url = f"{base}/{broken}"
        with pytest.warns(UserWarning, match=f"skipping unreadable shard {url}: OSError"):
            summary = train("dvae", base, cfg, tmp_path / "skip", progress=False)
        assert summary["bad_shards"] == [broken]
        with pytest.raises(DalleEvalError, match=f"{url}: unreadable shard"):
            train("dvae", base, cfg_with("train.val_shards=0", "train.on_bad_shard=fail"), tmp_path / "fail",
                  progress=False)


def test_image_shards_read_from_a_url_as_from_disk(shapes_data):
    """The readers behind encoding and the image filters (iter_shards, iter_shard_samples) take URLs."""
    names = json.loads((shapes_data / "images" / "manifest.json").read_text())["shards"][:2]
    local = list(iter_shards([shapes_data / "images" / n for n in names]))
    with serve_folder(shapes_data / "images") as base:
        remote = list(iter_shards([f"{base}/{n}" for n in names]))
        samples = list(iter_shard_samples([f"{base}/{n}" for n in names]))
    assert [s["__key__"] for s in remote] == [s["__key__"] for s in local] == [s.key for s in samples]
    assert all(np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(remote, local))
    assert samples[0].source == names[0]


def test_locations(tmp_path):
    assert data_location("runs/data") == Path("runs/data")
    assert data_location(f"file://{tmp_path}/a%20b") == tmp_path / "a b"
    url = data_location("memory://bucket/data/")
    assert isinstance(url, RemoteLocation) and str(url / "images") == "memory://bucket/data/images"
    assert (url / "images" / "shard-000000.tar").name == "shard-000000.tar"
    with pytest.raises(TypeError):
        Path(url)  # never mangled into a local path


def test_a_tar_cut_after_a_pax_header_is_truncated(tmp_path):
    """webdataset writes a pax header before each member: a shard cut between the two is broken, not complete."""
    import io
    import tarfile

    from dalle_eval.tar_reader import iter_tar_files

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("k0.txt")
        info.size, info.pax_headers = 2, {"comment": "x"}
        tf.addfile(info, io.BytesIO(b"hi"))
    cut = buf.getvalue()[:1024]  # the pax header block and its data, not the member's own header
    with pytest.raises(tarfile.ReadError, match="after a pax"):
        list(iter_tar_files(io.BufferedReader(io.BytesIO(cut))))


@pytest.mark.parametrize(("url", "package"), [("s3://bucket/data", "s3fs"), ("gs://bucket/data", "gcsfs")])
def test_a_store_whose_package_is_missing_names_it(tmp_path, url, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(DalleEvalError, match=f"{url}: reading .*:// needs the {package} package: pip install {package}"):
        train("dvae", url, cfg_with(), tmp_path / "run", progress=False)


def test_a_url_without_a_manifest_is_named(tmp_path):
    with serve_folder(tmp_path) as base, pytest.raises(DalleEvalError, match=f"--data {base}: no images/manifest"):
        train("dvae", base, cfg_with(), tmp_path / "run", progress=False)
