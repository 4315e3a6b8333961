"""The paraphrase suite (issue 17 §2): every phrasing round-trips to its spec, the suite's prompts share specs
across phrasings with foils in their own phrasing, an oracle passes every phrasing and the random generator
sits at chance, the likelihood figures and the CLI run end to end, and the training arm leaves the default
captions byte for byte and never writes a held-out phrasing."""

import hashlib
import json
import random
import typing
from collections import Counter, defaultdict

import pytest
from click.testing import CliRunner
from dalle_eval.pipelines.shapes_source import _scene, training_caption

from dalle_eval.cli import main
from dalle_eval.config import Phrasing, apply_overrides, load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.probe_run import run_probes
from dalle_eval.probes import chance_within_ci, foils_for, make_prompts, resolve_suites
from dalle_eval.probes.chance import random_images
from dalle_eval.probes.in_training import probe_subset
from dalle_eval.probes.paraphrase import kendall_w
from dalle_eval.probes.suites import PARAPHRASE_KINDS, _binding_spec
from dalle_eval.shapes import Obj, Scene, caption, place, render, sample_spec
from dalle_eval.shapes.phrasing import (
    CONVERSE,
    FAMILIES,
    KIND_FAMILIES,
    families,
    normalise,
    phrase,
    spec_from_phrasing,
)
from tests.samples_dir import samples_dir


def _specs() -> list[Scene]:
    """Many seeded specs: the suite's binding kinds (2-4 objects) and the training distribution's."""
    rng = random.Random(0)
    suite = [_binding_spec(rng, kind, n) for kind, n in (("multi", 2), ("multi", 3), ("multi", 4), ("relation", 2),
                                                         ("stack", 2)) for _ in range(200)]
    training = [s for s in (sample_spec(random.Random(i)) for i in range(3000)) if s.kind in KIND_FAMILIES]
    return suite + training


def test_every_phrasing_round_trips_to_its_spec():
    texts: dict[str, Scene] = {}
    for spec in _specs():
        phrasings = {f: phrase(spec, f) for f in families(spec)}
        assert 5 <= len(phrasings) <= 6 and len(set(phrasings.values())) == len(phrasings), phrasings
        assert phrasings["canonical"] == phrase(spec, "canonical") and next(iter(phrasings)) == "canonical"
        for family, text in phrasings.items():
            assert spec_from_phrasing(text) == normalise(spec), (family, text)
            assert spec_from_phrasing(text.upper().replace(" ", "  ")) == normalise(spec)  # case and spacing
            assert texts.setdefault(text, normalise(spec)) == normalise(spec), text  # one text, one scene
    # the normal form forgets what the scene does not fix: object order (multi), the direction of a relation
    a, b, c = Obj("square", "red", "small"), Obj("circle", "blue", "large"), Obj("triangle", "green", "small")
    assert normalise(Scene("multi", (a, b, c))) == normalise(Scene("multi", (c, a, b)))
    for rel, conv in CONVERSE.items():
        assert normalise(Scene("relation", (a, b), rel)) == normalise(Scene("relation", (b, a), conv))
    assert normalise(Scene("stack", (a, b), "on")) != normalise(Scene("stack", (b, a), "on"))  # a stack has an order
    assert normalise(Scene("relation", (a, b), "above")) != normalise(Scene("relation", (a, b), "below"))
    assert set(typing.get_args(Phrasing)) == set(FAMILIES) - {"canonical"}  # data.paraphrase.heldout's values


