"""Raven items as data: attribute domains, panels, items, rule semantics and the manifest schema.

A Raven's Progressive Matrix (Zhang et al. 2019, "RAVEN") is a 3x3 grid of panels whose rows each obey
the same rule per attribute; the bottom-right panel is missing and must be picked from 8 candidates.
Simplification (as in RAVEN's single-component configurations): within one panel every object has the
same type, size and colour, so a panel is (type, size, colour, positions) and number = len(positions).
The rule semantics live here, next to the data, because the generator (which draws values the rules
accept) and the manifest reader (which re-checks every stored item) must agree on them exactly.

Manifest (raven.jsonl, MANIFEST_SCHEMA): one JSON object per line, one puzzle each.
- item_id: unique; "raven-<seed>-<index>" for generated items, which regenerate from it alone.
- config: "center" (one object in the middle), "grid2x2" (4 slots) or "grid3x3" (9 slots).
- rules: attribute -> rule. Exactly one of "number"/"position" (the one the rule governs; the other is
  then free noise; "center" always has {"position": {"rule": "constant"}}), plus "type", "size", "colour".
  A rule is {"rule": constant | progression | arithmetic | distribute_three}, with "step" (-2, -1, 1, 2)
  for progression, "op" ("add" or "sub") for arithmetic, and for distribute_three "values": its three
  values written as in a panel. "type" has no arithmetic (as in RAVEN).
- context: the 8 given panels, row-major (the bottom-right one is the question).
- candidates: the 8 answer candidates. A panel is {"type": shape name, "size": index into SIZES,
  "colour": index into COLOURS (0 = white), "number": object count, "positions": the occupied slots,
  row-major, sorted, `number` of them}.
- answer: index of the one candidate that completes row 3 under every rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dalle_eval.errors import DalleEvalError

CAPTION = "a 3x3 matrix of shapes following a pattern"  # the text a model is conditioned on for Raven (probes, training arm)

CONFIGS = {"center": 1, "grid2x2": 4, "grid3x3": 9}  # configuration -> number of slots
GRID_SIDE = {"center": 1, "grid2x2": 2, "grid3x3": 3}
TYPES = ("triangle", "square", "pentagon", "hexagon", "circle")  # ordered: more sides = higher index
SIZES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # circumradius as a fraction of half the slot side (RAVEN's levels)
COLOURS = tuple(round(255 * (1 - i / 9)) for i in range(10))  # grey fill; 0 = white (outlined), 9 = black
RULES = ("constant", "progression", "arithmetic", "distribute_three")
TYPE_RULES = ("constant", "progression", "distribute_three")  # RAVEN has no arithmetic on type
STEPS = (-2, -1, 1, 2)
OPS = ("add", "sub")
N_CANDIDATES = 8

Value = int | tuple[int, ...]  # an attribute value: an ordered index, a count, or a sorted slot tuple


@dataclass(frozen=True)
class Panel:
    type: str
    size: int  # index into SIZES
    colour: int  # index into COLOURS
    positions: tuple[int, ...]  # occupied slot indices (row-major), sorted

    @property
    def number(self) -> int:
        return len(self.positions)

    def value(self, attribute: str) -> Value:
        """The attribute as the rules see it: an ordered index, a count or a sorted slot tuple."""
        if attribute == "type":
            return TYPES.index(self.type)
        if attribute == "number":
            return len(self.positions)
        if attribute == "position":
            return self.positions
        return getattr(self, attribute)

    def to_json(self) -> dict:
        return {**asdict(self), "number": self.number, "positions": list(self.positions)}

    @staticmethod
    def from_json(d: dict) -> Panel:
        return Panel(d["type"], d["size"], d["colour"], tuple(d["positions"]))


@dataclass(frozen=True)
class RavenItem:
    item_id: str
    config: str
    rules: dict[str, dict]  # attribute -> {"rule": name, plus "step" | "op" | "values"}
    context: tuple[Panel, ...]  # 8 panels, row-major, without the bottom-right one
    candidates: tuple[Panel, ...]  # 8
    answer: int  # index of the correct candidate

    def to_json(self) -> dict:
        d = asdict(self)  # panels came out as plain dicts; write them in the manifest's form
        for key in ("context", "candidates"):
            d[key] = [p.to_json() for p in getattr(self, key)]
        return d

    @staticmethod
    def from_json(d: dict) -> RavenItem:
        context, candidates = (tuple(Panel.from_json(p) for p in d[k]) for k in ("context", "candidates"))
        return RavenItem(d["item_id"], d["config"], d["rules"], context, candidates, d["answer"])


# --------------------------------------------------------------------------- rule semantics


def in_domain(attribute: str, v: Value, slots: int) -> bool:
    if attribute == "position":
        return 0 < len(v) <= slots and all(0 <= p < slots for p in v)
    if attribute == "number":
        return 1 <= v <= slots
    return 0 <= v < {"type": len(TYPES), "size": len(SIZES), "colour": len(COLOURS)}[attribute]


def step_value(attribute: str, v: Value, step: int, slots: int) -> Value:
    """Progression: the ordered index moves by `step`; a position set shifts cyclically over the slots."""
    if attribute == "position":
        return tuple(sorted((p + step) % slots for p in v))
    return v + step


def arithmetic_value(attribute: str, op: str, a: Value, b: Value) -> Value:
    """col3 = col1 (op) col2: union/difference on sets; size uses 1-based levels so `add` always grows."""
    if attribute == "position":
        sa, sb = set(a), set(b)
        return tuple(sorted(sa | sb if op == "add" else sa - sb))
    if attribute == "size":  # (c3 + 1) = (c1 + 1) +- (c2 + 1), on 1-based size levels
        return a + b + 1 if op == "add" else a - b - 1
    return a + b if op == "add" else a - b


def rule_values(attribute: str, rule: dict) -> list[Value]:
    """The three values a distribute_three rule cycles through, in the rules' (internal) representation."""
    if attribute == "type":
        return [TYPES.index(v) for v in rule["values"]]
    if attribute == "position":
        return [tuple(v) for v in rule["values"]]
    return list(rule["values"])


