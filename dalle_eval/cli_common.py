"""What every `dalle-eval` command shares: --config/--set with the resolved config printed, the summary block."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from dalle_eval.config import Config, config_to_dict, load_config, to_toml
from dalle_eval.errors import DalleEvalError
from dalle_eval.model.devices import check_devices


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


def print_config(cfg: Config, sections: tuple[str, ...]) -> None:
    d = config_to_dict(cfg)
    click.echo("# resolved config\n" + to_toml({k: d[k] for k in sections}).rstrip() + "\n", err=True)


def summary(title: str, lines: dict, report: Path | None = None) -> None:
    click.echo(f"\n== {title} ==")
    for k, v in lines.items():
        click.echo(f"  {k:<24} {v}")
    if report is not None:
        click.echo(f"  {'report':<24} {report}")
