"""Images to Inception features for coco-fid: one resize policy, the blur sweep, cached reference statistics.

Resize policy (named in every report, because resizing differently moves FID by several points):
center crop to the shorter side, then PIL bicubic (antialiased) to `resolution` px, for the real images
and for generated images of another size; images already at `resolution` px and square are untouched.
The blur sweep (paper, fig. 9) applies PIL's Gaussian blur of radius r to the prepared image of both sets.

Reference statistics (mu, sigma of the real set's 2048-d features, float64) are cached as .npz under
eval.cache_dir, one file per blur radius, keyed by the images' content (sha256 of every file's bytes), the
resize policy, the resolution, the radius and the feature extractor's weights (sha256), so a second
evaluation skips the real pass and any changed pixel is a new key. The per-file sha256 are computed once
and kept beside the stats (files-*.json) with each file's size, mtime and ctime: a later run re-hashes only
files whose stat changed (writing a file changes its ctime, even when its mtime is set back), and
`coco-fid --verify-cache` re-hashes every file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from dalle_eval.artifacts import atomic_path, fingerprint, sha256_file
from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import RESIZE_POLICY, gaussian_stats, inception_features, load_image_uint8
from dalle_eval.images import center_square_resize

POLICY = "center crop to the shorter side, PIL bicubic resize to {res} px; Gaussian blur (PIL) after resizing"


def resize_policy(resolution: int) -> str:
    return POLICY.format(res=resolution)


def prepare(path: Path, resolution: int) -> np.ndarray:
    """Read an image (errors name the file), center-crop it square, bicubic-resize to resolution -> uint8 HWC."""
    arr = load_image_uint8(path)
    if arr.shape[:2] == (resolution, resolution):
        return arr
    return np.asarray(center_square_resize(Image.fromarray(arr), resolution), dtype=np.uint8)


def blur(arr: np.ndarray, radius: float) -> np.ndarray:
    if radius == 0:
        return arr
    return np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius)), dtype=np.uint8)


def sweep_features(net, paths: list[Path], resolution: int, radii: list[float], batch: int, desc: str,
                   progress: bool = True) -> dict[float, tuple[np.ndarray, torch.Tensor]]:
    """{radius: (pool features (N, 2048), logits (N, 1008))}; each image is decoded and resized once."""
    per_radius: dict[float, tuple[list, list]] = {r: ([], []) for r in radii}
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(paths), batch):
            arr = [prepare(p, resolution) for p in paths[i : i + batch]]
            for r in radii:
                f, lg = inception_features(net, [np.stack([blur(a, r) for a in arr])], progress=False)
                per_radius[r][0].append(f)
                per_radius[r][1].append(lg)
            bar.update(len(arr))
    return {r: (np.concatenate(f), torch.cat(lg)) for r, (f, lg) in per_radius.items()}


def weights_id(weights: str | Path | None) -> str:
    """The feature extractor's identity for cache keys: sha256 of the weights file (or the default's name)."""
    if weights is None:
        # torch-fidelity's download; the name predates the switch from torchmetrics' copy of the network, whose
        # features are bitwise the same, and is kept so that caches made before it stay valid
        return "torchmetrics-inception-v3-compat (downloaded pt_inception-2015-12-05)"
    return "sha256:" + sha256_file(weights)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dalle-eval" / "fid"


def _stat(path: str) -> list[int]:
    """What a cheap re-check compares: size, mtime and ctime (ns); a write always moves ctime."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_index(index: Path) -> dict:
    """{resolved path: {"stat": [...], "sha256": hex}} stored by an earlier run; unreadable -> {} (re-hash)."""
    try:
        files = json.loads(index.read_text())["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def content_fingerprint(paths: list[Path], cache_dir: Path, verify: bool = False,
                        progress: bool = True) -> dict:
    """sha256 over the sorted sha256 of every file's bytes (names and order do not count, contents do).

    Per-file digests are reused from cache_dir/files-*.json when size, mtime and ctime are unchanged;
    verify=True re-hashes every file. -> {"sha256", "n_files", "files_hashed", "verified", "index"}.
    """
    resolved = [os.path.realpath(p) for p in paths]
    index = Path(cache_dir) / f"files-{fingerprint(sorted(set(resolved)))}.json"  # named by the path list
    old = {} if verify else _read_index(index)
    new, hashed = {}, 0
    for p in tqdm(sorted(set(resolved)), desc="sha256: real images", unit="img", disable=not progress):
        stat, rec = _stat(p), old.get(p)
        if isinstance(rec, dict) and rec.get("stat") == stat and isinstance(rec.get("sha256"), str):
            new[p] = rec
        else:
            new[p], hashed = {"stat": stat, "sha256": sha256_file(p)}, hashed + 1
    if new != old:
        with atomic_path(index) as tmp:
            tmp.write_text(json.dumps({"files": new}))
    digest = hashlib.sha256("\n".join(sorted(new[p]["sha256"] for p in resolved)).encode()).hexdigest()
    how = "full re-hash (--verify-cache)" if verify else "re-hashed files whose size, mtime or ctime changed"
    return {"sha256": digest, "n_files": len(resolved), "files_hashed": hashed, "verified": how, "index": str(index)}


def cache_key(content_sha256: str, n_images: int, resolution: int, radius: float, extractor: str) -> dict:
    return {"images_content_sha256": content_sha256, "n_images": n_images, "policy": resize_policy(resolution),
            "inception_resize": RESIZE_POLICY, "resolution": resolution, "blur_radius": radius,
            "feature_extractor": extractor, "features": "2048-d pool (FID Inception)"}


def _cache_file(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / f"ref-{fingerprint(key)}-blur{key['blur_radius']:g}.npz"


def reference_stats(net, extractor: str, paths: list[Path], resolution: int, radii: list[float], batch: int,
                    cache_dir: Path, progress: bool = True, verify: bool = False
                    ) -> tuple[dict[float, tuple[np.ndarray, np.ndarray]], dict, dict]:
    """{radius: (mu, sigma)} of the real images, from the cache where present
    -> (stats, {radius: {cache file, hit}}, the images' content fingerprint (content_fingerprint))."""
    content = content_fingerprint(paths, cache_dir, verify, progress)
    keys = {r: cache_key(content["sha256"], len(paths), resolution, r, extractor) for r in radii}
    stats, info, todo = {}, {}, []
    for r in radii:
        f = _cache_file(cache_dir, keys[r])
        info[r] = {"file": str(f), "hit": f.exists()}
        if f.exists():
            with np.load(f) as z:
                if json.loads(str(z["key"])) != keys[r]:
                    raise DalleEvalError(f"{f}: cached statistics with another key; delete the file")
                stats[r] = (z["mu"], z["sigma"])
        else:
            todo.append(r)
    if todo:
        feats = sweep_features(net, paths, resolution, todo, batch, "inception: real images", progress)
        for r in todo:
            mu, sigma = gaussian_stats(feats[r][0])
            stats[r] = (mu, sigma)
            target = Path(info[r]["file"])
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, mu=mu, sigma=sigma, key=json.dumps(keys[r]))
    return stats, info, content
