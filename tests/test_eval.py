import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.fid import fid_is, frechet_distance, save_random_inception
from dalle_eval.probes import make_prompts, score_samples, summarise, wilson
from dalle_eval.shapes import Scene, place, render


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_inception(tmp_path_factory.mktemp("inc") / "inception.pth")


def _images(folder, seed, n=12, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size, 3)) * (80 if seed else 255)).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def test_frechet_distance_closed_form():
    mu, s = np.zeros(3), np.eye(3)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(mu, s, mu + 1, 4 * s) == pytest.approx(3 + 3 + 12 - 2 * 3 * 2)


def test_frechet_distance_paths_agree():
    """Symmetric-eigh FID, the low-rank (N < d) path and scipy's sqrtm give the same number."""
    from scipy import linalg

    from dalle_eval.fid import frechet_distance_to_features, gaussian_stats

    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((300, 64)), rng.standard_normal((20, 64)) * 1.3 + 0.2
    (m1, s1), (m2, s2) = gaussian_stats(real), gaussian_stats(fake)
    ref = float((m1 - m2) @ (m1 - m2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance_to_features(m1, s1, fake) == pytest.approx(ref, rel=1e-6)  # 20 < 64 / 2: low rank
    assert frechet_distance_to_features(m2, s2, real) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-9)


@pytest.mark.slow  # two FID implementations over the same images: ~9 s
def test_fid_self_zero_other_positive_and_matches_torchmetrics(tmp_path, inception):
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _images(tmp_path / "a", 0, n=8), _images(tmp_path / "b", 1, n=8)
    same = fid_is(a, a, inception, batch=6, progress=False)
    diff = fid_is(a, b, inception, batch=6, progress=False)
    assert abs(same["fid"]) < 1e-3 and diff["fid"] > 1.0
    ref = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception), antialias=False)
    load = lambda ps: torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in ps])).permute(0, 3, 1, 2)
    ref.update(load(a), real=True)
    ref.update(load(b), real=False)
    assert diff["fid"] == pytest.approx(float(ref.compute()), rel=1e-3)


def test_features_come_from_torch_fidelitys_public_extractor(tmp_path, inception):
    """inception_features runs torch-fidelity's FeatureExtractorInceptionV3 through its public forward: pool features
    and unbiased logits of one pass, equal to that network's own outputs (the random test weights load into it)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from dalle_eval.fid import image_batches, inception_features, load_inception

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(inception))
    paths = _images(tmp_path / "a", 0, n=5)
    feats, logits = inception_features(net, image_batches(paths, 3), progress=False)
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).permute(0, 3, 1, 2)
    with torch.no_grad():
        want_f, want_l = net(x.contiguous())
    assert feats.shape == (5, 2048) and logits.shape == (5, 1008)
    np.testing.assert_allclose(feats, want_f.double().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits.numpy(), want_l.double().numpy(), rtol=1e-5, atol=1e-5)
    ours = load_inception(inception)
    assert type(ours) is FeatureExtractorInceptionV3 and ours.features_list == ["2048", "logits_unbiased"]


def test_fid_module_uses_no_mock_and_no_private_api():
    """Production code: no unittest.mock, no private attributes of other libraries (torchmetrics' _torch_fidelity_forward)."""
    import ast
    import inspect

    import dalle_eval.fid

    tree = ast.parse(inspect.getsource(dalle_eval.fid))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("unittest")]
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and not n.attr.endswith("__") and not (isinstance(n.value, ast.Name) and n.value.id == "self")]
    assert not private


def test_unreadable_image_is_named(tmp_path, inception):
    from dalle_eval.errors import DalleEvalError

    a = _images(tmp_path / "a", 0, n=4)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DalleEvalError, match="broken.png: unreadable image"):
        fid_is(a, a[:3] + [bad], inception, progress=False)


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0


