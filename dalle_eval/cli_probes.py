"""`dalle-eval probes run|export|score|curves`: thin click commands over dalle_eval.probe_run and
dalle_eval.probes.over_checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from dalle_eval.cli_common import Group, clip_options, config_flags, config_options, overwrite_option, summary
from dalle_eval.errors import DalleEvalError

_SUITE = click.Choice(["attributes", "binding", "raven", "paraphrase", "translation", "all"])
_SUITE_HELP = ("all = attributes, binding and raven; paraphrase (one spec in 5-6 phrasings) and translation (complete "
               "the bottom panel from the top one) are asked for by name.")


_REQUIRE_COMPLETE = click.option(
    "--require-complete", is_flag=True,
    help="Fail if any prompt of the suite has no image (default: score what is there, report coverage, mark "
         "figures computed on partial coverage).")


def _probe_options(fn):
    """Options shared by `probes run` and the bare `probes` (which runs `probes run`)."""
    for opt in reversed([
        click.option("--suite", type=_SUITE, default="all", show_default=True, help=_SUITE_HELP),
        click.option("--ckpt", type=click.Path(path_type=Path), default=None, help="Generate/score with this transformer checkpoint."),
        click.option("--images", type=click.Path(path_type=Path), default=None, help="Or score this samples dir (any generator)."),
        click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Report dir (report.json, report.md, grids)."),
        click.option("--scorer", "scorers", multiple=True, type=click.Choice(["parser", "likelihood", "clip"]),
                     help="Repeatable. Default: parser + likelihood with --ckpt, parser with --images."),
        clip_options("for --scorer clip"),
        click.option("--raven-items", type=click.IntRange(min=1), default=None,
                     help="Raven items [default: 60, 20 per configuration]."),
        click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None,
                     help="Your own prompts JSONL (caption + foils; e.g. real-world) for --scorer clip."),
        _REQUIRE_COMPLETE,
        overwrite_option("OUT/samples"),
        click.option("--rerank-curve", default=None, metavar="K1,K2,...",
                     help="What reranking buys: draw max(K) samples per shapes prompt once, rank them by CLIP "
                          "(--clip-model, --clip-pretrained) and report parser accuracy of the best of k for every k "
                          "(the top-scored of the first k draws; no resampling), e.g. 1,2,4,8,16,32: "
                          "OUT/rerank_curve.{json,md,png}."),
    ]):
        fn = opt(fn)
    return fn


def _probesummary(r: dict, out: Path) -> None:
    from dalle_eval.report import pct

    lines = {}
    for row in r["table"]:
        if row["split"] == "all" and row["category"] == "all":
            rand = "" if row.get("random") is None else f", random generator {pct(row['random'])}"
            mark = " † partial coverage" if row.get("partial") else ""
            lines[f"{row['suite']}/{row['scorer']}/{row['check']}"] = (
                f"{pct(row['accuracy'])} (chance {pct(row['chance'])}{rand}){mark}")
    for row in r.get("paraphrase") or []:
        if row["metric"] != "accuracy":
            what = f"{row['metric']} ({row['phrasing']})" if row["phrasing"] else row["metric"]
            show = (lambda x: f"{x:.2f}") if row["metric"] == "ranking agreement" else pct
            lines[f"paraphrase/{row['scorer']}/{what}"] = "—" if row["value"] is None else (
                f"{show(row['value'])} (chance {show(row['chance'])})")
    if r["not_scored"]:
        lines["not scored"] = ", ".join(r["not_scored"])
    summary(f"probes {r['suite']}", lines, Path(out) / "report.md")


def _run_probes_cmd(cfg, suite, ckpt, images, out, scorers, clip_model, clip_pretrained, raven_items, prompts_file,
                    require_complete=False, overwrite=False) -> None:
    from dalle_eval.probe_run import run_probes
    from dalle_eval.probes import RAVEN_ITEMS

    if out is None:
        raise DalleEvalError("--out is required (the report dir)")
    r = run_probes(suite, out, cfg, ckpt, images, tuple(scorers) or None, clip_model, clip_pretrained,
                   raven_items or RAVEN_ITEMS, prompts_file=prompts_file, require_complete=require_complete,
                   overwrite=overwrite)
    _probesummary(r, out)


@click.group(cls=Group, invoke_without_command=True)
@config_flags
@_probe_options
@click.pass_context
def probes(ctx, configs, overrides, **kwargs):
    """Attributes, variable binding, Raven's matrices, paraphrases, translation: exact, with CIs, on any generator.

    Without a subcommand, runs `probes run` with the same options.

    \b
    Example:
      dalle-eval probes --suite all --ckpt runs/transformer --out runs/probes
      dalle-eval probes run --suite binding --ckpt runs/transformer --scorer likelihood --out runs/lik
      dalle-eval probes run --suite paraphrase --ckpt runs/transformer --out runs/paraphrase
      dalle-eval probes run --suite translation --ckpt runs/transformer --out runs/translation
      dalle-eval probes export --suite all --out prompts.jsonl          # for another model
      dalle-eval probes score --suite all --images their_samples --out runs/theirs
      dalle-eval probes curves --ckpt runs/transformer --checkpoints all --out runs/curves
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(probes_run, configs=configs, overrides=overrides, **kwargs)


