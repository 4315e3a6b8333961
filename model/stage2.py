"""Stage 2: the transformer on token shards (paper appendix B.2).

The token manifest is checked against the model config, and the tokenizer and image tokenizer (dvae/: our
dVAE, OpenAI's or a VQGAN) files against the manifest's fingerprints, before anything trains. Both are copied
into the checkpoint dir, so it samples on its own, decoding with the image tokenizer the tokens were made with.
"""

from __future__ import annotations

import functools
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER
from dalle_eval.model.dvae import pixels_to_pil
from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
from dalle_eval.model.schedule import LRSchedule
from dalle_eval.model.stream import mix_seed
from dalle_eval.model.task import TaskHooks
from dalle_eval.model.tokenizer import BPEDropout, encode_captions, load_tokenizer, pad_batch
from dalle_eval.model.transformer import DalleTransformer, train_flops

from dalle_eval.artifacts import sha256_file
from dalle_eval.config import Config
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import local_files

MANIFEST_FIELDS = ("shards", "text_len", "grid", "image_vocab", "text_vocab", "tokenizer_sha256", "dvae_sha256")


def check_manifest(manifest: dict, cfg: Config, folder: Path, assets: Path | None = None) -> None:
    """assets: the local folder holding the tokenizer and dvae/ (default: `folder`; a copy when it is a URL)."""
    assets = folder if assets is None else assets
    missing = [k for k in MANIFEST_FIELDS if k not in manifest] if isinstance(manifest, dict) else list(MANIFEST_FIELDS)
    if missing:
        raise DalleEvalError(f"{folder}/manifest.json: not a token-shard manifest (no {', '.join(missing)}); "
                             "rebuild the tokens with `dalle-eval build-dataset --dvae`")
    t = cfg.transformer
    checks = [
        ("text_len", manifest["text_len"], t.text_len, manifest["text_len"] == t.text_len),
        ("grid", manifest["grid"], t.grid, manifest["grid"] == t.grid),
        ("image_vocab", manifest["image_vocab"], t.image_vocab, manifest["image_vocab"] == t.image_vocab),
        ("text_vocab", manifest["text_vocab"], t.text_vocab, manifest["text_vocab"] <= t.text_vocab),
    ]
    kind = (manifest.get("image_tokenizer") or {}).get("kind", "dalle_eval")
    for name, have, want, ok in checks:
        if not ok:
            rel = "at most" if name == "text_vocab" else "equal to"
            made_by = f" (made by the {kind} image tokenizer)" if name in ("grid", "image_vocab") else ""
            raise DalleEvalError(
                f"{folder}/manifest.json has {name}={have}{made_by} but transformer.{name}={want} (must be {rel} it); "
                f"rebuild the tokens or change the model config (--set transformer.{name}={have})"
            )
    for what, path, key in (("tokenizer", assets / TOKENIZER, "tokenizer_sha256"),
                            ("image tokenizer", assets / DVAE_DIR / "model.safetensors", "dvae_sha256")):
        have = sha256_file(path) if path.exists() else "missing"
        if have != manifest[key]:
            raise DalleEvalError(f"{path}: the {what} file has sha256 {have[:12]} but {folder}/manifest.json "
                                 f"records {manifest[key][:12]}; the tokens were made with another {what} — rebuild them")


