"""The translation suite (issue 17 §1): two-panel scenes render and parse panel by panel at 64 px and up; an oracle
passes, a copy of the top passes identity only, the random generator sits at chance and a generator that ignores
the top fails count and position; the likelihood scorer's prefix reuse equals plain scoring; completion, export
and score run end to end; training probes pick the suite up; the training arm leaves default data byte for byte
and never draws a held-out transform."""

import hashlib
import io
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dalle_eval.model.sampling import score
from dalle_eval.pipelines.shapes_source import _scene, training_caption, write_shapes_shards
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.config import apply_overrides, load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import png_bytes
from dalle_eval.probe_run import run_probes
from dalle_eval.probes import chance_within_ci, make_prompts, resolve_suites
from dalle_eval.probes.chance import random_images
from dalle_eval.probes.in_training import TransformerProbe, probe_subset
from dalle_eval.probes.likelihood import ProbeModel, TranslationLikelihood, panel_rows
from dalle_eval.probes.translation import alternatives, copy_canvas, translation_checks
from dalle_eval.shapes import COLOURS, HELDOUT, SHAPES, SIZES, render, sample_scene
from dalle_eval.shapes.panels import (
    LEVELS,
    TRAINED,
    TRANSFORMS,
    Translation,
    apply,
    parse_panels,
    placed,
    render_panels,
)
from dalle_eval.shapes.scene import BACKGROUND
from dalle_eval.shards import iter_raw_samples
from tests.samples_dir import samples_dir

PROMPTS = make_prompts("translation")


def _spec(p: dict) -> Translation:
    return Translation.from_json(p["spec"])


def _rows(report: dict, scorer: str = "parser") -> dict:
    return {(r["category"], r["check"]): r for r in report["table"]
            if r["scorer"] == scorer and r["split"] == "all" and r["suite"] == "translation"}


# --------------------------------------------------------------------------- scenes, prompts


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_each_panel_parses_back_to_its_objects(resolution):
    for p in PROMPTS:
        spec = _spec(p)
        top, bottom = parse_panels(render_panels(spec, resolution))
        assert sorted(o.attrs for o in top) == sorted(o.attrs for o in spec.top), p["prompt_id"]
        assert sorted(o.attrs for o in bottom) == sorted(o.attrs for o in spec.bottom()), p["prompt_id"]
        assert all(o.y1 <= 0.5 for o in top) and all(o.y0 >= 0.5 for o in bottom)


def test_panels_split_at_the_middle_token_row_at_64_px():
    """At 64 px (8x8 tokens of 8 px) the top panel is token rows 0-3 with the divider in row 3's last pixel row;
    the context image a completion starts from is background below it."""
    for p in PROMPTS:
        spec = _spec(p)
        full = np.asarray(render_panels(spec, 64)).astype(int)
        context = np.asarray(render_panels(spec, 64, ()))
        assert (full[:32] == context[:32]).all() and (context[32:] == BACKGROUND).all()
        assert (full[31] == full[31, 0]).all() and tuple(full[31, 0]) != BACKGROUND  # the divider line
        assert (full[:31] != BACKGROUND).any() and (full[32:] != BACKGROUND).any()
    with pytest.raises(DalleEvalError, match="the resolution must be even, got 65"):
        render_panels(_spec(PROMPTS[0]), 65)
    with pytest.raises(DalleEvalError, match="needs an even token grid, this checkpoint's is 7x7"):
        panel_rows(7)


def test_the_suite_prompts():
    assert len(PROMPTS) == 60 and Counter(p["category"] for p in PROMPTS) == {t: 10 for t in TRANSFORMS}
    assert json.dumps(PROMPTS) == json.dumps(make_prompts("translation")) != json.dumps(make_prompts("translation", 1))
    captions = {p["category"]: p["caption"] for p in PROMPTS}
    assert captions["identity"] == "the exact same shapes on the top and on the bottom"
    assert captions["mirrored"] == "the exact same shapes on the top but mirrored on the bottom"
    for p in PROMPTS:
        spec = _spec(p)
        assert p["caption"] == spec.caption() and not p["heldout"] and Translation.from_json(spec.to_json()) == spec
        assert p["groups"] == ["all", p["category"], "training-arm:" + ("trained" if p["category"] in TRAINED else "new")]
        if p["category"] in ("recolour", "resize", "reshape"):
            said = spec.value[0] + ("s" if p["category"] == "reshape" else "")  # "red", "large", "circles"
            assert p["caption"] == f"the exact same shapes on the top but {said} on the bottom"
        if p["category"] != "identity":  # the transform changes every object it touches: a copy is wrong
            assert [o.attrs for o in spec.bottom()] != [o.attrs for o in spec.top] or p["category"] == "mirrored"
            assert not translation_checks(spec, *parse_panels(copy_canvas(spec, 64)))["translation"]
    assert "translation" not in resolve_suites("all") and resolve_suites("translation") == ["translation"]
    assert not any(p["suite"] == "translation" for p in make_prompts("all"))