def test_examples_of_each_family():
    red, blue = Obj("square", "red", "small"), Obj("circle", "blue", "large")
    relation = Scene("relation", (red, blue), "above")
    assert phrase(relation, "converse") == "a large blue circle below a small red square"
    assert phrase(relation, "clause") == "the small red square is above the large blue circle"
    assert phrase(relation, "synonyms") == "a little red box over a big blue disc"
    stack = Scene("stack", (Obj("square", "red", "small"), Obj("square", "blue", "large")), "on")
    assert phrase(stack, "bottom-up") == "a stack of two blocks: a large blue block at the bottom and a small red block on top"
    assert phrase(stack, "numerals") == "a stack of 2 blocks: a large blue block at the bottom and a small red block on top"
    multi = Scene("multi", (red, blue, Obj("triangle", "green", "small")))
    assert phrase(multi, "there-is") == ("there are three shapes: a small red square, a large blue circle and a small "
                                         "green triangle")
    assert phrase(multi, "numerals") == phrase(multi, "there-is").replace("three", "3")  # numerals vs words only
    assert phrase(multi, "clause").startswith("a square that is small and red, a circle that is large and blue and ")


@pytest.mark.parametrize("text", ["a purple elephant", "there are three shapes: a small red square and a large blue circle",
                                  "a stack of three blocks: a large blue block at the bottom and a small red block on top",
                                  "a small red square above", ""])
def test_unreadable_phrasings_are_one_clear_error(text):
    with pytest.raises(DalleEvalError, match="cannot read .* as a phrasing of a multi, relation or stack scene"):
        spec_from_phrasing(text)


def test_phrasings_that_do_not_apply_are_refused():
    relation = Scene("relation", (Obj("square", "red", "small"), Obj("circle", "blue", "large")), "above")
    with pytest.raises(DalleEvalError, match="phrasing 'bottom-up' does not apply to a relation scene; its phrasings: "
                                             "canonical, converse"):
        phrase(relation, "bottom-up")
    with pytest.raises(DalleEvalError, match="no phrasings for scene kind 'single'"):
        families(Scene("single", (Obj("square", "red", "small"),)))


def test_suite_prompts_share_a_spec_across_phrasings():
    prompts = make_prompts("paraphrase")
    by_spec = defaultdict(list)
    for p in prompts:
        by_spec[p["spec_id"]].append(p)
    assert len(by_spec) == sum(k for _, _, k in PARAPHRASE_KINDS.values()) == 32 and len(prompts) == 184
    for spec_id, ps in by_spec.items():
        spec = Scene.from_json(ps[0]["spec"])
        assert [p["phrasing"] for p in ps] == list(families(spec)) and all(p["spec"] == ps[0]["spec"] for p in ps)
        foil_kinds = []
        for p in ps:
            assert p["suite"] == "paraphrase" and p["prompt_id"] == f"{spec_id}-{p['phrasing']}"
            assert p["groups"] == ["all", p["category"], f"phrasing:{p['phrasing']}"]
            assert p["caption"] == phrase(spec, p["phrasing"]) and spec_from_phrasing(p["caption"]) == normalise(spec)
            foils = foils_for(p)
            foil_kinds.append([f["kind"] for f in foils])
            for f in foils:  # written in the prompt's phrasing: they differ from the truth in the scene only
                assert f["caption"] == phrase(Scene.from_json(f["spec"]), p["phrasing"])
                assert spec_from_phrasing(f["caption"]) == normalise(Scene.from_json(f["spec"])) != normalise(spec)
        assert all(k == foil_kinds[0] for k in foil_kinds) and foil_kinds[0], spec_id  # aligned across phrasings
    assert json.dumps(prompts) == json.dumps(make_prompts("paraphrase")) != json.dumps(make_prompts("paraphrase", 1))
    assert not any(p["suite"] == "paraphrase" for p in make_prompts("all"))  # asked for by name
    assert resolve_suites("paraphrase") == ["paraphrase"] and "paraphrase" not in resolve_suites("all")
    binding_ids = {p["prompt_id"] for s in ("attributes", "binding") for p in make_prompts(s)}
    assert not binding_ids & {p["prompt_id"] for p in prompts}


def _figures(report: dict, scorer: str = "parser") -> dict:
    return {(r["metric"], r["phrasing"]): r for r in report["paraphrase"] if r["scorer"] == scorer}


