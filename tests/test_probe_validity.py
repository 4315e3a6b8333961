"""The probes measure what they claim: the oracle (true scene rendered) passes every check at every
resolution the probes support, also under noise and JPEG, and each check's stated chance is the score
of the suite's random generator (closed forms = Monte Carlo = rendered and parsed)."""

import io
import random
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from dalle_eval.probes import make_prompts
from dalle_eval.probes.chance import closed_form_chance, monte_carlo_chance, random_images
from dalle_eval.probes.scoring import score_scene_image
from dalle_eval.probes.tables import check_name, clustered_wilson
from dalle_eval.shapes import Scene, place, render

SHAPES_SUITES = ("attributes", "binding")
SEEDS = 20


def _noisy_jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian pixel noise (sigma 10), then JPEG at quality 75: what generated images look like at best."""
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 10, (img.height, img.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8)).save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _oracle_accuracy(resolution: int, seeds: int, degrade: bool) -> dict[tuple, float]:
    """Accuracy per (suite, check) of the oracle over `seeds` prompt sets, each placed anew."""
    passed = defaultdict(list)
    nrng = np.random.default_rng(resolution)
    for seed in range(seeds):
        for p in (p for s in SHAPES_SUITES for p in make_prompts(s, seed=seed)):
            spec = Scene.from_json(p["spec"])
            img = render(place(spec, random.Random(f"{p['prompt_id']}-{seed}")), resolution)
            for check, (ok, _) in score_scene_image(spec, _noisy_jpeg(img, nrng) if degrade else img).items():
                passed[(p["suite"], p["category"], check_name(check))].append(ok)
                passed[(p["suite"], "all", check_name(check))].append(ok)
    return {k: float(np.mean(v)) for k, v in passed.items()}


@pytest.mark.parametrize("resolution", [64, pytest.param(128, marks=pytest.mark.slow), pytest.param(256, marks=pytest.mark.slow)])
def test_oracle_passes_every_check_at_every_resolution(resolution):
    acc = _oracle_accuracy(resolution, SEEDS, degrade=False)
    low = {k: v for k, v in acc.items() if v < 0.995}
    assert not low, low


@pytest.mark.parametrize("resolution, seeds", [(64, SEEDS), (128, SEEDS // 2)])
def test_oracle_survives_noise_and_jpeg(resolution, seeds):
    acc = _oracle_accuracy(resolution, seeds, degrade=True)
    low = {k: v for k, v in acc.items() if k[1] == "all" and v < 0.98}
    assert not low, low


def _one_per_category() -> list[dict]:
    seen = {}
    for p in (p for s in SHAPES_SUITES for p in make_prompts(s)):
        seen.setdefault(p["category"], p)
    return list(seen.values())


def test_closed_form_chance_equals_monte_carlo():
    for p in _one_per_category():
        spec = Scene.from_json(p["spec"])
        exact, mc = closed_form_chance(spec), monte_carlo_chance(spec, draws=20_000)
        assert set(mc) <= set(exact), (p["prompt_id"], set(mc) ^ set(exact))
        for check, q in mc.items():
            tol = 4 * np.sqrt(exact[check] * (1 - exact[check]) / 20_000) + 1e-4  # 4 standard errors
            assert abs(q - exact[check]) <= tol, (p["prompt_id"], check, q, exact[check])


@pytest.mark.slow  # every suite rendered, parsed and scored: ~6 s
def test_random_generator_scores_at_the_stated_chance():
    """Rendered and parsed, the random generator lands in the 99% interval of its chance on every check."""
    prompts = [p for s in SHAPES_SUITES for p in make_prompts(s)]
    rows = defaultdict(list)
    for i, (p, img) in enumerate(random_images(prompts, per_prompt=40, resolution=64)):
        spec = Scene.from_json(p["spec"])
        for check, (ok, chance) in score_scene_image(spec, img).items():
            r = {"prompt_id": f"{p['prompt_id']}/{i}", "passed": ok, "chance": chance}  # images are independent
            rows[(p["suite"], p["category"], check_name(check))].append(r)
            rows[(p["suite"], "all", check_name(check))].append(r)
    assert len(rows) > 40
    for key, rs in rows.items():  # 99% per check of a suite; 99.9% per category (~60 rows: no fluke fails)
        (lo, hi), _, _ = clustered_wilson(rs, z=2.576 if key[1] == "all" else 3.29)
        chance = sum(r["chance"] for r in rs) / len(rs)
        assert lo <= chance <= hi, (key, sum(r["passed"] for r in rs) / len(rs), chance, (lo, hi))
