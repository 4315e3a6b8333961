"""The probes are tested: oracles score ~100%, binding-scrambled oracles fall to chance on binding, foils
differ in exactly the intended way, every scorer and the CLI run end to end, errors are one clear line."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.errors import DalleEvalError
from dalle_eval.probe_run import run_probes
from dalle_eval.probes import chance_within_ci, foils_for, make_prompts
from dalle_eval.probes.foils import FLIP
from dalle_eval.raven import RavenItem, render_matrix
from dalle_eval.shapes import Obj, Scene, caption, place, render

SINGLE_ATTRIBUTE = ("colours", "shapes", "sizes", "count")
N_RAVEN = 12


def _scene_image(prompt: dict, scramble: bool = False) -> Image.Image:
    """The oracle generator: the prompt's ground-truth scene (optionally colours rotated between objects)."""
    spec = Scene.from_json(prompt["spec"])
    if scramble and len(spec.objects) >= 2:
        colours = [o.colour for o in spec.objects]
        colours = colours[1:] + colours[:1]
        spec = Scene(spec.kind, tuple(Obj(o.shape, c, o.size) for o, c in zip(spec.objects, colours)), spec.relation)
    return render(place(spec, random.Random(prompt["prompt_id"])), 64)


def _raven_oracle(item: RavenItem, resolution: int = 160, pick=None) -> Image.Image:
    return render_matrix(item, resolution, item.candidates[item.answer if pick is None else pick])


