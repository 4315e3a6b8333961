"""Best of k from one pool (dalle_eval/rerank_curve.py), exactly, on hand-made pools; coco-fid --rerank-curve."""

import json
from pathlib import Path

import numpy as np
import pytest

from dalle_eval.errors import DalleEvalError
from dalle_eval.fid import frechet_distance_to_features, gaussian_stats
from dalle_eval.probes.tables import wilson
from dalle_eval.rerank_curve import (
    accuracy_curve,
    best_of_k,
    fid_curve,
    mean_curve,
    paired_difference,
    parse_ks,
    picked,
)

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
    # paired against k=1: k=2 gains prompt 0 and loses prompt 2; k=4 loses prompt 2
    assert [(r.get("gained"), r.get("lost")) for r in rows] == [(None, None), (1, 1), (0, 1)]
    assert rows[1]["vs_first"] == 0 and rows[2]["vs_first"] == pytest.approx(-1 / 3)
    assert rows[2]["vs_first_ci95"][0] < -1 / 3 < rows[2]["vs_first_ci95"][1]


def test_paired_difference_newcombe():
    d, (lo, hi) = paired_difference(both=30, gained=12, lost=3, neither=15)
    assert d == pytest.approx(9 / 60) and lo < d < hi and 0 < lo  # 12 gained vs 3 lost of 60: a real gain
    d2, (lo2, hi2) = paired_difference(both=30, gained=3, lost=12, neither=15)
    assert d2 == -d and (lo2, hi2) == pytest.approx((-hi, -lo))  # swapping gained and lost mirrors it
    assert paired_difference(30, 1, 1, 28)[1][0] < 0 < paired_difference(30, 1, 1, 28)[1][1]
    d0, ci0 = paired_difference(60, 0, 0, 0)  # all pass before and after: 0, within the Wilson margin of 60 at 100%
    assert d0 == 0 and ci0 == pytest.approx((-0.0602, 0.0602), abs=1e-4)
    wide, narrow = paired_difference(3, 2, 0, 1)[1], paired_difference(300, 200, 0, 100)[1]
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


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


# --- coco-fid --rerank-curve, end to end: the tiny transformer, a tiny CLIP, random Inception weights ---


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    from dalle_eval.fid import save_random_inception

    return save_random_inception(tmp_path_factory.mktemp("inc") / "inception.pth")


