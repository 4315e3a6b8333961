"""One training loop for both stages; the stage-specific parts live in stage1.py and stage2.py.

Exact resume: the batch of step s and the random noise of step s (Gumbel, dropout) are drawn from
generators seeded by (seed, s) alone, and model + optimizer state is checkpointed, so a resumed run
computes the same losses as an uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dalle_eval.artifacts import append_jsonl, read_json, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from model.checkpoint import latest_state, load_train_state, save_state

STAGES = ("dvae", "transformer")


def step_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> torch.Tensor:
    """The sample indices of step `step` (with replacement): a function of (seed, step) only."""
    return torch.randint(n, (batch_size,), generator=torch.Generator().manual_seed(step_seed(seed, step)))


def cosine_lr(step: int, total: int, lr: float, lr_min: float, warmup: int = 0) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from lr to lr_min."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * t))


class _StopOnSignal:
    """SIGTERM/SIGINT (cluster preemption, Ctrl-C) ask the loop to checkpoint and return cleanly."""

    def __init__(self):
        self.signal: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(_to(b, device) for b in batch)


def make_task(stage: str, cfg: Config, data: Path, out: Path):
    if stage == "dvae":
        from model.stage1 import DVAETask

        return DVAETask(cfg, data)
    if stage == "transformer":
        from model.stage2 import TransformerTask

        return TransformerTask(cfg, data, out)
    raise DalleEvalError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")


def train(
    stage: str, data: Path, cfg: Config, out: Path, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> dict:
    """Train one stage; returns the run summary (also written to OUT/summary.json).

    stop_at: checkpoint and return after this step (a time-boxed job; `resume` continues it).
    """
    out = Path(out)
    state = latest_state(out)
    if state is not None and not resume:
        raise DalleEvalError(f"{out} already holds a checkpoint ({state.name}); pass --resume to continue it or pick a new --out")
    torch.manual_seed(cfg.train.seed)
    task = make_task(stage, cfg, Path(data), out)
    device = torch.device(cfg.train.device)
    model = task.model.to(device)
    opt = task.optimizer()
    steps = task.steps
    start = 0
    if state is not None:
        weights, train_state = load_train_state(state)
        model.load_state_dict(weights)
        opt.load_state_dict(train_state["optimizer"])
        task.load_extra_state(train_state.get("extra", {}))
        start = train_state["step"]
        print(f"resuming {out} from step {start}")
    elif resume:
        print(f"{out}: no checkpoint yet; starting from step 0")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"stage": stage, "config": config_to_dict(cfg), "data": task.data_info})

    tc = cfg.train
    if tc.precision not in ("fp32", "bf16"):
        raise DalleEvalError(f"train.precision must be fp32 or bf16, got {tc.precision!r}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
    metrics_path = out / "metrics.jsonl"
    window_t, window_n = time.time(), 0
    stop = _StopOnSignal()
    bar = tqdm(range(start, steps), desc=f"train {stage}", unit="step", disable=not progress, initial=start, total=steps)
    last: dict = {}
    for step in bar:
        lr = task.lr(step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _to(task.batch(step), device)
        torch.manual_seed(step_seed(tc.seed, step))  # noise of step s depends on s only: exact resume
        model.train()
        with autocast:
            losses = task.loss(batch, step)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = task.clip_gradients()
        opt.step()
        task.after_step()
        window_n += task.batch_size
        last = {k: float(v.detach()) for k, v in losses.items()}
        if (step + 1) % tc.log_every == 0 or step + 1 == steps:
            now = time.time()
            rec = {"step": step + 1, **last, "lr": lr, "grad_norm": grad_norm, "samples_per_s": window_n / (now - window_t)}
            rec.update(task.extra_metrics(step))
            append_jsonl(metrics_path, rec)
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            window_t, window_n = now, 0
        if (step + 1) % tc.ckpt_every == 0 or step + 1 in (steps, stop_at) or stop.signal:
            state = {"step": step + 1, "optimizer": opt.state_dict(), "extra": task.extra_state()}
            save_state(out, step + 1, model, state, tc.keep_last, task.export_weights())
        if step + 1 == stop_at or stop.signal:
            break
    bar.close()
    stop.restore()
    if stop.signal:  # preempted: the checkpoint is saved, `--resume` continues exactly
        print(f"received {stop.signal}: saved {out} at step {step + 1}; continue with --resume")
        return {"stage": stage, "steps": steps, "stopped_at": step + 1, "preempted": stop.signal, "final_train": last,
                "eval": {}, "ckpt": str(out)}
    summary = {"stage": stage, "steps": steps, "final_train": last, "eval": task.evaluate(), "ckpt": str(out)}
    write_json(out / "summary.json", summary)
    return summary


def read_summary(ckpt: Path) -> dict:
    return read_json(Path(ckpt) / "summary.json", "training summary")
