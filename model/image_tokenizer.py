"""Image tokenizers as a choice (DESIGN "Token shards"): our dVAE, OpenAI's released dVAE or a taming VQGAN.

A spec names one (`build-dataset --dvae SPEC`):
    runs/dvae                          a dVAE checkpoint dir of `dalle-eval train --stage dvae`   kind dalle_eval
    openai:ENCODER.pkl,DECODER.pkl     OpenAI's released dVAE (restricted unpickling)             kind openai
    vqgan:MODEL.ckpt,CONFIG.yaml       a taming-transformers VQModel (our own modules)            kind vqgan
Every kind is an nn.Module with the ImageTokenizer interface below. `save_image_tokenizer` writes any of them as
a folder (config.json + model.safetensors + image_tokenizer.json: kind, grid, vocab, sha256 of the source
files) that token folders and transformer runs carry as dvae/; `load_image_tokenizer_dir` reads it back with
no pickle and no taming.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from dalle_eval.model.checkpoint import load_weights, read_ckpt_config
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.vqgan import VQGAN, VQGANConfig
from safetensors.torch import save_file

from dalle_eval.artifacts import read_json, sha256_file, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError

INFO = "image_tokenizer.json"
# kind -> the files its spec names after "kind:" (our own dVAE: a checkpoint dir, no prefix)
KIND_FILES = {"openai": ("ENCODER.pkl", "DECODER.pkl"), "vqgan": ("MODEL.ckpt", "CONFIG.yaml")}
KINDS = ("dalle_eval", *KIND_FILES)
WHERE = {
    "dalle_eval": "a dVAE checkpoint dir from `dalle-eval train --stage dvae`",
    "openai": "https://cdn.openai.com/dall-e/encoder.pkl and https://cdn.openai.com/dall-e/decoder.pkl",
    "vqgan": "an f16 VQGAN .ckpt and its config .yaml, linked from the taming-transformers README",
}


class ImageTokenizer(Protocol):
    """What every image tokenizer offers (DVAE, VQGAN)."""

    kind: str  # dalle_eval | openai | vqgan
    image_size: int  # pixels per side encoded
    grid: int  # codes per side: image_size / the downsampling factor
    vocab_size: int  # codebook size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, image_size, image_size) float pixels in [0, 1] -> (B, grid, grid) int64 codes."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, grid, grid) codes -> (B, 3, image_size, image_size) pixels in [0, 1]."""


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str
    files: tuple[Path, ...]

    def __str__(self) -> str:
        joined = ",".join(str(f) for f in self.files)
        return joined if self.kind == "dalle_eval" else f"{self.kind}:{joined}"

    def sources(self) -> list[Path]:
        """The files whose sha256 identifies this tokenizer."""
        return [self.files[0] / "model.safetensors"] if self.kind == "dalle_eval" else list(self.files)


def parse_image_tokenizer(spec: str | Path | TokenizerSpec) -> TokenizerSpec:
    """'DIR' | 'openai:ENC,DEC' | 'vqgan:CKPT,YAML' -> TokenizerSpec; DalleEvalError naming what is wrong."""
    if isinstance(spec, TokenizerSpec):
        return spec
    text = str(spec)
    prefix = re.match(r"([A-Za-z_]\w+):", text)  # a kind (two letters at least: not a Windows drive)
    if prefix is None:
        folder = Path(text)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise DalleEvalError(f"--dvae {text}: no {name}; expected {WHERE['dalle_eval']}, "
                                     "or openai:ENCODER.pkl,DECODER.pkl or vqgan:MODEL.ckpt,CONFIG.yaml")
        return TokenizerSpec("dalle_eval", (folder,))
    kind = prefix.group(1)
    if kind not in KIND_FILES:
        raise DalleEvalError(f"--dvae {text}: unknown image tokenizer '{kind}'; give a dVAE checkpoint dir, "
                             "openai:ENCODER.pkl,DECODER.pkl or vqgan:MODEL.ckpt,CONFIG.yaml")
    files = tuple(Path(f.strip()) for f in text[prefix.end():].split(",") if f.strip())
    if len(files) != 2:
        raise DalleEvalError(f"--dvae {text}: {kind} takes two files, {kind}:{','.join(KIND_FILES[kind])}")
    for f in files:
        if not f.is_file():
            raise DalleEvalError(f"--dvae {text}: {f} not found; get {WHERE[kind]}")
    return TokenizerSpec(kind, files)


