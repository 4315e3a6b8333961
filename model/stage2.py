"""Stage 2: the transformer on token shards (paper appendix B.2).

The token manifest is checked against the model config before anything trains, and the tokenizer
and dVAE the tokens were made with are copied into the checkpoint dir, so it samples on its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from dalle_eval.artifacts import read_manifest
from dalle_eval.config import Config
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import iter_shards
from model.checkpoint import DVAE_DIR, TOKENIZER
from model.stage1 import resolve_data_dir
from model.tokenizer import pad_batch
from model.train import batch_indices, cosine_lr
from model.transformer import DalleTransformer


def check_manifest(manifest: dict, cfg: Config, folder: Path) -> None:
    t = cfg.transformer
    checks = [
        ("text_len", manifest["text_len"], t.text_len, manifest["text_len"] == t.text_len),
        ("grid", manifest["grid"], t.grid, manifest["grid"] == t.grid),
        ("image_vocab", manifest["image_vocab"], t.image_vocab, manifest["image_vocab"] == t.image_vocab),
        ("text_vocab", manifest["text_vocab"], t.text_vocab, manifest["text_vocab"] <= t.text_vocab),
    ]
    for name, have, want, ok in checks:
        if not ok:
            rel = "at most" if name == "text_vocab" else "equal to"
            raise DalleEvalError(
                f"{folder}/manifest.json has {name}={have} but transformer.{name}={want} (must be {rel} it); "
                "rebuild the tokens or change the model config"
            )


def load_tokens(folder: Path, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    manifest = read_manifest(folder, "token shards")
    texts, codes = [], []
    for s in iter_shards(folder / p for p in manifest["shards"]):
        texts.append(s["text.npy"])
        codes.append(s["codes.npy"].astype(np.int64).reshape(-1))
    if not codes:
        raise DalleEvalError(f"{folder}: the token shards hold no samples")
    return pad_batch(texts, text_len), torch.from_numpy(np.stack(codes))  # (N, L), (N, g*g)


class TransformerTask:
    def __init__(self, cfg: Config, data: Path, out: Path):
        self.cfg, self.tc = cfg, cfg.train.transformer
        folder = resolve_data_dir(data, "tokens")
        manifest = read_manifest(folder, "token shards")
        check_manifest(manifest, cfg, folder)
        text, codes = load_tokens(folder, cfg.transformer.text_len)
        n_val = max(1, int(len(codes) * cfg.train.val_fraction))
        self.model = DalleTransformer(cfg.transformer)
        text = self.model.pad_text(text)
        self.train_data = (text[:-n_val], codes[:-n_val])
        self.val_data = (text[-n_val:], codes[-n_val:])
        self.steps, self.batch_size = self.tc.steps, self.tc.batch_size
        self.tokens_per_sample = cfg.transformer.text_len + cfg.transformer.image_len
        self.data_info = {
            "folder": str(folder),
            "n_train": len(codes) - n_val,
            "n_val": n_val,
            "tokenizer_sha256": manifest["tokenizer_sha256"],
            "dvae_sha256": manifest["dvae_sha256"],
        }
        out.mkdir(parents=True, exist_ok=True)  # the checkpoint samples on its own: copy tokenizer + dVAE
        shutil.copyfile(folder / TOKENIZER, out / TOKENIZER)
        shutil.copytree(folder / DVAE_DIR, out / DVAE_DIR, dirs_exist_ok=True)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on gains, biases and embeddings (paper B.2)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            is_embedding = name.endswith(("_emb.weight", "text_pos.weight"))
            (decay if p.ndim >= 2 and not is_embedding else no_decay).append(p)
        t = self.tc
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)

    def lr(self, step: int) -> float:
        return cosine_lr(step, self.steps, self.tc.lr, self.tc.lr_min, self.tc.warmup)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch_indices(self.cfg.train.seed, step, len(self.train_data[1]), self.batch_size)
        return self.train_data[0][idx], self.train_data[1][idx]

    def loss(self, batch, step: int) -> dict[str, torch.Tensor]:
        return self.model.loss(*batch)

    def clip_gradients(self) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip))

    def extra_metrics(self, step: int) -> dict:
        return {}

    def after_step(self) -> None:
        pass

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def export_weights(self) -> dict | None:
        return None

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        device = next(self.model.parameters()).device
        text, codes = (t.to(device) for t in self.val_data)
        parts = [self.model.loss(text[i : i + 64], codes[i : i + 64]) for i in range(0, len(codes), 64)]
        sizes = [min(64, len(codes) - i) for i in range(0, len(codes), 64)]
        avg = {k: sum(float(p[k]) * n for p, n in zip(parts, sizes)) / len(codes) for k in parts[0]}
        return {f"val_{k}": v for k, v in avg.items()} | {"n_val": len(codes)}