def _coco_fid(shapes_data, ckpt, out, inception, cache, tiny_clip, *extra):
    from click.testing import CliRunner

    from dalle_eval.cli import main

    model_cfg, weights = tiny_clip
    args = ["coco-fid", "--coco", str(shapes_data / "coco"), "--ckpt", str(ckpt), "--out", str(out),
            "--clip-model", model_cfg, "--clip-pretrained", weights, "--inception-weights", str(inception),
            "--set", "eval.n_captions=6", "--set", "eval.blur_radii=[0]", "--set", "eval.resolution=32",
            "--set", f"eval.cache_dir={cache}", "--set", "sample.batch_size=8", "--set", "eval.rerank_bootstrap=20",
            "--set", "eval.clip_score=on", *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.slow  # five coco-fid runs of the tiny transformer: ~16 s
def test_coco_fid_rerank_curve_reuses_one_pool(shapes_data, transformer_ckpt, tmp_path, inception, tiny_clip):
    """k = 1 is plain sampling (the first draw), k = N is `--rerank N` (the same draws, the same CLIP): both
    measured by separate coco-fid runs agree with the curve's end points."""
    from PIL import Image

    from dalle_eval.coco_report import CURVE_PLOT, curve_figure

    run = lambda out, *extra: _coco_fid(shapes_data, transformer_ckpt, tmp_path / out, inception, tmp_path / "c",
                                        tiny_clip, *extra)
    r = run("curve", "--rerank-curve", "4,1,2")
    assert r.exit_code == 0, r.output
    assert "best of 1" in r.output and "best of 4" in r.output and "4 per caption x 6 captions" in r.output
    report = json.loads((tmp_path / "curve" / "report.json").read_text())
    rows = report["rerank_curve"]
    assert [c["k"] for c in rows] == [1, 2, 4] and report["protocol"]["pool"] == 4
    assert len(list((tmp_path / "curve" / "pool").glob("*.png"))) == 24 and report["sampling"]["images_drawn"] == 24
    assert [c["draws_per_caption"] for c in rows] == [1, 2, 4] and {c["pool_per_caption"] for c in rows} == {4}
    per_image = report["sampling"]["seconds_per_image"]
    assert [c["sampling_seconds_for_k"] for c in rows] == pytest.approx([per_image * k * 6 for k in (1, 2, 4)])
    assert all(c["ci95"][0] <= c["fid"] <= c["ci95"][1] for c in rows)
    assert rows[-1]["clip_score"] >= rows[0]["clip_score"]  # the CLIP that picks scores its pick at least as high
    # k = 1: the first draw of every caption is plain coco-fid's image, byte for byte
    assert run("plain").exit_code == 0
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    for f in (tmp_path / "plain" / "samples").glob("*_0.png"):
        assert f.read_bytes() == (tmp_path / "curve" / "pool" / f.name).read_bytes()
    assert rows[0]["fid"] == pytest.approx(plain["fid"], rel=1e-6, abs=1e-9)
    assert rows[0]["clip_score"] == pytest.approx(plain["clip_score"], rel=1e-5)
    # k = N: what --rerank 4 keeps
    assert run("reranked", "--rerank", "4").exit_code == 0
    reranked = json.loads((tmp_path / "reranked" / "report.json").read_text())
    assert rows[-1]["fid"] == pytest.approx(reranked["fid"], rel=1e-6, abs=1e-9)
    assert rows[-1]["clip_score"] == pytest.approx(reranked["clip_score"], rel=1e-5)
    # again: the pool is reused (nothing drawn, its timing kept); a larger k extends it by the missing draws
    assert run("curve", "--rerank-curve", "1,2,4").exit_code == 0
    again = json.loads((tmp_path / "curve" / "report.json").read_text())
    assert again["sampling"]["images_drawn"] == 24 and [c["fid"] for c in again["rerank_curve"]] == [c["fid"] for c in rows]
    assert run("curve", "--rerank-curve", "1,6").exit_code == 0
    extended = json.loads((tmp_path / "curve" / "report.json").read_text())
    assert extended["sampling"]["images_drawn"] == 36 and len(list((tmp_path / "curve" / "pool").glob("*.png"))) == 36
    assert extended["rerank_curve"][0]["fid"] == rows[0]["fid"]
    # the report: a row per k with what it costs, and the figure (log-2 k axis, titles, legends)
    md = (tmp_path / "curve" / "report.md").read_text()
    assert "| k | draws per caption | sampling time for k | FID |" in md and "(no resampling)" in md
    assert md.count("\n| ") == 1 + 2 and "32 of 512" in md and "| 6 | 6 |" in md
    with Image.open(tmp_path / "curve" / CURVE_PLOT) as im:
        assert "rerank-curve" in im.text["Title"]
    fig = curve_figure(rows)
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_title() and ax.get_xlabel() and ax.get_legend() is not None
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "4"]


def test_coco_fid_rerank_curve_bad_input(shapes_data, transformer_ckpt, tmp_path, inception, tiny_clip):
    run = lambda *extra: _coco_fid(shapes_data, transformer_ckpt, tmp_path / "out", inception, tmp_path / "c",
                                   tiny_clip, *extra)
    for extra, message in ((["--rerank-curve", "0,2"], "--rerank-curve '0,2': expected a comma-separated list"),
                           (["--rerank-curve", "1,2", "--rerank", "2"], "give it without --rerank"),
                           (["--rerank-curve", "1,2", "--clip-pretrained", ""], "no CLIP weights")):
        r = run(*extra)
        assert r.exit_code != 0 and message in r.output, r.output
    assert not (tmp_path / "out" / "pool").exists()  # refused before drawing anything
    # another generator's samples dir with one image per caption is no pool of 2
    from dalle_eval.coco import load_or_choose_subset
    from dalle_eval.coco_curve import pool_rows

    prompts = load_or_choose_subset(shapes_data / "coco", tmp_path / "sub", 3, 0)
    folder = tmp_path / "theirs"
    folder.mkdir()
    rows = []
    for p in prompts:
        (folder / f"{p['prompt_id']}_0.png").write_bytes(Path(p["image"]).read_bytes())
        rows.append({"prompt_id": p["prompt_id"], "index": 0, "caption": p["caption"], "file": f"{p['prompt_id']}_0.png"})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [pool[0]["index"] for pool in pool_rows(folder, prompts, 1)] == [0, 0, 0]
    with pytest.raises(DalleEvalError, match="3 of the 3 subset prompts have fewer than 2 images"):
        pool_rows(folder, prompts, 2)


# --- probes run --rerank-curve ---


