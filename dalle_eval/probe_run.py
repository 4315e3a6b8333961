"""`probes run | export | score`: prompts -> images (a checkpoint's or any generator's) -> scores -> report.

Scorers: parser (exact, on images), likelihood (this project's checkpoints: log p(codes | text), no
sampling), clip (open_clip multiple choice, any generator's images); with --ckpt also dvae_ceiling (the
oracle images through the checkpoint's dVAE, parser-scored: the most any model over that dVAE can score). With --ckpt the shapes prompts are
sampled (dalle_eval.generate.run_sample), the Raven matrices completed (raven_probe.py) and the translation
bottoms completed under their top panels (translation_probe.py) into OUT/samples.
"""

from __future__ import annotations

import json
from pathlib import Path

from dalle_eval.artifacts import atomic_path, read_jsonl, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.probes.chance import random_generator_results
from dalle_eval.probes.foils import foils_for
from dalle_eval.probes.paraphrase import paraphrase_table
from dalle_eval.probes.report_md import write_markdown
from dalle_eval.probes.scoring import check_samples, score_samples
from dalle_eval.probes.suites import (
    COMPLETION_SUITES,
    RAVEN_ITEMS,
    SUITES,
    make_prompts,
    read_custom_prompts,
    resolve_suites,
)
from dalle_eval.probes.tables import attach_random, coverage, mark_partial, summarise
from dalle_eval.probes.translation import translation_table
from dalle_eval.samples import SAMPLES, claim_samples

SCORERS = ("parser", "likelihood", "clip")
EXPORT_RESOLUTION = 256  # Raven context images for other models: >= 137 px, where panel parsing is exact


def _check_scorers(scorers: tuple[str, ...], ckpt: Path | None, images: Path | None, clip_model: str | None) -> None:
    if (ckpt is None) == (images is None):
        raise DalleEvalError("give exactly one of --ckpt (generate with a model) or --images (a samples dir)")
    for s in scorers:
        if s not in SCORERS:
            raise DalleEvalError(f"--scorer must be one of {', '.join(SCORERS)}, got {s!r}")
    if "likelihood" in scorers and ckpt is None:
        raise DalleEvalError("--scorer likelihood needs --ckpt: it ranks by the model's own log p(codes | text)")
    if "clip" in scorers and not clip_model:
        raise DalleEvalError("--scorer clip needs --clip-model (an open_clip name or model-config JSON)")


def text_window(ckpt: Path, prompts: list[dict]) -> dict:
    """Prompts whose caption is longer than the checkpoint's text window: the model never sees their end, so
    generation cannot satisfy it and foils differing there tie. Reported, not hidden (shapes prompts only)."""
    from dalle_eval.model.checkpoint import TOKENIZER, read_ckpt_config
    from dalle_eval.model.tokenizer import encode_captions, load_tokenizer

    text_len = read_ckpt_config(ckpt, "transformer")[1].transformer.text_len
    shapes = [p for p in prompts if p["suite"] != "raven"]
    ids, _ = encode_captions(load_tokenizer(Path(ckpt) / TOKENIZER), [p["caption"] for p in shapes], 10**9)
    long = [{"prompt_id": p["prompt_id"], "suite": p["suite"], "category": p["category"], "tokens": len(t)}
            for p, t in zip(shapes, ids) if len(t) > text_len]
    return {"text_len": text_len, "prompts": len(shapes), "truncated": long}


def _generate(ckpt: Path, prompts: list[dict], out: Path, cfg: Config, completer, progress: bool,
              universe: list[dict], overwrite: bool = False) -> Path:
    """Shapes prompts sampled from their captions, Raven matrices and translation bottoms completed; all into
    out/samples.

    The folder's fingerprint: the checkpoint, sampling settings, the Raven completer and `universe`, every
    prompt the seed and item count make (the suites of --suite all; the paraphrase and translation prompts follow
    from the same seed): another --suite reuses and adds to the same images."""
    from dalle_eval.generate import prompts_id, run_sample, sample_fingerprint
    from dalle_eval.probes.likelihood import ProbeModel
    from dalle_eval.probes.raven_probe import complete_raven, model_completer
    from dalle_eval.probes.translation_probe import complete_translation

    folder = out / "samples"
    completion = "model" if completer is None else f"custom {getattr(completer, '__qualname__', type(completer).__name__)}"
    fp = {**sample_fingerprint(ckpt, cfg.sample), "prompts": prompts_id(universe), "raven_completion": completion}
    claim_samples(folder, fp, overwrite, f"probes --ckpt {ckpt}")
    shapes = [p for p in prompts if p["suite"] not in COMPLETION_SUITES]
    if shapes:
        run_sample(ckpt, shapes, cfg.eval.probe_samples, folder, cfg.sample, progress, claim=False)
    s = cfg.sample
    if any(p["suite"] == "raven" for p in prompts):
        completer = completer or model_completer(ProbeModel.load(ckpt, s.device), s.temperature, s.top_k, s.top_p)
        complete_raven(prompts, completer, folder, cfg.eval.probe_samples, s.seed, progress)
    if any(p["suite"] == "translation" for p in prompts):
        complete_translation(prompts, ProbeModel.load(ckpt, s.device), folder, cfg.eval.probe_samples, s, progress)
    return folder