@pytest.mark.parametrize("bad, match", [
    ({"transform": "rotate"}, "unknown transform 'rotate'; known: identity, recolour"),
    ({"value": ["pink"]}, r"transform recolour takes 1 value\(s\) of red, green"),
    ({"value": []}, r"transform recolour takes 1 value\(s\)"),
    ({"top": []}, "a translation top panel holds 1-3 objects, got 0"),
])
def test_bad_specs_are_clear_errors(bad, match):
    spec = next(p["spec"] for p in PROMPTS if p["category"] == "recolour")
    with pytest.raises(DalleEvalError, match=match):
        Translation.from_json({**spec, **bad})


# --------------------------------------------------------------------------- validity


def _ignore_the_top(p: dict, rng: random.Random, resolution: int = 64):
    """A generator that reads the caption but not the top panel: 1-3 random objects in random columns, with the
    caption's transform applied to each (the new colour, size or shape; colour swaps and mirrors need the top)."""
    spec = _spec(p)
    objs = placed(rng, [(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)))
                        for _ in range(rng.randint(1, 3))])
    if spec.transform in LEVELS:
        objs = tuple(apply(spec.transform, spec.value, o) for o in objs)
    else:
        objs = tuple(apply("identity", (), o) for o in objs)
    return render_panels(spec, resolution, objs)


@pytest.fixture(scope="module")
def validity(tmp_path_factory, fast_cfg) -> dict:
    """Reports of run_probes --images on the oracle, copy-the-top, random and ignore-the-top generators."""
    tmp = tmp_path_factory.mktemp("validity")
    rng = random.Random(0)
    draws = {
        "oracle": ((p, render_panels(_spec(p), 64)) for p in PROMPTS for _ in range(2)),
        "copy": ((p, copy_canvas(_spec(p), 64)) for p in PROMPTS),
        "random": random_images(PROMPTS, per_prompt=4, resolution=64, seed=7),
        "ignore": ((p, _ignore_the_top(p, rng)) for p in PROMPTS for _ in range(4)),
    }
    return {name: run_probes("translation", tmp / name, fast_cfg, images=samples_dir(tmp / f"s-{name}", images),
                             progress=False) for name, images in draws.items()}


def test_oracle_passes(validity):
    rows = _rows(validity["oracle"])
    assert rows[("all", "translation")]["accuracy"] >= 0.99 and rows[("all", "translation")]["n"] == 120
    for (category, check), row in rows.items():
        if check != "copied":
            assert row["accuracy"] == 1.0, row
    assert rows[("identity", "copied")]["accuracy"] == 1.0 and rows[("recolour", "copied")]["accuracy"] == 0.0
    table = {(r["transform"], r["check"]): r for r in validity["oracle"]["translation"]}
    assert table[("all", "translation")]["oracle"] == 1.0 and table[("identity", "translation")]["copy"] == 1.0
    assert table[("resize", "translation")]["copy"] == 0.0 and table[("all", "translation")]["random"] < 0.02
    md = (Path(validity["oracle"]["samples_dir"]).parent / "oracle" / "report.md").read_text()
    assert "## translation — against its baselines" in md and "| all | translation | 120 | 100.0% |" in md


def test_copy_the_top_passes_identity_only(validity):
    rows = _rows(validity["copy"])
    assert rows[("identity", "translation")]["accuracy"] == 1.0 and rows[("all", "copied")]["accuracy"] == 1.0
    for t in TRANSFORMS[1:]:
        row = rows[(t, "translation")]
        assert row["accuracy"] == 0.0 and chance_within_ci(row), row  # at chance: a random bottom is right as rarely
        assert rows[(t, "count")]["accuracy"] == 1.0  # it fails the transform, not the count
        if t != "mirrored":
            assert rows[(t, "transform")]["accuracy"] == 0.0 and rows[(t, "unchanged")]["accuracy"] == 1.0


