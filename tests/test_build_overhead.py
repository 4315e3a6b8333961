"""Issue 18 §4, the build's own stages around img2dataset made cheaper: the optimised paths give the outputs of
the reference paths. Shards are written by tar_reader.write_samples instead of webdataset's TarWriter (the same
bytes for the same clock), and each downloaded shard is EXIF-turned and pHashed by a thread while img2dataset
downloads the next ones (the same tables and shards as hashing after the download)."""

import dataclasses
import io
import json
import os
import random
import tarfile

import pandas as pd
import pytest
import webdataset
import webdataset.writer
from dalle_eval.pipelines import download, reshard
from dalle_eval.pipelines.dedup import phash

from dalle_eval import tar_reader
from dalle_eval.shards import iter_raw_samples, iter_shards, write_shard
from dalle_eval.tar_reader import member_header, write_samples


class FakeTime:
    """A clock for a module's `time`: each time() call a little later (float times, as time.time gives)."""

    def __init__(self, start: float = 1764400000.123456):
        self.t = start

    def time(self) -> float:
        self.t += 0.000317
        return self.t


def wds_bytes(samples, start):
    buf = io.BytesIO()
    real = webdataset.writer.time
    webdataset.writer.time = FakeTime(start)
    try:
        with webdataset.TarWriter(buf) as sink:
            for s in samples:
                sink.write(s)
    finally:
        webdataset.writer.time = real
    return buf.getvalue()


def our_bytes(samples, start):
    buf = io.BytesIO()
    write_samples(buf, samples, FakeTime(start).time)
    return buf.getvalue()


def odd_samples():
    rng = random.Random(0)
    names = ["a", "x" * 95, "k" * 96, "y" * 120, "dir/sub/" + "z" * 110, "café", "000123", "with space"]
    sizes = [0, 1, 511, 512, 513, 1024, 2000]
    return [{"__key__": k, "jpg": rng.randbytes(rng.choice(sizes)), "txt": b"a caption", "json": b"{}",
             "cls": rng.randbytes(rng.choice(sizes))} for k in names]


@pytest.mark.parametrize("start", [1764400000.123456, 1700000000.0, 1764400000.5, 123.456, 1.5e9 + 0.999999])
def test_write_samples_gives_webdataset_tarwriters_bytes(start):
    """Plain names take the fast header path; long and non-ASCII names (pax path records) go through tarfile."""
    samples = odd_samples()
    for part in (samples, samples[:1], samples[1:2], []):
        assert our_bytes(part, start) == wds_bytes(part, start)


def test_member_header_is_tarfiles_pax_header():
    for name, size, mtime in [("a.jpg", 0, 1.5), ("b" * 100, 8 ** 11 - 1, 1764400000.25), ("c.txt", 8 ** 11, 2.0),
                              ("d.png", 10, 1764400000), ("é.png", 3, 7.75)]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, mtime, 0o444, "bigdata", "bigdata"
        assert member_header(name, size, mtime) == info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def test_write_samples_refuses_what_webdataset_would_encode():
    for bad in ({"__key__": "a", "txt": "a str"}, {"__key__": "a", "x.gz": b"1"}, {"__key__": "a", "_meta": b"1"}):
        with pytest.raises(ValueError, match="use webdataset"):
            write_samples(io.BytesIO(), [bad])