def load_image_tokenizer(spec: str | Path | TokenizerSpec, image_size: int = 256) -> torch.nn.Module:
    """The tokenizer a spec names, in eval mode. `image_size`: what OpenAI's dVAE and a VQGAN encode (both are
    convolutional; their grid is image_size / 8 or / 16); our own dVAE's size is fixed by its config."""
    spec = parse_image_tokenizer(spec)
    if spec.kind == "openai":
        from dalle_eval.model.openai_dvae import load_openai_dvae

        model = load_openai_dvae(*spec.files, image_size=image_size)
        model.kind = "openai"
        return model
    if spec.kind == "vqgan":
        from dalle_eval.model.vqgan import load_taming_vqgan

        return load_taming_vqgan(*spec.files, image_size=image_size)
    return _load_dvae_dir(spec.files[0])


def describe(tok: ImageTokenizer, spec: TokenizerSpec) -> dict:
    """The manifest's record of a tokenizer: kind, sizes and the sha256 of the files it was loaded from."""
    return {"kind": spec.kind, "grid": tok.grid, "vocab": tok.vocab_size, "image_size": tok.image_size,
            "sha256": {p.name: sha256_file(p) for p in spec.sources()}}


def tokenizer_fingerprint(spec: TokenizerSpec, image_size: int) -> dict:
    """What decides a tokenizer's codes before it is loaded: its kind, source files and (but for our own dVAE,
    whose config fixes it) the image size."""
    size = {} if spec.kind == "dalle_eval" else {"image_size": image_size}
    return {"kind": spec.kind, "sha256": {p.name: sha256_file(p) for p in spec.sources()}, **size}


def save_image_tokenizer(spec: str | Path | TokenizerSpec, dest: Path, image_size: int = 256) -> dict:
    """Write the tokenizer as dest/ (config.json, model.safetensors, image_tokenizer.json) -> its description.

    Our own dVAE: its two files copied as they are. OpenAI's dVAE: our DVAE checkpoint format (so any
    dVAE loader reads it). VQGAN: {"stage": "vqgan", "vqgan": VQGANConfig}. No pickle is needed afterwards."""
    spec = parse_image_tokenizer(spec)
    tok = load_image_tokenizer(spec, image_size)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if spec.kind == "dalle_eval":
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(spec.files[0] / name, dest / name)
    else:
        save_file({k: v.detach().contiguous().cpu() for k, v in tok.state_dict().items()}, dest / "model.safetensors")
        write_json(dest / "config.json", _config_record(tok))
    info = describe(tok, spec)
    write_json(dest / INFO, info)
    return info


def _config_record(tok) -> dict:
    if isinstance(tok, VQGAN):
        return {"stage": "vqgan", "vqgan": dataclasses.asdict(tok.cfg)}
    c = Config()  # a dVAE checkpoint's config.json: the dVAE's sizes, with the values that must agree with them
    cfg = dataclasses.replace(c, data=dataclasses.replace(c.data, resolution=tok.image_size), dvae=tok.cfg,
                              transformer=dataclasses.replace(c.transformer, image_vocab=tok.vocab_size, grid=tok.grid))
    return {"stage": "dvae", "config": config_to_dict(cfg), "image_tokenizer": tok.kind}


def tokenizer_info(folder: Path) -> dict:
    """A tokenizer folder's image_tokenizer.json; a dVAE dir written before it existed: kind dalle_eval."""
    folder = Path(folder)
    if (folder / INFO).is_file():
        return read_json(folder / INFO, "image tokenizer record")
    tok = _load_dvae_dir(folder)
    return {"kind": "dalle_eval", "grid": tok.grid, "vocab": tok.vocab_size, "image_size": tok.image_size,
            "sha256": {"model.safetensors": sha256_file(folder / "model.safetensors")}}


def _load_dvae_dir(folder: Path) -> DVAE:
    """A dVAE checkpoint dir (ours, or OpenAI's weights converted by save_image_tokenizer)."""
    _, cfg = read_ckpt_config(folder, "dvae")
    return load_weights(DVAE(cfg.dvae), folder)


def load_image_tokenizer_dir(folder: Path) -> torch.nn.Module:
    """A folder written by save_image_tokenizer (a token folder's or a transformer run's dvae/), in eval mode."""
    folder = Path(folder)
    kind = read_json(folder / INFO, "image tokenizer record").get("kind") if (folder / INFO).is_file() else "dalle_eval"
    if kind not in KINDS:
        raise DalleEvalError(f"{folder / INFO}: unknown image tokenizer kind {kind!r} (known: {', '.join(KINDS)})")
    if kind != "vqgan":
        model = _load_dvae_dir(folder)
        model.kind = kind
        return model
    meta = read_json(folder / "config.json", "VQGAN config")
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["vqgan"].items()}
        cfg = VQGANConfig(**fields)
    except (KeyError, TypeError, AttributeError) as e:
        raise DalleEvalError(f"{folder / 'config.json'}: not a VQGAN config ({e})") from None
    return load_weights(VQGAN(cfg), folder)