def test_random_generator_at_chance(validity):
    """Every check the random generator passes often enough to measure in 240 images sits at its chance level;
    the rare ones (all-or-nothing, copied: chance < 1% per image) stay rare."""
    rows = [r for r in _rows(validity["random"]).values()]
    assert len(rows) > 25 and all(row["random"] is not None for row in rows)
    for row in rows:
        assert chance_within_ci(row) if row["chance"] >= 0.05 else row["accuracy"] <= 0.05, row
    assert sum(row["chance"] >= 0.05 for row in rows) > 20


def test_ignoring_the_top_fails_count_and_position(validity):
    ignore, oracle = _rows(validity["ignore"]), _rows(validity["oracle"])
    for check in ("count", "position", "translation"):
        row = ignore[("all", check)]
        assert row["ci95"][1] < 0.7 < oracle[("all", check)]["accuracy"], row
    assert ignore[("all", "count")]["ci95"][0] < 1 / 3 < ignore[("all", "count")]["ci95"][1]  # 1-3 objects at random
    recolour = ignore[("recolour", "transform")]  # it reads the caption: where it put an object, red is red
    assert recolour["ci95"][0] > 3 * recolour["chance"], recolour


# --------------------------------------------------------------------------- likelihood, completion, export


def test_alternatives_are_distinct_bottoms():
    for p in PROMPTS:
        alts = alternatives(_spec(p))
        kinds = [k for k, _ in alts]
        assert kinds[0] == "truth" and p["category"] not in kinds and len(set(kinds)) == len(kinds) >= 4
        assert ("copy" in kinds) == (p["category"] != "identity")