def check_ids(ids: np.ndarray, vocab: int, what: str) -> None:
    """ValueError (a bad shard to the stream) unless every id is in [0, vocab): the embedding would IndexError."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"{what} out of range: ids in [{int(ids.min())}, {int(ids.max())}], the manifest's vocab is {vocab}")


def decode_tokens(sample: dict, text_len: int, dropout: BPEDropout | None = None, seed: int = 0,
                  text_vocab: int | None = None, image_vocab: int | None = None, image_len: int | None = None):
    """A token-shard sample -> (text ids padded with -1 to text_len, flat image codes), int64.

    dropout: while training (the stream sets sample["__epoch__"]) the caption is re-tokenized with BPE
    dropout seeded by (seed, key, epoch): a new segmentation each epoch, the same one after a resume.
    text_vocab / image_vocab / image_len (the manifest's): ids outside the vocabularies or a code grid of
    another size raise ValueError, so the stream treats the shard as bad instead of the model failing on it."""
    ids = np.asarray(sample["text.npy"])
    codes = np.asarray(sample["codes.npy"]).reshape(-1)
    if dropout is not None and "__epoch__" in sample:
        ids = dropout.encode(sample["txt"], random.Random(mix_seed(seed, "bpe", sample["__key__"], sample["__epoch__"])))
    if text_vocab is not None:
        check_ids(ids, text_vocab, "text ids")
    if image_vocab is not None:
        check_ids(codes, image_vocab, "image codes")
    if image_len is not None and codes.size != image_len:
        raise ValueError(f"{codes.size} image codes, the manifest's grid has {image_len}")
    return pad_batch([ids], text_len)[0], torch.from_numpy(codes.astype(np.int64))


class TransformerTask(TaskHooks):
    def __init__(self, cfg: Config, folder: Path, manifest: dict, out: Path, copy_assets: bool = True):
        self.cfg, self.tc = cfg, cfg.train.transformer
        self.assets = local_files(folder, (TOKENIZER, DVAE_DIR), out)  # from a URL: fetched into OUT
        check_manifest(manifest, cfg, folder, self.assets)
        self.model = DalleTransformer(cfg.transformer)
        t = cfg.transformer
        dropout = BPEDropout(self.assets / TOKENIZER, self.tc.bpe_dropout) if self.tc.bpe_dropout > 0 else None
        self.decode = functools.partial(decode_tokens, text_len=t.text_len, dropout=dropout, seed=cfg.train.seed,
                                        text_vocab=manifest["text_vocab"], image_vocab=manifest["image_vocab"],
                                        image_len=manifest["grid"] ** 2)
        self.fingerprints = {"tokenizer_sha256": manifest["tokenizer_sha256"], "dvae_sha256": manifest["dvae_sha256"]}
        scramble = ((manifest.get("config") or {}).get("data") or {}).get("scramble")
        if scramble:  # a control arm's captions (data.scramble): never resumed on true-caption tokens, nor the reverse
            self.fingerprints["scramble"] = scramble
        self.tokens_per_sample = t.text_len + t.image_len
        self.flops_per_sample = train_flops(t)["per_sample"]  # MFU's numerator: 6 N + the pairs the masks allow
        self.out = out
        if copy_assets and self.assets != out:  # samples on its own: copy tokenizer + image tokenizer (any kind)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.assets / TOKENIZER, out / TOKENIZER)
            shutil.copytree(self.assets / DVAE_DIR, out / DVAE_DIR, dirs_exist_ok=True)
        self.folder = folder

    def check_sample(self, sample: tuple, folder: Path) -> None:
        if sample[1].numel() != self.cfg.transformer.image_len:
            raise DalleEvalError(f"{folder}: samples hold {sample[1].numel()} image codes, the model expects "
                                 f"{self.cfg.transformer.image_len}")

    def shard_units(self) -> list[torch.nn.Module]:
        return list(self.model.blocks)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on gains, biases and embeddings (paper B.2)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            is_embedding = name.endswith(("_emb.weight", "text_pos.weight"))
            (decay if p.ndim >= 2 and not is_embedding else no_decay).append(p)
        t = self.tc
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)

    def schedule(self) -> LRSchedule:
        t = self.tc
        return LRSchedule(t.schedule, t.lr, t.lr_min, t.steps, t.warmup, t.halve_every, t.plateau_patience,
                          t.plateau_threshold)

    def prepare(self, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        text, codes = batch
        return self.model.pad_text(text).to(device, non_blocking=True), codes.to(device, non_blocking=True)

    def loss(self, forward, batch, step: int) -> dict[str, torch.Tensor]:
        return self.model.loss(*batch, forward=forward)

    def clip_gradients(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    @torch.no_grad()
    def evaluate(self, val: list[tuple], device: torch.device, final: bool = False) -> dict:
        self.model.eval()
        totals: dict[str, float] = {}
        for i in range(0, len(val), 64):
            text, codes = self.prepare([torch.stack(p) for p in zip(*val[i : i + 64])], device)
            for k, v in self.model.loss(text, codes).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(text)
        return {f"val_{k}": v / len(val) for k, v in totals.items()} | {"n_val": len(val)}

    @torch.no_grad()
    def sample_grid(self, val: list[tuple], path: Path, device: torch.device, main: bool) -> None:
        """Images for the fixed train.sample_prompts, decoded by the run's image tokenizer (one row per prompt)."""
        from dalle_eval.model.sampling import sample_codes

        from dalle_eval.report import image_grid

        prompts = list(self.cfg.train.sample_prompts)
        tok = load_tokenizer(self.out / TOKENIZER)
        ids, _ = encode_captions(tok, prompts, self.cfg.transformer.text_len)
        self.model.eval()
        text = self.model.pad_text(pad_batch(ids, self.cfg.transformer.text_len)).to(device)
        codes = sample_codes(self.model, text, list(range(len(prompts))), self.cfg.sample.temperature, self.cfg.sample.top_k)
        if not main:
            return
        pixels = load_image_tokenizer_dir(self.out / DVAE_DIR).to(device).decode(codes)
        images = pixels_to_pil(pixels)
        image_grid(list(zip(images, prompts)), path, cols=len(prompts))
