"""Every option of every stage, as frozen dataclasses, with TOML files and `--set a.b=v` layered on top.

Leaf module: imports nothing else of the project. The defaults are the paper's (Ramesh et al. 2021);
`dalle_eval/configs/tiny.toml` scales them down for a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from dalle_eval.errors import DalleEvalError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Enum-like options: the allowed values, checked when a config is loaded (a TOML file, --set, a saved config),
# so the code that reads them needs no check of its own.
Distributor = Literal["multiprocessing", "pyspark", "ray"]  # img2dataset's distributors
Attention = Literal["sparse", "full"]
AttentionBackend = Literal["auto", "sdpa", "flex"]
ReconLoss = Literal["logit_laplace", "mse"]
Schedule = Literal["plateau", "halving", "cosine"]
Precision = Literal["fp32", "bf16"]
StagePrecision = Literal["", "fp32", "bf16"]
Parallel = Literal["ddp", "fsdp"]
BadShardPolicy = Literal["skip", "fail"]
ClipScoreMode = Literal["auto", "on", "off"]
Scramble = Literal["", "colour", "shape", "size"]  # data.scramble: "" = true captions
# the phrasing families of dalle_eval/shapes/phrasing.py other than "canonical" (data.paraphrase.heldout)
Phrasing = Literal["permuted", "converse", "there-is", "numerals", "clause", "bottom-up", "synonyms"]


@dataclass(frozen=True)
class ParaphraseConfig:
    """data.paraphrase, the training arm of the paraphrase probes (shapes world, pipelines/shapes_source.py): a
    share of the relation, stack and multi training captions rewritten in a phrasing drawn uniformly from the
    scene's phrasings that are not held out. Permuted and converse captions are canonical captions of an
    equivalent scene, so training has them anyway; holding them out only stops drawing them."""

    fraction: float = 0.0  # 0 = off: the canonical captions, byte for byte
    heldout: tuple[Phrasing, ...] = ("clause", "numerals")  # never written into training captions


@dataclass(frozen=True)
class DataConfig:
    """build-dataset: sources, image size, shards, BPE, dVAE encoding."""

    resolution: int = 256  # pixels; images are center-cropped and resized to this square (= dvae.image_size)
    n_val: int = 256  # shapes world: size of the COCO-format validation split
    shard_size: int = 1000  # samples per webdataset shard
    seed: int = 0
    url_col: str = "url"
    caption_col: str = "caption"
    header: bool = True  # csv/tsv lists have a header row; false: columns are column0, column1, ... (CC3M's tsv)
    bpe_vocab: int = 16384  # paper: 16,384 lowercased BPE tokens (= transformer.text_vocab)
    download_processes: int = 1
    download_threads: int = 16
    download_timeout: int = 10  # seconds per request
    download_retries: int = 2  # rounds of retries of transient failures (timeout, reset, 429, 5xx), after the list
    download_distributor: Distributor = "multiprocessing"  # img2dataset's: multiprocessing | pyspark | ray
    min_image_size: int = 64  # pixels, shorter side of the original
    max_aspect_ratio: float = 2.0  # paper: aspect ratio within [1/2, 2]
    max_image_area: float = 89_478_485.0  # pixels of the original (PIL's decompression-bomb limit)
    encode_batch: int = 64
    device: str = "cpu"
    # shapes world, control arm: the training captions' words for this attribute are replaced by independent
    # uniformly random values (per object; images, scene JSON and the other words unchanged), so the model gets
    # no information about it from text. "" = true captions. The COCO-format split keeps its true captions.
    scramble: Scramble = ""
    paraphrase: ParaphraseConfig = field(default_factory=ParaphraseConfig)
    # shapes world, the training arm of the translation probes: this share of the training samples become
    # two-panel scenes (shapes/panels.py) of the identity and recolour transforms only; resize, reshape,
    # mirrored and colour-swap never appear. 0 = off: the data byte for byte as without the arm.
    translation_fraction: float = 0.0
    # shapes world, the training arm of the Raven probes: this share of the training samples become Raven matrices
    # (raven/) drawn whole with their answer, captioned raven.CAPTION, from a stream the probe items never use.
    # 0 = off: the data byte for byte as without the arm.
    raven_fraction: float = 0.0
    # shapes world, a stage-1 image set: scenes may show the HELDOUT colour-shape pairs, so a dVAE trained on it has
    # seen them (never with a caption: such a build has no token stage). False = the training scenes of the recipe.
    heldout_images: bool = False


@dataclass(frozen=True)
class FilterConfig:
    """build-dataset pre-filter (pipelines/prefilter.py): rules on the pair table, in SQL, before any
    download. A row's status is the first rule (in prefilter.FILTERS order) that rejects it, or "ok"."""

    skip: tuple[str, ...] = ()  # filter names to turn off, e.g. ["not_english", "duplicate_caption"]
    url_schemes: tuple[str, ...] = ("http", "https", "file")  # what img2dataset's urllib downloader opens
    min_chars: int = 5  # LAION-400M dropped alt-texts shorter than 5 characters
    min_words: int = 1  # words = runs of letters/digits; "!!!" or an emoji alone has none
    max_chars: int = 2048  # the model reads 256 BPE tokens (paper 2.2): ~4 chars each, with 2x slack
    max_words: int = 256  # 256 text tokens and a word is at least one token: longer captions cannot fit
    boilerplate: tuple[str, ...] = (  # RE2 regexes, case-insensitive, on the HTML-unescaped caption
        r"^image may contain",  # Facebook's automatic alt text
        r"\bphotographed (on|in) \w+\.? \d",  # "Photographed on May 5, 2014"
        r"\bstock (photo|image|footage|vector)|\broyalty[- ]free\b",  # stock-site watermark text
        r"^(img|dsc|dscn|dscf|pxl|mvimg|screenshot)[ _-]?\d+",  # camera / screenshot file names
        r"^[\w ()-]+\.(jpe?g|png|gif|webp|bmp|tiff?|heic)$",  # the caption is just a file name
        r"^(untitled|no description|image|photo|picture|thumbnail|placeholder|null|none|undefined)\W*$",
        r"\bclick (here )?to (enlarge|zoom|view)\b",
    )
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes kept (paper: English captions); [] = any
    lang_min_confidence: float = 0.5  # reject when another language has at least this probability ...
    lang_min_words: int = 3  # ... and the caption has this many words (1-2 words: n-grams guess)
    lang_floor: float = 1e-4  # reject at any length when `languages` together have less (other scripts)
    # post-filter (pipelines/web.py, after download): perceptual hashes and CLIP
    dedup_threshold: int = 6  # pHash Hamming bits for near_duplicate (measured in tests/test_dedup.py)
    eval_threshold: int = 6  # pHash bits for eval_overlap with --eval-images (paper: ~21% of CC overlapped COCO)
    clip_model: str = ""  # open_clip name or config JSON: enables clip_score_low (LAION: ViT-B-32)
    clip_pretrained: str = ""  # open_clip tag or a local checkpoint file
    clip_threshold: float = 0.28  # LAION-400M kept image-text cosine >= 0.28 (ViT-B/32)


