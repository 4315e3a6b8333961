"""What reranking buys: best of k by CLIP for every k, from one pool of N candidates per prompt (issue 17 §3).

The DALL·E blog keeps the best 32 of 512 samples by CLIP; the paper reranks 512 for its COCO FID. Here each
prompt's N candidates are drawn once, in a fixed order (their seeds), and best-of-k is the top-scored of the
first k: the pools are nested, nothing is resampled, k = 1 is the first candidate and k = N reranks them all.
Every k then shares the same draws, so differences between k are paired, not noise between samplings.

Intervals (95%): Wilson for an accuracy (one outcome per prompt at each k), Newcombe's paired interval for its
change against the smallest k (the same prompts, the same draws); mean ± 1.96 standard errors for a
per-image score (CLIP score); for FID, the value on the best-of-k set ± 1.96 × its bootstrap standard deviation
over prompts (the same resampled prompt sets at every k, so FID(k) - FID(1) gets a paired interval too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import frechet_distance_to_features

Z95 = 1.96


def parse_ks(text: str, option: str = "--rerank-curve") -> list[int]:
    """"1,2,4,8" -> [1, 2, 4, 8] (sorted, distinct, each >= 1); anything else is an error naming `option`."""
    try:
        ks = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise DalleEvalError(f"{option} {text!r}: expected a comma-separated list of pool sizes k >= 1, e.g. 1,2,4,8,16,32 "
                             "(the pool holds the largest k candidates per prompt)")
    return ks


def best_of_k(scores: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """scores (P prompts, N candidates in pool order) -> {k: (P,) index of the top-scored of each prompt's first k
    candidates}; a tie goes to the earlier candidate."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or not scores.size:
        raise ValueError(f"best_of_k: scores must be (prompts, candidates), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("best_of_k: the CLIP scores hold NaN or inf")
    bad = [k for k in ks if not 1 <= k <= scores.shape[1]]
    if bad:
        raise ValueError(f"best_of_k: k={bad[0]} outside 1..{scores.shape[1]} (the pool size)")
    return {k: scores[:, :k].argmax(1) for k in ks}


def picked(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values (P, N, ...) at each prompt's picked candidate -> (P, ...)."""
    return np.asarray(values)[np.arange(len(index)), index]


def paired_difference(both: int, gained: int, lost: int, neither: int) -> tuple[float, tuple[float, float]]:
    """Difference of two paired proportions, p_new - p_old = (gained - lost) / n, with Newcombe's (1998, method 10)
    95% interval: the two Wilson intervals combined with the pairs' phi correlation."""
    from dalle_eval.probes.tables import wilson

    n = both + gained + lost + neither
    p1, p2 = (both + gained) / n, (both + lost) / n  # new, old
    (l1, u1), (l2, u2) = wilson(both + gained, n), wilson(both + lost, n)
    margins = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    phi = (both * neither - gained * lost) / math.sqrt(margins) if margins else 0.0
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    d = p1 - p2
    return d, (max(-1.0, d - lower), min(1.0, d + upper))


def accuracy_curve(scores: np.ndarray, passed: np.ndarray, ks: Sequence[int]) -> list[dict]:
    """Per k: how many prompts' best-of-k candidate passed (passed: (P, N) bool), with its Wilson interval, and
    (k above the smallest) the paired change against the smallest k: prompts gained and lost, the difference and
    its Newcombe interval."""
    from dalle_eval.probes.tables import wilson

    passed = np.asarray(passed, dtype=bool)
    picks = best_of_k(scores, ks)
    base = picked(passed, picks[min(ks)])
    rows = []
    for k, index in picks.items():
        now = picked(passed, index)
        ok, n = int(now.sum()), len(index)
        row = {"k": k, "n": n, "passed": ok, "accuracy": ok / n, "ci95": list(wilson(ok, n))}
        if k != min(ks):
            gained, lost = int((now & ~base).sum()), int((~now & base).sum())
            d, ci = paired_difference(int((now & base).sum()), gained, lost, int((~now & ~base).sum()))
            row.update(gained=gained, lost=lost, vs_first=d, vs_first_ci95=list(ci))
        rows.append(row)
    return rows


def mean_curve(scores: np.ndarray, values: np.ndarray, ks: Sequence[int]) -> list[dict]:
    """Per k: the mean of a per-candidate value (P, N) over the prompts' best-of-k picks, ± 1.96 standard errors."""
    rows = []
    for k, index in best_of_k(scores, ks).items():
        v = picked(np.asarray(values, dtype=np.float64), index)
        half = Z95 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        rows.append({"k": k, "n": len(v), "mean": float(v.mean()), "ci95": [float(v.mean()) - half, float(v.mean()) + half]})
    return rows


def fid_curve(ref_mu: np.ndarray, ref_sigma: np.ndarray, features: np.ndarray, scores: np.ndarray, ks: Sequence[int],
              bootstrap: int = 100, seed: int = 0) -> list[dict]:
    """Per k: FID of the best-of-k set (features: (P, N, d) of every candidate) against the reference statistics,
    its bootstrap standard deviation over prompts and FID(k) - FID(k_min) with a paired interval (bootstrap 0:
    values only). Each replicate draws P prompts with replacement, the same draw at every k."""
    picks = best_of_k(scores, ks)
    sets = {k: picked(features, index) for k, index in picks.items()}
    value = {k: frechet_distance_to_features(ref_mu, ref_sigma, f) for k, f in sets.items()}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(scores), len(scores)) for _ in range(bootstrap)]
    reps = {k: np.array([frechet_distance_to_features(ref_mu, ref_sigma, f[d]) for d in draws]) for k, f in sets.items()}
    first = min(ks)
    rows = []
    for k in picks:
        row = {"k": k, "n": len(scores), "fid": max(value[k], 0.0), "fid_raw": value[k], "bootstrap": bootstrap}
        if bootstrap > 1:
            sd, dsd = float(reps[k].std(ddof=1)), float((reps[k] - reps[first]).std(ddof=1))
            delta = value[k] - value[first]
            row.update(fid_sd=sd, ci95=[max(value[k] - Z95 * sd, 0.0), value[k] + Z95 * sd],
                       vs_first=delta, vs_first_ci95=[delta - Z95 * dsd, delta + Z95 * dsd])
        rows.append(row)
    return rows
