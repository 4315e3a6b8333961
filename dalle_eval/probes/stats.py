"""Accuracy tables: one row per (suite, group, check, split) with n, accuracy, Wilson 95% CI and chance.

A result is one scored check: {suite, groups, check, heldout, passed, chance, ...}. `groups` lists every
category the check counts towards (the suite itself as "all", a prompt kind or Raven configuration, each
rule type of a Raven item), so one result feeds several rows without being counted twice in any.
"""

from __future__ import annotations

import math
from collections import defaultdict

SPLITS = ("all", "seen", "heldout")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (Wilson 1927)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)  # Wilson 1927: (p + z²/2n) / (1 + z²/n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def check_name(check: str) -> str:
    """object_0, object_1, ... are one check ("object") in the tables."""
    return "object" if check.startswith("object_") else check


def summarise(results: list[dict]) -> list[dict]:
    """Scored checks -> table rows; the chance column is the mean chance of the checks in the row."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in results:
        names = r.get("groups") or [r["category"]]
        for group in dict.fromkeys(names):
            for split in ("all", "heldout" if r["heldout"] else "seen"):
                key = (r["suite"], r.get("scorer", "parser"), group, check_name(r["check"]), split)
                groups[key].append(r)
    rows = []
    for (suite, scorer, group, check, split), rs in sorted(groups.items(), key=_row_order):
        k, n = sum(bool(r["passed"]) for r in rs), len(rs)
        lo, hi = wilson(k, n)
        rows.append({"suite": suite, "category": group, "check": check, "split": split, "n": n, "accuracy": k / n,
                     "ci95": [lo, hi], "chance": sum(r["chance"] for r in rs) / n,
                     "scorer": scorer})
    return rows


def _row_order(item: tuple) -> tuple:
    suite, scorer, group, check, split = item[0]
    return (suite, scorer, group != "all", group, check, SPLITS.index(split))


def chance_within_ci(row: dict) -> bool:
    """Is the chance level inside the row's 95% interval (is the measured accuracy at chance)?"""
    return row["ci95"][0] <= row["chance"] <= row["ci95"][1]
