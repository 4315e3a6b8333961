"""Accuracy tables: one row per (suite, group, check, split) with n, accuracy, Wilson 95% CI and chance.

Checks of one prompt are not independent (several images per prompt; several objects per image), so the
interval uses the effective sample size of the clustered proportion (Kish's design effect; Korn &
Graubard 1998): n_eff = p(1-p) / Var(p), Var(p) from the spread of the per-prompt successes (Cochran's
ratio-estimator variance), n_eff <= n (about the number of prompts when the prompt decides every check;
exactly that when all passed or all failed, where the spread says nothing).
With one check per prompt it is the plain Wilson interval.

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
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k <= 0 else lo, 1.0 if k >= n else hi)  # exact ends: round-off put 1.0 outside at k = n


def effective_n(successes: list[int], trials: list[int]) -> float:
    """Effective number of independent trials of a proportion measured in clusters (per-prompt counts)."""
    n, c = sum(trials), len(trials)
    p = sum(successes) / n if n else 0.0
    if c == n:
        return float(n)
    if c < 2 or p in (0.0, 1.0):  # no spread to estimate the correlation from: one fact per prompt (the worst case)
        return float(c)
    # Cochran (1977) eq. 6.13: Var(p) = c / (c - 1) * sum((k_i - p m_i)^2) / n^2
    var = c / (c - 1) * sum((k - p * m) ** 2 for k, m in zip(successes, trials)) / n**2
    return float(n) if var <= 0 else min(float(n), p * (1 - p) / var)


def clustered_wilson(results: list[dict], z: float = 1.96) -> tuple[tuple[float, float], int, float]:
    """(interval, prompts, effective n) of the pass rate of `results`, clustered by prompt_id (95% at z=1.96)."""
    k: dict[str, int] = defaultdict(int)
    m: dict[str, int] = defaultdict(int)
    for r in results:
        k[r["prompt_id"]] += bool(r["passed"])
        m[r["prompt_id"]] += 1
    n, n_eff = len(results), effective_n(list(k.values()), list(m.values()))
    p = sum(k.values()) / n
    return wilson(p * n_eff, n_eff, z), len(m), n_eff


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
        if split == "seen" and (suite, scorer, group, check, "heldout") not in groups:
            continue  # nothing held out in this group: "seen" would repeat "all"
        k, n = sum(bool(r["passed"]) for r in rs), len(rs)
        (lo, hi), prompts, n_eff = clustered_wilson(rs)
        rows.append({"suite": suite, "category": group, "check": check, "split": split, "n": n, "prompts": prompts,
                     "n_eff": round(n_eff, 1), "accuracy": k / n, "ci95": [lo, hi],
                     "chance": sum(r["chance"] for r in rs) / n, "scorer": scorer})
    return rows


def _row_order(item: tuple) -> tuple:
    suite, scorer, group, check, split = item[0]
    return (suite, scorer, group != "all", group, check, SPLITS.index(split))


def attach_random(table: list[dict], random_results: list[dict]) -> None:
    """Give each parser row the random generator's accuracy on the same prompts ("random" column)."""
    rand = {_key(r): r["accuracy"] for r in summarise(random_results)}
    for row in table:
        row["random"] = rand.get(_key(row)) if row["scorer"] == "parser" else None


def _key(row: dict) -> tuple:
    return (row["suite"], row["scorer"], row["category"], row["check"], row["split"])


def coverage(prompts: list[dict], samples: list[dict]) -> list[dict]:
    """Per suite and table group: prompts expected, with at least one image, and the ids of those without."""
    have = {str(s["prompt_id"]) for s in samples}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in prompts:
        for g in dict.fromkeys(p["groups"]):
            groups[(p["suite"], g)].append(p["prompt_id"])
    return [{"suite": suite, "category": g, "expected": len(ids), "with_images": sum(i in have for i in ids),
             "missing": [i for i in ids if i not in have]} for (suite, g), ids in sorted(groups.items())]


def mark_partial(table: list[dict], cover: list[dict], image_scorers: tuple[str, ...] = ("parser", "clip")) -> None:
    """row["partial"] = its figure comes from images of only some of the group's prompts."""
    missing = {(c["suite"], c["category"]): bool(c["missing"]) for c in cover}
    for row in table:
        row["partial"] = row["scorer"] in image_scorers and missing.get((row["suite"], row["category"]), False)


def chance_within_ci(row: dict) -> bool:
    """Is the chance level inside the row's 95% interval (is the measured accuracy at chance)?"""
    return row["ci95"][0] <= row["chance"] <= row["ci95"][1]
