"""`dalle-eval`: thin click commands over the library functions (each parses, resolves config, calls one)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from dalle_eval.cli_common import (
    Group,
    clip_options,
    config_options,
    other_rank,
    overwrite_option,
    summary,
    torchrun_worker,
)
from dalle_eval.cli_probes import probes
from dalle_eval.config import RANDOM_CLIP, apply_overrides

_RANDOM_CLIP = click.option(
    "--random-clip", is_flag=True,
    help="No CLIP weights: use a random-init CLIP (offline smoke tests only; reranking and CLIP scores are then "
         "meaningless and labelled so). Without it, reranking without --clip-pretrained is refused.")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dalle-eval")
def main() -> None:
    """The DALL·E recipe end to end: build data, train dVAE + transformer, sample, COCO FID, probes.

    Quick start: `make demo` runs every command below on the embedded shapes world.
    """


@main.command("build-dataset")
@click.option("--source", required=True, help="'shapes' (embedded world) or a url+caption list: parquet/csv/tsv/jsonl.")
@click.option("--n", "--limit", "n", type=click.IntRange(min=1), default=None,
              help="Scenes to render (shapes), or the first N rows of --source. (--limit: the same, for torchrun.)")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Dataset directory.")
@click.option("--dvae", "dvae", metavar="TOKENIZER", default=None,
              help="The image tokenizer: also train BPE and write token shards (OUT/tokens). A dVAE checkpoint dir, "
                   "openai:ENCODER.pkl,DECODER.pkl (OpenAI's released dVAE) or vqgan:MODEL.ckpt,CONFIG.yaml "
                   "(a taming-transformers VQGAN); the last two encode data.resolution px images.")
@click.option("--tokenizer", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Use this tokenizer.json instead of training BPE.")
@click.option("--eval-captions", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Reject pairs whose caption is an evaluation caption (COCO captions JSON or one per line).")
@click.option("--eval-images", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Reject images within filter.eval_threshold pHash bits of one in this folder (e.g. COCO val).")
@overwrite_option("dataset stage")
@config_options(("data", "filter"))
@torchrun_worker
def build_dataset_cmd(cfg, overrides, source, n, out, dvae, tokenizer, eval_captions, eval_images, overwrite):
    """Image shards + pair table (+ COCO-format split for shapes); with --dvae, token shards.

    \b
    Example:
      dalle-eval build-dataset --source shapes --n 5000 --out runs/data
      dalle-eval build-dataset --source shapes --n 5000 --out runs/data --dvae runs/dvae
      dalle-eval build-dataset --source pairs.parquet --out runs/web --dvae openai:encoder.pkl,decoder.pkl
      dalle-eval build-dataset --source pairs.parquet --out runs/web --dvae vqgan:last.ckpt,model.yaml
      dalle-eval build-dataset --source pairs.parquet --out runs/web --set data.resolution=256
      torchrun --nproc_per_node 8 -m dalle_eval.cli build-dataset --source pairs.parquet --out runs/web \\
          --dvae runs/dvae --set data.device=cuda     # encoding sharded over 8 GPUs (images built first)
    """
    from dalle_eval.pipelines.build import build_dataset

    if dvae is not None:
        from dalle_eval.model.image_tokenizer import parse_image_tokenizer

        dvae = parse_image_tokenizer(dvae)  # a bad spec: one line naming what is wrong, before any work
    r = build_dataset(cfg, source, out, n, dvae, tokenizer, eval_captions, eval_images, overwrite)
    if other_rank():  # torchrun-sharded encoding: rank 0 reports
        return
    lines = {"images": f"{r['images']['n_samples']} ok in {r['images']['n_shards']} shards",
             "status counts": json.dumps(r["images"]["status_counts"])}
    if "tokens" in r:
        t = r["tokens"]
        lines["tokens"] = f"{t['n_samples']} samples, grid {t['grid']}x{t['grid']}, text vocab {t['text_vocab']}"
        lines["truncated captions"] = t["truncated_captions"]
    lines["seconds"] = r["seconds"]
    summary("build-dataset", lines, Path(out) / "build_report.json")


@main.command()
@click.option("--stage", type=click.Choice(["dvae", "transformer", "clip"]), required=True,
              help="dvae (stage 1), transformer (stage 2), or clip: a small open_clip CLIP on the images and captions "
                   "(for reranking and CLIP scores; the run dir is a local open_clip checkpoint).")
@click.option("--data", required=True, metavar="DIR|URL",
              help="Dataset dir from build-dataset, or its URL (s3://, gs://, https://, ...: any fsspec URL; streamed).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Checkpoint dir.")
@click.option("--resume", is_flag=True, help="Continue from OUT's latest checkpoint (its saved config + --set).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, metavar="CKPT_DIR",
              help="Fine-tune: start a new run (OUT) from the weights of a checkpoint of the same --stage, a run dir "
                   "(its latest weights) or one of its RUN/state/step-N dirs. Weights only: the optimizer, schedule, "
                   "step and data position start fresh, with this command's config (lr, steps, ...), whose model "
                   "must have the same parameter shapes. OUT's config.json and summary.json record the source "
                   "(path, sha256, step). Not with --resume.")
@click.option("--on-bad-shard", type=click.Choice(["skip", "fail"]), default=None,
              help="A truncated/corrupt shard: skip it (logged by name, counted) or fail. [default: skip]")
@config_options(("dvae", "transformer", "clip", "train"))
@torchrun_worker
def train(cfg, overrides, stage, data, out, resume, init_from, on_bad_shard):
    """Train the dVAE (stage 1), the transformer (stage 2) or a CLIP, in one process or under torchrun.

    Streams the shards (split across ranks and workers, shuffled, endless), checkpoints every
    train.ckpt_every steps and on SIGTERM/SIGINT (then exits 0), and logs OUT/metrics.jsonl.

    \b
    Example:
      dalle-eval train --stage dvae --data runs/data --out runs/dvae
      dalle-eval train --stage transformer --data runs/data --out runs/transformer
      dalle-eval train --stage clip --data runs/data --out runs/clip     # then --clip-model runs/clip/clip_model.json
                                                                          #   --clip-pretrained runs/clip/model.safetensors
      dalle-eval train --stage transformer --data runs/data --out runs/transformer --resume \\
          --set train.transformer.steps=2000
      dalle-eval train --stage transformer --data runs/new-data --out runs/finetune \\
          --init-from runs/transformer --set train.transformer.lr=1e-4
      torchrun --nproc_per_node 8 -m dalle_eval.cli train --stage transformer --config dalle-1.3b \\
          --data /data/cc12m --out runs/1.3b --set train.parallel=fsdp --set train.precision=bf16
    """
    from dalle_eval.probes.in_training import train as run_train

    extra = [f"train.on_bad_shard={on_bad_shard}"] if on_bad_shard else []
    if stage == "clip":
        extra.append("train.probe_every=0")  # no probe suite scores a CLIP
    s = run_train(stage, data, apply_overrides(cfg, extra), out, resume=resume, overrides=[*overrides, *extra],
                  use_saved_config=True, init_from=init_from)
    if other_rank():  # under torchrun only rank 0 reports
        return
    if s.get("preempted"):
        summary(f"train {stage}: stopped by {s['preempted']}", {"saved at step": s["stopped_at"], "resume with": "--resume"})
        return
    lines = {"steps": s["steps"], **{k: f"{v:.4f}" for k, v in s["final_train"].items()},
             **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in s["eval"].items()},
             "ranks": s["data"]["world_size"], "bad shards skipped": len(s["bad_shards"])}
    if s.get("init_from"):
        lines["initialised from"] = f"{s['init_from']['weights']} (step {s['init_from']['step']})"
    summary(f"train {stage}", lines, Path(out) / "summary.json")


@main.command("plot-metrics")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Loss PNG path [default: RUN_DIR/loss_curves.png]; capability_curves.png goes beside it.")
def plot_metrics(run_dir, out):
    """Plot a training run's metrics.jsonl: loss (train and validation), loss parts, learning rate, grad norm.

    When the run scored probes while training (train.probe_every), also capability_curves.png: probe
    accuracy vs step, one panel per suite, a line per scorer and check with its 95% interval and chance.
    """
    from dalle_eval.plots import CAPABILITY_PLOT, METRICS, load_probes, plot_capabilities
    from dalle_eval.plots import plot_metrics as plot

    metrics = run_dir / METRICS
    probes = load_probes(metrics) if metrics.exists() else {}  # a malformed probe record stops before any PNG
    loss_png = plot(run_dir, out)
    click.echo(f"wrote {loss_png}")
    if probes:
        cap = loss_png.with_name(CAPABILITY_PLOT)
        cap = cap if cap != loss_png else loss_png.with_name(f"{loss_png.stem}_probes.png")
        steps = sorted({s for lines in probes.values() for pts in lines.values() for s in pts})
        n_checks = sum(len(lines) for lines in probes.values())
        click.echo(f"wrote {plot_capabilities(metrics, cap)}: capability curves of {n_checks} probe checks "
                   f"({', '.join(sorted(probes))}) at {len(steps)} steps ({steps[0]}-{steps[-1]})")


@main.command()
@click.option("--ckpt", type=click.Path(path_type=Path), required=True, help="Transformer checkpoint dir.")
@click.option("--prompts", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="JSONL {prompt_id, caption} or one caption per line.")
@click.option("--caption", default=None, help="A single caption.")
@click.option("--n", "--keep", "n", type=click.IntRange(min=1), default=4, show_default=True, help="Images kept per caption.")
@click.option("--rerank", type=click.IntRange(min=1), default=None,
              help="Draw N candidates per caption, keep the best --keep by CLIP score.")
@clip_options("sets sample.{key}")
@_RANDOM_CLIP
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Samples dir.")
@click.option("--image", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Complete this image (with --keep-rows or --region).")
@click.option("--keep-rows", type=int, default=None, help="Keep the image's top R token rows, regenerate the rest.")
@click.option("--region", default=None, metavar="X0,Y0", help="Regenerate the token rectangle from column X0, row Y0 to the bottom-right.")
@overwrite_option("samples dir")
@config_options(("sample",))
def sample(cfg, overrides, ckpt, prompts, caption, n, rerank, clip_model, clip_pretrained, random_clip, out, image,
           keep_rows, region, overwrite):
    """Generate images autoregressively (temperature, top-k) into a samples dir.

    \b
    Example:
      dalle-eval sample --ckpt runs/transformer --caption "a small red circle" --n 8 --out runs/samples
      dalle-eval sample --ckpt runs/transformer --prompts prompts.jsonl --out runs/samples --set sample.top_k=16
      dalle-eval sample --ckpt runs/transformer --caption "a large blue square" --image scene.png --keep-rows 4 --out runs/completed
      dalle-eval sample --ckpt runs/transformer --prompts prompts.txt --rerank 64 --keep 4 \\
          --clip-model ViT-B-32 --clip-pretrained /models/vit-b-32-openai.bin --out runs/reranked
    """
    from dalle_eval.generate import sample_command

    cfg = _with_clip(cfg, rerank, clip_model, clip_pretrained, random_clip)
    r = sample_command(ckpt, cfg.sample, out, prompts_file=prompts, caption=caption, n=n, image=image,
                       keep_rows=keep_rows, region=region, overwrite=overwrite)
    lines = {"images": r["images"], "samples": r["samples"]}
    if r["random_clip"]:
        lines["CLIP"] = RANDOM_CLIP
    if r["captions_cut"]:
        lines["captions cut"] = (f"{r['captions_cut']} of {r['prompts']} longer than the text window "
                                 "(samples.jsonl: text_truncated)")
    summary("sample", lines, r["grid"])


def _with_clip(cfg, rerank: int | None, clip_model: str | None, clip_pretrained: str | None, random_clip: bool):
    """The sample section with the CLIP options given on the command line; --random-clip only without weights."""
    clip = {k: v for k, v in (("rerank", rerank), ("clip_model", clip_model), ("clip_pretrained", clip_pretrained))
            if v is not None}
    if random_clip:
        clip["random_clip"] = True
    s = dataclasses.replace(cfg.sample, **clip)
    if s.random_clip and s.clip_pretrained:
        raise click.ClickException(f"--random-clip with --clip-pretrained {s.clip_pretrained}: give one (weights, or a "
                                   "random-init CLIP for smoke tests)")
    return dataclasses.replace(cfg, sample=s)


@main.command("coco-fid")
@click.option("--coco", type=click.Path(path_type=Path), required=True,
              help="MS-COCO val: the dir with annotations/captions_val2014.json + val2014/ (or 2017), or captions JSON + images/.")
@click.option("--ckpt", type=click.Path(path_type=Path), default=None, help="Generate with this transformer checkpoint.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Or evaluate this samples dir, made by any generator for the --export-captions prompts.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Run dir: subset.json, samples/, report.")
@click.option("--rerank", type=click.IntRange(min=1), default=None,
              help="Draw N images per caption, keep the best by CLIP (paper: 512).")
@click.option("--rerank-curve", default=None, metavar="K1,K2,...",
              help="What reranking buys: draw one pool of max(K) images per caption (OUT/pool), score it by CLIP once, "
                   "and report FID / IS / CLIP score of the best-of-k set for every k (the top-scored of the first k "
                   "draws; no resampling), e.g. 1,2,4,8,16,32 (the DALL·E blog: 32 of 512). Needs CLIP weights; "
                   "OUT/report.{json,md} + rerank_curve.png. With --images: a samples dir of max(K) per caption.")
@clip_options("reranking and CLIP score")
@_RANDOM_CLIP
@click.option("--inception-weights", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Local FID Inception state dict (pt_inception-2015-12-05-6726825d.pth) [default: torchmetrics' download].")
@click.option("--random-inception", is_flag=True, help="Use a random-init Inception (offline smoke runs only: not comparable).")
@click.option("--subset", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Use these caption ids (another run's subset.json or an --export-captions JSONL).")
@click.option("--export-captions", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the subset as JSONL {prompt_id, caption, image_id} for another generator (alone: export only).")
@click.option("--verify-cache", is_flag=True,
              help="Re-hash every real image before using cached statistics (default: only files whose stat changed).")
@overwrite_option("OUT/samples")
@config_options(("sample", "eval"))
@torchrun_worker
def coco_fid(cfg, overrides, coco, ckpt, images, out, rerank, rerank_curve, clip_model, clip_pretrained, random_clip,
             inception_weights, random_inception, subset, export_captions, verify_cache, overwrite):
    """Zero-shot MS-COCO FID / IS / CLIP score with the blur sweep (the DALL·E paper's protocol).

    30,000 seeded captions (eval.n_captions), one per image; one image each, best of --rerank by CLIP;
    real and generated images center-cropped and bicubic-resized to eval.resolution; FID and IS at
    Gaussian blur radii eval.blur_radii; real statistics cached (eval.cache_dir). Resumable, and
    sharded over ranks under torchrun.

    \b
    Example:
      dalle-eval coco-fid --coco /data/coco2014 --ckpt runs/12b --out runs/fid --rerank 512 \\
          --clip-pretrained /models/vit-b-32.bin --inception-weights pt_inception-2015-12-05-6726825d.pth
      dalle-eval coco-fid --coco /data/coco2014 --out runs/other --export-captions prompts.jsonl
      dalle-eval coco-fid --coco /data/coco2014 --images other_model_samples/ --out runs/other \\
          --inception-weights pt_inception-2015-12-05-6726825d.pth
      dalle-eval coco-fid --coco runs/data/coco --ckpt runs/transformer --out runs/fid --random-inception
      dalle-eval coco-fid --coco runs/data/coco --ckpt runs/transformer --out runs/curve --rerank-curve 1,2,4,8,16,32 \
          --clip-model runs/clip/clip_model.json --clip-pretrained runs/clip/model.safetensors --random-inception
    """
    from dalle_eval.coco_fid import run_coco_fid

    cfg = _with_clip(cfg, rerank, clip_model, clip_pretrained, random_clip)
    if rerank_curve is not None:
        _coco_fid_curve(cfg, coco, ckpt, images, out, rerank, rerank_curve, inception_weights, random_inception, subset,
                        export_captions, verify_cache, overwrite)
        return
    r = run_coco_fid(coco, out, cfg, ckpt, images, inception_weights, random_inception, subset, export_captions,
                     verify_cache=verify_cache, overwrite=overwrite)
    if r is None or other_rank():  # torchrun rank > 0: rank 0 reports
        return
    if "exported" in r:
        summary("coco-fid", {"captions": r["n_captions"], "exported to": r["exported"]})
        return
    lines = {f"blur {s['blur_radius']:g}": f"FID {s['fid']:.3f}   IS {s['is_mean']:.3f} ± {s['is_std']:.3f}" for s in r["sweep"]}
    if r["clip_score"] is not None:
        lines["CLIP score"] = f"{r['clip_score']:.2f}"
    p = r["protocol"]
    lines.update({"images (real/gen)": f"{p['n_real_images']}/{p['n_generated']}", "rerank": p["rerank"],
                  "inception": p["inception_weights"]})
    if p.get("random_clip"):
        lines["CLIP"] = RANDOM_CLIP
    summary("coco-fid", lines, Path(out) / "report.md")


def _coco_fid_curve(cfg, coco, ckpt, images, out, rerank, ks, inception_weights, random_inception, subset, export,
                    verify_cache, overwrite) -> None:
    """coco-fid --rerank-curve: the library call and its summary (a line per k)."""
    from dalle_eval.coco_curve import run_rerank_curve
    from dalle_eval.rerank_curve import parse_ks

    if rerank is not None or export is not None:
        raise click.ClickException(f"--rerank-curve reranks one pool for every k: give it without "
                                   f"{'--rerank' if rerank is not None else '--export-captions'}")
    r = run_rerank_curve(coco, out, cfg, parse_ks(ks), ckpt, images, inception_weights, random_inception, subset,
                         verify_cache=verify_cache, overwrite=overwrite)
    if r is None or other_rank():
        return
    lines = {f"best of {c['k']}": f"FID {c['fid']:.3f}   IS {c['is_mean']:.3f}   CLIP score {c['clip_score']:.2f}"
             for c in r["rerank_curve"]}
    p = r["protocol"]
    lines["pool"] = f"{p['pool']} per caption x {p['n_captions']} captions"
    if r["sampling"]:
        lines["sampling"] = f"{r['sampling']['seconds']:.1f} s for {r['sampling']['images_drawn']} images"
    lines["inception"] = p["inception_weights"]
    if p["random_clip"]:
        lines["CLIP"] = RANDOM_CLIP
    summary("coco-fid --rerank-curve", lines, Path(out) / "report.md")


@main.command()
@config_options(("transformer",))
def info(cfg, overrides):
    """Parameter count of a model config (built on the meta device: no memory).

    \b
    Example:
      dalle-eval info --config dalle-12b
    """
    from dalle_eval.model.transformer import count_parameters, train_flops

    counts = count_parameters(cfg.transformer)
    t = cfg.transformer
    f = train_flops(t)  # 6 N + 12 d_attn per attention pair the masks allow (model/transformer.py)
    summary("info", {"parameters": f"{counts['total']:,} ({counts['total'] / 1e9:.3f} B)",
                      "in blocks": f"{counts['blocks']:,}", "embeddings + head": f"{counts['embeddings_and_head']:,}",
                      "sequence": f"{t.text_len} text + {t.image_len} image tokens",
                      "train FLOPs / sample": f"{f['per_sample']:,} ({f['per_sample']:.3e})",
                      "train FLOPs / position": f"{f['per_position']:,.0f} ({f['positions']} positions fed)"})


@main.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("runs/demo"), show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=6000, show_default=True, help="Training scenes to render.")
@config_options(("data", "dvae", "transformer", "train"))
def demo(cfg, overrides, out, n):
    """The whole chain on the shapes world: data -> dVAE -> tokens -> transformer -> sample -> probes + FID.

    \b
    Example:
      dalle-eval demo --out runs/demo
    """
    from dalle_eval.demo import run_demo

    r = run_demo(cfg, out, n)
    summary("demo", {k: v for k, v in r["headline"].items()}, Path(out) / "report.md")


@main.command("dataset-stats")
@click.argument("data_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--no-plots", is_flag=True, help="Tables only: skip the PNG plots.")
def dataset_stats_cmd(data_dir, no_plots):
    """Statistics of a build-dataset dir: counts per status, caption-length and resolution
    histograms, top domains, near-duplicate clusters (DIR/stats/: stats.json, stats.md, PNGs).

    \b
    Example:
      dalle-eval dataset-stats runs/web
      dalle-eval dataset-stats runs/data --no-plots
    """
    from dalle_eval.pipelines.stats import dataset_stats
    from dalle_eval.pipelines.stats_report import format_stats

    s = dataset_stats(data_dir, plots=not no_plots)
    click.echo(format_stats(s))
    t = s["status"]["totals"]
    lines = {"rows": f"{t['rows']:,} ({t['kept']:,} kept, {t['rejected']:,} rejected)", "stats": s["files"]["json"]}
    lines.update({f"plot {Path(p).stem}": p for p in s["files"]["plots"]})
    summary("dataset-stats", lines, Path(s["files"]["markdown"]))


main.add_command(probes)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