def run_probes(suite: str, out: Path, cfg: Config, ckpt: Path | None = None, images: Path | None = None,
               scorers: tuple[str, ...] | None = None, clip_model: str | None = None,
               clip_pretrained: str | None = None, raven_items: int = RAVEN_ITEMS, progress: bool = True,
               completer=None, prompts_file: Path | None = None, require_complete: bool = False,
               overwrite: bool = False) -> dict:
    """Score a suite (or "all") with each scorer; writes OUT/report.json, OUT/report.md and grids.

    Default scorers: parser + likelihood with --ckpt, parser with --images. `completer` replaces the
    model's Raven completion (tests use oracles). `prompts_file`: your own prompts with foils (suite
    "custom", CLIP multiple choice only; see suites.read_custom_prompts). Prompts without images are
    counted per suite and category in the report (`coverage`) and their rows marked partial;
    `require_complete` makes any missing prompt an error. OUT/samples of another checkpoint or other sampling
    settings is refused, or replaced with `overwrite`. With the paraphrase suite, report["paraphrase"] holds its
    consistency figures (probes/paraphrase.py); with the translation suite, report["translation"] its parser rows
    beside the copy-the-top and oracle baselines (probes/translation.py).
    """
    out = Path(out)
    if prompts_file is not None:
        suite, suites, prompts = "custom", ["custom"], read_custom_prompts(prompts_file)
        scorers = tuple(scorers or ("clip",))
        if scorers != ("clip",):
            raise DalleEvalError("--prompts: custom prompts have no spec to parse or render; use --scorer clip")
    else:
        suites = resolve_suites(suite)
        scorers = tuple(scorers or (("parser", "likelihood") if ckpt is not None else ("parser",)))
        prompts = make_prompts(suite, cfg.eval.seed, raven_items)
    _check_scorers(scorers, ckpt, images, clip_model)
    folder, samples = None, []
    if images is not None:
        folder = Path(images)
        if not (folder / SAMPLES).is_file():
            raise DalleEvalError(f"--images {folder}: no {SAMPLES}; expected a samples dir (see README: artifact layout)")
        samples = read_jsonl(folder / SAMPLES)
        known = {p["prompt_id"] for p in (prompts if prompts_file else
                                          (p for s in SUITES for p in make_prompts(s, cfg.eval.seed, raven_items)))}
        check_samples(prompts, samples, folder / SAMPLES, suite, known)
    elif {"parser", "clip"} & set(scorers):
        universe = prompts if prompts_file else make_prompts("all", cfg.eval.seed, raven_items)
        folder = _generate(Path(ckpt), prompts, out, cfg, completer, progress, universe, overwrite)
        samples = read_jsonl(folder / SAMPLES)
    cover = coverage(prompts, samples) if folder is not None else []
    if require_complete:
        _require_complete(cover, folder)
    results: list[dict] = []
    if "parser" in scorers:
        results += score_samples(prompts, samples, folder)
    if "likelihood" in scorers:
        from dalle_eval.probes.likelihood import (
            ProbeModel,
            likelihood_raven,
            likelihood_shapes,
            likelihood_translation,
        )

        pm = ProbeModel.load(Path(ckpt), cfg.sample.device)
        results += likelihood_shapes(prompts, pm) + likelihood_raven(prompts, pm) + likelihood_translation(prompts, pm)
    if ckpt is not None and prompts_file is None:  # what this checkpoint's dVAE lets any model score at most
        from dalle_eval.model.checkpoint import DVAE_DIR
        from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
        from dalle_eval.probes.ceiling import DVAECeiling

        dvae = load_image_tokenizer_dir(Path(ckpt) / DVAE_DIR).to(cfg.sample.device)
        results += DVAECeiling(prompts, dvae.cfg.image_size)(dvae)
    if "clip" in scorers:
        from dalle_eval.model.clip import ClipScorer
        from dalle_eval.probes.clip_mc import clip_multiple_choice

        clip = ClipScorer(clip_model, clip_pretrained, cfg.sample.device)
        results += clip_multiple_choice(prompts, samples, folder, clip)
    if not results:
        raise DalleEvalError(f"{folder or ckpt}: nothing to score for the {suite} suite with {', '.join(scorers)}")
    scored = {r["suite"] for r in results}
    table = summarise(results)
    with_images = {str(s["prompt_id"]) for s in samples}
    imaged = [p for p in prompts if p["prompt_id"] in with_images]
    random_results = random_generator_results(imaged)
    attach_random(table, random_results)
    mark_partial(table, cover)
    report = {"suite": suite, "suites": suites, "scorers": list(scorers), "samples_dir": str(folder) if folder else None,
              "ckpt": str(ckpt) if ckpt else None, "n_prompts": len(prompts),
              "n_images": len({r["file"] for r in results if "file" in r}),
              "not_scored": [s for s in suites if s not in scored],
              "text_window": text_window(Path(ckpt), prompts) if ckpt is not None and prompts_file is None else None,
              "coverage": cover, "table": table,
              "paraphrase": paraphrase_table(prompts, results, random_results) if "paraphrase" in suites else None,
              "translation": translation_table(imaged, table) if "translation" in suites else None,
              "results": results, "config": config_to_dict(cfg)}
    write_json(out / "report.json", report)
    write_markdown(report, results, folder, out)
    return report