def expected_third(attribute: str, rule: dict, a: Value, b: Value, slots: int) -> Value | None:
    """The value col3 must take given col1 = a and col2 = b, or None if (a, b) already breaks the rule."""
    name = rule["rule"]
    if name == "constant":
        out = a if a == b else None
    elif name == "progression":
        ok = step_value(attribute, a, rule["step"], slots) == b
        out = step_value(attribute, b, rule["step"], slots) if ok else None
    elif name == "arithmetic":
        out = arithmetic_value(attribute, rule["op"], a, b)
    elif name == "distribute_three":
        values = rule_values(attribute, rule)
        rest = [v for v in values if v not in (a, b)]
        out = rest[0] if a != b and len(rest) == 1 else None
    else:
        raise ValueError(f"unknown rule {name!r}")
    return out if out is not None and in_domain(attribute, out, slots) else None


def row_satisfies(item: RavenItem, row: tuple[Panel, Panel, Panel]) -> bool:
    """Does this row obey every rule of the item? Free (unruled) attributes are not checked."""
    slots = CONFIGS[item.config]
    for attribute, rule in item.rules.items():
        a, b, c = (p.value(attribute) for p in row)
        want = expected_third(attribute, rule, a, b, slots)
        if want is None or want != c:
            return False
    return True


def satisfies_rules(item: RavenItem, candidate: Panel) -> bool:
    """Re-verify the rules from stored values: does `candidate` complete row 3 (context[6], context[7])?"""
    return row_satisfies(item, (item.context[6], item.context[7], candidate))


# --------------------------------------------------------------------------- manifest schema

_PANEL = {
    "type": "object",
    "required": ["type", "size", "colour", "number", "positions"],
    "properties": {
        "type": {"enum": list(TYPES)},
        "size": {"type": "integer", "minimum": 0, "maximum": len(SIZES) - 1},
        "colour": {"type": "integer", "minimum": 0, "maximum": len(COLOURS) - 1},
        "number": {"type": "integer", "minimum": 1, "maximum": max(CONFIGS.values())},
        "positions": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    },
}
_RULE = {
    "type": "object",
    "required": ["rule"],
    "properties": {
        "rule": {"enum": list(RULES)},
        "step": {"enum": list(STEPS)},
        "op": {"enum": list(OPS)},
        "values": {"type": "array", "minItems": 3, "maxItems": 3},
    },
}
MANIFEST_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dalle-eval Raven manifest record (one JSON object per line)",
    "type": "object",
    "required": ["item_id", "config", "rules", "context", "candidates", "answer"],
    "properties": {
        "item_id": {"type": "string", "minLength": 1},
        "config": {"enum": list(CONFIGS)},
        "rules": {"type": "object", "minProperties": 4, "additionalProperties": {"$ref": "#/$defs/rule"}},
        "context": {"type": "array", "items": {"$ref": "#/$defs/panel"}, "minItems": 8, "maxItems": 8},
        "candidates": {"type": "array", "items": {"$ref": "#/$defs/panel"}, "minItems": 8, "maxItems": 8},
        "answer": {"type": "integer", "minimum": 0, "maximum": N_CANDIDATES - 1},
    },
    "$defs": {"panel": _PANEL, "rule": _RULE},
}


def _fail(where: str, field: str, expected: str, got: object) -> DalleEvalError:
    return DalleEvalError(f"{where}: field {field!r}: expected {expected}, got {got!r}")


def _missing(where: str, field: str) -> DalleEvalError:
    return DalleEvalError(f"{where}: field {field!r} is missing")


