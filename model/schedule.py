"""Learning-rate schedules: linear warm-up, then cosine decay, fixed halving, or halving at plateaus.

Paper B.2: warm-up to 4.5e-4 over 5,000 updates, then the rate is halved each time the loss plateaus.
The plateau rule (and any state it keeps) is checkpointed, so a resumed run halves at the same steps.
"""

from __future__ import annotations

import math

from dalle_eval.errors import DalleEvalError


def cosine_lr(step: int, total: int, lr: float, lr_min: float, warmup: int = 0) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from lr to lr_min."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * t))


class LRSchedule:
    """lr(step) for a schedule kind (dalle_eval.config.Schedule); `observe_val` feeds the plateau rule with validation
    losses."""

    def __init__(self, kind: str, lr: float, lr_min: float, total: int, warmup: int = 0, halve_every: int = 0,
                 patience: int = 3, threshold: float = 1e-3):
        if kind == "halving" and halve_every <= 0:
            raise DalleEvalError("schedule 'halving' needs halve_every > 0 (steps between halvings)")
        self.kind, self.peak, self.lr_min, self.total, self.warmup = kind, lr, lr_min, total, warmup
        self.halve_every, self.patience, self.threshold = halve_every, patience, threshold
        self.halvings, self.best, self.bad_evals = 0, math.inf, 0  # plateau state

    def lr(self, step: int) -> float:
        if self.kind == "cosine":
            return cosine_lr(step, self.total, self.peak, self.lr_min, self.warmup)
        if self.warmup and step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        n = (step - self.warmup) // self.halve_every if self.kind == "halving" else self.halvings
        return max(self.lr_min, self.peak * 0.5**n)

    def observe_val(self, loss: float) -> bool:
        """Plateau rule: halve after `patience` validations without a relative improvement > threshold."""
        if self.kind != "plateau" or not math.isfinite(loss):
            return False
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad_evals = loss, 0
            return False
        self.bad_evals += 1
        if self.bad_evals < self.patience:
            return False
        self.halvings, self.bad_evals, self.best = self.halvings + 1, 0, loss
        return True

    def state_dict(self) -> dict:
        return {"halvings": self.halvings, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.halvings, self.best, self.bad_evals = state["halvings"], state["best"], state["bad_evals"]