def _require_complete(cover: list[dict], folder: Path) -> None:
    gaps = [c for c in cover if c["missing"] and c["category"] != "all"]
    if gaps:
        first = gaps[0]["missing"][:3]
        raise DalleEvalError(f"--require-complete: {folder} has no images for " + ", ".join(
            f"{c['suite']}/{c['category']} {len(c['missing'])} of {c['expected']}" for c in gaps)
            + f" prompts (e.g. {', '.join(first)})")


def run_export(suite: str, out: Path, seed: int = 0, raven_items: int = RAVEN_ITEMS,
               resolution: int = EXPORT_RESOLUTION) -> Path:
    """Export a suite for another generator; -> OUT, the prompts JSONL.

    Given to the generator (what it needs to draw, nothing it could be scored with):
    - OUT: one line per prompt: prompt_id, suite, category, caption; a Raven or translation line also
      context_image, image_size, answer_box and region (complete that box of the context image: the Raven
      answer cell, the translation bottom panel);
    - <stem>_raven/, <stem>_translation/: the context images (Raven answer cell, translation bottom panel
      blank), nothing else.
    The answer key, <stem>_key/, stays with whoever scores; never give it to the generator:
    - prompts.jsonl: every prompt in full: spec (for Raven the item: rules, candidates, answer; for translation
      the top objects and the transform), groups (a Raven item's rule types), heldout, and the shapes prompts' foils (CLIP multiple choice ranks the
      caption against them; a generator that saw them could steer away from exactly those captions, e.g.
      as negative prompts);
    - raven.jsonl: the Raven manifest (read_manifest validates it); export.json: suite, seed, raven_items.
    `probes score` regenerates the same prompts from --seed/--raven-items; the key is their record.
    """
    from dalle_eval.probes import raven_probe, translation_probe
    from dalle_eval.raven import RavenItem, write_manifest

    out = Path(out)
    prompts = make_prompts(suite, seed, raven_items)
    folder, key = out.parent / f"{out.stem}_raven", out.parent / f"{out.stem}_key"
    (folder / "raven.jsonl").unlink(missing_ok=True)  # the answer key, where exports before the key folder put it
    contexts = {"raven": (raven_probe.export_context, folder),
                "translation": (translation_probe.export_context, out.parent / f"{out.stem}_translation")}
    given, kept = [], []
    for p in prompts:
        row = {k: p[k] for k in ("prompt_id", "suite", "category", "caption")}
        if p["suite"] in contexts:
            export_context, where = contexts[p["suite"]]
            row.update(export_context(p, where, resolution))
            kept.append(p)
        else:
            kept.append({**p, "foils": [{"kind": f["kind"], "caption": f["caption"]} for f in foils_for(p)]})
        given.append(row)
    raven = [RavenItem.from_json(p["spec"]) for p in prompts if p["suite"] == "raven"]
    if raven:
        write_manifest(raven, key / "raven.jsonl")
    else:
        (key / "raven.jsonl").unlink(missing_ok=True)
    write_json(key / "export.json", {"suite": suite, "seed": seed, "raven_items": raven_items,
                                     "resolution": resolution, "prompts": out.name})
    for path, rows in ((key / "prompts.jsonl", kept), (out, given)):
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