@dataclass(frozen=True)
class DVAEConfig:
    """The discrete VAE (paper appendix A; OpenAI's `dall_e` Encoder/Decoder with sizes as fields)."""

    image_size: int = DataConfig.resolution  # = data.resolution
    vocab_size: int = 8192  # = transformer.image_vocab
    group_count: int = 4  # grid = image_size / 2**(group_count-1)
    n_hid: int = 256
    n_blk_per_group: int = 2
    n_init: int = 128
    input_channels: int = 3

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (self.group_count - 1)


@dataclass(frozen=True)
class TransformerConfig:
    """The decoder-only sparse transformer (paper section 2.2, appendix B)."""

    text_len: int = 256
    text_vocab: int = DataConfig.bpe_vocab  # = data.bpe_vocab
    image_vocab: int = DVAEConfig.vocab_size  # = dvae.vocab_size
    grid: int = DVAEConfig.image_size // 2 ** (DVAEConfig.group_count - 1)  # = dvae.grid
    n_layer: int = 64
    n_head: int = 62
    d_head: int = 64
    d_model: int = 3968
    mlp_ratio: int = 4
    dropout: float = 0.0
    attention: Attention = "sparse"  # "sparse" (row/column/conv, paper) or "full" (dense causal)
    conv_kernel: int = 11  # paper: 11x11 convolutional attention in the last layer
    attention_backend: AttentionBackend = "auto"  # "sdpa" (dense bool mask), "flex" (FlexAttention block mask), auto: flex on CUDA
    checkpoint_activations: bool = False  # recompute each block in backward (memory for compute)
    text_loss_weight: float = 0.125  # paper: text 1/8, image 7/8
    image_loss_weight: float = 0.875

    @property
    def image_len(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class DVAETrainConfig:
    """Stage 1 (paper appendix A.2): AdamW, cosine KL weight warm-up, exponential temperature decay."""

    steps: int = 3_000_000
    batch_size: int = 8  # global batch per update
    micro_batch: int = 0  # per rank per forward; 0 = batch_size / ranks (no accumulation)
    lr: float = 1e-4
    lr_min: float = 1.25e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    kl_weight: float = 6.6  # beta, increased from 0 with a cosine schedule
    kl_warmup: int = 5000
    tau_start: float = 1.0
    tau_end: float = 1.0 / 16
    tau_steps: int = 150_000
    recon_loss: ReconLoss = "logit_laplace"  # or "mse"
    usage_weight: float = 0.0  # codebook-usage term (wav2vec 2.0 diversity loss); 0 = the paper's objective
    precision: StagePrecision = ""  # "" = train.precision; the dVAE's convolutions run slower in bf16 on CPU
    ema: float = 0.999  # parameter EMA decay (0 = off); checkpoints export the averaged weights


@dataclass(frozen=True)
class TransformerTrainConfig:
    """Stage 2 (paper appendix B.2): AdamW(0.9, 0.96), wd 4.5e-2, clip 4, warm-up to 4.5e-4."""

    steps: int = 430_000
    batch_size: int = 1024  # global batch per update
    micro_batch: int = 0  # per rank per forward; 0 = batch_size / ranks (no gradient accumulation)
    lr: float = 4.5e-4
    lr_min: float = 0.0
    warmup: int = 5000
    schedule: Schedule = "plateau"  # after warm-up: "plateau" (halve when val loss stalls, paper), "halving", "cosine"
    halve_every: int = 0  # "halving": steps between halvings
    plateau_patience: int = 3  # "plateau": validations without improvement before halving
    plateau_threshold: float = 1e-3  # "plateau": relative val-loss improvement that counts
    bpe_dropout: float = 0.1  # paper B.2: captions re-tokenized with 10% BPE dropout while training
    precision: StagePrecision = ""  # "" = train.precision
    betas: tuple[float, float] = (0.9, 0.96)
    eps: float = 1e-8
    weight_decay: float = 4.5e-2
    grad_clip: float = 4.0


@dataclass(frozen=True)
class ClipConfig:
    """`train --stage clip`: a small open_clip CLIP (Radford et al. 2021), ViT image tower + text transformer,
    random init, for reranking and CLIP scores on data no released CLIP has seen (the shapes world). Written
    as an open_clip model config (RUN/clip_model.json): open_clip's tokenizer, vocabulary and preprocessing."""

    embed_dim: int = 64  # the joint embedding
    image_size: int = 64  # px; images of another size are resized (the shapes world is data.resolution = 64 px)
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 2
    vision_head_width: int = 32  # heads = vision_width / vision_head_width
    text_width: int = 64
    text_heads: int = 2
    text_layers: int = 2
    context_length: int = 32  # BPE tokens (open_clip's 49,408-token vocabulary); longer captions are cut


@dataclass(frozen=True)
class ClipTrainConfig:
    """`train --stage clip`: symmetric InfoNCE with a learned temperature (Radford et al. 2021); AdamW with the
    paper's betas/eps, warm-up then cosine."""

    steps: int = 400  # ~1.5 min on 2 CPU cores; held-out pairs: true caption above another's 99% of the time
    batch_size: int = 64  # the contrastive batch: each image against every caption of its micro-batch
    micro_batch: int = 0  # per rank per forward; 0 = batch_size / ranks (a smaller one shrinks the contrastive set)
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup: int = 50
    betas: tuple[float, float] = (0.9, 0.98)  # CLIP paper
    eps: float = 1e-6  # CLIP paper
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: StagePrecision = ""  # "" = train.precision


@dataclass(frozen=True)
class TrainConfig:
    dvae: DVAETrainConfig = field(default_factory=DVAETrainConfig)
    transformer: TransformerTrainConfig = field(default_factory=TransformerTrainConfig)
    clip: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    seed: int = 0
    device: str = "cpu"
    precision: Precision = "fp32"  # or "bf16": autocast matmuls to bfloat16 (weights and optimizer stay fp32)
    log_every: int = 50
    ckpt_every: int = 500
    keep_last: int = 2
    keep_every: int = 0  # also keep every state/step-N with N % keep_every == 0 (milestones); 0 = off
    parallel: Parallel = "ddp"  # under torchrun: "ddp" (replicated) or "fsdp" (FSDP2 fully_shard, sharded checkpoints)
    compile: bool = False  # torch.compile the model
    # data streaming (model/stream.py)
    data_streams: int = 0  # fixed count makes the sample order independent of the number of ranks; 0 = ranks x workers
    num_workers: int = 1  # DataLoader worker processes per rank
    shuffle_shards: int = 4  # samples are shuffled within windows of this many shards
    on_bad_shard: BadShardPolicy = "skip"  # a truncated/corrupt shard: "skip" (logged by name, counted) or "fail"
    val_shards: int = 1  # the manifest's last shards, held out for validation
    val_samples: int = 512  # at most this many held-out samples per validation
    val_every: int = 1000  # steps between validations (also feeds the plateau schedule)
    sample_every: int = 0  # steps between sample grids (stage 2) / reconstruction grids (stage 1); 0 = off
    sample_prompts: tuple[str, ...] = ("a red circle", "a small blue square", "a green triangle", "a yellow square")
    # probes inside training (dalle_eval/probes/in_training.py): metrics.jsonl records with split "probe"
    probe_every: int = 0  # steps between probe passes (also step 0 and the last step); 0 = off
    probe_prompts: int = 64  # a fixed, seeded subset of at most this many prompts per suite; 0 = every prompt
    probe_samples: int = 0  # transformer runs: also sample this many images per shapes prompt, parser-scored
    max_bad_steps: int = 10  # non-finite loss/gradient: skip the step; this many in a row stops the run
    tensorboard: bool = False  # also log scalars to OUT/tb (needs `pip install tensorboard`)
    peak_tflops: float = 0.0  # device peak for MFU; 0 = measure a matmul once at start


RANDOM_CLIP = "random CLIP: reranking and CLIP score not meaningful"  # the label of every figure made with random_clip


@dataclass(frozen=True)
class SampleConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # nucleus sampling; 1 = off
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    rerank: int = 0  # > 1: draw this many candidates per caption, keep the best by CLIP (paper: 512)
    clip_model: str = "ViT-B-32"  # open_clip model name, or a model-config JSON path
    clip_pretrained: str = ""  # open_clip tag or local checkpoint path; "" = none: CLIP is refused unless random_clip
    random_clip: bool = False  # no weights: use a random-init CLIP (offline smoke tests; every figure says so)


@dataclass(frozen=True)
class EvalConfig:
    n_captions: int = 30000  # paper: 30,000 MS-COCO validation captions
    captions_per_image: int = 1  # paper: one caption per image
    resolution: int = 256  # both sets center-cropped + bicubic-resized to this before the Inception (paper: 256);
    # a protocol choice, not tied to data.resolution: coco-fid resizes images of any size (another generator's too)
    blur_radii: tuple[float, ...] = (0, 1, 2, 4, 8)  # paper fig. 9: Gaussian blur on both sets
    is_splits: int = 10
    kid: bool = False  # also KID (needs a second pass over the real images: not cached)
    kid_subsets: int = 100  # torch-fidelity's defaults
    kid_subset_size: int = 1000
    clip_score: ClipScoreMode = "auto"  # auto: when sample.clip_pretrained is set or reranking recorded scores; on; off
    cache_dir: str = ""  # reference statistics; "" = $XDG_CACHE_HOME/dalle-eval/fid (~/.cache/...)
    fid_batch: int = 32
    probe_samples: int = 4  # images generated per probe prompt
    seed: int = 0
    rerank_bootstrap: int = 100  # coco-fid --rerank-curve: bootstrap replicates of FID per k (0 = values only)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    dvae: DVAEConfig = field(default_factory=DVAEConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- loading


def named_config_dir() -> Path:
    return Path(str(resources.files("dalle_eval") / "configs"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """`tiny` -> dalle_eval/configs/tiny.toml; anything else is a path."""
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        named = named_config_dir() / f"{name_or_path}.toml"
        if named.exists():
            return named
        known = ", ".join(sorted(f.stem for f in named_config_dir().glob("*.toml")))
        raise DalleEvalError(f"config '{name_or_path}' is neither a file nor a named config ({known})")
    if not p.exists():
        raise DalleEvalError(f"config file not found: {p}")
    return p


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise DalleEvalError(f"{where}: expected a table, got {value!r}")
        return _build(typ, value, where)
    if origin is Literal:
        allowed = typing.get_args(typ)
        if not isinstance(value, str) or value not in allowed:
            raise DalleEvalError(f"{where}: {value!r} is not one of {', '.join(sorted(allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DalleEvalError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(typ)
        return tuple(_coerce(v, args[0], where) for v in value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool) and not (isinstance(value, typ) and not (typ is int and isinstance(value, bool))):
        raise DalleEvalError(f"{where}: expected {typ.__name__}, got {value!r}")
    return value


# Valid ranges of numeric options: (lowest, highest, lowest excluded). 0 stays valid where it means "off" or "auto"
# (micro_batch, top_k, rerank, sample_every, val_shards, keep_last, ...; steps=0 evaluates the untrained model). Checked wherever a value is set (TOML
# file, --set, a saved config); the defaults and named configs are tested to pass.
_AT_LEAST_1 = (1, None, False)
_AT_LEAST_0 = (0, None, False)
_POSITIVE = (0, None, True)
_FRACTION = (0, 1, False)
RANGES: dict[str, tuple[float, float | None, bool]] = {
    **{f"data.{k}": _AT_LEAST_1 for k in ("resolution", "shard_size", "bpe_vocab", "download_processes",
                                          "download_threads", "download_timeout", "encode_batch")},
    "data.n_val": _AT_LEAST_0, "data.download_retries": _AT_LEAST_0, "data.min_image_size": _AT_LEAST_0,
    "data.max_aspect_ratio": (1, None, False), "data.max_image_area": _POSITIVE, "data.paraphrase.fraction": _FRACTION,
    "data.translation_fraction": _FRACTION, "data.raven_fraction": _FRACTION,
    **{f"filter.{k}": _AT_LEAST_0 for k in ("min_chars", "min_words", "lang_min_words")},
    "filter.max_chars": _AT_LEAST_1, "filter.max_words": _AT_LEAST_1,
    "filter.lang_min_confidence": _FRACTION, "filter.lang_floor": _FRACTION,
    "filter.dedup_threshold": (0, 64, False), "filter.eval_threshold": (0, 64, False),
    "filter.clip_threshold": (-1, 1, False),
    **{f"dvae.{k}": _AT_LEAST_1 for k in ("image_size", "group_count", "n_hid", "n_blk_per_group", "n_init",
                                          "input_channels")},
    "dvae.vocab_size": (2, None, False),
    **{f"transformer.{k}": _AT_LEAST_1 for k in ("text_len", "text_vocab", "image_vocab", "grid", "n_layer", "n_head",
                                                 "d_head", "d_model", "mlp_ratio", "conv_kernel")},
    "transformer.dropout": (0, 1, False),
    "transformer.text_loss_weight": _AT_LEAST_0, "transformer.image_loss_weight": _AT_LEAST_0,
    **{f"train.{stage}.{k}": r for stage in ("dvae", "transformer") for k, r in (
        ("steps", _AT_LEAST_0), ("batch_size", _AT_LEAST_1), ("micro_batch", _AT_LEAST_0), ("lr", _AT_LEAST_0),
        ("lr_min", _AT_LEAST_0), ("eps", _POSITIVE), ("weight_decay", _AT_LEAST_0))},
    "train.dvae.kl_weight": _AT_LEAST_0, "train.dvae.usage_weight": _AT_LEAST_0, "train.dvae.kl_warmup": _AT_LEAST_0, "train.dvae.tau_start": _POSITIVE,
    "train.dvae.tau_end": _POSITIVE, "train.dvae.tau_steps": _AT_LEAST_1, "train.dvae.ema": _FRACTION,
    "train.transformer.warmup": _AT_LEAST_0, "train.transformer.halve_every": _AT_LEAST_0,
    "train.transformer.plateau_patience": _AT_LEAST_1, "train.transformer.plateau_threshold": _AT_LEAST_0,
    "train.transformer.bpe_dropout": _FRACTION, "train.transformer.grad_clip": _POSITIVE,
    **{f"clip.{k}": _AT_LEAST_1 for k in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers",
                                          "vision_head_width", "text_width", "text_heads", "text_layers", "context_length")},
    **{f"train.clip.{k}": r for k, r in (
        ("steps", _AT_LEAST_0), ("batch_size", _AT_LEAST_1), ("micro_batch", _AT_LEAST_0), ("lr", _AT_LEAST_0),
        ("lr_min", _AT_LEAST_0), ("warmup", _AT_LEAST_0), ("eps", _POSITIVE), ("weight_decay", _AT_LEAST_0),
        ("grad_clip", _POSITIVE))},
    **{f"train.{k}": _AT_LEAST_1 for k in ("log_every", "ckpt_every", "shuffle_shards")},
    **{f"train.{k}": _AT_LEAST_0 for k in ("keep_last", "keep_every", "data_streams", "num_workers", "val_shards",
                                           "val_samples", "probe_every", "probe_prompts", "probe_samples", "val_every", "sample_every", "max_bad_steps", "peak_tflops")},
    "sample.temperature": _POSITIVE, "sample.top_k": _AT_LEAST_0, "sample.top_p": (0, 1, True),
    "sample.batch_size": _AT_LEAST_1, "sample.rerank": _AT_LEAST_0,
    "eval.rerank_bootstrap": _AT_LEAST_0,
    **{f"eval.{k}": _AT_LEAST_1 for k in ("n_captions", "captions_per_image", "resolution", "is_splits",
                                          "kid_subsets", "kid_subset_size", "fid_batch", "probe_samples")},
}


def _check_range(key: str, value: Any, label: str) -> None:
    if key not in RANGES:
        return
    low, high, open_low = RANGES[key]
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        if high is None:
            want = f"above {low:g}" if open_low else f"at least {low:g}"
        else:
            want = f"in ({low:g}, {high:g}]" if open_low else f"in [{low:g}, {high:g}]"
        raise DalleEvalError(f"{label}: must be {want}, got {value!r}")


def _build(cls: type, values: dict, where: str, base: Any = None, path: str = "") -> Any:
    """`where` names the source ("file.toml:", "--set "), `path` the dotted table; messages say where + path.key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        label = where + path if path else where.rstrip(": ") or "config"
        raise DalleEvalError(f"{label}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    base = base if base is not None else cls()
    changes = {}
    for key, value in values.items():
        sub = f"{path}.{key}" if path else key
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = _build(type(current), value, where, current, sub)
        else:
            changes[key] = _coerce(value, hints[key], where + sub)
            _check_range(sub, changes[key], where + sub)
    return dataclasses.replace(base, **changes)


def config_from_dict(values: dict, base: Config | None = None, where: str = "") -> Config:
    """`values` (one layer: a file's tables, the --set options together, a saved config) over `base` (defaults)."""
    return _agree(_build(Config, values, where, base), _stated(values), where)


# --------------------------------------------------------------------------- values that must agree

# Options that hold one number. A layer that states one of a pair sets the other too; a layer that states both
# must give the same value. Likewise transformer.grid = dvae.grid (dvae.image_size / 2**(dvae.group_count - 1)).
SAME_VALUE = (("data.resolution", "dvae.image_size"), ("data.bpe_vocab", "transformer.text_vocab"),
              ("dvae.vocab_size", "transformer.image_vocab"))


def _stated(values: dict, prefix: str = "") -> set[str]:
    """The dotted keys a layer states."""
    keys: set[str] = set()
    for key, value in values.items():
        keys |= _stated(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _with(cfg: Any, key: str, value: Any) -> Any:
    """`cfg` with the dotted `key` replaced."""
    head, _, rest = key.partition(".")
    return dataclasses.replace(cfg, **{head: _with(getattr(cfg, head), rest, value) if rest else value})


def _agree(cfg: Config, stated: set[str], where: str) -> Config:
    for a, b in SAME_VALUE:
        if a in stated and b in stated and _get(cfg, a) != _get(cfg, b):
            raise DalleEvalError(f"{where}{a}={_get(cfg, a)} but {b}={_get(cfg, b)}: they must agree")
        if (a in stated) != (b in stated):
            source, target = (a, b) if a in stated else (b, a)
            _check_range(target, _get(cfg, source), f"{where}{target} (= {source})")
            cfg = _with(cfg, target, _get(cfg, source))
    return _agree_grid(cfg, stated, where)


def _agree_grid(cfg: Config, stated: set[str], where: str) -> Config:
    """transformer.grid from the image size and dvae.group_count, or the image size from a stated grid."""
    sizes = [k for k in ("data.resolution", "dvae.image_size") if k in stated]
    if not sizes and not stated & {"transformer.grid", "dvae.group_count"}:
        return cfg
    size, count, grid = cfg.dvae.image_size, cfg.dvae.group_count, cfg.transformer.grid
    factor = 2 ** (count - 1)
    if "transformer.grid" in stated and not sizes:
        return _with(_with(cfg, "dvae.image_size", grid * factor), "data.resolution", grid * factor)
    source = sizes[0] if sizes else "dvae.image_size"
    if size % factor:
        raise DalleEvalError(f"{where}{source}={size} and dvae.group_count={count}: the image size must be a multiple "
                             f"of 2**(dvae.group_count - 1) = {factor} (the dVAE halves it dvae.group_count - 1 times)")
    if "transformer.grid" in stated and grid != size // factor:
        raise DalleEvalError(f"{where}{source}={size} and dvae.group_count={count} make a code grid of "
                             f"{size // factor}x{size // factor} but transformer.grid={grid}: they must agree")
    return _with(cfg, "transformer.grid", size // factor)


def _parse_override(item: str) -> dict:
    if "=" not in item:
        raise DalleEvalError(f"--set '{item}': expected key=value, e.g. --set train.seed=3")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings need no quotes: --set train.device=cuda
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def read_toml(path: Path) -> dict:
    """A config file's tables; a folder, an unreadable, non-text, empty or invalid file is one error naming it."""
    if path.is_dir():
        raise DalleEvalError(f"--config {path}: a folder, expected a TOML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DalleEvalError(f"--config {path}: not a UTF-8 text file (expected a TOML config)") from None
    except OSError as e:
        raise DalleEvalError(f"--config {path}: unreadable ({e.strerror or e})") from None
    if not text.strip():
        raise DalleEvalError(f"--config {path}: empty file (expected TOML tables such as [train])")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DalleEvalError(f"{path}: not valid TOML ({e})") from None


def load_config(configs: typing.Sequence[str | Path] = (), overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then each TOML file in order, then each `key=value` override."""
    cfg = Config()
    for name in configs:
        cfg = _load_layer(name, cfg, ())
    return apply_overrides(cfg, overrides)


def _load_layer(name: str | Path, cfg: Config, seen: tuple[Path, ...]) -> Config:
    """One TOML file over `cfg`; a top-level `base = "NAME"` (a named config or path) is loaded first."""
    path = resolve_config_path(name)
    if path.resolve() in seen:
        raise DalleEvalError(f"{path}: base configs form a loop ({' -> '.join(str(p) for p in (*seen, path))})")
    values = read_toml(path)
    base = values.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise DalleEvalError(f"{path}: base = {base!r}; expected the name or path of another config")
        cfg = _load_layer(base, cfg, (*seen, path.resolve()))
    return config_from_dict(values, cfg, where=str(path) + ":")


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """The `key=value` items as one layer (a later item wins over an earlier one of the same key)."""
    merged: dict = {}
    for item in overrides:
        _merge(merged, _parse_override(item))
    return config_from_dict(merged, cfg, where="--set ") if merged else cfg


def _merge(into: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def config_to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_toml(values: dict, prefix: str = "") -> str:
    """Minimal TOML writer for config dicts (scalars, lists of scalars, nested tables)."""
    lines, tables = [], []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = ""
    if lines:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(lines) + "\n\n"
    for key, value in tables:
        out += to_toml(value, f"{prefix}.{key}" if prefix else key)
    return out