def test_oracle_passes_every_phrasing(tmp_path, fast_cfg):
    prompts = make_prompts("paraphrase")
    oracle = ((p, render(place(Scene.from_json(p["spec"]), random.Random(p["prompt_id"])), 64)) for p in prompts)
    r = run_probes("paraphrase", tmp_path / "o", fast_cfg, images=samples_dir(tmp_path / "s", oracle), progress=False)
    assert r["n_images"] == len(prompts) and r["suites"] == ["paraphrase"]
    rows = [x for x in r["table"] if x["split"] == "all"]
    assert all(x["accuracy"] == 1.0 for x in rows), [x for x in rows if x["accuracy"] < 1]
    assert {x["category"] for x in rows} >= {f"phrasing:{f}" for f in FAMILIES} | set(PARAPHRASE_KINDS)
    fig = _figures(r)
    for family in FAMILIES:
        row = fig[("accuracy", family)]
        assert row["value"] == row["oracle"] == 1.0 and row["random"] < 0.05 and row["chance"] < 0.002, row
    assert fig[("consistency", None)]["value"] == 1.0 and fig[("consistency", None)]["chance"] < 1e-9
    assert fig[("no correct interpretation", None)]["value"] == 0.0
    assert fig[("no correct interpretation", None)]["chance"] > 0.99 and fig[("consistency", None)]["specs"] == 32
    assert fig[("accuracy", "converse")]["specs"] == 8 and fig[("accuracy", "canonical")]["specs"] == 32
    assert [k for k in fig if k[0] == "worst phrasing"] == [("worst phrasing", "canonical")]  # a tie: the first
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## paraphrase — consistency across phrasings" in md and "| parser | no correct interpretation |  | 0.0% |" in md


def test_random_generator_at_chance(tmp_path, fast_cfg):
    """Images of the suite's random generator (text ignored), rendered and parsed, score at the stated chance on
    every check and every phrasing, and no phrasing of almost any spec is right."""
    prompts = make_prompts("paraphrase")
    folder = samples_dir(tmp_path / "s", random_images(prompts, per_prompt=2, resolution=64, seed=7))
    r = run_probes("paraphrase", tmp_path / "o", fast_cfg, images=folder, progress=False)
    rows = [x for x in r["table"] if x["split"] == "all" and (x["category"] == "all" or x["check"] == "image")]
    assert len(rows) > 15
    for row in rows:
        assert chance_within_ci(row), row
    fig = _figures(r)
    nothing = fig[("no correct interpretation", None)]
    assert nothing["value"] > 0.9 and abs(nothing["value"] - nothing["chance"]) < 0.05, nothing
    assert fig[("consistency", None)]["value"] in (None, 0.0)  # the canonical phrasing (almost) never passes


def test_kendall_w():
    assert kendall_w([[1.0, 2.0, 3.0]] * 4) == pytest.approx(1.0)
    assert kendall_w([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]) == pytest.approx(0.0)
    assert kendall_w([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0]]) == pytest.approx(0.75)


def test_likelihood_figures_and_ranking_agreement(tmp_path, fast_cfg, transformer_ckpt):
    r = run_probes("paraphrase", tmp_path / "l", fast_cfg, ckpt=transformer_ckpt, scorers=("likelihood",),
                   progress=False)
    fig = _figures(r, "likelihood")
    assert {("accuracy", f) for f in FAMILIES} <= set(fig) and fig[("consistency", None)]["specs"] == 32
    agree = fig[("ranking agreement", None)]
    assert 0.0 <= agree["value"] <= 1.0 and agree["specs"] == 32 and agree["random"] is None
    assert agree["chance"] == pytest.approx((16 / 6 + 8 / 5 + 8 / 6) / 32)  # mean 1/m: 6 phrasings or 5 (relations)
    first = [x for x in r["table"] if (x["scorer"], x["category"], x["check"], x["split"]) ==
             ("likelihood", "phrasing:converse", "ranked_first", "all")]
    assert first and first[0]["n"] == 8 and 1 / 5 <= first[0]["chance"] < 1 / 3  # 2-4 foils a relation
    assert _figures(r, "dvae_ceiling")[("accuracy", "canonical")]["value"] is not None
    assert "paraphrase — consistency across phrasings" in (tmp_path / "l" / "report.md").read_text()


