"""coco-fid throughput on the CPU, with a random-init FID Inception (no downloads).

1. Inception images/s: our feature loop (fid_reference.sweep_features at one radius: decode, resize
   policy, Inception forward, features and logits kept) against torch-fidelity's own loop
   (`calculate_metrics(input1=DIR, isc=True)`: its dataset, DataLoader and the same network) on the
   same N images of 256 px, alternating runs, best of each. Both end with an IS computation.
2. A whole `coco-fid` run on a COCO-format set (N images, blur radii 0, 1, 2, 4, 8): the first run
   computes and caches the real-image statistics; the second reads them from the cache.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dalle_eval.coco_fid import run_coco_fid
from dalle_eval.config import load_config
from dalle_eval.fid import inception_score, load_inception, save_random_inception
from dalle_eval.fid_reference import sweep_features

N = 64  # images per set (feature loop)
N_COCO = 32  # images per set (whole coco-fid runs, 5 radii each)
SIDE = 256
BATCH = 32


def write_images(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        im = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y, r = (int(v) for v in rng.integers(0, SIDE, 3) // (1, 1, 3))
            d.ellipse((x, y, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        path = folder / f"{i:05d}.jpg"
        im.save(path, quality=90)
        paths.append(path)
    return paths


def ours(net, paths: list[Path]) -> float:
    t0 = time.perf_counter()
    feats = sweep_features(net, paths, SIDE, [0], BATCH, "ours", progress=False)
    inception_score(feats[0][1])
    return time.perf_counter() - t0


def theirs(folder: Path, weights: Path) -> float:
    import torch_fidelity

    t0 = time.perf_counter()
    torch_fidelity.calculate_metrics(input1=str(folder), isc=True, cache=False, cuda=False, verbose=False,
                                     batch_size=BATCH, feature_extractor="inception-v3-compat",
                                     feature_extractor_weights_path=str(weights))
    return time.perf_counter() - t0


def bench_features(tmp: Path, weights: Path) -> None:
    paths = write_images(tmp / "imgs", N, 0)
    net = load_inception(weights)
    ours(net, paths[:BATCH])  # warm-up (first-call allocations) for both sides
    theirs_t, ours_t = [], []
    for _ in range(2):
        theirs_t.append(theirs(tmp / "imgs", weights))
        ours_t.append(ours(net, paths))
    o, t = min(ours_t), min(theirs_t)
    print(f"Inception features on {N} JPEGs of {SIDE} px, batch {BATCH}, {torch.get_num_threads()} threads:")
    print(f"  ours (sweep_features + IS)            {N / o:6.1f} images/s ({o:.2f} s; runs {', '.join(f'{x:.2f}' for x in ours_t)})")
    print(f"  torch-fidelity calculate_metrics(isc) {N / t:6.1f} images/s ({t:.2f} s; runs {', '.join(f'{x:.2f}' for x in theirs_t)})")
    print(f"  ratio ours/torch-fidelity: {t / o:.2f}x")


def write_coco(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    paths = write_images(root / "val2014", N_COCO, 1)
    images = [{"id": i, "file_name": p.name} for i, p in enumerate(paths)]
    anns = [{"id": 100 + i, "image_id": i, "caption": f"picture number {i}"} for i in range(len(paths))]
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))


def bench_cache(tmp: Path, weights: Path) -> None:
    root = tmp / "coco"
    write_coco(root)
    gen = tmp / "gen"
    gen.mkdir()
    rows = []
    for i, p in enumerate(write_images(tmp / "genimgs", N_COCO, 2)):
        name = f"{100 + i}_0.png"
        Image.open(p).save(gen / name)
        rows.append({"prompt_id": str(100 + i), "index": 0, "caption": f"picture number {i}", "file": name})
    (gen / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(["tiny"], [f"eval.n_captions={N_COCO}", "eval.resolution=256", f"eval.fid_batch={BATCH}",
                                 f"eval.cache_dir={tmp / 'cache'}"])
    times = []
    for run in ("first", "second"):
        t0 = time.perf_counter()
        r = run_coco_fid(root, tmp / "run", cfg, images=gen, inception_weights=weights, progress=False)
        times.append(time.perf_counter() - t0)
        hits = sum(s["reference_cached"] for s in r["sweep"])
        print(f"  {run} run: {times[-1]:6.2f} s (real statistics from the cache at {hits} of {len(r['sweep'])} radii)")
    print(f"  second/first: {times[1] / times[0]:.2f} ({times[0] / times[1]:.2f}x faster)")


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-fid-") as tmp:
        tmp = Path(tmp)
        weights = save_random_inception(tmp / "inception.pth")
        bench_features(tmp, weights)
        print(f"coco-fid on a COCO-format set of {N_COCO} images (radii 0, 1, 2, 4, 8; generated set of {N_COCO}):")
        bench_cache(tmp, weights)
    print(f"(benchmark wall time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
