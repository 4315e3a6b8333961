"""`dalle-eval demo`, the first command a new user runs: the whole chain at test size, then a re-run."""

import json

import pytest
from click.testing import CliRunner

from dalle_eval.cli import main
from tests.conftest import FAST

pytestmark = pytest.mark.slow  # the whole chain twice: ~30 s with the fast config

def test_demo_whole_chain_then_rerun_resumes_to_the_same_report(tmp_path):
    out = tmp_path / "demo"
    sets = [*FAST, "train.probe_every=3", "train.probe_prompts=4"]  # capability curves, as the tiny config's demo
    args = ["demo", "--out", str(out), "--n", "160"] + [a for f in sets for a in ("--set", f)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    report = json.loads((out / "report.json").read_text())
    headline = report["headline"]
    for key in ("attributes ranked_first (likelihood)", "binding image (parser)", "raven answer (likelihood)",
                "raven answer (parser)", "FID (random Inception)", "dVAE val PSNR"):
        assert key in headline, key
    assert {r["suite"] for r in report["probes"]} == {"attributes", "binding", "raven"}
    md = (out / "report.md").read_text()
    assert "## Probes: attributes, binding, Raven" in md and "Stage times" in md
    assert "## Capability curves" in md and "attributes shape (dvae_ceiling)" in headline
    assert set(report["capability_curves"]) == {"transformer", "dvae"}
    for f in ("probes/report.md", "fid/report.md", "heldout_grid.png", "transformer/model.safetensors",
              "transformer_capability_curves.png", "dvae_capability_curves.png"):
        assert (out / f).is_file(), f
    # Every stage is resumable: a re-run finds the checkpoints and shards, trains nothing again and
    # reports the same numbers.
    ckpts = {f: (out / f).stat().st_mtime_ns for f in ("dvae/model.safetensors", "transformer/model.safetensors")}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "report.json").read_text())
    assert {k: v for k, v in rerun["headline"].items() if k != "total minutes"} == {
        k: v for k, v in headline.items() if k != "total minutes"}
    assert {f: (out / f).stat().st_mtime_ns for f in ckpts} == ckpts
