"""The layers hold: every import points down (core <- domain <- model <- pipelines | evaluation <- CLI), no module
imports another that imports it back, and the wheel installs nothing but `dalle_eval*` (ARCHITECTURE.md)."""

import ast
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"dalle_eval": "dalle_eval", "model": "dalle_eval.model", "pipelines": "dalle_eval.pipelines"}
CORE = {"dalle_eval", "dalle_eval.errors", "dalle_eval.config", "dalle_eval.artifacts", "dalle_eval.outputs",
        "dalle_eval.shards", "dalle_eval.images", "dalle_eval.tar_reader", "dalle_eval.report", "dalle_eval.samples"}
TOP = {"dalle_eval.cli", "dalle_eval.cli_common", "dalle_eval.cli_probes", "dalle_eval.demo"}
LAYERS = ("core", "domain", "model", "pipelines", "evaluation", "top")
MAY_IMPORT = {  # each layer: the layers it may import (its own and those below; pipelines and evaluation are siblings)
    "core": {"core"},
    "domain": {"core", "domain"},
    "model": {"core", "domain", "model"},
    "pipelines": {"core", "domain", "model", "pipelines"},
    "evaluation": {"core", "domain", "model", "evaluation"},
    "top": set(LAYERS),
}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module.startswith(("dalle_eval.shapes", "dalle_eval.raven")):
        return "domain"
    if module.startswith("dalle_eval.model"):
        return "model"
    if module.startswith("dalle_eval.pipelines"):
        return "pipelines"
    return "top" if module in TOP else "evaluation"


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import in the file, lazy ones inside functions included: (module, line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    mods, edges, generic = modules(), defaultdict(set), []
    for name, path in mods.items():
        for target, line in imports(path):
            if target.split(".")[0] in ("model", "pipelines"):
                generic.append(f"{path.relative_to(ROOT)}:{line}: import {target} (use dalle_eval.{target})")
            if target in mods and target != name:
                edges[name].add(target)
    return edges, generic


def test_no_generic_top_level_imports():
    _, generic = graph()
    assert not generic, "\n".join(generic)


def test_every_import_points_down():
    edges, _ = graph()
    bad = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, targets in sorted(edges.items()) for b in sorted(targets)
           if layer(b) not in MAY_IMPORT[layer(a)]]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges, _ = graph()
    related = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if related(node, nxt):
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(modules()):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def test_the_rules_catch_a_violation(tmp_path):
    """The checks above can fail: an upward import and a generic top-level name are both reported."""
    assert layer("dalle_eval.model.train") == "model" and "evaluation" not in MAY_IMPORT["model"]
    assert "pipelines" not in MAY_IMPORT["evaluation"] and "evaluation" not in MAY_IMPORT["pipelines"]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from model.dvae import DVAE\n    from dalle_eval.probe_run import run_probes\n")
    assert [m for m, _ in imports(bad)][:2] == ["model.dvae", "model.dvae.DVAE"]
    assert "dalle_eval.probe_run" in [m for m, _ in imports(bad)]


@pytest.mark.slow
def test_wheel_installs_only_dalle_eval(tmp_path):
    """Built from the repository, the wheel holds dalle_eval (with dalle_eval.model, dalle_eval.pipelines and the
    named configs) and nothing else at top level: no `model` or `pipelines` package in site-packages."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("dalle_eval-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"dalle_eval"}, top
    for needed in ("dalle_eval/model/transformer.py", "dalle_eval/pipelines/build.py", "dalle_eval/configs/tiny.toml"):
        assert needed in names
