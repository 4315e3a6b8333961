"""Post-filter: pHash, near-duplicate clustering, evaluation-set overlap, CLIP-score filter (CPU, seconds)."""

import io
import warnings

import numpy as np
import pytest
import scipy.fft
from dalle_eval.pipelines.dedup import (
    DEFAULT_THRESHOLD,
    eval_overlap,
    hamming,
    near_duplicates,
    near_pairs,
    phash,
)
from dalle_eval.pipelines.shard_images import hash_folder, hash_shards
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from dalle_eval.images import png_bytes
from dalle_eval.shards import write_shard


def render(seed: int, size: int = 256) -> Image.Image:
    """An 'unrelated' test image: gradient, smooth noise, flat or blurred-noise ground, shapes, text."""
    r = np.random.default_rng(seed)
    kind = seed % 4
    if kind == 0:
        x = np.linspace(0, 1, size)
        a, b, ang = r.uniform(0, 255, 3), r.uniform(0, 255, 3), r.uniform(0, np.pi)
        t = (np.cos(ang) * x[None, :] + np.sin(ang) * x[:, None]) / 1.5
        img = Image.fromarray((a + (b - a) * t[..., None]).clip(0, 255).astype(np.uint8))
    elif kind == 1:
        img = Image.fromarray(r.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
            (size, size), Image.BICUBIC
        )
    elif kind == 2:
        img = Image.new("RGB", (size, size), tuple(int(v) for v in r.integers(0, 256, 3)))
    else:
        noise = r.integers(0, 256, (size, size, 3), dtype=np.uint8)
        img = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(6))
    draw = ImageDraw.Draw(img)
    for _ in range(r.integers(2, 6)):
        (x0, y0), (w, h) = r.integers(0, size - 56, 2), r.integers(20, size // 2, 2)
        fill = tuple(int(v) for v in r.integers(0, 256, 3))
        (draw.rectangle if r.integers(2) else draw.ellipse)((x0, y0, x0 + w, y0 + h), fill=fill)
    draw.text(
        (int(r.integers(0, max(1, size - 100))), int(r.integers(0, size - 20))),
        f"image {seed}",
        fill=(0, 0, 0),
    )
    return img


def jpeg(img: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


EDITS = {
    "jpeg q70": jpeg,
    "resize 256-200-256": lambda im: im.resize((200, 200), Image.BILINEAR).resize((256, 256), Image.BILINEAR),
    "brighten 10%": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "all three": lambda im: jpeg(
        ImageEnhance.Brightness(im.resize((200, 200)).resize((256, 256))).enhance(1.1)
    ),
}


def test_phash_is_the_dct_hash_bit_for_bit():
    # reference: one image at a time, separable 1-D DCT-II (scipy.fft.dct twice), bits listed MSB first
    images = [render(s) for s in range(6)] + [Image.new("RGB", (64, 48), (9, 9, 9))]
    for img, got in zip(images, phash(images)):
        g = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
        c = scipy.fft.dct(scipy.fft.dct(g, axis=0), axis=1)[:8, :8].ravel()
        bits = c > np.median(c[1:])
        assert int(got) == int("".join("1" if b else "0" for b in bits), 2)
    assert phash([]).shape == (0,) and phash(images).dtype == np.uint64


def test_default_threshold_separates_near_duplicates_from_unrelated_images():
    images = [render(s) for s in range(120)]
    h = phash(images)
    near = {name: hamming(h, phash([edit(im) for im in images])) for name, edit in EDITS.items()}
    i, j = np.triu_indices(len(h), 1)
    unrelated = hamming(h[i], h[j])
    for name, d in near.items():
        print(f"{name:>20}: max {d.max()}, histogram {np.bincount(d).tolist()}")
    print(
        f"{'unrelated pairs':>20}: min {unrelated.min()}, 1% {np.percentile(unrelated, 1):.0f}, "
        f"median {np.median(unrelated):.0f} (n={len(unrelated)})"
    )
    # measured (400 images in the report; 120 here): edits move a hash by 0-4 bits, rarely 8 (even
    # counts: 32 of the 64 bits are set); unrelated images are 8+ apart, 22+ for 99% of pairs.
    edits = np.concatenate(list(near.values()))
    assert np.mean(edits <= DEFAULT_THRESHOLD) >= 0.99 and edits.max() <= 8
    assert unrelated.min() > DEFAULT_THRESHOLD and np.percentile(unrelated, 1) >= 3 * DEFAULT_THRESHOLD
    assert np.median(unrelated) >= 28


def test_chains_make_one_cluster_and_the_first_key_is_kept():
    rng = np.random.default_rng(1)
    a = int(rng.integers(0, 2**63))
    b = a ^ 0b111  # 3 bits from a
    c = b ^ (0b111 << 20)  # 3 bits from b, 6 from a
    far = a ^ ((1 << 40) - 1)  # 40 bits away
    keys = ["k3", "k1", "k2", "k0", "k4"]
    hashes = np.array([c, a, b, far, a], dtype=np.uint64)  # k4 is an exact copy of k1
    out = near_duplicates(keys, hashes, threshold=4).set_index("key")
    assert out.loc["k0"].status == "ok" and out.loc["k0"].cluster_size == 1 and out.loc["k0"].dup_of is None
    chain = out.loc[["k1", "k2", "k3", "k4"]]
    assert chain.cluster.nunique() == 1 and (chain.cluster_size == 4).all()
    assert chain.status.tolist() == ["ok", "near_duplicate", "near_duplicate", "near_duplicate"]
    assert chain.dup_of.tolist() == [None, "k1", "k1", "k1"]
    assert chain.dup_distance.tolist() == [0, 3, 6, 0]  # k3 joins through k2 although 6 > 4 from k1
    assert out.loc["k0"].cluster == 0 and out.loc["k1"].cluster == 1  # numbered by kept key
    assert list(near_duplicates(keys, hashes, threshold=2).status) == ["ok"] * 4 + ["near_duplicate"]
    assert len(near_duplicates([], np.zeros(0, np.int64))) == 0
    with pytest.warns(UserWarning, match="one cluster holds 1000 of 1000 images"):
        assert (
            near_duplicates([f"{i:04d}" for i in range(1000)], np.zeros(1000, np.int64)).cluster == 0
        ).all()


def planted(n: int, seed: int) -> np.ndarray:
    """n random hashes, a third of them copies of others with 0-10 bits flipped (chains included)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    for k in rng.choice(n, n // 3, replace=False):
        flips = rng.choice(64, rng.integers(0, 11), replace=False)
        h[k] = h[rng.integers(n)] ^ np.uint64(sum(1 << int(f) for f in flips))
    return h


def brute_force_pairs(h: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    i, j = np.triu_indices(len(h), 1)
    d = hamming(h[i], h[j])
    return set(zip(i[d <= threshold].tolist(), j[d <= threshold].tolist()))


@pytest.mark.parametrize("all_pairs_below", [0, 10_000], ids=["band join", "all pairs"])
@pytest.mark.parametrize("threshold,radius", [(0, 0), (4, 0), (8, 0), (8, 1), (10, 2), (6, 1)])
def test_band_join_finds_exactly_the_brute_force_pairs(threshold, radius, all_pairs_below):
    h = planted(2000, seed=threshold)
    pairs = near_pairs(h, threshold, radius=radius, all_pairs_below=all_pairs_below)
    want = brute_force_pairs(h, threshold)
    assert len(want) > 50
    assert set(zip(pairs.i.tolist(), pairs.j.tolist())) == want and len(pairs) == len(want)
    assert (pairs.distance.to_numpy() == hamming(h[pairs.i], h[pairs.j])).all()


def test_eval_overlap_reports_the_closest_eval_image():
    rng = np.random.default_rng(3)
    ev = rng.integers(0, 2**64, 300, dtype=np.uint64)
    train = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    train[:100] = ev[:100] ^ np.uint64(0b1011)  # 3 bits from an eval image
    train[100] = ev[200]  # exact copy
    train[101] = ev[201] ^ np.uint64((1 << 12) - 1)  # 12 bits: not an overlap at the default
    out = eval_overlap([f"t{i}" for i in range(1000)], train, ev, eval_keys=[f"e{i}" for i in range(300)])
    d = hamming(train[:, None], ev[None, :])  # (1000, 300) brute force
    within = d.min(1) <= DEFAULT_THRESHOLD
    assert (out.status == np.where(within, "eval_overlap", "ok")).all()
    assert (out.eval_match_distance.to_numpy()[within] == d.min(1)[within]).all()
    assert out.eval_match[within].tolist() == [f"e{k}" for k in d.argmin(1)[within]]
    assert out.loc[100, "eval_match"] == "e200" and out.loc[100, "eval_match_distance"] == 0
    assert out.loc[101, "status"] == "ok" and out.loc[101, "eval_match"] is None
    assert within.sum() == 101
    assert (eval_overlap(["a"], train[:1], np.zeros(0, np.uint64)).status == "ok").all()


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_hash_shards_and_folder_report_unreadable_images_by_name(tmp_path):
    imgs = [render(s) for s in range(5)]
    samples = [
        {"__key__": "000000000", "jpg": _encode(imgs[0], "JPEG"), "txt": "a", "json": {}},
        {"__key__": "000000001", "png": png_bytes(imgs[1]), "txt": "b"},
        {"__key__": "000000002", "webp": _encode(imgs[2], "WEBP"), "txt": "c"},
        {"__key__": "000000003", "jpg": _encode(imgs[3], "JPEG")[:300], "txt": "truncated"},
        {"__key__": "000000004", "png": b"<html>not an image</html>", "txt": "html"},
        {"__key__": "000000005", "txt": "no image at all"},
        {"__key__": "000000006", "png": png_bytes(imgs[4]), "txt": "e"},
    ]
    write_shard(tmp_path / "shard-000000.tar", samples[:4])
    write_shard(tmp_path / "shard-000001.tar", samples[4:])
    with pytest.warns(UserWarning, match=r"3 unreadable image\(s\).*shard-000000.tar:000000003"):
        out = hash_shards(
            [tmp_path / "shard-000000.tar", tmp_path / "shard-000001.tar"], batch_size=2, progress=False
        )
    assert out.key.tolist() == [f"{i:09d}" for i in range(7)]
    assert out.status.tolist() == ["ok"] * 3 + ["unreadable_image"] * 3 + ["ok"]
    assert out.error[5] == "no image file in the sample" and out.phash.isna().sum() == 3
    decoded = [Image.open(io.BytesIO(s.get("jpg") or s.get("png") or s.get("webp"))) for s in samples[:3]]
    expected = phash([*decoded, imgs[4]]).view(np.int64)
    assert out.phash[out.status == "ok"].astype(np.int64).tolist() == expected.tolist()
    assert out.attrs["bad_shards"] == []

    # a shard cut mid-file keeps the samples before the cut and is named in a warning
    raw = (tmp_path / "shard-000000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(raw[: len(raw) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = hash_shards([tmp_path / "cut.tar"], progress=False)
    assert any("cut.tar: unreadable shard" in str(w.message) for w in caught)
    assert cut.attrs["bad_shards"] == [str(tmp_path / "cut.tar")] and 0 < len(cut) < 4

    folder = tmp_path / "eval"
    (folder / "sub").mkdir(parents=True)
    imgs[0].save(folder / "b.png")
    jpeg(imgs[1]).save(folder / "sub" / "a.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="broken.jpg"):
        ev = hash_folder(folder, progress=False)
    assert ev.key.tolist() == ["b.png", "broken.jpg", "sub/a.jpg"]
    assert ev.status.tolist() == ["ok", "unreadable_image", "ok"]
    # the shard's JPEG of image 0 and the folder's PNG of it are near-duplicates; image 1 re-encoded too
    found = eval_overlap(
        out.key[:2],
        out.phash[:2].astype(np.int64),
        ev.phash.dropna().astype(np.int64),
        eval_keys=["b.png", "sub/a.jpg"],
    )
    assert found.eval_match.tolist() == ["b.png", "sub/a.jpg"]


def test_clip_filter_scores_and_thresholds(tmp_path, tiny_clip):
    import open_clip
    from dalle_eval.model.clip import ClipScorer
    from dalle_eval.pipelines.clip_filter import clip_cosine, clip_filter, clip_filter_shards

    scorer = ClipScorer(*tiny_clip)
    images = [render(s, 64) for s in range(12)]
    captions = [f"a picture number {s}" for s in range(12)]
    keys = [f"{s:09d}" for s in range(12)]
    scores = clip_cosine(scorer, images, captions, batch_size=5)
    assert np.allclose(scores, scorer.scores(images, captions).numpy(), atol=1e-5)
    assert len(np.unique(scores)) == 12 and (np.abs(scores) <= 1 + 1e-6).all()

    # random weights score noise, so check the mechanics: a threshold at the median keeps half
    out = clip_filter(keys, images, captions, scorer, threshold=float(np.median(scores)), batch_size=4)
    assert (out.status == "ok").sum() == 6 and (out.status == "clip_score_low").sum() == 6
    assert (out.clip_score[out.status == "ok"] >= out.clip_score[out.status != "ok"].max()).all()
    assert (
        clip_filter(keys, images, captions, scorer).status == np.where(scores >= 0.28, "ok", "clip_score_low")
    ).all()

    # an open_clip (model, preprocess, tokenizer) triple works the same
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=tiny_clip[1])
    triple = (model, preprocess, open_clip.get_tokenizer("tiny-clip"))
    assert np.allclose(clip_cosine(triple, images, captions), scores, atol=1e-5)

    samples = [{"__key__": k, "png": png_bytes(im), "txt": c} for k, im, c in zip(keys, images, captions)]
    samples[3]["png"] = b"broken"
    write_shard(tmp_path / "shard-000000.tar", samples)
    with pytest.warns(UserWarning, match="1 unreadable"):
        shard = clip_filter_shards(
            [tmp_path / "shard-000000.tar"],
            scorer,
            threshold=float(np.median(scores)),
            batch_size=4,
            progress=False,
        )
    assert (
        shard.key.tolist() == keys and np.isnan(shard.clip_score[3]) and shard.status[3] == "unreadable_image"
    )
    ok = shard.index != 3
    assert np.allclose(shard.clip_score[ok], scores[ok], atol=1e-5)
    assert (shard.status[ok] == out.status[ok]).all()
