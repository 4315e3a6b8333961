"""Post-filter, part 1: perceptual-hash near-duplicates within a set and against an evaluation set.

    phash(images)                       -> (n,) uint64 64-bit DCT hashes (reading shards: shard_images.py)
    near_pairs(hashes, threshold)       -> DataFrame[i, j, distance]: every pair within `threshold` bits
    near_duplicates(keys, hashes, t)    -> DataFrame[key, cluster, cluster_size, dup_of, dup_distance, status]
    eval_overlap(keys, hashes, eval_hashes, t) -> DataFrame[key, eval_match, eval_match_distance, status]

Pairs come from a DuckDB equi-join on hash bands (multi-index hashing, Norouzi et al. 2012): split
the 64 bits into m = t // (r + 1) + 1 disjoint bands; if Hamming(a, b) <= t, some band differs in at
most r bits (pigeonhole). r = 0 is plain banding (t + 1 bands, one must be equal); r = 1 joins each
band value against its r-ball, with fewer, wider bands: 4-8x faster at t = 8 on 100k hashes. Every
candidate is verified with the exact distance, bit_count(a xor b), so the result is exactly all pairs.
Small sets (fewer than ALL_PAIRS_BELOW hashes) skip the join: every pair's distance in numpy is faster there.
Hashes are 64-bit ints; tables store them as signed int64 (the same bits).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import scipy.fft
import scipy.sparse
from PIL import Image
from scipy.sparse.csgraph import connected_components

from dalle_eval.config import FilterConfig
from dalle_eval.errors import DalleEvalError

# The default Hamming threshold (of 64 bits) is FilterConfig's dedup_threshold (and eval_threshold), measured
# on 400 rendered images (tests/test_dedup.py renders them): JPEG q70, 256->200->256 resize, +10% brightness
# and all three move a hash by <= 4 bits in 99.6% of 1,600 cases (max 8); of 79,800 unrelated pairs one is at
# 8, one at 10, the 0.1% quantile at 18. Distances are nearly always even (32 of the 64 bits are set), so 6 = 7.
# Within-set clustering chains pairs, so a loose threshold merges unrelated images once n x (false-pair rate)
# nears 1: keep it tight.
DEFAULT_THRESHOLD = FilterConfig.dedup_threshold
DEFAULT_RADIUS = 1
# Below this many hashes, n(n-1)/2 xor + popcounts in numpy beat the band join's DuckDB setup
# (2,000 hashes: ~0.01 s against ~0.035 s; the all-pairs cost grows as n^2: 4,096 -> ~0.04 s).
ALL_PAIRS_BELOW = 4096


# pHash (Zauner 2010; "Looks like it", hackerfactor.com 2011): grey 32x32, 2-D DCT-II, the 8x8 lowest
# frequencies, bit = coefficient > median of the 63 AC terms (the DC term is left out of the median).
def phash_gray(gray: np.ndarray) -> np.ndarray:
    """(B, 32, 32) grey levels -> (B,) uint64; bit 63 is coefficient (0, 0), then row-major."""
    if gray.ndim != 3 or gray.shape[1:] != (32, 32):
        raise ValueError(f"phash_gray expects (B, 32, 32) grey images, got {gray.shape}")
    coef = scipy.fft.dctn(gray.astype(np.float64), type=2, axes=(1, 2))[:, :8, :8].reshape(len(gray), 64)
    bits = coef > np.median(coef[:, 1:], axis=1, keepdims=True)  # (B, 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def gray32(img: Image.Image) -> np.ndarray:
    """The hash's input: luma (ITU-R 601, PIL's "L"), Lanczos-resized to 32x32."""
    return np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)


def phash(images: Sequence[Image.Image]) -> np.ndarray:
    """Perceptual hashes of PIL images -> (n,) uint64."""
    if not len(images):
        return np.zeros(0, np.uint64)
    return phash_gray(np.stack([gray32(im) for im in images]))


def _as_int64(hashes, ndim: int | None = 1) -> np.ndarray:
    """64-bit hashes (int64, uint64 or python ints) -> the same bits as int64."""
    a = np.asarray(hashes)
    if a.dtype == object:  # python ints, possibly >= 2**63
        a = np.array([int(x) & (2**64 - 1) for x in a.ravel()], dtype=np.uint64).reshape(a.shape)
    if a.dtype not in (np.int64, np.uint64) or (ndim is not None and a.ndim != ndim):
        raise DalleEvalError(f"hashes must be a 1-D array of 64-bit ints, got {a.dtype} {a.shape}")
    return a.view(np.int64)


def hamming(a, b) -> np.ndarray:
    """Bitwise Hamming distance of 64-bit hashes (broadcasts)."""
    x = np.bitwise_xor(_as_int64(a, None).view(np.uint64), _as_int64(b, None).view(np.uint64))
    return np.bitwise_count(x).astype(np.int64)  # on uint64: bitwise_count of int64 counts |x|'s bits


def _check_threshold(threshold: int) -> None:
    if not 0 <= threshold < 64:
        raise DalleEvalError(f"Hamming threshold must be in [0, 63] bits, got {threshold}")


def _bands(threshold: int, radius: int) -> tuple[list[int], pd.DataFrame]:
    """Band widths and the xor masks of each band's r-ball: DataFrame[b, mask]."""
    _check_threshold(threshold)
    r = min(max(radius, 0), threshold)
    m = threshold // (r + 1) + 1
    widths = [64 // m + (i < 64 % m) for i in range(m)]
    rows = [
        (b, sum(1 << k for k in c))
        for b, w in enumerate(widths)
        for d in range(r + 1)
        for c in itertools.combinations(range(w), d)
    ]
    masks = pd.DataFrame(rows, columns=["b", "mask"]).astype({"b": np.int16, "mask": np.int64})
    return widths, masks


def _band_table(hashes: np.ndarray, widths: list[int]) -> pd.DataFrame:
    """One row per (hash, band): i, b, v (band bits), h (whole hash)."""
    u, n, m = hashes.view(np.uint64), len(hashes), len(widths)
    offsets = np.cumsum([0, *widths[:-1]])
    v = np.stack([(u >> np.uint64(o)) & np.uint64((1 << w) - 1) for o, w in zip(offsets, widths)], 1)
    return pd.DataFrame(
        {
            "i": np.repeat(np.arange(n, dtype=np.int64), m),
            "b": np.tile(np.arange(m, dtype=np.int16), n),
            "v": v.astype(np.int64).ravel(),
            "h": np.repeat(hashes, m),
        }
    )


def _join(
    left: np.ndarray, right: np.ndarray | None, threshold: int, radius: int, select: str
) -> pd.DataFrame:
    """Verified pairs (a from left, c from right; right=None: within left, a.i < c.i) run through `select`."""
    widths, masks = _bands(threshold, radius)
    con = duckdb.connect()
    con.register("masks", masks)
    con.register("lt", _band_table(left, widths))
    con.register("rt", _band_table(left if right is None else right, widths))
    same = "AND a.i < c.i" if right is None else ""
    sql = f"""WITH ball AS (SELECT r.i, r.b, xor(r.v, masks.mask) AS v, r.h FROM rt r JOIN masks USING (b)),
              cand AS (SELECT a.i, c.i AS j, bit_count(xor(a.h, c.h)) AS distance
                       FROM lt a JOIN ball c ON a.b = c.b AND a.v = c.v {same}
                       WHERE bit_count(xor(a.h, c.h)) <= {int(threshold)})
              {select}"""
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _all_pairs(h: np.ndarray, threshold: int, block: int = 512) -> pd.DataFrame:
    """near_pairs by brute force: every pair's xor + popcount, `block` rows at a time (i, j in order)."""
    u, found = h.view(np.uint64), [np.zeros((3, 0), np.int64)]
    for s in range(0, len(u), block):
        d = np.bitwise_count(u[s : s + block, None] ^ u[None, :])
        i, j = np.nonzero(d <= threshold)
        i, j = i[i + s < j], j[i + s < j]
        found.append(np.stack([i + s, j, d[i, j]]).astype(np.int64))
    i, j, d = np.concatenate(found, axis=1)
    return pd.DataFrame({"i": i, "j": j, "distance": d})


def near_pairs(hashes, threshold: int = DEFAULT_THRESHOLD, radius: int = DEFAULT_RADIUS,
               all_pairs_below: int = ALL_PAIRS_BELOW) -> pd.DataFrame:
    """Every pair i < j with Hamming(hashes[i], hashes[j]) <= threshold -> DataFrame[i, j, distance], sorted.
    Fewer than `all_pairs_below` hashes are compared all against all; more go through the band join."""
    h = _as_int64(hashes)
    _check_threshold(threshold)
    if len(h) < all_pairs_below:
        out = _all_pairs(h, threshold)
    else:
        out = _join(h, None, threshold, radius, "SELECT DISTINCT i, j, distance FROM cand ORDER BY i, j")
    return out.astype({"i": np.int64, "j": np.int64, "distance": np.int64})


def near_duplicates(
    keys: Sequence[str], hashes, threshold: int = DEFAULT_THRESHOLD, radius: int = DEFAULT_RADIUS
) -> pd.DataFrame:
    """Cluster near-duplicates (connected components of pairs within `threshold` bits, so chains
    a~b~c join) -> one row per key, in input order: cluster (int, numbered by kept key), cluster_size,
    dup_of (the cluster's first key in sort order, which is kept; None for it), dup_distance (bits to
    the kept key), status ('ok' | 'near_duplicate')."""
    h = _as_int64(hashes)
    keys = pd.Series(list(keys), dtype=object)
    if len(keys) != len(h):
        raise DalleEvalError(f"near_duplicates: {len(keys)} keys but {len(h)} hashes")
    if keys.duplicated().any():
        raise DalleEvalError(f"near_duplicates: key {keys[keys.duplicated()].iloc[0]!r} appears twice")
    # identical hashes collapse first, so a hash shared by thousands of rows is one node, not n^2 pairs
    uniq, inverse = np.unique(h, return_inverse=True)
    pairs = near_pairs(uniq, threshold, radius)
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs.i, pairs.j)), shape=(len(uniq),) * 2
    )
    label = connected_components(graph, directed=False)[1][inverse]  # (n,) component per row
    df = pd.DataFrame({"key": keys, "label": label, "h": h})
    first = df.sort_values("key").groupby("label", sort=False).head(1).set_index("label")
    df["kept"] = first.key.reindex(df.label).to_numpy()
    df["cluster"] = (
        pd.Series(first.key.rank(method="first").astype(np.int64) - 1).reindex(df.label).to_numpy()
    )
    df["cluster_size"] = df.groupby("label").key.transform("size").astype(np.int64)
    dup = df.key != df.kept
    df["dup_of"] = df.kept.where(dup, None)
    df["dup_distance"] = hamming(df.h.to_numpy(), first.h.reindex(df.label).to_numpy())
    df["status"] = np.where(dup, "near_duplicate", "ok")
    if len(df) >= 1000 and df.cluster_size.max() > 0.01 * len(df):
        warnings.warn(
            f"near_duplicates: one cluster holds {df.cluster_size.max()} of {len(df)} images; "
            f"threshold {threshold} may be too loose for these images (chains join unrelated ones)"
        )
    return df[["key", "cluster", "cluster_size", "dup_of", "dup_distance", "status"]]


