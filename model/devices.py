"""Which torch devices this machine has, and a one-line refusal for a config naming one it lacks."""

from __future__ import annotations

from dalle_eval.config import Config
from dalle_eval.errors import DalleEvalError


def available_devices() -> list[str]:
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return ["cpu", *(f"cuda:{i}" for i in range(cuda)), *(["mps"] if mps else [])]


def device_problem(value: str) -> str | None:
    """Why torch cannot use `value` on this machine, or None (cpu always works; other backends are left to torch)."""
    if value == "cpu":
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        return "not a torch device name"
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            return f"CUDA is not available on this machine (torch {torch.__version__} finds no GPU)"
        if dev.index is not None and dev.index >= n:
            return f"this machine has {n} CUDA device(s)"
    if dev.type == "mps" and "mps" not in available_devices():
        return "MPS is not available on this machine"
    return None


def check_devices(cfg: Config, sections: tuple[str, ...]) -> None:
    """data.device / train.device / sample.device of the given sections: one line if this machine lacks it."""
    for section in sections:
        value = getattr(getattr(cfg, section), "device", None)
        problem = device_problem(value) if isinstance(value, str) else None
        if problem:
            raise DalleEvalError(f"{section}.device={value}: {problem}; available here: {', '.join(available_devices())}")