def _samples_dir(folder: Path, prompts: list[dict], draw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in prompts:
        name = f"{p['prompt_id']}_0.png"
        draw(p).save(folder / name)
        rows.append({"prompt_id": p["prompt_id"], "index": 0, "caption": p["caption"], "file": name})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _draw(scramble=False):
    def draw(p):
        return _raven_oracle(RavenItem.from_json(p["spec"])) if p["suite"] == "raven" else _scene_image(p, scramble)
    return draw


def _rows(report, **where):
    return [r for r in report["table"] if all(r[k] == v for k, v in where.items())]


def test_oracle_near_perfect_and_scrambled_binding_at_chance(tmp_path, fast_cfg):
    prompts = make_prompts("all", raven_items=N_RAVEN)
    oracle = run_probes("all", tmp_path / "o", fast_cfg, images=_samples_dir(tmp_path / "os", prompts, _draw()),
                        raven_items=N_RAVEN, progress=False)
    assert oracle["not_scored"] == [] and oracle["n_images"] == len(prompts)
    for r in _rows(oracle, split="all"):
        assert r["accuracy"] >= (1.0 if r["suite"] == "raven" else 0.98), r
    assert {r["category"] for r in _rows(oracle, suite="binding")} >= {
        "two", "three", "four", "relation", "stack2", "stack3", "multi-attribute"}
    assert {r["category"] for r in _rows(oracle, suite="raven")} >= {"center", "grid2x2", "grid3x3", "rule:progression"}
    assert _rows(oracle, suite="attributes", split="heldout") and _rows(oracle, suite="binding", split="seen")

    shapes = [p for p in prompts if p["suite"] != "raven"]
    scrambled = run_probes("binding", tmp_path / "s", fast_cfg, progress=False,
                           images=_samples_dir(tmp_path / "ss", shapes, _draw(scramble=True)))
    by = {(r["category"], r["check"]): r for r in _rows(scrambled, split="all")}
    for check in SINGLE_ATTRIBUTE:  # the right attributes are all there...
        assert by[("all", check)]["accuracy"] >= 0.9, by[("all", check)]
    for check in ("image", "relation"):  # ...bound to the wrong objects: binding at chance
        assert chance_within_ci(by[("all", check)]), by[("all", check)]
    assert by[("all", "object")]["ci95"][0] < 0.25  # stacks keep their objects (only their order moves)
    for cat in ("two", "three", "four", "multi-attribute"):
        assert by[(cat, "object")]["accuracy"] == 0.0
    md = (tmp_path / "s" / "report.md").read_text()
    assert "binding — parser" in md and (tmp_path / "s" / "binding_failures.png").exists()


def test_foils_differ_exactly_as_intended():
    for p in make_prompts("attributes") + make_prompts("binding"):
        truth = Scene.from_json(p["spec"])
        foils = foils_for(p)
        assert foils and p["caption"] not in [f["caption"] for f in foils], p["prompt_id"]
        assert len({f["caption"] for f in foils}) == len(foils)
        for f in foils:
            foil = Scene.from_json(f["spec"])
            assert caption(foil) == f["caption"] and foil.kind == truth.kind
            kind = f["kind"]
            if kind == "count":
                assert len(foil.objects) != len(truth.objects) and {o.attrs for o in foil.objects} == {truth.objects[0].attrs}
            elif kind == "relation":
                assert foil.objects == truth.objects and foil.relation == FLIP[truth.relation]
            elif kind.startswith("swap_"):
                i, j, attribute = f["swap"]
                assert attribute == kind[5:] and foil.relation == truth.relation
                for k, (a, b) in enumerate(zip(truth.objects, foil.objects)):
                    other = {i: j, j: i}.get(k, k)
                    assert getattr(b, attribute) == getattr(truth.objects[other], attribute)
                    assert all(getattr(a, x) == getattr(b, x) for x in ("shape", "colour", "size") if x != attribute)
                assert getattr(truth.objects[i], attribute) != getattr(truth.objects[j], attribute)
            else:  # one attribute of the object(s) changed, nothing else
                a, b = truth.objects[0], foil.objects[0]
                assert kind in ("colour", "shape", "size") and len(foil.objects) == len(truth.objects)
                assert [x for x in ("shape", "colour", "size") if getattr(a, x) != getattr(b, x)] == [kind]


def test_prompts_deterministic_under_a_seed():
    for suite in ("attributes", "binding", "raven"):
        a, b = make_prompts(suite, seed=1, raven_items=6), make_prompts(suite, seed=1, raven_items=6)
        assert json.dumps(a) == json.dumps(b)
        assert json.dumps(a) != json.dumps(make_prompts(suite, seed=2, raven_items=6))
        ids = [p["prompt_id"] for p in a]
        assert len(set(ids)) == len(ids) and all(set(p) >= {"prompt_id", "caption", "spec", "heldout"} for p in a)
    counts = Counter(len(p["spec"]["objects"]) for p in make_prompts("attributes") if p["category"] == "count")
    assert sorted(counts) == [1, 2, 3, 4]


def test_likelihood_scorer_end_to_end(tmp_path, fast_cfg, transformer_ckpt):
    r = run_probes("all", tmp_path / "l", fast_cfg, ckpt=transformer_ckpt, scorers=("likelihood",), raven_items=6,
                   progress=False)
    assert r["samples_dir"] is None and r["not_scored"] == []
    first = {r_["suite"]: r_ for r_ in _rows(r, category="all", check="ranked_first", split="all")}
    assert first["attributes"]["n"] == len(make_prompts("attributes")) and 0.2 < first["attributes"]["chance"] < 0.4
    raven = _rows(r, suite="raven", category="all", check="answer", split="all", scorer="likelihood")[0]
    assert raven["n"] == 6 and raven["chance"] == pytest.approx(1 / 8) and raven["scorer"] == "likelihood"
    ceiling = {(x["suite"], x["check"]): x for x in _rows(r, category="all", split="all", scorer="dvae_ceiling")}
    assert ceiling[("raven", "answer")]["n"] == 6 and ceiling[("attributes", "colour")]["chance"] == pytest.approx(1 / 6)
    assert {("attributes", "shape"), ("binding", "image")} <= set(ceiling)
    lik = [x for x in r["results"] if x["check"] == "ranked_first"]
    assert all(len(x["foils"]) >= 1 and all(f["caption"] != x.get("caption") for f in x["foils"]) for x in lik)
    assert {x["check"] for x in r["results"] if x["suite"] == "binding"} >= {"vs_swap_colour", "vs_relation"}
    # Captions longer than the model's text window are named, not silently cut.
    window = r["text_window"]
    assert window["text_len"] == fast_cfg.transformer.text_len and window["prompts"] == r["n_prompts"] - 6
    assert window["truncated"] and all(t["tokens"] > window["text_len"] for t in window["truncated"])
    assert "stack3" in {t["category"] for t in window["truncated"]}
    assert f"longer than the model's {window['text_len']}-token text window" in (tmp_path / "l" / "report.md").read_text()


def test_raven_generation_path(tmp_path, fast_cfg, transformer_ckpt):
    """The model's completion path runs; an oracle completion scores 100%, a random candidate ~chance."""
    oracle = run_probes("raven", tmp_path / "o", fast_cfg, ckpt=transformer_ckpt, scorers=("parser",),
                        raven_items=N_RAVEN, progress=False, completer=lambda it, cap, seeds: [_raven_oracle(it)] * len(seeds))
    assert _rows(oracle, category="all", split="all", scorer="parser")[0]["accuracy"] == 1.0
    rng = random.Random(0)
    guess = run_probes("raven", tmp_path / "g", fast_cfg, ckpt=transformer_ckpt, scorers=("parser",), raven_items=48,
                       progress=False, completer=lambda it, cap, seeds: [_raven_oracle(it, 64, rng.randrange(8)) for _ in seeds])
    assert chance_within_ci(_rows(guess, category="all", split="all", scorer="parser")[0])
    r = CliRunner().invoke(main, ["probes", "--suite", "raven", "--ckpt", str(transformer_ckpt), "--raven-items", "3",
                                  "--out", str(tmp_path / "m"), "--set", "eval.probe_samples=1"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert rep["scorers"] == ["parser", "likelihood"] and rep["n_images"] == 3
    assert Image.open(tmp_path / "m" / "samples" / "raven-0-00000_0.png").size == (64, 64)
    assert "raven/likelihood/answer" in r.output


def test_clip_multiple_choice(tmp_path, fast_cfg, tiny_clip):
    model_cfg, weights = tiny_clip
    prompts = make_prompts("binding")[:6]
    folder = _samples_dir(tmp_path / "i", prompts, _draw())
    r = run_probes("binding", tmp_path / "c", fast_cfg, images=folder, scorers=("clip",), clip_model=model_cfg,
                   clip_pretrained=weights, progress=False)
    first = _rows(r, category="all", check="ranked_first", split="all")[0]
    assert first["scorer"] == "clip" and first["n"] == 6 and 0 < first["chance"] <= 0.5
    with pytest.raises(DalleEvalError, match="--scorer clip needs --clip-model"):
        run_probes("binding", tmp_path / "c", fast_cfg, images=folder, scorers=("clip",))
    # your own (e.g. real-world) prompts with foils, any generator's images, through the CLI
    mine = [{"prompt_id": "dog", "caption": "a red dog on a blue sofa", "foils": ["a blue dog on a red sofa"]},
            {"prompt_id": "cat", "caption": "two cats", "foils": ["one cat", {"kind": "count", "caption": "three cats"}],
             "category": "count"}]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(m) + "\n" for m in mine))
    theirs = _samples_dir(tmp_path / "theirs", mine, lambda m: Image.new("RGB", (48, 48), (200, 30, 30)))
    base = ["probes", "score", "--prompts", str(tmp_path / "mine.jsonl"), "--images", str(theirs),
            "--clip-model", model_cfg, "--clip-pretrained", weights, "--out", str(tmp_path / "m")]
    r = CliRunner().invoke(main, [*base, "--scorer", "clip"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert _rows(rep, suite="custom", category="count", check="ranked_first", split="all")[0]["chance"] == pytest.approx(1 / 3)
    assert "custom/clip/ranked_first" in r.output and (tmp_path / "m" / "report.md").exists()
    r = CliRunner().invoke(main, [*base, "--scorer", "parser"])
    assert r.exit_code == 1 and "use --scorer clip" in r.output
    (tmp_path / "bad.jsonl").write_text(json.dumps({"caption": "a cat"}) + "\n")
    r = CliRunner().invoke(main, [*base[:2], "--prompts", str(tmp_path / "bad.jsonl"), *base[4:]])
    assert r.exit_code == 1 and "bad.jsonl:1: need a 'caption' and a non-empty list of 'foils'" in r.output


def test_clear_errors(tmp_path, fast_cfg):
    run = CliRunner().invoke
    with pytest.raises(DalleEvalError, match="--suite must be one of"):
        make_prompts("colours")
    r = run(main, ["probes", "score", "--suite", "colours", "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "colours" in r.output
    (tmp_path / "empty").mkdir()
    r = run(main, ["probes", "score", "--suite", "binding", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no samples.jsonl" in r.output and "Traceback" not in r.output
    prompts = make_prompts("binding")[:2]
    folder = _samples_dir(tmp_path / "s", prompts, _draw())
    with open(folder / "samples.jsonl", "a") as f:
        f.write(json.dumps({"prompt_id": "attr-square-red-small", "index": 0, "file": "a.png"}) + "\n")  # other suite
        f.write(json.dumps({"prompt_id": "two-999", "index": 0, "file": "x.png"}) + "\n")
    r = run(main, ["probes", "score", "--suite", "binding", "--images", str(folder), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "samples.jsonl:4: prompt_id 'two-999' is not a prompt of the binding suite" in r.output
    broken = _samples_dir(tmp_path / "u", prompts, _draw())
    (broken / f"{prompts[1]['prompt_id']}_0.png").write_bytes(b"not a png")
    with pytest.raises(DalleEvalError, match=f"{prompts[1]['prompt_id']}_0.png: unreadable image"):
        run_probes("binding", tmp_path / "o", fast_cfg, images=broken, progress=False)
    (broken / f"{prompts[1]['prompt_id']}_0.png").unlink()
    with pytest.raises(DalleEvalError, match=f"{prompts[1]['prompt_id']}_0.png: image file not found"):
        run_probes("binding", tmp_path / "o", fast_cfg, images=broken, progress=False)
    with pytest.raises(DalleEvalError, match="likelihood needs --ckpt"):
        run_probes("binding", tmp_path / "o", fast_cfg, images=folder, scorers=("likelihood",))
    r = run(main, ["probes", "--suite", "binding", "--images", str(folder)])
    assert r.exit_code == 1 and "--out is required" in r.output


def test_intervals_account_for_correlated_images_of_one_prompt():
    """Four identical outcomes per prompt carry the information of one: the interval widens to match."""
    from dalle_eval.probes.tables import clustered_wilson, effective_n, wilson

    independent = [{"prompt_id": str(i), "passed": i % 2 == 0} for i in range(40)]
    (lo, hi), prompts, n_eff = clustered_wilson(independent)
    assert prompts == 40 and n_eff == pytest.approx(40, rel=0.1) and (lo, hi) == pytest.approx(wilson(20, n_eff))
    copies = [{**r, "image": j} for r in independent for j in range(4)]  # 160 checks, 40 independent facts
    (clo, chi), _, c_eff = clustered_wilson(copies)
    assert c_eff == pytest.approx(40, rel=0.1) and chi - clo == pytest.approx(hi - lo, rel=0.05)
    assert (chi - clo) > 1.8 * (wilson(80, 160)[1] - wilson(80, 160)[0])  # the naive interval is half as wide
    assert effective_n([4, 0, 2], [4, 4, 4]) <= 12 and effective_n([0, 0], [3, 3]) == 2  # p = 0: one fact per prompt


def test_partial_coverage_is_reported_and_can_be_required(tmp_path, fast_cfg):
    """A samples dir with only some prompts: coverage per suite and category, partial rows marked, and
    --require-complete turns it into one clear error."""
    prompts = make_prompts("attributes")
    folder = _samples_dir(tmp_path / "s", [p for p in prompts if p["category"] == "single"], _draw())
    r = run_probes("attributes", tmp_path / "o", fast_cfg, images=folder, progress=False)
    cover = {c["category"]: c for c in r["coverage"]}
    assert (cover["single"]["expected"], cover["single"]["with_images"], cover["single"]["missing"]) == (36, 36, [])
    assert (cover["count"]["expected"], cover["count"]["with_images"], len(cover["count"]["missing"])) == (24, 0, 24)
    assert cover["all"]["with_images"] == 36 and cover["all"]["expected"] == 60
    by = {(row["category"], row["check"], row["split"]): row for row in r["table"]}
    assert by[("all", "colour", "all")]["partial"] and not by[("single", "colour", "all")]["partial"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## Coverage" in md and "| attributes | count | 24 | 0 | 24 |" in md and "Partial coverage" in md
    assert "100.0%†" in md
    res = CliRunner().invoke(main, ["probes", "score", "--suite", "attributes", "--images", str(folder),
                                    "--out", str(tmp_path / "o2"), "--require-complete"])
    assert res.exit_code == 1 and "no images for attributes/count 24 of 24 prompts" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o2" / "report.json").exists()


def test_random_generator_column_beside_chance(tmp_path, fast_cfg):
    prompts = make_prompts("binding")
    r = run_probes("binding", tmp_path / "o", fast_cfg, images=_samples_dir(tmp_path / "s", prompts, _draw()),
                   progress=False)
    row = next(x for x in r["table"] if (x["category"], x["check"], x["split"]) == ("all", "object", "all"))
    assert row["chance"] > 0.05 and 0.0 < row["random"] < 0.2  # 1-(35/36)^n for n = 2..4, not 1/36
    assert "random generator" in (tmp_path / "o" / "report.md").read_text()


def test_non_square_images_are_refused(tmp_path, fast_cfg):
    prompts = make_prompts("binding")[:2]
    folder = _samples_dir(tmp_path / "s", prompts, lambda p: _scene_image(p).resize((96, 64)))
    with pytest.raises(DalleEvalError, match=r"two-000_0.png: 96x64 image; the samples-dir contract asks for square"):
        run_probes("binding", tmp_path / "o", fast_cfg, images=folder, progress=False)


def test_raven_grid_labels_name_chosen_and_correct(tmp_path, fast_cfg):
    from dalle_eval.probes.report_md import raven_label

    prompts = make_prompts("raven", raven_items=3)
    r = run_probes("raven", tmp_path / "o", fast_cfg, raven_items=3, progress=False,
                   images=_samples_dir(tmp_path / "s", prompts, _draw()))
    res = [x for x in r["results"] if x["suite"] == "raven"]
    assert all(x["chosen"] == x["correct"] == RavenItem.from_json(p["spec"]).answer for x, p in zip(res, prompts))
    label = raven_label({"a.png": "a matrix"}, {"a.png": 6}, {"a.png": 2})("a.png")
    assert label == "a matrix | chose 7, correct 3"
