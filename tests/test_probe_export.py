"""`probes export`: what a generator receives holds no answer; the key stays with the scorer; export ->
a generator's images -> `probes score` works end to end."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.probes import foils_for, make_prompts
from dalle_eval.raven import RavenItem, answer_box, read_manifest, render_matrix, render_panel
from dalle_eval.shapes import Scene, place, render

N_RAVEN = 9
GIVEN = {"prompt_id", "suite", "category", "caption"}  # every line a generator gets
GIVEN_RAVEN = GIVEN | {"context_image", "image_size", "answer_box", "region"}  # + where to draw
# a Raven item's answer follows from any of these: the index itself, the candidates (with the context, the
# rules pick it), the rules and the rule types (groups), the whole manifest record (spec)
ANSWER_FIELDS = {"answer", "candidates", "rules", "spec", "groups", "context", "values"}


def _export(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "x" / "prompts.jsonl"
    args = ["probes", "export", "--suite", "all", "--raven-items", str(N_RAVEN), "--out", str(out), *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return out


def _keys(obj) -> set[str]:
    """Every key of every object nested anywhere in obj."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("export"))


def test_what_the_generator_gets_holds_no_answer(exported):
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    raven = [p for p in rows if p["suite"] == "raven"]
    assert len(raven) == N_RAVEN and len(rows) > N_RAVEN
    for p in rows:
        assert set(p) == (GIVEN_RAVEN if p["suite"] == "raven" else GIVEN), p
        assert not _keys(p) & ANSWER_FIELDS, p
    assert all(p["caption"] == raven[0]["caption"] for p in raven)  # one caption for every item
    for word in ("answer\"", "candidates", "rules", "foils", "heldout", "rule:"):
        assert word not in exported.read_text(), word
    # the folder handed over with it: the context images and nothing else
    folder = exported.parent / "prompts_raven"
    assert sorted(f.name for f in folder.iterdir()) == sorted(f"{p['prompt_id']}.png" for p in raven)
    items = {it.item_id: it for it in (RavenItem.from_json(p["spec"]) for p in make_prompts("raven", 0, N_RAVEN))}
    for p in raven:
        png = Image.open(exported.parent / p["context_image"])
        assert not {k for k in png.info if k not in ("dpi", "gamma")}, png.info  # no text chunks
        item, res = items[p["prompt_id"]], p["image_size"]
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(render_matrix(item, res)))
        x0, y0, x1, y1 = p["answer_box"]
        assert np.asarray(png.convert("L"))[y0:y1, x0:x1].min() == 255  # the answer cell is blank


def test_the_key_stays_with_the_scorer(exported):
    key = exported.parent / "prompts_key"
    prompts = make_prompts("all", 0, N_RAVEN)
    kept = [json.loads(line) for line in (key / "prompts.jsonl").read_text().splitlines()]
    for p, k in zip(prompts, kept, strict=True):
        foils = [] if p["suite"] == "raven" else [{"kind": f["kind"], "caption": f["caption"]} for f in foils_for(p)]
        assert k == ({**p, "foils": foils} if foils else p)
    manifest = read_manifest(key / "raven.jsonl")  # validated against its schema
    assert [it.to_json() for it in manifest] == [p["spec"] for p in prompts if p["suite"] == "raven"]
    assert json.loads((key / "export.json").read_text()) == {
        "suite": "all", "seed": 0, "raven_items": N_RAVEN, "resolution": 256, "prompts": "prompts.jsonl"
    }


def _oracle_generator(export: Path, key: Path, out: Path, size: int | None = None) -> None:
    """A generator outside the project that cheats with the key: it draws the true answer (Raven) or the
    spec (shapes); reads only export lines for what to draw where, like a real generator; `size`: saves every
    image resized (bicubic) to that square size, as a generator with its own resolution would."""
    truth = {k["prompt_id"]: k for k in map(json.loads, (key / "prompts.jsonl").read_text().splitlines())}
    out.mkdir()
    samples = []
    for p in map(json.loads, export.read_text().splitlines()):
        spec = truth[p["prompt_id"]]["spec"]
        if p["suite"] == "raven":  # complete the exported context image: paste the answer into answer_box
            img = Image.open(export.parent / p["context_image"]).convert("RGB")
            item = RavenItem.from_json(spec)
            x0, y0, x1, y1 = p["answer_box"]
            assert (x0, y0, x1, y1) == answer_box(img.width) and p["region"][0] == pytest.approx(x0 / img.width)
            img.paste(render_panel(item.candidates[item.answer], item.config, x1 - x0), (x0, y0))
        else:
            img = render(place(Scene.from_json(spec), random.Random(1)), 128)
        if size is not None:
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        img.save(out / f"{p['prompt_id']}_0.png")
        samples.append({"prompt_id": p["prompt_id"], "index": 0, "file": f"{p['prompt_id']}_0.png"})
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


@pytest.mark.parametrize("resolution, size", [(None, None), ("64", None), (None, 200)])
def test_export_then_score_another_generators_images(exported, tmp_path, resolution, size):
    """The generator returns images at the exported --resolution (default 256 px; the smallest, 64 px) or
    resized to its own size (200 px): the Raven scorer recognises the resize and reads every answer."""
    export = _export(tmp_path, "--resolution", resolution) if resolution else exported
    theirs = tmp_path / "theirs"
    _oracle_generator(export, export.parent / "prompts_key", theirs, size)
    args = ["probes", "score", "--suite", "all", "--raven-items", str(N_RAVEN), "--images", str(theirs)]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    table = json.loads((tmp_path / "s" / "report.json").read_text())["table"]
    rows = [t for t in table if t["split"] == "all"]
    assert {t["suite"] for t in rows} == {"attributes", "binding", "raven"}
    assert all(t["accuracy"] >= (1.0 if t["suite"] == "raven" else 0.98) for t in rows), rows


def test_reexport_clears_an_old_key_from_the_generators_folder(tmp_path):
    folder = tmp_path / "x" / "prompts_raven"
    folder.mkdir(parents=True)
    (folder / "raven.jsonl").write_text("{}\n")  # where exports before the key folder put the manifest
    _export(tmp_path)
    assert not (folder / "raven.jsonl").exists() and all(f.suffix == ".png" for f in folder.iterdir())


def test_export_help_names_the_key():
    r = CliRunner().invoke(main, ["probes", "export", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "<stem>_key/" in text and "never give it to the generator" in text, text


def test_export_summary_says_what_to_give_and_what_to_keep(tmp_path):
    out = tmp_path / "prompts.jsonl"
    r = CliRunner().invoke(main, ["probes", "export", "--suite", "raven", "--raven-items", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert f"prompts (give the generator) {out}" in text and f"context images (give) {tmp_path / 'prompts_raven'}" in text
    assert f"answer key (keep it) {tmp_path / 'prompts_key'}" in text


def test_export_refuses_a_resolution_below_the_smallest_supported(tmp_path):
    out = tmp_path / "prompts.jsonl"
    args = ["probes", "export", "--suite", "raven", "--raven-items", "3", "--resolution", "48", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--resolution 48" in r.output and ">= 64 px" in r.output, r.output
    assert not out.exists()
