"""What every `dalle-eval` command shares: --config/--set with the resolved config printed, the summary block."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from dalle_eval.config import Config, config_to_dict, load_config, to_toml
from dalle_eval.errors import DalleEvalError
from dalle_eval.model.devices import check_devices


class Group(click.Group):
    """A click group whose commands' DalleEvalError (bad input, refused output) ends as one click error line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DalleEvalError as e:
            raise click.ClickException(str(e)) from None


def config_flags(fn):
    """The raw --config FILE|NAME (repeatable) and --set key=value (repeatable) options: `configs`, `overrides`."""
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one option, e.g. --set train.transformer.steps=100 (repeatable).")(fn)
    return click.option("--config", "configs", multiple=True, default=("tiny",), show_default=True,
                        help="TOML config file or named config (tiny, dalle-1.3b, dalle-12b); repeat to layer.")(fn)


def config_options(sections: tuple[str, ...]):
    """--config and --set, resolved (and the command's sections printed); passes `cfg` and `overrides`."""

    def decorate(fn):
        @config_flags
        @functools.wraps(fn)
        def wrapper(configs, overrides, **kwargs):
            cfg = load_config(configs, overrides)
            print_config(cfg, sections)
            check_devices(cfg, sections)
            return fn(cfg=cfg, overrides=overrides, **kwargs)

        return wrapper

    return decorate


def clip_options(use: str):
    """--clip-model and --clip-pretrained (open_clip), `use` saying what they are for ({key}: clip_model, ...)."""

    def decorate(fn):
        fn = click.option("--clip-pretrained", default=None,
                          help=f"open_clip tag or local checkpoint ({use.format(key='clip_pretrained')}).")(fn)
        return click.option("--clip-model", default=None,
                            help=f"open_clip model name or model-config JSON ({use.format(key='clip_model')}).")(fn)

    return decorate


def other_rank() -> bool:
    """Under torchrun, a rank other than 0: it ran the library call; rank 0 reports."""
    return os.environ.get("RANK", "0") != "0"


def torchrun_worker(fn):
    """A command that may run under torchrun: every worker ends by exit_worker once the command returns
    (gloo's threads can abort an interpreter shutdown, which torchrun reports as a failure)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from dalle_eval.model.distributed import exit_worker

            exit_worker(0)
        return result

    return wrapper


def overwrite_option(what: str):
    """--overwrite: replace an output made by another run (otherwise refused, naming what differs)."""
    return click.option("--overwrite", is_flag=True,
                        help=f"Replace a {what} made from other inputs (checkpoint, prompts, settings: see its "
                             "fingerprint.json); without it such a folder is refused, naming what differs. The same "
                             "inputs again resume.")


def print_config(cfg: Config, sections: tuple[str, ...]) -> None:
    d = config_to_dict(cfg)
    click.echo("# resolved config\n" + to_toml({k: d[k] for k in sections}).rstrip() + "\n", err=True)


def summary(title: str, lines: dict, report: Path | None = None) -> None:
    click.echo(f"\n== {title} ==")
    for k, v in lines.items():
        click.echo(f"  {k:<24} {v}")
    if report is not None:
        click.echo(f"  {'report':<24} {report}")