def _is_int(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_panel(p: object, field: str, config: str, where: str) -> None:
    slots = CONFIGS[config]
    if not isinstance(p, dict):
        raise _fail(where, field, "a panel object", p)
    for key in _PANEL["required"]:
        if key not in p:
            raise _missing(where, f"{field}.{key}")
    if p["type"] not in TYPES:
        raise _fail(where, f"{field}.type", f"one of {', '.join(TYPES)}", p["type"])
    for key, n in (("size", len(SIZES)), ("colour", len(COLOURS))):
        if not _is_int(p[key], 0, n - 1):
            raise _fail(where, f"{field}.{key}", f"an integer in 0..{n - 1}", p[key])
    pos = p["positions"]
    ok = isinstance(pos, list) and 1 <= len(pos) <= slots and all(_is_int(q, 0, slots - 1) for q in pos)
    if not ok or pos != sorted(set(pos)) or (config == "center" and pos != [0]):
        raise _fail(where, f"{field}.positions", f"1..{slots} sorted distinct slots in 0..{slots - 1}", pos)
    if p["number"] != len(pos):
        raise _fail(where, f"{field}.number", f"len(positions) = {len(pos)}", p["number"])


def _check_rules(rules: object, config: str, where: str) -> None:
    keys = sorted(rules) if isinstance(rules, dict) else []
    governs = "position" if config == "center" or "position" in keys else "number"
    if keys != sorted({governs, "type", "size", "colour"}):
        raise _fail(where, "rules", f"keys {governs}, type, size, colour", keys or rules)
    for attribute, rule in rules.items():
        field = f"rules.{attribute}"
        allowed = TYPE_RULES if attribute == "type" else RULES
        allowed = ("constant",) if config == "center" and attribute == "position" else allowed
        if not isinstance(rule, dict):
            raise _fail(where, field, 'a rule object {"rule": name, ...}', rule)
        name = rule.get("rule")
        if name not in allowed:
            raise _fail(where, f"{field}.rule", f"one of {', '.join(allowed)}", name)
        if name == "progression" and rule.get("step") not in STEPS:
            raise _fail(where, f"{field}.step", f"one of {STEPS}", rule.get("step"))
        if name == "arithmetic" and rule.get("op") not in OPS:
            raise _fail(where, f"{field}.op", f"one of {OPS}", rule.get("op"))
        values = rule.get("values")
        if name == "distribute_three" and not _values_ok(attribute, values, CONFIGS[config]):
            raise _fail(where, f"{field}.values", f"three distinct {attribute} values", values)


def _values_ok(attribute: str, values: object, slots: int) -> bool:
    if not isinstance(values, list) or len(values) != 3:
        return False
    if attribute == "type":
        ok = all(v in TYPES for v in values)
    elif attribute == "position":
        ok = all(
            isinstance(v, list) and v == sorted(set(v)) and all(_is_int(q, 0, 99) for q in v) for v in values
        )
        ok = ok and all(in_domain(attribute, tuple(v), slots) for v in values)
    else:
        ok = all(_is_int(v, 0, 99) and in_domain(attribute, v, slots) for v in values)
    return ok and len({str(v) for v in values}) == 3


def validate_record(d: object, where: str) -> None:
    """Check one manifest record (structure, then puzzle semantics); raise DalleEvalError naming `where`."""
    if not isinstance(d, dict):
        raise _fail(where, "record", "a JSON object", type(d).__name__)
    for key in MANIFEST_SCHEMA["required"]:
        if key not in d:
            raise _missing(where, key)
    if not isinstance(d["item_id"], str) or not d["item_id"]:
        raise _fail(where, "item_id", "a non-empty string", d["item_id"])
    if d["config"] not in CONFIGS:
        raise _fail(where, "config", f"one of {', '.join(CONFIGS)}", d["config"])
    _check_rules(d["rules"], d["config"], where)
    for key in ("context", "candidates"):
        if not isinstance(d[key], list) or len(d[key]) != 8:
            raise _fail(where, key, "a list of 8 panels", d[key])
        for i, p in enumerate(d[key]):
            _check_panel(p, f"{key}[{i}]", d["config"], where)
    if not _is_int(d["answer"], 0, N_CANDIDATES - 1):
        raise _fail(where, "answer", f"an integer in 0..{N_CANDIDATES - 1}", d["answer"])
    _check_semantics(RavenItem.from_json(d), where)


def _check_semantics(item: RavenItem, where: str) -> None:
    """Rows 1-2 obey the rules, the answer completes row 3, and no other (distinct) candidate does."""
    for r in (0, 1):
        if not row_satisfies(item, item.context[3 * r : 3 * r + 3]):
            raise _fail(where, f"context[{3 * r}:{3 * r + 3}]", "a row that obeys the rules", f"row {r + 1}")
    if len(set(item.candidates)) != N_CANDIDATES:
        raise _fail(where, "candidates", "8 distinct panels", "duplicates")
    fits = [i for i, c in enumerate(item.candidates) if satisfies_rules(item, c)]
    if fits != [item.answer]:
        raise _fail(
            where, "answer", f"the one candidate that satisfies the rules (these do: {fits})", item.answer
        )
