"""Checkpoint directories (README "Artifacts"): config.json, model.safetensors, state/step-N/ for exact resume.

    CKPT/config.json          {"stage", "config": full resolved config, ...}
    CKPT/model.safetensors    latest weights (hard link to the newest state dir's copy)
    CKPT/state/step-%08d/     model.safetensors + train.pt (optimizer, schedule, step, stream positions),
                              or under FSDP a torch.distributed.checkpoint folder dcp/ — written to a
                              temp dir and renamed, so a crash never leaves a half checkpoint as the latest
    CKPT/latest               name of the newest complete state dir (replaced atomically)

A run started with `train --init-from SRC` (init_weights) begins from another checkpoint's weights only (no
optimizer, schedule, step or data position) and records SRC's fingerprint under "init_from" in its config.json.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from dalle_eval.model.distributed import Dist, barrier
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dalle_eval.artifacts import atomic_path, read_json, sha256_file
from dalle_eval.config import Config, apply_overrides, config_from_dict, config_to_dict
from dalle_eval.errors import DalleEvalError

STATE = "state"
# Token folders and transformer checkpoints carry the tokenizer and dVAE they were made with.
TOKENIZER, DVAE_DIR = "tokenizer.json", "dvae"


def _export_file(ckpt: Path, final: Path, name: str, keep_last: int, keep_every: int = 0) -> None:
    """Point CKPT/model.safetensors and CKPT/latest at the new state dir; drop the older ones.

    Kept: the newest `keep_last` state dirs (by step; 0 keeps all), every step-N with N % keep_every == 0
    (keep_every 0: none besides those), and always `final`, the one just written (also after a resume from
    a rewound `latest`, when newer steps may exist).
    """
    with atomic_path(ckpt / "model.safetensors") as tmp:
        tmp.unlink()
        os.link(final / name, tmp)
    with atomic_path(ckpt / "latest") as tmp:
        tmp.write_text(final.name + "\n")
    if keep_last <= 0:
        return
    for step, old in kept_checkpoints(ckpt)[:-keep_last]:
        if old != final and not (keep_every > 0 and step % keep_every == 0):
            shutil.rmtree(old)


def _save_tensors(tensors: dict, path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path)


def save_state(ckpt: Path, step: int, task, opt: torch.optim.Optimizer, train_state: dict, keep_last: int,
               d: Dist, parallel: str, *, keep_every: int = 0) -> Path:
    """Write CKPT/state/step-N atomically (all ranks call it); the main rank publishes it as the latest and
    prunes the older state dirs to the last `keep_last` plus every multiple of `keep_every` (see _export_file).

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
        _export_file(ckpt, final, "export.safetensors" if export is not None else "model.safetensors", keep_last,
                     keep_every)
    barrier(d)
    return final


def kept_checkpoints(ckpt: Path) -> list[tuple[int, Path]]:
    """The complete state dirs CKPT/state/step-N kept on disk, as (N, path) sorted by step ([] before the first
    checkpoint). Temp dirs of a checkpoint being written (.step-N.tmp) and other names are not listed."""
    found = []
    for p in (Path(ckpt) / STATE).glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _previous_hint(ckpt: Path, bad: str | None = None) -> str:
    """How to go on from the newest kept state dir older than the `bad` one (any, if None), or that none is kept."""
    older = [p for _, p in kept_checkpoints(ckpt) if bad is None or p.name < bad]
    if not older:
        return "no earlier checkpoint is kept: start a new --out (or retrain)"
    prev = older[-1]
    return (f"the previous kept checkpoint is {prev}: to resume from it, write its name into {Path(ckpt) / 'latest'} "
            f"(echo {prev.name} > {Path(ckpt) / 'latest'}) and run again with --resume")


def latest_state(ckpt: Path) -> Path | None:
    """The newest complete state dir, None before the first checkpoint; a `latest` naming a missing or
    malformed state dir is an error (never a silent fresh start over the kept checkpoints)."""
    pointer = Path(ckpt) / "latest"
    if not pointer.exists():
        return None
    name = pointer.read_text(errors="replace").strip()
    path = Path(ckpt) / STATE / name
    well_formed = re.fullmatch(r"step-\d+", name) is not None
    if not well_formed or not path.is_dir():
        raise DalleEvalError(f"{pointer} names {name!r}, but {path} is not a checkpoint dir; "
                             + _previous_hint(ckpt, name if well_formed else None))
    return path


