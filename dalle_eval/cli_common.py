"""What every `dalle-eval` command shares: --config/--set with the resolved config printed, the summary block."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from dalle_eval.config import Config, config_to_dict, load_config, to_toml
from dalle_eval.errors import DalleEvalError


def config_options(sections: tuple[str, ...]):
    """--config FILE|NAME (repeatable) and --set key=value (repeatable); passes `cfg` to the command."""

    def decorate(fn):
        @click.option("--config", "configs", multiple=True, default=("tiny",), show_default=True,
                      help="TOML config file or named config (tiny, dalle-1.3b, dalle-12b); repeat to layer.")
        @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one option, e.g. --set train.transformer.steps=100 (repeatable).")
        @functools.wraps(fn)
        def wrapper(configs, overrides, **kwargs):
            try:
                cfg = load_config(configs, overrides)
                print_config(cfg, sections)
                check_devices(cfg, sections)
                return fn(cfg=cfg, overrides=overrides, **kwargs)
            except DalleEvalError as e:
                raise click.ClickException(str(e)) from None

        return wrapper

    return decorate


def overwrite_option(what: str):
    """--overwrite: replace an output made by another run (otherwise refused, naming what differs)."""
    return click.option("--overwrite", is_flag=True,
                        help=f"Replace a {what} made from other inputs (checkpoint, prompts, settings: see its "
                             "fingerprint.json); without it such a folder is refused, naming what differs. The same "
                             "inputs again resume.")


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
    """data.device / train.device / sample.device of the command's sections: one line if this machine lacks it."""
    for section in sections:
        value = getattr(getattr(cfg, section), "device", None)
        problem = device_problem(value) if isinstance(value, str) else None
        if problem:
            raise DalleEvalError(f"{section}.device={value}: {problem}; available here: {', '.join(available_devices())}")


def print_config(cfg: Config, sections: tuple[str, ...]) -> None:
    d = config_to_dict(cfg)
    click.echo("# resolved config\n" + to_toml({k: d[k] for k in sections}).rstrip() + "\n", err=True)


def summary(title: str, lines: dict, report: Path | None = None) -> None:
    click.echo(f"\n== {title} ==")
    for k, v in lines.items():
        click.echo(f"  {k:<24} {v}")
    if report is not None:
        click.echo(f"  {'report':<24} {report}")