def reference_reshard(table, shards, images, shard_size):
    """The re-shard stage before issue 18 §4: webdataset's TarWriter through shards.write_shard."""
    keep = dict(zip(table.loc[table["status"] == "ok", "i2d_key"], table.loc[table["status"] == "ok", "key"]))
    order = sorted(keep.values())
    slot = {k: i // shard_size for i, k in enumerate(order)}
    n_out = (len(order) + shard_size - 1) // shard_size
    buckets = {i: [] for i in range(n_out)}
    for shard in shards:
        for stem, files in iter_raw_samples(shard):
            if stem in keep:
                buckets[slot[keep[stem]]].append((keep[stem], files))
    for i in range(n_out):
        write_shard(images / f"shard-{i:06d}.tar", ({"__key__": k, **f} for k, f in sorted(buckets[i])))
    return [f"shard-{i:06d}.tar" for i in range(n_out)]


def test_reshard_writes_the_reference_shards_byte_for_byte(tmp_path, monkeypatch):
    rng = random.Random(1)
    raw, rows = [], []
    for s in range(3):  # img2dataset-like shards: jpg + json + txt per sample
        samples = [{"__key__": f"{s:05d}{i:04d}", "jpg": rng.randbytes(rng.randint(100, 3000)),
                    "json": json.dumps({"i": i}).encode(), "txt": f"caption {s} {i}".encode()} for i in range(7)]
        write_shard(tmp_path / f"{s:05d}.tar", samples)
        raw.append(tmp_path / f"{s:05d}.tar")
        rows += [{"i2d_key": x["__key__"], "key": f"pair-{rng.randint(0, 10**6):07d}",
                  "status": rng.choice(["ok", "ok", "ok", "near_duplicate"])} for x in samples]
    rows.append({"i2d_key": None, "key": "pair-x", "status": "http_404"})
    table = pd.DataFrame(rows)
    monkeypatch.setattr(webdataset.writer, "time", FakeTime())
    want = reference_reshard(table, raw, tmp_path / "ref", 4)
    monkeypatch.setattr(tar_reader, "time", FakeTime())
    (tmp_path / "ours").mkdir()
    assert reshard.reshard(table, raw, tmp_path / "ours", 4) == want
    for name in want:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == want  # no temp file left behind


def test_a_sample_webdataset_would_encode_goes_through_it(tmp_path, monkeypatch):
    samples = [{"__key__": "a", "jpg": b"1"}, {"__key__": "b", "txt": "a str, encoded by webdataset"}]
    monkeypatch.setattr(webdataset.writer, "time", FakeTime())
    write_shard(tmp_path / "ref.tar", samples)
    monkeypatch.setattr(webdataset.writer, "time", FakeTime())
    assert reshard.write_raw_shard(tmp_path / "ours.tar", iter(samples)) == 2
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.tar", "ref.tar"]


@pytest.mark.slow  # img2dataset runs against a local server: ~20 s
@pytest.mark.parametrize("retries", [0, 1, 2])
def test_download_images_table_equals_one_read_of_the_stats_after_the_download(tmp_path, fast_cfg, retries):
    """The stats the retry check read (no round after it) are used for the table, not read again: the same
    table as folding a fresh read of every finished shard, with and without a retry round before."""
    from dalle_eval.pipelines.local_http import serve

    cfg = dataclasses.replace(fast_cfg.data, shard_size=4, download_threads=2, download_retries=retries)
    with serve(n_pictures=6) as base:
        urls = [f"{base}/pic/{i}.png" for i in range(6)] + [f"{base}/flaky/503.jpg", f"{base}/missing.jpg"]
        pairs = pd.DataFrame({"key": [f"k{i}" for i in range(len(urls))], "url": urls,
                              "caption": [f"caption {i}" for i in range(len(urls))]})
        table, shards = download.download_images(pairs, tmp_path, cfg)
    finished = download._finished_shards(tmp_path)
    assert shards == [tmp_path / f"{s}.tar" for s in finished]
    pd.testing.assert_frame_equal(table, download._fold_status(pairs, download._read_stats(tmp_path, finished)))
    assert table.set_index("key")["status"]["k6"] == ("ok" if retries else "http_503")


@pytest.mark.slow  # two img2dataset runs against a local server: ~15 s
def test_build_with_fast_shards_equals_the_reference_build(tmp_path, fast_cfg, monkeypatch):
    """The same small web build twice: as it runs now (shards by write_samples) and by the reference path
    (webdataset's TarWriter). Pair table, pHash tables, kept shards (byte for byte, same clock), manifest and
    report are the same; the hashes are dedup.phash of the kept images, and 8 EXIF-turned photos of one picture
    dedup to one."""
    from dalle_eval.pipelines.build import build_dataset
    from dalle_eval.pipelines.local_http import serve

    cfg = dataclasses.replace(fast_cfg, data=dataclasses.replace(fast_cfg.data, shard_size=5, download_threads=2))
    clock = FakeTime()  # of the kept shards only (the EXIF pass writes through webdataset too)

    def reference_write(path, samples):
        real = webdataset.writer.time
        webdataset.writer.time = clock
        try:
            return write_shard(path, samples)
        finally:
            webdataset.writer.time = real

    with serve(n_pictures=30, delay=0.05) as base:
        urls = [f"{base}/pic/{i}.png" for i in range(30)] + [f"{base}/exif/{t}.jpg" for t in range(1, 9)]
        src = tmp_path / "list.parquet"
        pd.DataFrame({"url": urls, "caption": [f"a picture for case number {i}" for i in range(len(urls))]}
                     ).to_parquet(src)
        with monkeypatch.context() as m:
            m.setattr(tar_reader, "time", FakeTime())
            build_dataset(cfg, str(src), tmp_path / "ours")
        with monkeypatch.context() as m:
            m.setattr(reshard, "write_raw_shard", reference_write)
            build_dataset(cfg, str(src), tmp_path / "ref")
    ours, ref = tmp_path / "ours", tmp_path / "ref"

    table = pd.read_parquet(ours / "pairs.parquet")
    pd.testing.assert_frame_equal(table, pd.read_parquet(ref / "pairs.parquet"))
    assert (table["status"] == "near_duplicate").sum() == 7 and (table["status"] == "ok").sum() == 31
    caches = sorted((ref / "download" / "img2dataset").glob("*.phash.parquet"))
    assert [c.name for c in caches] == [f"{i:05d}.phash.parquet" for i in range(8)]
    for cache in caches:  # img2dataset's threads write a shard's samples in the order they arrive
        pd.testing.assert_frame_equal(
            pd.read_parquet(ours / "download" / "img2dataset" / cache.name).sort_values("key", ignore_index=True),
            pd.read_parquet(cache).sort_values("key", ignore_index=True))
    manifest = json.loads((ours / "images" / "manifest.json").read_text())
    assert manifest == json.loads((ref / "images" / "manifest.json").read_text())
    for name in manifest["shards"]:
        assert (ours / "images" / name).read_bytes() == (ref / "images" / name).read_bytes()
    reports = [json.loads((d / "build_report.json").read_text()) for d in (ours, ref)]
    for r in reports:
        del r["out"], r["seconds"], r["stats"]["files"]
    assert reports[0] == reports[1]

    kept = list(iter_shards(ours / "images" / s for s in manifest["shards"]))
    want = dict(zip([s["__key__"] for s in kept], phash([s["image"] for s in kept]).view("int64")))
    got = table.set_index("key").loc[list(want), "phash"]
    assert got.astype("int64").to_dict() == want


def test_identify_language_gives_py3langids_rank_numbers():
    """The pre-filter reads py3langid's scores without ranking all its labels per caption: same best label,
    probability and total of the allowed languages as from rank(), to the bit."""
    from dalle_eval.pipelines.prefilter import identify_language, language_identifier

    def by_rank(text, languages):
        ranked = language_identifier().rank(text)
        return ranked[0][0], float(ranked[0][1]), float(sum(p for lang, p in ranked if lang in languages))

    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz éüößçñ ДЖЯ日本語 αβγ 0123456789,.!?"
    texts = ["a dog", "sunset", "Ein Hund", "", "bmw x5", "Собака на улице", "一只狗", "كلب", "A DOG RUNS",
             "srpski jezik je lep", "Српски језик", "Tom & Jerry!"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(400)]
    for languages in [("en",), ("en", "de"), ("de", "fr", "es", "en"), ("sr", "hr", "bs"), ()]:
        for text in texts:
            assert identify_language(text, languages) == by_rank(text, languages), (text, languages)


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    img.paste(tuple(rng.randrange(256) for _ in range(3)), (rng.randrange(32), rng.randrange(32), 48, 48))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def test_hashing_in_worker_processes_equals_hashing_here(tmp_path, monkeypatch):
    """A build with more than PROCESSES_FROM_BYTES of shards to hash spawns a process per core: the same pHash
    table as one shard after the other here, an unreadable sample reported the same, a cached shard kept."""
    from dalle_eval.pipelines import postfilter

    for where in ("here", "processes"):
        (tmp_path / where).mkdir()
        for s in range(3):
            samples = [{"__key__": f"{s:05d}{i:04d}", "jpg": _jpeg(10 * s + i), "txt": b"x"} for i in range(5)]
            samples[s]["jpg"] = b"not a jpeg"
            write_shard(tmp_path / where / f"{s:05d}.tar", samples)
    shards = {w: sorted((tmp_path / w).glob("*.tar")) for w in ("here", "processes")}
    here = postfilter._hashes(shards["here"])
    cached = postfilter.cache_shard_hashes(shards["processes"][0])
    before = cached.stat().st_mtime_ns
    monkeypatch.setattr(postfilter, "PROCESSES_FROM_BYTES", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    spawned = []
    real_pool = postfilter.ProcessPoolExecutor

    def pool(*args, **kw):
        spawned.append(args[0])
        return real_pool(*args, **kw)

    monkeypatch.setattr(postfilter, "ProcessPoolExecutor", pool)
    there = postfilter._hashes(shards["processes"])
    assert spawned == [2]  # the two shards without a cache
    assert cached.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(here, there)
    assert set(there.loc[there["status"] != "ok", "error"]) == {"UnidentifiedImageError: cannot identify image file"}
    assert (there["status"] == "unreadable_image").sum() == 3 and there["phash"].notna().sum() == 12
