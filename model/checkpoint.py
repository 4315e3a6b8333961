"""Checkpoint directories (DESIGN.md): config.json, model.safetensors, state/step-N/ for exact resume.

    CKPT/config.json          {"stage", "config": full resolved config, ...}
    CKPT/model.safetensors    latest weights (hard link to the newest state dir's copy)
    CKPT/state/step-%08d/     model.safetensors + train.pt (optimizer, schedule, step, stream positions),
                              or under FSDP a torch.distributed.checkpoint folder dcp/ — written to a
                              temp dir and renamed, so a crash never leaves a half checkpoint as the latest
    CKPT/latest               name of the newest complete state dir (replaced atomically)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dalle_eval.artifacts import atomic_path, read_json
from dalle_eval.config import Config, config_from_dict
from dalle_eval.errors import DalleEvalError
from model.distributed import Dist, barrier

STATE = "state"
# Token folders and transformer checkpoints carry the tokenizer and dVAE they were made with.
TOKENIZER, DVAE_DIR = "tokenizer.json", "dvae"


def _export_file(ckpt: Path, final: Path, name: str, keep_last: int) -> None:
    """Point CKPT/model.safetensors and CKPT/latest at the new state dir; drop the oldest ones."""
    with atomic_path(ckpt / "model.safetensors") as tmp:
        tmp.unlink()
        os.link(final / name, tmp)
    with atomic_path(ckpt / "latest") as tmp:
        tmp.write_text(final.name + "\n")
    for old in sorted((ckpt / STATE).glob("step-*"))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)


def _save_tensors(tensors: dict, path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path)


def save_state(ckpt: Path, step: int, task, opt: torch.optim.Optimizer, train_state: dict, keep_last: int,
               d: Dist, parallel: str) -> Path:
    """Write CKPT/state/step-N atomically (all ranks call it); the main rank publishes it as the latest.

    Replicated (single process, DDP): model.safetensors + train.pt with the optimizer state.
    FSDP: a torch.distributed.checkpoint folder `dcp/` (every rank writes its shards) + train.pt, and a full
    model.safetensors gathered to the main rank for users. task.export_weights() (e.g. a parameter EMA)
    replaces the exported weights when given.
    """
    ckpt = Path(ckpt)
    final = ckpt / STATE / f"step-{step:08d}"
    tmp = final.with_name(f".{final.name}.tmp")
    sharded = d.active and parallel == "fsdp"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )

        model_sd, optim_sd = get_state_dict(task.model, opt)
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp / "dcp"))
        weights = get_model_state_dict(task.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        weights = task.model.state_dict()
        train_state = {**train_state, "optimizer": opt.state_dict()}
    if d.is_main:
        _save_tensors(weights, tmp / "model.safetensors")
        export = task.export_weights()
        if export is not None:
            _save_tensors(export, tmp / "export.safetensors")
        torch.save({**train_state, "sharded": sharded}, tmp / "train.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _export_file(ckpt, final, "export.safetensors" if export is not None else "model.safetensors", keep_last)
    barrier(d)
    return final


def latest_state(ckpt: Path) -> Path | None:
    pointer = Path(ckpt) / "latest"
    if not pointer.exists():
        return None
    path = Path(ckpt) / STATE / pointer.read_text().strip()
    return path if path.exists() else None


def load_state(state_dir: Path, task, opt: torch.optim.Optimizer, d: Dist, parallel: str) -> dict:
    """Restore model + optimizer (+ the task's extra state) from a state dir; -> the rest of train.pt."""
    train = torch.load(state_dir / "train.pt", weights_only=True)  # tensors, numbers, strings: no code
    sharded = d.active and parallel == "fsdp"
    if train.get("sharded") and not sharded:
        raise DalleEvalError(f"{state_dir} is an FSDP (sharded) checkpoint: resume it under torchrun with train.parallel=fsdp")
    if sharded and not train.get("sharded"):  # a replicated checkpoint into a sharded model: full state dicts
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(task.model, load_file(state_dir / "model.safetensors"),
                             options=StateDictOptions(full_state_dict=True))
    elif sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(task.model, opt)
        sd = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(sd, checkpoint_id=str(state_dir / "dcp"))
        set_state_dict(task.model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])
    else:
        task.model.load_state_dict(load_file(state_dir / "model.safetensors"))
        opt.load_state_dict(train["optimizer"])
    task.load_extra_state(train.get("extra", {}))
    return train


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