def test_likelihood_prefix_reuse_equals_plain_scoring(fast_cfg, transformer_ckpt):
    pm = ProbeModel.load(transformer_ckpt)
    lik = TranslationLikelihood(PROMPTS[::7], pm, batch=16)
    g = pm.grid
    assert (lik.codes[:, :, : g // 2] == lik.codes[:, :1, : g // 2]).all()  # one top for every candidate
    results = [r for r in lik() if r["check"] == "ranked_first"]
    for k, r in enumerate(results):
        n = len(lik.kinds[k])
        _, plain = score(pm.model, lik.text[k : k + 1].expand(n, -1), lik.codes[k, :n], lik.region)
        got = [r["logp"], *r["alternatives"].values()]
        assert torch.allclose(plain, torch.tensor(got), atol=1e-3), (plain, got)
        assert r["chance"] == 1 / n


def test_completion_likelihood_and_ceiling_end_to_end(tmp_path, fast_cfg, transformer_ckpt):
    r = run_probes("translation", tmp_path / "run", fast_cfg, ckpt=transformer_ckpt, progress=False)
    assert r["suites"] == ["translation"] and r["n_images"] == 60 * fast_cfg.eval.probe_samples
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples" / "samples.jsonl").read_text().splitlines()]
    assert {s["completion"] for s in samples} == {"translation bottom panel"}
    assert Image.open(tmp_path / "run" / "samples" / samples[0]["file"]).size == (64, 64)
    for scorer, check in (("parser", "translation"), ("likelihood", "ranked_first"), ("likelihood", "vs_copy"),
                          ("dvae_ceiling", "translation")):
        assert ("all", check) in _rows(r, scorer), (scorer, check)
    assert 1 / 6 <= _rows(r, "likelihood")[("all", "ranked_first")]["chance"] <= 1 / 4
    assert r["translation"] and {x["transform"] for x in r["translation"]} >= set(TRANSFORMS)
    assert "## translation — against its baselines" in (tmp_path / "run" / "report.md").read_text()


def test_export_and_score_another_generator(tmp_path):
    out = tmp_path / "x" / "prompts.jsonl"
    res = CliRunner().invoke(main, ["probes", "export", "--suite", "translation", "--resolution", "128", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "translation context images (give)" in " ".join(res.output.split())
    given = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(given) == 60 and all(set(g) == {"prompt_id", "suite", "category", "caption", "context_image",
                                              "image_size", "answer_box", "region"} for g in given)
    assert given[0]["answer_box"] == [0, 64, 128, 128] and given[0]["region"] == [0.0, 0.5]
    folder = out.parent / "prompts_translation"
    assert sorted(f.name for f in folder.iterdir()) == sorted(f"{g['prompt_id']}.png" for g in given)
    for g in given:  # the context: the top panel as the spec draws it, nothing in the box
        context = np.asarray(Image.open(out.parent / g["context_image"]))
        assert (context[64:] == BACKGROUND).all() and (context[:64] != BACKGROUND).any()
    key = {k["prompt_id"]: k for k in map(json.loads, (out.parent / "prompts_key" / "prompts.jsonl").read_text().splitlines())}
    assert "foils" not in next(iter(key.values()))
    theirs = samples_dir(tmp_path / "theirs", ((g, render_panels(_spec(key[g["prompt_id"]]), 128)) for g in given))
    res = CliRunner().invoke(main, ["probes", "score", "--suite", "translation", "--images", str(theirs),
                                    "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "translation/parser/translation 100.0%" in " ".join(res.output.split())
    res = CliRunner().invoke(main, ["probes", "export", "--suite", "translation", "--resolution", "32", "--out", str(out)])
    assert res.exit_code == 1 and "translation context images need an even size >= 64 px" in res.output


def test_training_probes_pick_the_suite_up(fast_cfg, transformer_ckpt):
    cfg = apply_overrides(fast_cfg, ["train.probe_prompts=5"])
    prompts = [p for p in probe_subset(cfg) if p["suite"] == "translation"]
    assert len(prompts) == 5
    model = ProbeModel.load(transformer_ckpt).model
    records = TransformerProbe(cfg, transformer_ckpt, model, prompts)()
    assert {(r["suite"], r["check"]) for r in records} >= {("translation", "ranked_first"), ("translation", "vs_copy")}


# --------------------------------------------------------------------------- training arm: data.translation_fraction


def test_default_training_data_is_byte_identical(tmp_path):
    """data.translation_fraction off (the default): the seed-0 captions pinned in test_paraphrase.py, and the
    same scenes as before the arm."""
    cfg = load_config(["tiny"])
    assert cfg.data.translation_fraction == 0.0
    captions = [training_caption(_scene(0, i, cfg.data.translation_fraction), 0, i) for i in range(200)]
    assert hashlib.sha256("\n".join(captions).encode()).hexdigest() == \
        "f50c0ea06f7dd58cd99a34c2947241673673b6be35437640b940e004802e1c1c"
    assert all(_scene(0, i) == sample_scene(random.Random(f"0-{i}")) for i in range(200))
    rows = write_shapes_shards(tmp_path / "a", 20, 64, 10, 0)
    again = write_shapes_shards(tmp_path / "b", 20, 64, 10, 0, translation_fraction=0.0)
    assert rows == again
    for name in ("shard-000000.tar", "shard-000001.tar"):  # every sample's files byte for byte (tar headers hold times)
        assert list(iter_raw_samples(tmp_path / "a" / name)) == list(iter_raw_samples(tmp_path / "b" / name))
    first = dict(iter_raw_samples(tmp_path / "a" / "shard-000000.tar"))["000000000"]
    assert first["png"] == png_bytes(render(sample_scene(random.Random("0-0")), 64))


def test_translation_arm_trains_identity_and_recolour_only(tmp_path):
    kinds, n = Counter(), 3000
    for i in range(n):
        scene = _scene(0, i, 0.25)
        if isinstance(scene, Translation):
            kinds[scene.transform] += 1
            assert not any((o.colour, o.shape) in HELDOUT for o in (*scene.top, *scene.bottom()))
            assert training_caption(scene, 0, i, scramble="colour") == scene.caption()
    assert set(kinds) == set(TRAINED) and 0.22 < sum(kinds.values()) / n < 0.28, kinds
    rows = write_shapes_shards(tmp_path / "t", 40, 64, 40, 0, translation_fraction=0.5)
    pairs = [files for _, files in iter_raw_samples(tmp_path / "t" / "shard-000000.tar")]
    two_panel = [s for s in pairs if json.loads(s["json"])["scene"].get("kind") == "translation"]
    assert 10 < len(two_panel) < 30 and [r["caption"] for r in rows] == [s["txt"].decode() for s in pairs]
    for s in two_panel:
        spec = Translation.from_json(json.loads(s["json"])["scene"])
        _, bottom = parse_panels(Image.open(io.BytesIO(s["png"])))
        assert sorted(o.attrs for o in bottom) == sorted(o.attrs for o in spec.bottom()) and s["txt"].decode() == spec.caption()
    with pytest.raises(DalleEvalError, match=r"data.translation_fraction: must be in \[0, 1\], got 1.5"):
        load_config(["tiny"], ["data.translation_fraction=1.5"])