def _load_tensors(path: Path, hint: str = "") -> dict[str, torch.Tensor]:
    """A safetensors file, or one error naming it (missing, a folder, truncated, not safetensors)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise DalleEvalError(f"{path}: {what}, expected a model.safetensors weights file" + (f"; {hint}" if hint else ""))
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DalleEvalError(f"{path}: unreadable weights ({reason}): truncated or not a safetensors file"
                             + (f"; {hint}" if hint else "")) from None


def _param_diff(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """-> the module's parameters the tensors lack, tensors that are no parameter or buffer of it, and parameters
    of another shape (buffers are left to load_state_dict and the model's own hooks, e.g. the transformer's check
    of a legacy layer order)."""
    want = dict(module.named_parameters())
    missing = [k for k in want if k not in tensors]
    unexpected = [k for k in tensors if k not in want and k not in dict(module.named_buffers())]
    shapes = [k for k in want if k in tensors and tuple(tensors[k].shape) != tuple(want[k].shape)]
    return missing, unexpected, shapes


def _load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, or one line saying how the file's parameters differ from the model's."""
    missing, unexpected, shapes = _param_diff(module, tensors)
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
        raise DalleEvalError(f"{path}: the weights do not match the {type(module).__name__} its config.json describes: "
                             + ", ".join(parts))
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise DalleEvalError(f"{path}: the weights do not load into the {type(module).__name__} its config.json "
                             f"describes ({str(e).splitlines()[0]})") from None


def _load_train_pt(state_dir: Path) -> dict:
    path = Path(state_dir) / "train.pt"
    hint = _previous_hint(Path(state_dir).parent.parent, Path(state_dir).name)
    if not path.is_file():
        raise DalleEvalError(f"{path}: missing; {hint}")
    try:
        train = torch.load(path, weights_only=True)  # tensors, numbers, strings: no code
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        reason = "not a complete torch zip archive" if not zipfile.is_zipfile(path) else f"{type(e).__name__}: {e}"
        raise DalleEvalError(f"{path}: unreadable training state ({reason.splitlines()[0][:160]}): truncated or "
                             f"corrupt; {hint}") from None
    if not isinstance(train, dict) or "step" not in train:
        raise DalleEvalError(f"{path}: not a dalle-eval training state (no step); {hint}")
    return train


def load_state(state_dir: Path, task, opt: torch.optim.Optimizer, d: Dist, parallel: str) -> dict:
    """Restore model + optimizer (+ the task's extra state) from a state dir; -> the rest of train.pt."""
    train = _load_train_pt(state_dir)
    sharded = d.active and parallel == "fsdp"
    if train.get("sharded") and not sharded:
        raise DalleEvalError(f"{state_dir} is an FSDP (sharded) checkpoint: resume it under torchrun with train.parallel=fsdp")
    if sharded and not train.get("sharded"):  # a replicated checkpoint into a sharded model: full state dicts
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        hint = _previous_hint(state_dir.parent.parent, state_dir.name)
        set_model_state_dict(task.model, _load_tensors(state_dir / "model.safetensors", hint),
                             options=StateDictOptions(full_state_dict=True))
    elif sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(task.model, opt)
        sd = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(sd, checkpoint_id=str(state_dir / "dcp"))
        set_state_dict(task.model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])
    else:
        path = state_dir / "model.safetensors"
        _load_into(task.model, _load_tensors(path, _previous_hint(state_dir.parent.parent, state_dir.name)), path)
        opt.load_state_dict(train["optimizer"])
    task.load_extra_state(train.get("extra", {}))
    return train


def read_ckpt_config(ckpt: Path, stage: str | None = None) -> tuple[dict, Config]:
    ckpt = Path(ckpt)
    meta = read_json(ckpt / "config.json", "checkpoint config")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise DalleEvalError(f"{ckpt / 'config.json'}: not a checkpoint config (no 'config' table); "
                             "expected a checkpoint dir written by `dalle-eval train`")
    if stage and meta.get("stage") != stage:
        raise DalleEvalError(f"{ckpt}: a '{meta.get('stage')}' checkpoint, expected a '{stage}' checkpoint")
    return meta, config_from_dict(meta["config"])


def resume_config(ckpt: Path, cfg: Config, overrides: Sequence[str] = (), use_saved: bool = False,
                  verbose: bool = True) -> Config:
    """The config a resumed run trains with: CKPT's saved config + `overrides`, or `cfg` when CKPT has none yet.

    use_saved (`train --resume`, whose --config is ignored): take it. Otherwise `cfg` must be that config:
    another one is refused, naming the keys that differ, before anything (config.json) is written.
    """
    ckpt = Path(ckpt)
    if not (ckpt / "config.json").exists():
        return cfg
    meta = read_json(ckpt / "config.json", "checkpoint config")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise DalleEvalError(f"{ckpt / 'config.json'}: not a checkpoint config (no 'config' table)")
    saved = apply_overrides(config_from_dict(meta["config"], where=f"{ckpt / 'config.json'}:"), overrides)
    if use_saved:
        if verbose:
            print(f"resume: using the config saved in {ckpt / 'config.json'} (plus --set overrides)", file=sys.stderr)
        return saved
    differ = _config_diff(config_to_dict(saved), config_to_dict(cfg))
    if differ:
        raise DalleEvalError(f"{ckpt} was trained with another config ({'; '.join(differ[:6])}); resume it with its "
                             "saved config (plus overrides, e.g. more steps) or start a new --out")
    return cfg


