"""Run every benchmark in this folder (make bench); each prints its own figures and ratios."""

import runpy
import sys
from pathlib import Path

here = Path(__file__).parent
sys.path.insert(0, str(here.parent))
for path in sorted(here.glob("*.py")):
    if path.name != "run_all.py" and not path.name.startswith("peer_"):  # peers: make bench-peers
        print(f"\n### {path.name}")
        runpy.run_path(str(path), run_name="__main__")