def test_export_and_score_another_generator(tmp_path):
    """`probes export --suite paraphrase` gives captions only; `probes score` of images drawn from the key."""
    out = tmp_path / "x" / "prompts.jsonl"
    res = CliRunner().invoke(main, ["probes", "export", "--suite", "paraphrase", "--out", str(out)])
    assert res.exit_code == 0, res.output
    given = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(given) == 184 and all(set(g) == {"prompt_id", "suite", "category", "caption"} for g in given)
    key = {k["prompt_id"]: k for k in map(json.loads, (out.parent / "prompts_key" / "prompts.jsonl").read_text().splitlines())}
    assert all(k["foils"] and k["phrasing"] in k["prompt_id"] for k in key.values())
    images = ((g, render(place(Scene.from_json(key[g["prompt_id"]]["spec"]), random.Random(1)), 128)) for g in given)
    theirs = samples_dir(tmp_path / "theirs", images)
    res = CliRunner().invoke(main, ["probes", "score", "--suite", "paraphrase", "--images", str(theirs),
                                    "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "paraphrase/parser/consistency 100.0%" in text and "paraphrase/parser/no correct interpretation 0.0%" in text
    # a samples dir holding paraphrase images scores with another suite too (their rows are skipped)
    res = CliRunner().invoke(main, ["probes", "score", "--suite", "binding", "--images", str(theirs),
                                    "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "nothing to score for the binding suite" in res.output, res.output


def test_training_probes_pick_the_suite_up(fast_cfg):
    cfg = apply_overrides(fast_cfg, ["train.probe_prompts=5"])
    assert Counter(p["suite"] for p in probe_subset(cfg))["paraphrase"] == 5


# --------------------------------------------------------------------------- training arm: data.paraphrase


def test_default_training_captions_are_byte_identical():
    """data.paraphrase off (the default): the captions of a seed-0 build, pinned as in test_data.py."""
    cfg = load_config(["tiny"])
    assert cfg.data.paraphrase.fraction == 0.0
    captions = [training_caption(_scene(0, i), 0, i, paraphrase=cfg.data.paraphrase) for i in range(200)]
    assert hashlib.sha256("\n".join(captions).encode()).hexdigest() == \
        "f50c0ea06f7dd58cd99a34c2947241673673b6be35437640b940e004802e1c1c"


def test_held_out_phrasings_never_reach_training():
    cfg = load_config(["tiny"], ["data.paraphrase.fraction=0.6", 'data.paraphrase.heldout=["clause", "synonyms"]'])
    para = cfg.data.paraphrase
    used, rewritten, binding = Counter(), 0, 0
    for i in range(3000):
        scene = _scene(0, i)
        text = training_caption(scene, 0, i, paraphrase=para)
        assert text == training_caption(scene, 0, i, paraphrase=para)  # seeded by the sample
        if scene.kind not in KIND_FAMILIES:
            assert text == caption(scene)
            continue
        binding += 1
        assert spec_from_phrasing(text) == normalise(scene)
        written = [f for f in families(scene) if phrase(scene, f) == text]
        assert written and not set(written) & {"clause", "synonyms"}, (text, written)
        rewritten += written != ["canonical"]
        used.update(written)
    assert 0.55 < rewritten / binding < 0.65, rewritten / binding
    assert set(used) == set(FAMILIES) - {"clause", "synonyms"}
    with pytest.raises(DalleEvalError, match="data.paraphrase.heldout: 'canonical' is not one of"):
        load_config(["tiny"], ['data.paraphrase.heldout=["canonical"]'])
    with pytest.raises(DalleEvalError, match=r"data.paraphrase.fraction: must be in \[0, 1\], got 1.5"):
        load_config(["tiny"], ["data.paraphrase.fraction=1.5"])
