"""Sample I-RAVEN-style items: one rule per attribute, values those rules accept, and unbiased candidates.

Rows (Zhang et al. 2019, "RAVEN"): every rule is sampled first, then each row's values are drawn and
checked with the same `expected_third` the manifest reader uses, so a stored item is valid by construction
and re-verifiable later. Invalid draws (out of range, empty sets, degenerate arithmetic) are redrawn.

Candidates (Hu et al. 2021, "Stratified Rule-Aware Network...", I-RAVEN): RAVEN's original candidates each
changed one attribute of the answer, so the answer was the most common value per attribute and a
context-blind solver scored far above chance. The attribute bisection tree instead picks three governed
attributes and one alternative value for each, and splits the candidate set in half on each of them:
every value of every modified attribute then appears in exactly 4 of the 8 candidates. The alternative is
drawn from the same distribution as the answer's value (`_draw_governed`), so no value is more typical of
answers than of wrong candidates, and an item whose candidates would draw alike at a supported resolution
is redrawn (render.distinct_renders).

Free attributes (positions when the rule governs `number`) are never modified: two candidates differing
only there would both satisfy the rules.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from dalle_eval.artifacts import iter_jsonl
from dalle_eval.errors import DalleEvalError
from dalle_eval.raven.render import distinct_renders
from dalle_eval.raven.schema import (
    COLOURS,
    CONFIGS,
    OPS,
    RULES,
    SIZES,
    STEPS,
    TYPE_RULES,
    TYPES,
    Panel,
    RavenItem,
    Value,
    expected_third,
    in_domain,
    rule_values,
    step_value,
    validate_record,
)

_N_LEVELS = {"type": len(TYPES), "size": len(SIZES), "colour": len(COLOURS)}
_ROW_TRIES = 64  # a row that fails this often means the rule cannot hold here (e.g. number +2 in grid2x2)


def _positions(rng: random.Random, slots: int, number: int) -> tuple[int, ...]:
    return tuple(sorted(rng.sample(range(slots), number)))


def _draw(rng: random.Random, attribute: str, slots: int) -> Value:
    """A uniformly drawn value of the attribute's domain (a random non-empty slot set for positions)."""
    if attribute == "position":
        return _positions(rng, slots, rng.randint(1, slots))
    if attribute == "number":
        return rng.randint(1, slots)
    return rng.randrange(_N_LEVELS[attribute])


def _as_json(attribute: str, v: Value) -> object:
    """A value in the panels' (manifest) representation: shape names, slot lists, plain ints."""
    return TYPES[v] if attribute == "type" else list(v) if attribute == "position" else v


def _draw_cycle(rng: random.Random, attribute: str, slots: int) -> list[Value]:
    """Three distinct values for distribute_three; position sets share one size so `number` stays put."""
    if attribute == "position":
        n = rng.randint(1, slots - 1)
        values: list[Value] = []
        while len(values) < 3:
            v = _positions(rng, slots, n)
            values += [] if v in values else [v]
        return values
    lo = 1 if attribute == "number" else 0
    hi = slots if attribute == "number" else _N_LEVELS[attribute] - 1
    return rng.sample(range(lo, hi + 1), 3)


def _draw_rule(rng: random.Random, attribute: str, config: str) -> dict:
    if config == "center" and attribute == "position":
        return {"rule": "constant"}  # one slot: number and position cannot change
    name = rng.choice(TYPE_RULES if attribute == "type" else RULES)
    if name == "progression":
        return {"rule": name, "step": rng.choice(STEPS)}
    if name == "arithmetic":
        return {"rule": name, "op": rng.choice(OPS)}
    if name == "distribute_three":
        cycle = _draw_cycle(rng, attribute, CONFIGS[config])
        return {"rule": name, "values": [_as_json(attribute, v) for v in cycle]}
    return {"rule": name}


def _draw_row(rng: random.Random, attribute: str, rule: dict, slots: int) -> tuple[Value, ...] | None:
    """One row (a, b, c) under a non-distribute rule, or None when this draw is invalid or degenerate."""
    a = _draw(rng, attribute, slots)
    name = rule["rule"]
    if name == "constant":
        b = a
    elif name == "progression":
        b = step_value(attribute, a, rule["step"], slots)
    else:
        b = _draw(rng, attribute, slots)
    # a progression must move (a full position set shifts onto itself)
    if not in_domain(attribute, b, slots) or (name == "progression" and a == b):
        return None
    c = expected_third(attribute, rule, a, b, slots)
    if c is None or (name == "arithmetic" and c in (a, b)):  # e.g. colour + white, or a union with a subset
        return None
    return (a, b, c)


def _draw_rows(rng: random.Random, attribute: str, rule: dict, slots: int) -> list[tuple[Value, ...]] | None:
    if rule["rule"] == "distribute_three":  # each row is a cyclic shift of the same three values
        cycle, k = rule_values(attribute, rule), rng.choice((1, 2))
        return [tuple(cycle[(r * k + j) % 3] for j in range(3)) for r in range(3)]
    rows = []
    for _ in range(3):
        tries = (_draw_row(rng, attribute, rule, slots) for _ in range(_ROW_TRIES))
        row = next((x for x in tries if x is not None), None)
        if row is None:
            return None
        rows.append(row)
    return rows


def _draw_attribute(rng: random.Random, attribute: str, config: str) -> tuple[dict, list[tuple[Value, ...]]]:
    """A rule for the attribute and the three rows of values it governs (redrawn until the rule can hold)."""
    while True:
        rule = _draw_rule(rng, attribute, config)
        rows = _draw_rows(rng, attribute, rule, CONFIGS[config])
        if rows is not None:
            return rule, rows


