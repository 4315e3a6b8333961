"""Best of k from one pool (dalle_eval/rerank_curve.py), exactly, on hand-made pools."""

import numpy as np
import pytest

from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import frechet_distance_to_features, gaussian_stats
from dalle_eval.probes.tables import wilson
from dalle_eval.rerank_curve import accuracy_curve, best_of_k, fid_curve, mean_curve, parse_ks, picked

# 3 prompts x 4 candidates in pool order (their seeds); prompt 2 ties at its maximum
SCORES = np.array([[0.1, 0.5, 0.2, 0.9],
                   [0.8, 0.3, 0.7, 0.1],
                   [0.2, 0.6, 0.6, 0.4]])
PASSED = np.array([[False, True, False, False],
                   [False, True, True, True],
                   [True, False, True, True]])


def test_best_of_k_nests_the_pool():
    picks = best_of_k(SCORES, [1, 2, 3, 4])
    assert picks[1].tolist() == [0, 0, 0]  # k = 1: the first candidate, whatever its score
    assert picks[2].tolist() == [1, 0, 1]
    assert picks[3].tolist() == [1, 0, 1]  # a tie (0.6, 0.6) goes to the earlier candidate
    assert picks[4].tolist() == SCORES.argmax(1).tolist() == [3, 0, 1]  # k = N: rerank the whole pool
    # nested: the best of k+1 is the best of k or candidate k+1
    for k in (1, 2, 3):
        assert all(b in (a, k) for a, b in zip(picks[k], picks[k + 1]))
    assert picked(SCORES, picks[4]).tolist() == [0.9, 0.8, 0.6]
    with pytest.raises(ValueError, match="k=5 outside 1..4"):
        best_of_k(SCORES, [5])
    with pytest.raises(ValueError, match="NaN"):
        best_of_k(np.array([[0.1, np.nan]]), [1])


def test_accuracy_curve_counts_the_picks_with_wilson_intervals():
    rows = accuracy_curve(SCORES, PASSED, [1, 2, 4])
    assert [r["k"] for r in rows] == [1, 2, 4]
    # picks k=1 [0, 0, 0] -> [F, F, T]; k=2 [1, 0, 1] -> [T, F, F]; k=4 [3, 0, 1] -> [F, F, F]: CLIP can also hurt
    assert picked(PASSED, best_of_k(SCORES, [2])[2]).tolist() == [True, False, False]
    assert [(r["passed"], r["n"]) for r in rows] == [(1, 3), (1, 3), (0, 3)]
    assert [r["accuracy"] for r in rows] == pytest.approx([1 / 3, 1 / 3, 0])
    assert [r["ci95"] for r in rows] == [list(wilson(1, 3)), list(wilson(1, 3)), list(wilson(0, 3))]
    assert accuracy_curve(SCORES, ~PASSED, [4])[0]["passed"] == 3


def test_mean_curve_is_the_mean_of_the_picked_values():
    rows = mean_curve(SCORES, SCORES * 100, [1, 4])
    assert rows[0]["mean"] == pytest.approx(100 * (0.1 + 0.8 + 0.2) / 3)
    assert rows[1]["mean"] == pytest.approx(100 * (0.9 + 0.8 + 0.6) / 3)
    v = np.array([90.0, 80.0, 60.0])
    half = 1.96 * v.std(ddof=1) / np.sqrt(3)
    assert rows[1]["ci95"] == pytest.approx([v.mean() - half, v.mean() + half])


def test_fid_curve_scores_the_picked_set_and_pairs_the_bootstrap():
    rng = np.random.default_rng(0)
    P, N, d = 40, 4, 6
    real = rng.normal(size=(200, d))
    mu, sigma = gaussian_stats(real)
    features = rng.normal(size=(P, N, d)) + np.arange(N)[None, :, None]  # candidate j is shifted by j: worse
    scores = -np.arange(N)[None, :].repeat(P, 0) + rng.normal(scale=0.1, size=(P, N))  # CLIP prefers early ones
    rows = fid_curve(mu, sigma, features, scores, [1, 2, 4], bootstrap=20, seed=0)
    for r in rows:
        want = frechet_distance_to_features(mu, sigma, picked(features, best_of_k(scores, [r["k"]])[r["k"]]))
        assert r["fid_raw"] == pytest.approx(want) and r["fid"] == pytest.approx(max(want, 0.0))
        assert r["ci95"][0] <= r["fid"] <= r["ci95"][1] and r["fid_sd"] > 0
    assert rows[0]["vs_first"] == 0.0 and rows[0]["vs_first_ci95"] == [0.0, 0.0]  # paired with itself
    assert rows[2]["vs_first"] == pytest.approx(rows[2]["fid_raw"] - rows[0]["fid_raw"])
    # same seed, same replicates; bootstrap 0: values only
    assert fid_curve(mu, sigma, features, scores, [1, 2, 4], bootstrap=20, seed=0) == rows
    assert "ci95" not in fid_curve(mu, sigma, features, scores, [2], bootstrap=0)[0]


def test_parse_ks():
    assert parse_ks("8,1, 2,4,2") == [1, 2, 4, 8]
    for bad in ("", "0,2", "1,two", "-1"):
        with pytest.raises(DalleEvalError, match="--rerank-curve"):
            parse_ks(bad)
