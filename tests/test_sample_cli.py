"""The `sample` command is thin: generate.sample_command checks the options, parses --region, samples and writes
the grid; the CLI prints what it returns. Its refusals come from the library, named as the command's options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from dalle_eval.generate import parse_region, sample_command
from tests.conftest import FAST

NO_CKPT = Path("no-such-checkpoint")  # every refusal below comes before the checkpoint is read


@pytest.mark.parametrize("region, corner", [("5,6", (5, 6)), (" 5 , 6 ", (5, 6)), ((0, 3), (0, 3)), ([7, 1], (7, 1)),
                                            (None, None)])
def test_parse_region_reads_column_and_row(region, corner):
    assert parse_region(region) == corner


@pytest.mark.parametrize("region", ["5", "5,6,7", "a,b", "5;6", "", (1,), (1, 2, 3), ("x", 2)])
def test_parse_region_refuses_anything_but_two_integers(region):
    with pytest.raises(DalleEvalError, match=r"--region .*: expected two integers X0,Y0 \(token column, row\)"):
        parse_region(region)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give exactly one of --prompts FILE or --caption TEXT"),
    ({"caption": "a red circle", "prompts_file": Path("p.txt")}, "give exactly one of --prompts FILE or --caption"),
    ({"caption": "  "}, "--caption is empty: give the text to draw"),
    ({"caption": "a red circle", "image": Path("x.png")},
     "image completion needs --image with exactly one of --keep-rows R or --region X0,Y0"),
    ({"caption": "a red circle", "image": Path("x.png"), "keep_rows": 2, "region": "1,1"}, "exactly one of --keep-rows"),
    ({"caption": "a red circle", "keep_rows": 2}, "exactly one of --keep-rows"),
    ({"caption": "a red circle", "region": "1,1"}, "exactly one of --keep-rows"),
    ({"caption": "a red circle", "image": Path("x.png"), "region": "5"}, "--region '5': expected two integers"),
])
def test_sample_command_refuses_bad_options_before_loading_anything(tmp_path, kwargs, message):
    cfg = load_config(["tiny"], FAST).sample
    with pytest.raises(DalleEvalError, match=re.escape(message)):
        sample_command(NO_CKPT, cfg, tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_sample_command_returns_what_the_cli_prints(tmp_path, transformer_ckpt):
    cfg = load_config(["tiny"], FAST).sample
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": p, "caption": c}) + "\n"
                               for p, c in (("a", "a small red circle"), ("b", "a large blue square"))))
    r = sample_command(transformer_ckpt, cfg, tmp_path / "s", prompts_file=prompts, n=2, progress=False)
    assert r == {"images": 4, "prompts": 2, "samples": tmp_path / "s" / "samples.jsonl",
                 "grid": tmp_path / "s" / "grid.png", "random_clip": False, "captions_cut": 0}
    assert r["grid"].is_file() and len(r["samples"].read_text().splitlines()) == 4