def _config_diff(saved: dict, given: dict, prefix: str = "", names: tuple[str, str] = ("saved", "given")) -> list[str]:
    """'key: a saved, b given' (or the other `names`) for every leaf that differs."""
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{key}.", names)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} {names[0]}, {b!r} {names[1]}")
    return out


def load_weights(module: torch.nn.Module, ckpt: Path) -> torch.nn.Module:
    path = Path(ckpt) / "model.safetensors"
    if not path.exists():
        raise DalleEvalError(f"{ckpt}: no model.safetensors — has training saved a checkpoint yet?")
    _load_into(module, _load_tensors(path), path)
    return module.eval()


def load_transformer(ckpt: Path):
    from dalle_eval.model.transformer import DalleTransformer

    _, cfg = read_ckpt_config(ckpt, "transformer")
    return load_weights(DalleTransformer(cfg.transformer), ckpt)


def _init_source(src: Path, stage: str) -> tuple[Path, Path, int | None]:
    """`train --init-from SRC` -> (its run dir, weights file, step). SRC is one of a run's kept state dirs
    RUN/state/step-N or a run dir (its latest one): that step's exported weights (export.safetensors, e.g. the
    dVAE's EMA, else model.safetensors; a state dir's files never change, unlike a live run's published copy).
    A checkpoint dir without state dirs (e.g. a transformer run's dvae/) gives its model.safetensors."""
    src = Path(src)
    expected = (f"expected a `dalle-eval train --stage {stage}` run dir or one of its {STATE}/step-N dirs, "
                "holding model.safetensors")
    if not src.exists():
        raise DalleEvalError(f"--init-from {src}: no such file or folder; {expected}")
    if not src.is_dir():
        raise DalleEvalError(f"--init-from {src}: a file; {expected}")
    in_run = re.fullmatch(r"step-\d+", src.name) and src.parent.name == STATE
    state = src if in_run else latest_state(src)
    if state is None:
        return src, src / "model.safetensors", None
    export = state / "export.safetensors"
    return (state.parent.parent, export if export.exists() else state / "model.safetensors",
            int(state.name.removeprefix("step-")))


def _fit_weights(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str, hint: list[str]) -> None:
    """load_state_dict, or an error naming the model config keys that differ (`hint`) and every parameter that is
    missing, unexpected or of another shape (with both shapes)."""
    missing, unexpected, shapes = _param_diff(module, tensors)
    want = dict(module.named_parameters())
    parts = [f"{what}: {_first(names)}" for what, names in (
        ("missing from the source", missing), ("unexpected (not in this model)", unexpected),
        ("other shape", [f"{k} {tuple(tensors[k].shape)} in the source, {tuple(want[k].shape)} here" for k in shapes]))
        if names]
    head = f"{where}: the weights do not fit this run's {type(module).__name__}" + (
        f" (model config: {'; '.join(hint)})" if hint else "")
    if parts:
        raise DalleEvalError(f"{head}: " + "; ".join(parts))
    try:
        module.load_state_dict(tensors)
    except (RuntimeError, DalleEvalError) as e:
        raise DalleEvalError(f"{head}: {str(e).splitlines()[0]}") from None


def _first(names: list[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def init_weights(module: torch.nn.Module, src: Path, stage: str, cfg: Config) -> dict:
    """Load the weights of the `stage` checkpoint SRC into `module` (built from `cfg`, whose shapes must fit) ->
    the record a run keeps of it: the source run, weights file and its sha256, step and training data."""
    run, weights, step = _init_source(src, stage)
    if not (run / "config.json").is_file():
        raise DalleEvalError(f"--init-from {src}: not a checkpoint dir (no {run / 'config.json'})")
    meta, source_cfg = read_ckpt_config(run)
    if meta.get("stage") != stage:
        raise DalleEvalError(f"--init-from {src}: a '{meta.get('stage')}' checkpoint; --stage {stage} starts from a "
                             f"'{stage}' one")
    hint = _config_diff(config_to_dict(source_cfg)[stage], config_to_dict(cfg)[stage], f"{stage}.", ("in the source", "here"))
    _fit_weights(module, _load_tensors(weights, f"--init-from {src}: has that run saved a checkpoint?"),
                 f"--init-from {src}", hint)
    return {"run": str(run.resolve()), "weights": str(weights.resolve()), "sha256": sha256_file(weights),
            "step": step, "data_fingerprints": (meta.get("data") or {}).get("fingerprints")}


def reload_init_weights(module: torch.nn.Module, record: dict) -> None:
    """The weights of an init_weights `record` again (a run resumed before its first checkpoint), refused when the
    file is gone or changed since (e.g. a source run dir that trained on)."""
    path = Path(record["weights"])
    have = sha256_file(path) if path.is_file() else "missing"
    if have != record["sha256"]:
        raise DalleEvalError(f"{path}: this run started from it (--init-from, sha256 {record['sha256'][:12]}) but it "
                             f"is now {have[:12]}; start a new --out with --init-from")
    _fit_weights(module, _load_tensors(path), str(path), [])