@probes.command("run")
@_probe_options
@config_options(("sample", "eval"))
def probes_run(cfg, overrides, suite, ckpt, images, out, scorers, clip_model, clip_pretrained, raven_items, prompts_file,
               require_complete, overwrite, rerank_curve):
    """Score a suite: generate with --ckpt (and/or rank by likelihood), or score --images.

    \b
    Example:
      dalle-eval probes run --suite all --ckpt runs/transformer --out runs/probes
      dalle-eval probes run --suite raven --ckpt runs/transformer --scorer likelihood --out runs/raven
      dalle-eval probes run --suite binding --ckpt runs/transformer --out runs/curve --rerank-curve 1,2,4,8,16 \\
          --clip-model runs/clip/clip_model.json --clip-pretrained runs/clip/model.safetensors
    """
    if rerank_curve is not None:
        _probe_curve_cmd(cfg, suite, ckpt, images, out, scorers, clip_model, clip_pretrained, rerank_curve, overwrite)
        return
    _run_probes_cmd(cfg, suite, ckpt, images, out, scorers, clip_model, clip_pretrained, raven_items, prompts_file,
                    require_complete, overwrite)


def _probe_curve_cmd(cfg, suite, ckpt, images, out, scorers, clip_model, clip_pretrained, ks, overwrite) -> None:
    from dalle_eval.probe_curve import ALL_CHECKS, run_probe_curve
    from dalle_eval.report import pct
    from dalle_eval.rerank_curve import parse_ks

    if out is None:
        raise DalleEvalError("--out is required (the report dir)")
    if images is not None or scorers:
        raise DalleEvalError("--rerank-curve draws its pool with --ckpt and scores it with the parser: give it without "
                             + ("--images" if images is not None else "--scorer"))
    r = run_probe_curve(suite, out, cfg, ckpt, parse_ks(ks), clip_model, clip_pretrained, overwrite=overwrite)
    lines = {}
    for row in r["rows"]:
        if row["check"] == ALL_CHECKS:
            change = (f", {100 * row['vs_first']:+.1f} points vs best of {r['ks'][0]} [{100 * row['vs_first_ci95'][0]:+.1f}, "
                      f"{100 * row['vs_first_ci95'][1]:+.1f}]" if "vs_first" in row else "")
            lines[f"{row['suite']} best of {row['k']}"] = (f"{pct(row['accuracy'])} of {row['n']} prompts pass every "
                                                           f"check [{pct(row['ci95'][0])}, {pct(row['ci95'][1])}]{change}")
    lines["pool"] = f"{r['pool']} per prompt x {r['n_prompts']} prompts"
    summary(f"probes {suite} --rerank-curve", lines, Path(out) / "rerank_curve.md")