def _draw_governed(
    rng: random.Random, attribute: str, config: str, modified: bool
) -> tuple[dict, list[tuple[Value, ...]], Value | None]:
    """(rule, rows, alternative answer value or None): the alternative is the answer of another matrix.

    A wrong candidate's value must be as likely as the answer's, or a solver that learned only which values
    answers take picks the answer blind (Hu et al. 2021, I-RAVEN). So the alternative y is drawn by the very
    machinery that drew the answer x, and a collision redraws both: then P(x, y) ~ p(x) p(y) [x != y] is
    symmetric, and the pair {x, y} says nothing about which one is the answer. (Redrawing only y would give
    p(x) p(y) / (1 - p(x)): the commoner value would still be the answer more often.)
    """
    while True:
        rule, rows = _draw_attribute(rng, attribute, config)
        if not modified:
            return rule, rows, None
        alternative = _draw_attribute(rng, attribute, config)[1][2][2]
        if alternative != rows[2][2]:
            return rule, rows, alternative


def _change(rng: random.Random, attribute: str, v: Value, slots: int) -> dict:
    """Panel field changes giving `attribute` the value v (drawn once per item, used by 4 candidates)."""
    if attribute == "type":
        return {"type": TYPES[v]}
    if attribute == "number":  # positions follow the new count (free noise, like the answer's own positions)
        return {"positions": _positions(rng, slots, v)}
    return {"positions" if attribute == "position" else attribute: v}


def _draw_item(rng: random.Random, config: str) -> tuple[dict[str, dict], list[Panel], list[dict]]:
    """The rules, all 9 panels (row-major, the answer last) and the 3 bisection-tree changes."""
    slots = CONFIGS[config]
    governed = "position" if config == "center" else rng.choice(("number", "position"))
    attributes = (governed, "type", "size", "colour")
    modified = rng.sample(sorted(a for a in attributes if not (config == "center" and a == "position")), 3)
    rules, rows, alternatives = {}, {}, {}
    for attribute in attributes:
        rules[attribute], rows[attribute], alternatives[attribute] = _draw_governed(
            rng, attribute, config, attribute in modified
        )
    panels = []
    for r in range(3):
        for c in range(3):
            if governed == "position":
                positions = rows["position"][r][c]
            else:  # the rule governs number; where the objects sit is free noise
                positions = _positions(rng, slots, rows["number"][r][c])
            shape, size, colour = TYPES[rows["type"][r][c]], rows["size"][r][c], rows["colour"][r][c]
            panels.append(Panel(shape, size, colour, positions))
    return rules, panels, [_change(rng, a, alternatives[a], slots) for a in modified]


def bisection_candidates(answer: Panel, changes: Sequence[dict]) -> list[Panel]:
    """I-RAVEN's attribute bisection tree (Hu et al. 2021): each change doubles the set on one attribute.

    With 3 changes: 8 candidates, every value of a changed attribute in 4 of them. The answer comes first;
    the caller shuffles.
    """
    panels = [answer]
    for change in changes:
        panels += [replace(p, **change) for p in panels]
    return panels


def generate_item(seed: int | str, index: int, config: str) -> RavenItem:
    """Item `index` of the stream `seed`; seeded by both, so it can be regenerated alone from its id.

    An item whose candidates would draw the same pixels in a supported matrix is redrawn from the same
    stream (whole, so that which candidate is the answer stays independent of the candidates).
    """
    if config not in CONFIGS:
        raise DalleEvalError(f"raven: unknown config {config!r}; known: {', '.join(CONFIGS)}")
    rng = random.Random(f"raven-{seed}-{index}")
    while True:
        rules, panels, changes = _draw_item(rng, config)
        candidates = bisection_candidates(panels[8], changes)
        if distinct_renders(candidates, config):
            break
    order = list(range(len(candidates)))
    rng.shuffle(order)
    shuffled = tuple(candidates[i] for i in order)
    return RavenItem(f"raven-{seed}-{index:05d}", config, rules, tuple(panels[:8]), shuffled, order.index(0))


def generate_items(n: int, seed: int = 0, configs: Sequence[str] = tuple(CONFIGS)) -> list[RavenItem]:
    """`n` items; item i has configuration configs[i % len(configs)]. Same seed => identical items."""
    if n < 0 or not configs or isinstance(configs, str):
        raise DalleEvalError(
            f"raven: need n >= 0 and a non-empty list of configs, got n={n}, configs={configs!r}"
        )
    return [generate_item(seed, i, configs[i % len(configs)]) for i in range(n)]


# --------------------------------------------------------------------------- manifest (JSONL)


def write_manifest(items: Iterable[RavenItem], path: str | Path) -> Path:
    """One JSON object per line; written to a temp file and renamed, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a manifest is meant to be shared
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item.to_json()) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | Path) -> list[RavenItem]:
    """Read and fully validate a manifest; errors name `file:line` and the field."""
    path = Path(path)
    if not path.is_file():
        raise DalleEvalError(f"raven manifest {path} does not exist")
    items, seen = [], set()
    for where, record in iter_jsonl(path):
        validate_record(record, where)
        if record["item_id"] in seen:
            raise DalleEvalError(f"{where}: field 'item_id': expected a unique id, got {record['item_id']!r} again")
        seen.add(record["item_id"])
        items.append(RavenItem.from_json(record))
    return items