def eval_overlap(
    keys: Sequence[str],
    hashes,
    eval_hashes,
    threshold: int = FilterConfig.eval_threshold,
    eval_keys: Sequence[str] | None = None,
    radius: int = DEFAULT_RADIUS,
) -> pd.DataFrame:
    """Rows within `threshold` bits of any evaluation image -> one row per key, in input order:
    eval_match (closest eval key, or its index without eval_keys; None if none), eval_match_distance
    (-1 if none), status ('eval_overlap' | 'ok')."""
    h, e = _as_int64(hashes), _as_int64(eval_hashes)
    if len(keys) != len(h) or (eval_keys is not None and len(eval_keys) != len(e)):
        raise DalleEvalError("eval_overlap: keys and hashes differ in length")
    best = pd.DataFrame({"i": [], "j": [], "distance": []})
    if len(h) and len(e):  # closest eval hash per row, ties to the lowest eval index
        best = _join(
            h,
            e,
            threshold,
            radius,
            "SELECT i, arg_min(j, distance * 4294967296 + j) AS j, "
            "min(distance) AS distance FROM cand GROUP BY i",
        )
    j, d = np.full(len(h), -1, np.int64), np.full(len(h), -1, np.int64)
    j[best.i.to_numpy(np.int64)] = best.j.to_numpy(np.int64)
    d[best.i.to_numpy(np.int64)] = best.distance.to_numpy(np.int64)
    names = np.asarray(list(eval_keys) if eval_keys is not None else range(len(e)), dtype=object)
    match = np.full(len(h), None, dtype=object)
    match[j >= 0] = names[j[j >= 0]]
    return pd.DataFrame(
        {
            "key": list(keys),
            "eval_match": match,
            "eval_match_distance": d,
            "status": np.where(d >= 0, "eval_overlap", "ok"),
        }
    )
