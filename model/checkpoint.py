"""Checkpoint directories (DESIGN.md): config.json, model.safetensors, state/step-N/ for exact resume.

    CKPT/config.json          {"stage", "config": full resolved config, ...}
    CKPT/model.safetensors    latest weights (hard link to the newest state dir's copy)
    CKPT/state/step-%08d/     model.safetensors + train.pt (optimizer, step, RNG) — written to a temp
                              dir and renamed, so a crash never leaves a half checkpoint as the latest
    CKPT/latest               name of the newest complete state dir (replaced atomically)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dalle_eval.artifacts import atomic_dir, atomic_path, read_json
from dalle_eval.config import Config, config_from_dict
from dalle_eval.errors import DalleEvalError

STATE = "state"
# Token folders and transformer checkpoints carry the tokenizer and dVAE they were made with.
TOKENIZER, DVAE_DIR = "tokenizer.json", "dvae"


def save_state(
    ckpt: Path, step: int, model: torch.nn.Module, train_state: dict, keep_last: int, export: dict | None = None
) -> Path:
    """export: the weights users load (e.g. a parameter EMA); default the model's own weights."""
    ckpt = Path(ckpt)
    name = f"step-{step:08d}"
    final = ckpt / STATE / name
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        if export is not None:
            save_file({k: v.detach().contiguous() for k, v in export.items()}, tmp / "export.safetensors")
        torch.save(train_state, tmp / "train.pt")
    with atomic_path(ckpt / "model.safetensors") as tmp:
        tmp.unlink()
        os.link(final / ("export.safetensors" if export is not None else "model.safetensors"), tmp)
    with atomic_path(ckpt / "latest") as tmp:
        tmp.write_text(name + "\n")
    for old in sorted((ckpt / STATE).glob("step-*"))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def latest_state(ckpt: Path) -> Path | None:
    pointer = Path(ckpt) / "latest"
    if not pointer.exists():
        return None
    path = Path(ckpt) / STATE / pointer.read_text().strip()
    return path if path.exists() else None


def load_train_state(state_dir: Path) -> tuple[dict, dict]:
    weights = load_file(state_dir / "model.safetensors")
    train = torch.load(state_dir / "train.pt", weights_only=True)  # optimizer state + step: tensors and numbers
    return weights, train


def read_ckpt_config(ckpt: Path, stage: str | None = None) -> tuple[dict, Config]:
    ckpt = Path(ckpt)
    meta = read_json(ckpt / "config.json", "checkpoint config")
    if stage and meta.get("stage") != stage:
        raise DalleEvalError(f"{ckpt}: a '{meta.get('stage')}' checkpoint, expected a '{stage}' checkpoint")
    return meta, config_from_dict(meta["config"])


def load_weights(module: torch.nn.Module, ckpt: Path) -> torch.nn.Module:
    path = Path(ckpt) / "model.safetensors"
    if not path.exists():
        raise DalleEvalError(f"{ckpt}: no model.safetensors — has training saved a checkpoint yet?")
    module.load_state_dict(load_file(path))
    return module.eval()


def load_dvae(ckpt: Path):
    from model.dvae import DVAE

    _, cfg = read_ckpt_config(ckpt, "dvae")
    return load_weights(DVAE(cfg.dvae), ckpt)


def load_transformer(ckpt: Path):
    from model.transformer import DalleTransformer

    _, cfg = read_ckpt_config(ckpt, "transformer")
    return load_weights(DalleTransformer(cfg.transformer), ckpt)
