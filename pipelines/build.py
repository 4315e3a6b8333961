"""`build-dataset`: source -> image shards + pair table (+ COCO-format split) -> token shards.

    OUT/pairs.parquet        one row per input pair: key, url, caption, status ("ok" or why not), ...
    OUT/download/            url lists: img2dataset's output (pipelines/web.py)
    OUT/images/              the kept image shards (webdataset: png/jpg + txt + json) + manifest.json
    OUT/coco/                shapes world only: captions_val.json + images/ for coco-fid
    OUT/tokens/              with --dvae: token shards + tokenizer.json + dvae/ (the image tokenizer) + manifest.json
    OUT/build_report.json    counts per status and what each stage did

Each stage records its inputs (fingerprint.json: only the settings that change that stage's output); a re-run
with the same inputs skips finished stages (and finished shards of an interrupted stage); other inputs are
refused naming what differs, or with --overwrite rebuild that stage from scratch. Under torchrun rank 0
alone checks, claims and deletes; the other ranks wait for its answer.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
from dalle_eval.model import distributed
from dalle_eval.model.checkpoint import TOKENIZER
from dalle_eval.model.image_tokenizer import TokenizerSpec, parse_image_tokenizer, tokenizer_fingerprint
from dalle_eval.model.tokenizer import load_tokenizer, train_bpe
from dalle_eval.pipelines.download import check_rows_left
from dalle_eval.pipelines.encode import encode_shards, prepare_assets, token_manifest
from dalle_eval.pipelines.image_manifest import write_image_stage
from dalle_eval.pipelines.shapes_source import write_coco_split, write_shapes_shards
from dalle_eval.pipelines.sources import read_pairs, source_fingerprint
from dalle_eval.pipelines.stats import dataset_stats
from dalle_eval.pipelines.web import build_web_images

from dalle_eval.artifacts import (
    MANIFEST,
    fingerprint,
    read_json,
    sha256_file,
    write_json,
)
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.outputs import on_rank0, prepare_stage, recorded_differences
from dalle_eval.raven import CAPTION as RAVEN_CAPTION
from dalle_eval.raven import MIN_RESOLUTION as RAVEN_MIN_RESOLUTION
from dalle_eval.shapes import HELDOUT

# [data] settings that do not change the image stage's output: how a later stage encodes tokens, and how many
# processes download (img2dataset's distributors and process counts give the same table, tests/test_data.py).
NOT_IMAGE_INPUTS = ("bpe_vocab", "encode_batch", "device", "download_processes", "download_threads",
                    "download_distributor")


# [data] keys of the shapes world's arms: each changes its scenes or captions, and is recorded only when set
SHAPES_ARM_KEYS = {"scramble", "paraphrase", "translation_fraction", "raven_fraction", "heldout_images"}


def shapes_arms(d) -> dict[str, tuple[str, dict]]:
    """The arms `d` sets: data key -> (manifest key, the record at the top of images/manifest.json)."""
    arms = {}
    if d.scramble:
        arms["scramble"] = ("scramble", {"attribute": d.scramble, "coco_captions": "true"})
    if d.paraphrase.fraction:
        arms["paraphrase"] = ("paraphrase", {"fraction": d.paraphrase.fraction, "heldout": list(d.paraphrase.heldout),
                                             "coco_captions": "canonical"})
    if d.translation_fraction:
        arms["translation_fraction"] = ("translation", {"fraction": d.translation_fraction,
                                                        "transforms": ["identity", "recolour"], "coco_images": "one panel"})
    if d.raven_fraction:
        arms["raven_fraction"] = ("raven", {"fraction": d.raven_fraction, "caption": RAVEN_CAPTION,
                                            "items": "stream raven-train-<seed>, never a probe item"})
    if d.heldout_images:
        arms["heldout_images"] = ("heldout_images", {"pairs": sorted(map(list, HELDOUT)), "use": "stage 1 only"})
    return arms


def build_images(cfg: Config, source: str, out: Path, n: int | None, eval_captions: Path | None = None,
                 eval_images: Path | None = None, overwrite: bool = False, build: bool = True) -> dict:
    """The image stage; -> its manifest. build=False (torchrun): only check it is built from these inputs."""
    d = cfg.data
    images = out / "images"
    if source == "shapes" and not n:
        raise DalleEvalError("--source shapes needs --n (how many training scenes to render)")
    inputs = {"source": source, "n": n, "data": {k: v for k, v in config_to_dict(d).items() if k not in NOT_IMAGE_INPUTS}}
    arms = shapes_arms(d)
    for key in SHAPES_ARM_KEYS - arms.keys():  # recorded only when set: builds without an arm keep their old record
        del inputs["data"][key]
    if arms and source != "shapes":
        key = next(iter(arms))
        raise DalleEvalError(f"data.{key} is an arm of the shapes world's data (its scenes and captions); "
                             f"--source {source} is not the shapes world (use --source shapes)")
    if d.raven_fraction and d.resolution < RAVEN_MIN_RESOLUTION:
        raise DalleEvalError(f"data.raven_fraction needs data.resolution >= {RAVEN_MIN_RESOLUTION} (got {d.resolution}): "
                             "smaller Raven matrices draw some candidates alike")
    if source != "shapes":
        pairs = read_pairs(source, d.url_col, d.caption_col, d.header)  # validate the source before touching OUT
        pairs = pairs.head(n) if n else pairs
        inputs["source_sha256"] = source_fingerprint(source)
        inputs["filter"] = config_to_dict(cfg.filter)
        for name, path in (("eval_captions", eval_captions), ("eval_images", eval_images)):
            if path is not None:
                inputs[name] = source_fingerprint(path)
    if not build:
        return _built_images(images, inputs)
    if prepare_stage(images, inputs, overwrite, "build-dataset (images stage)"):
        print(f"images: already built in {images}, skipping")
        return read_json(images / MANIFEST)
    if source != "shapes":
        return build_web_images(cfg, source, pairs, out, eval_captions, eval_images)

    table = pd.DataFrame(write_shapes_shards(images, n, d.resolution, d.shard_size, d.seed, d.scramble, d.paraphrase,
                                             d.translation_fraction, d.heldout_images, d.raven_fraction))
    shutil.rmtree(out / "coco", ignore_errors=True)  # derived from the same inputs
    write_coco_split(out / "coco", d.n_val, d.resolution, d.seed)  # true captions, scrambled or not
    shards = [str(p.relative_to(images)) for p in sorted(images.glob("shard-*.tar"))]
    # an arm says so at the top of its manifest (also in config.data, and so in the token stage's fingerprint of this
    # manifest): tokens and runs made from it are not mistaken for data of the plain recipe
    extra = {record_key: record for record_key, record in arms.values()}
    return write_image_stage(out, table, source, shards, cfg, **extra)


def _built_images(images: Path, inputs: dict) -> dict:
    """Under torchrun: the image stage must be complete and built from these inputs; nothing is written."""
    diff = recorded_differences(images, inputs)
    if diff:
        raise DalleEvalError(f"{images} was built from other inputs ({', '.join(diff)}); rebuild it in one process "
                             "first (build-dataset with --overwrite, without torchrun): torchrun shards only the dVAE "
                             "encoding (--dvae)")
    if diff is None or not (images / MANIFEST).exists():
        raise DalleEvalError(f"{images}: build the image shards in one process first; torchrun shards only the dVAE "
                             "encoding (--dvae)")
    print(f"images: already built in {images}, skipping")
    return read_json(images / MANIFEST)


def build_tokens(cfg: Config, out: Path, dvae: str | Path | TokenizerSpec, tokenizer: Path | None,
                 d: distributed.Dist, overwrite: bool = False) -> dict:
    """BPE + image codes -> OUT/tokens; `dvae`: the image tokenizer's spec (model/image_tokenizer.py). Rank 0
    alone hashes the inputs, claims the folder (other inputs are refused, or cleared with `overwrite`), trains
    BPE and writes the assets; every rank then encodes its shards."""
    images, tokens = out / "images", out / "tokens"
    image_manifest = read_json(images / MANIFEST, "image manifest")
    dvae = parse_image_tokenizer(dvae)
    if on_rank0(d, lambda: _prepare_tokens(cfg, out, dvae, tokenizer, image_manifest, overwrite)):
        if d.is_main:
            print(f"tokens: already built in {tokens}, skipping")
        return read_json(tokens / MANIFEST)
    shards = [images / s for s in image_manifest["shards"]]
    t = cfg.transformer.text_len
    mine = encode_shards(shards, tokens, t, cfg.data.encode_batch, str(d.device), d.rank, d.world)
    if d.active:
        truncated = sum(p["truncated_captions"] for p in distributed.gather_objects(mine, d))
        vocab = load_tokenizer(tokens / TOKENIZER).get_vocab_size()
        mine = token_manifest(tokens, len(shards), t, vocab, truncated)
    manifest = {**mine, "config": config_to_dict(cfg), "world_size": d.world}
    if d.is_main:
        write_json(tokens / MANIFEST, manifest)
    distributed.barrier(d)
    return manifest


def _prepare_tokens(cfg: Config, out: Path, dvae: TokenizerSpec, tokenizer: Path | None, image_manifest: dict,
                    overwrite: bool) -> bool:
    """Rank 0: claim OUT/tokens for these inputs; -> True when it is complete, else BPE and assets are ready."""
    source = tokenizer_fingerprint(dvae, cfg.data.resolution)
    # our own dVAE keeps the record token folders had before other kinds existed (they resume as they are)
    image_tokenizer = {"dvae_sha256": source["sha256"]["model.safetensors"]} if dvae.kind == "dalle_eval" \
        else {"image_tokenizer": source}
    inputs = {
        "images": fingerprint(image_manifest),
        **image_tokenizer,
        "tokenizer_sha256": sha256_file(tokenizer) if tokenizer else None,
        "bpe_vocab": cfg.data.bpe_vocab,
        "text_len": cfg.transformer.text_len,
    }
    tokens = out / "tokens"
    if prepare_stage(tokens, inputs, overwrite, "build-dataset (tokens stage)"):
        return True
    if tokenizer is None:
        tokenizer = tokens / TOKENIZER
        if not tokenizer.exists():  # else an interrupted run of these inputs trained it
            captions = pd.read_parquet(out / "pairs.parquet").query("status == 'ok'")["caption"].tolist()
            train_bpe(captions, cfg.data.bpe_vocab, tokenizer)
    prepare_assets(tokens, dvae, tokenizer, cfg.data.resolution)
    return False


def build_dataset(
    cfg: Config, source: str, out: Path, n: int | None = None, dvae: str | Path | TokenizerSpec | None = None,
    tokenizer: Path | None = None,
    eval_captions: Path | None = None, eval_images: Path | None = None, overwrite: bool = False,
) -> dict:
    """The image stage, then with `dvae` (an image tokenizer spec: a dVAE checkpoint dir, openai:ENC,DEC or
    vqgan:CKPT,YAML) the token stage. Under torchrun the image stage must be built already
    (rank 0 checks it; no rank writes it) and the ranks share the encoding. `overwrite`: rebuild a stage whose
    recorded inputs differ (else refused, naming them)."""
    out = Path(out)
    dvae = None if dvae is None else parse_image_tokenizer(dvae)  # a bad spec fails before any work
    if dvae is not None and cfg.data.heldout_images:
        raise DalleEvalError("data.heldout_images=true: these images show the colour-shape pairs the probes hold out; "
                             "they are for stage 1 only (train --stage dvae --data OUT). Give --dvae to a build "
                             "without data.heldout_images: the transformer's captions must never pair them")
    t0 = time.time()
    d = distributed.setup(cfg.data.device)
    try:
        images = on_rank0(d, lambda: build_images(cfg, source, out, n, eval_captions, eval_images, overwrite,
                                                  build=not d.active))
        report: dict = {"out": str(out), "images": images}
        check_rows_left(images, out)  # an empty set is an error (pairs.parquet says why for each row)
        if dvae is not None:
            report["tokens"] = build_tokens(cfg, out, dvae, tokenizer, d, overwrite)
    finally:
        distributed.teardown(d)
    report["seconds"] = round(time.time() - t0, 1)
    if d.is_main:
        stats = dataset_stats(out)  # OUT/stats/: tables and plots; the status summary goes in the report
        report["stats"] = {"status": stats["status"]["totals"], "files": str(out / "stats" / "stats.md")}
        write_json(out / "build_report.json", report)
    return report