def _samples_dir(folder, prompts, scramble=False):
    """An oracle generator: render each prompt's ground-truth scene (optionally with colours swapped)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows = []
    for p in prompts:
        spec = Scene.from_json(p["spec"])
        if scramble and len(spec.objects) >= 2:
            objs = list(spec.objects)
            colours = [o.colour for o in objs]
            colours = colours[1:] + colours[:1]
            spec = Scene(spec.kind, tuple(type(o)(o.shape, c, o.size) for o, c in zip(objs, colours)), spec.relation)
        name = f"{p['prompt_id']}_0.png"
        render(place(spec, rng), 64).save(folder / name)
        rows.append({"prompt_id": p["prompt_id"], "index": 0, "caption": p["caption"], "file": name})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_oracle_scores_high_and_scrambled_binding_fails(tmp_path):
    prompts = make_prompts("attributes") + make_prompts("binding")
    rows = _samples_dir(tmp_path / "oracle", prompts)
    table = summarise(score_samples(prompts, rows, tmp_path / "oracle"))
    for r in table:
        if r["split"] == "all":
            assert r["accuracy"] >= 0.98, r
    rows = _samples_dir(tmp_path / "scrambled", prompts, scramble=True)
    table = summarise(score_samples(prompts, rows, tmp_path / "scrambled"))
    acc = {(r["suite"], r["category"], r["check"]): r["accuracy"] for r in table if r["split"] == "all"}
    assert acc[("attributes", "single", "colour")] >= 0.98  # single objects are untouched
    assert acc[("binding", "relation", "image")] <= 0.1  # swapped colours break every binding


def test_cli_chain_end_to_end(tmp_path, transformer_ckpt, shapes_data, inception):
    """sample -> probes -> coco-fid through the CLI on the tiny checkpoint."""
    fast = ["--set", "sample.batch_size=8", "--set", "eval.n_captions=6", "--set", "eval.fid_batch=6", "--set", "eval.blur_radii=[0]",
            "--set", "eval.probe_samples=1"]
    run = CliRunner().invoke
    r = run(main, ["sample", "--ckpt", str(transformer_ckpt), "--caption", "a small red circle", "--n", "3",
                   "--out", str(tmp_path / "s"), *fast])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    assert [x["file"] for x in rows] == ["0_0.png", "0_1.png", "0_2.png"]
    assert Image.open(tmp_path / "s" / "0_0.png").size == (64, 64) and (tmp_path / "s" / "grid.png").exists()
    # resumable: a second run generates nothing new
    r = run(main, ["sample", "--ckpt", str(transformer_ckpt), "--caption", "a small red circle", "--n", "3",
                   "--out", str(tmp_path / "s"), *fast])
    assert len((tmp_path / "s" / "samples.jsonl").read_text().splitlines()) == 3

    r = run(main, ["probes", "--suite", "attributes", "--ckpt", str(transformer_ckpt), "--out", str(tmp_path / "p"), *fast])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["n_images"] == len(make_prompts("attributes")) and "chance" in (tmp_path / "p" / "report.md").read_text()

    r = run(main, ["coco-fid", "--coco", str(shapes_data / "coco"), "--ckpt", str(transformer_ckpt),
                   "--out", str(tmp_path / "f"), "--inception-weights", str(inception), *fast])
    assert r.exit_code == 0, r.output
    fid = json.loads((tmp_path / "f" / "report.json").read_text())
    assert fid["protocol"]["n_real_images"] == fid["protocol"]["n_generated"] == 6 and fid["fid"] > 0

    r = run(main, ["probes", "--suite", "raven", "--images", str(tmp_path / "p" / "samples"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "nothing to score for the raven suite" in r.output


def test_cli_image_completion(tmp_path, transformer_ckpt):
    from dalle_eval.shapes.scene import Obj

    scene = place(Scene("single", (Obj("square", "blue", "large"),)), random.Random(0))
    render(scene, 96).save(tmp_path / "scene.png")  # any size: center-cropped and resized to the dVAE's
    base = ["sample", "--ckpt", str(transformer_ckpt), "--caption", "a large blue square", "--n", "2",
            "--image", str(tmp_path / "scene.png")]
    r = CliRunner().invoke(main, base + ["--keep-rows", "4", "--out", str(tmp_path / "rows")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, base + ["--region", "5,6", "--out", str(tmp_path / "region")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "region" / "sample_config.json").read_text())["region"] == [5, 6]
    r = CliRunner().invoke(main, base + ["--region", "5", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "expected two integers" in r.output
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "exactly one of --keep-rows" in r.output


def test_clip_rerank_keeps_the_best_candidates(tmp_path, transformer_ckpt, tiny_clip):
    from dalle_eval.model.clip import ClipScorer

    model_cfg, weights = tiny_clip
    base = ["sample", "--ckpt", str(transformer_ckpt), "--caption", "a small red circle", "--set", "sample.batch_size=8"]
    assert CliRunner().invoke(main, base + ["--n", "4", "--out", str(tmp_path / "all")]).exit_code == 0
    r = CliRunner().invoke(main, base + ["--rerank", "4", "--keep", "2", "--clip-model", str(model_cfg),
                                         "--clip-pretrained", str(weights), "--out", str(tmp_path / "best")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "best" / "samples.jsonl").read_text().splitlines()]
    assert [x["rank"] for x in rows] == [0, 1] and all(x["rerank"] == 4 for x in rows)
    assert rows[0]["clip_score"] >= rows[1]["clip_score"]
    # the candidates are the plain samples 0..3 (same seeds): the kept two are the two best by CLIP
    scorer = ClipScorer(str(model_cfg), str(weights))
    images = [Image.open(tmp_path / "all" / f"0_{j}.png").convert("RGB") for j in range(4)]
    scores = scorer.scores(images, ["a small red circle"] * 4)
    best = scores.argsort(descending=True)[:2].tolist()
    assert [x["candidate"] for x in rows] == best
    assert rows[0]["clip_score"] == pytest.approx(float(scores[best[0]]), abs=1e-5)
    kept = (tmp_path / "best" / "0_0.png").read_bytes()
    assert kept == (tmp_path / "all" / f"0_{best[0]}.png").read_bytes()


def test_clip_tag_offline_fails_fast(monkeypatch):
    from dalle_eval.model.clip import ClipScorer

    from dalle_eval.errors import DalleEvalError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DalleEvalError, match="clip-pretrained|file not found"):
        ClipScorer("RN50", "/nonexistent/weights.pt")