@probes.command("export")
@click.option("--suite", type=_SUITE, default="all", show_default=True, help=_SUITE_HELP)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Prompts JSONL to write (for the generator; the key goes to <stem>_key/ beside it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Prompt seed (eval.seed when scoring).")
@click.option("--raven-items", type=click.IntRange(min=1), default=None, help="Raven items [default: 60].")
@click.option("--resolution", type=int, default=256, show_default=True,
              help="Raven and translation context image size (px, >= 64).")
def probes_export(suite, out, seed, raven_items, resolution):
    """Write a suite's prompts for another generator, and the answer key for scoring.

    \b
    Give the generator these two, and only these:
      OUT             one line per prompt: prompt_id, suite, category, caption; Raven and
                      translation lines also context_image, image_size, answer_box, region
                      (complete that box: the Raven answer cell, the bottom panel)
      <stem>_raven/   the Raven context images, answer cell blank
      <stem>_translation/  the translation context images, bottom panel blank
    \b
    Keep this one: it is the answer key; never give it to the generator:
      <stem>_key/     prompts.jsonl (every prompt's spec: Raven candidates and answer,
                      rule types; shapes foils, held-out flags), raven.jsonl (the Raven
                      manifest), export.json (suite, seed, raven items)

    Save the generator's images as a samples dir: {prompt_id}_{index}.png + samples.jsonl
    (prompt_id, index, file), then `probes score` with the same --seed and --raven-items.

    \b
    Example:
      dalle-eval probes export --suite all --out runs/export/prompts.jsonl
      # give runs/export/prompts.jsonl and runs/export/prompts_raven/; keep runs/export/prompts_key/
    """
    from dalle_eval.probe_run import run_export
    from dalle_eval.probes import RAVEN_ITEMS

    path = run_export(suite, out, seed, raven_items or RAVEN_ITEMS, resolution)
    lines = {"prompts (give the generator)": str(path)}
    if (path.parent / f"{path.stem}_raven").is_dir():
        lines["context images (give)"] = str(path.parent / f"{path.stem}_raven")
    if (path.parent / f"{path.stem}_translation").is_dir():
        lines["translation context images (give)"] = str(path.parent / f"{path.stem}_translation")
    lines["answer key (keep it)"] = str(path.parent / f"{path.stem}_key")
    summary(f"probes export {suite}", lines)


@probes.command("score")
@click.option("--suite", type=_SUITE, default="all", show_default=True, help=_SUITE_HELP)
@click.option("--images", type=click.Path(path_type=Path), required=True, help="Samples dir of any generator.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Report dir.")
@click.option("--scorer", "scorers", multiple=True, type=click.Choice(["parser", "clip"]), help="Repeatable [default: parser].")
@clip_options("for --scorer clip")
@click.option("--raven-items", type=click.IntRange(min=1), default=None, help="Raven items, as exported [default: 60].")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None,
              help="Your own prompts JSONL (caption + foils; e.g. real-world) for --scorer clip.")
@_REQUIRE_COMPLETE
@config_options(("eval",))
def probes_score(cfg, overrides, suite, images, out, scorers, clip_model, clip_pretrained, raven_items, prompts_file,
                 require_complete):
    """Score another generator's images of exported prompts (exact parser; CLIP multiple choice).

    \b
    Example:
      dalle-eval probes score --suite all --images their_samples --out runs/theirs
      dalle-eval probes score --prompts mine.jsonl --images their_samples --scorer clip \\
          --clip-model ViT-B-32 --clip-pretrained /models/clip.bin --out runs/theirs-clip
    """
    _run_probes_cmd(cfg, suite, None, images, out, scorers, clip_model, clip_pretrained, raven_items, prompts_file,
                    require_complete)


@probes.command("curves")
@click.option("--ckpt", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="A finished transformer run dir (config.json, state/step-N/ kept checkpoints, tokenizer, dvae/).")
@click.option("--checkpoints", default="all", show_default=True, metavar="all|every-N",
              help="Which kept checkpoints: all, or every-N (steps that are multiples of N, plus the final one).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Dir for capabilities.jsonl (probe records) and capability_curves.png.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override the run's saved config, e.g. --set train.probe_samples=2 (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="Where to score (cpu, cuda, cuda:1, mps).")
@overwrite_option("OUT/capabilities.jsonl")
def probes_curves(ckpt, checkpoints, out, overrides, device, overwrite):
    """Capability curves of a finished run: score its kept checkpoints with the training probes.

    For a run trained without probes (train.probe_every=0, e.g. on a cluster): each kept checkpoint
    (RUN/state/step-N/, see train.keep_every) is scored on the same fixed probe subset training
    would have used (the run's config.json: train.probe_prompts, train.probe_samples, eval.seed;
    change them with --set), giving the records `train.probe_every` logs, in
    OUT/capabilities.jsonl, and their plot OUT/capability_curves.png. Step 0 (the untrained model)
    is no kept checkpoint: only train.probe_every while training scores it. The same command
    again resumes (scored steps are skipped).

    \b
    Example:
      dalle-eval probes curves --ckpt runs/transformer --checkpoints all --out runs/curves
      dalle-eval probes curves --ckpt runs/transformer --checkpoints every-5000 --out runs/curves
    """
    from dalle_eval.model.devices import device_problem
    from dalle_eval.probes.over_checkpoints import run_config, score_checkpoints

    if device_problem(device):
        raise DalleEvalError(f"--device {device}: {device_problem(device)}")
    cfg = run_config(ckpt, overrides)
    r = score_checkpoints(ckpt, out, cfg, checkpoints, device=device, overwrite=overwrite)
    steps = r["steps"]
    summary(f"probes curves {r['checkpoints']}", {
        "checkpoints": f"{len(steps)} (steps {', '.join(map(str, steps))})",
        "scored now": ", ".join(map(str, r["scored"])) or "none",
        "already scored": ", ".join(map(str, r["skipped"])) or "none",
        "seconds": r["seconds"],
        "records": r["records"],
        "plot": r["plot"],
    })