def test_probe_outcomes_units_and_all_checks():
    """A unit per check of a prompt (object_i are units of "object") and per prompt for "all checks"."""
    from dalle_eval.probe_curve import ALL_CHECKS, _outcomes

    def res(pid, check, file, passed, suite="binding", chance=0.5):
        return {"suite": suite, "prompt_id": pid, "check": check, "file": file, "passed": passed, "chance": chance}

    index = {"a_0.png": 0, "a_1.png": 1, "b_0.png": 0, "b_1.png": 1}
    results = [res("a", "object_0", "a_0.png", True), res("a", "object_1", "a_0.png", False),
               res("a", "object_0", "a_1.png", True), res("a", "object_1", "a_1.png", True),
               res("b", "count", "b_0.png", True, "attributes", 0.25), res("b", "count", "b_1.png", False, "attributes", 0.25)]
    units = _outcomes(results, index, 2)
    assert sorted(units) == [("attributes", ALL_CHECKS), ("attributes", "count"), ("binding", ALL_CHECKS),
                             ("binding", "object")]
    assert [(pid, p.tolist(), c) for pid, p, c in units[("binding", "object")]] == [
        ("a", [True, True], 0.5), ("a", [False, True], 0.5)]
    assert [(pid, p.tolist()) for pid, p, _ in units[("binding", ALL_CHECKS)]] == [("a", [False, True])]
    assert [(pid, p.tolist(), c) for pid, p, c in units[("attributes", "count")]] == [("b", [True, False], 0.25)]


def test_probes_rerank_curve_cli(transformer_ckpt, tmp_path, tiny_clip):
    from click.testing import CliRunner
    from dalle_eval.model.clip import ClipScorer
    from PIL import Image

    from dalle_eval.artifacts import read_jsonl
    from dalle_eval.cli import main
    from dalle_eval.probe_curve import ALL_CHECKS

    model_cfg, weights = tiny_clip
    args = ["probes", "run", "--suite", "attributes", "--ckpt", str(transformer_ckpt), "--out", str(tmp_path / "pc"),
            "--clip-model", model_cfg, "--clip-pretrained", weights, "--set", "sample.batch_size=32"]
    r = CliRunner().invoke(main, [*args, "--rerank-curve", "1,2,4"])  # `probes run`; bare `probes` below
    assert r.exit_code == 0, r.output
    assert "attributes best of 4" in r.output and "4 per prompt x 60 prompts" in r.output
    report = json.loads((tmp_path / "pc" / "rerank_curve.json").read_text())
    rows = report["rows"]
    assert {(x["check"], x["k"]) for x in rows} >= {(ALL_CHECKS, k) for k in (1, 2, 4)}
    assert all(x["n"] == 60 for x in rows if x["check"] in (ALL_CHECKS, "colour", "shape", "size"))
    samples = read_jsonl(tmp_path / "pc" / "samples" / "samples.jsonl")
    assert sorted({s["index"] for s in samples}) == [0, 1, 2, 3] and len(samples) == 240
    # k = 1 is each prompt's first draw: its CLIP score, recomputed here
    first = [s for s in samples if s["index"] == 0]
    scorer = ClipScorer(model_cfg, weights)
    want = 100 * scorer.scores([Image.open(tmp_path / "pc" / "samples" / s["file"]) for s in first],
                               [s["caption"] for s in first]).mean().item()
    assert report["clip_score"]["attributes"][0]["mean"] == pytest.approx(want, rel=1e-5)
    md = (tmp_path / "pc" / "rerank_curve.md").read_text()
    assert "| suite | check | units | chance | k=1 | k=2 | k=4 |" in md and (tmp_path / "pc" / "rerank_curve.png").exists()
    assert "| suite | k | prompts gained | prompts lost | change vs k=1 |" in md
    assert report["sampling"]["images_drawn"] == 240 and "best of 4 costs" in md
    # bad input is named, before anything is drawn
    for extra, message in ((["--suite", "raven"], "no prompts drawn from a caption alone"),
                           (["--scorer", "likelihood"], "give it without --scorer"),
                           (["--clip-pretrained", ""], "no CLIP weights")):
        bare = [a for a in args if a != "run"]  # `probes --rerank-curve` runs `probes run --rerank-curve`
        r = CliRunner().invoke(main, [*bare, "--out", str(tmp_path / "bad"), "--rerank-curve", "1,2", *extra])
        assert r.exit_code != 0 and message in r.output, r.output
    assert not (tmp_path / "bad").exists()
