"""Paraphrases of a binding scene: a small grammar of equivalent captions, and the parser that reads them back.

Issue 17 §2, after the DALL·E blog (OpenAI 2021, "DALL·E: Creating images from text"): a model can draw one
phrasing of a scene right and an equivalent one wrong. This grammar writes one spec (kinds multi, relation,
stack) in 5-6 ways:

- canonical: `caption(spec)`, the training template;
- permuted (multi): the objects listed in reverse order;
- converse (relation): the objects swapped and the relation flipped ("a red square below a blue circle");
- there-is: "there is ..." (relation, stack) or "there are three shapes: ..." (multi);
- numerals: the there-is (multi) or bottom-up (stack) form with the number as a numeral ("3", "2"), so that
  family against its counterpart is numerals vs words and nothing else;
- clause: "a square that is small and red, ..." (multi), "the ... is above the ..." (relation, stack);
- bottom-up (stack): "a stack of two blocks: a large blue block at the bottom and a small red block on top";
- synonyms: the canonical caption with little/big, box/disc/cube, over/under, resting for small/large,
  square/circle/block, above/below, sitting.

Permuted and converse captions are canonical captions of an equivalent spec (the training data has them);
the others are new surface forms. `spec_from_phrasing` reads any of them back into the normalised spec
(`normalise`: multi objects in a fixed order, relations as above / left of), so every phrasing round-trips.
"""

from __future__ import annotations

import re

from dalle_eval.errors import DalleEvalError
from dalle_eval.shapes.scene import COLOURS, NUMBER_WORDS, RELATION_WORDS, SHAPES, SIZES, Obj, Scene, caption

FAMILIES = ("canonical", "permuted", "converse", "there-is", "numerals", "clause", "bottom-up", "synonyms")
KIND_FAMILIES = {  # the phrasings of each kind, canonical first
    "multi": ("canonical", "permuted", "there-is", "numerals", "clause", "synonyms"),
    "relation": ("canonical", "converse", "there-is", "clause", "synonyms"),
    "stack": ("canonical", "bottom-up", "numerals", "there-is", "clause", "synonyms"),
}
SYNONYMS = {"small": "little", "large": "big", "square": "box", "circle": "disc", "block": "cube",
            "above": "over", "below": "under", "sitting": "resting"}
CONVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
NORMAL = ("above", "left of")  # the direction a normalised relation is stated in


def families(spec: Scene) -> tuple[str, ...]:
    """The phrasing families that apply to this spec's kind."""
    if spec.kind not in KIND_FAMILIES:
        raise DalleEvalError(f"no phrasings for scene kind {spec.kind!r}; known: {', '.join(KIND_FAMILIES)}")
    return KIND_FAMILIES[spec.kind]


def _np(o: Obj, noun: str | None = None, article: str = "a") -> str:
    return f"{article} {o.size} {o.colour} {noun or o.shape}"


def _listed(parts: list[str]) -> str:
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _synonyms(text: str) -> str:
    return " ".join(SYNONYMS.get(w, w) for w in text.split(" "))


def phrase(spec: Scene, family: str) -> str:
    """The caption of `spec` in phrasing `family` (one of `families(spec)`)."""
    if family not in families(spec):
        raise DalleEvalError(f"phrasing {family!r} does not apply to a {spec.kind} scene; "
                             f"its phrasings: {', '.join(families(spec))}")
    objs, n = spec.objects, len(spec.objects)
    if family == "canonical":
        return caption(spec)
    if family == "synonyms":
        return _synonyms(caption(spec))
    if family == "permuted":
        return caption(Scene(spec.kind, objs[::-1], spec.relation))
    if family == "converse":
        return caption(Scene(spec.kind, objs[::-1], CONVERSE[spec.relation]))
    if spec.kind == "multi":
        listed = _listed([_np(o) for o in objs])
        if family == "clause":
            return _listed([f"a {o.shape} that is {o.size} and {o.colour}" for o in objs])
        return f"there are {NUMBER_WORDS[n] if family == 'there-is' else n} shapes: {listed}"
    a, b = objs
    if spec.kind == "relation":
        words = RELATION_WORDS[spec.relation]
        if family == "clause":
            return f"{_np(a, article='the')} is {words} {_np(b, article='the')}"
        return f"there is {caption(spec)}"  # there-is
    if family == "clause":
        return f"{_np(a, 'block', 'the')} is sitting on {_np(b, 'block', 'the')}"
    if family == "there-is":
        return f"there is {caption(spec)}"
    count = "two" if family == "bottom-up" else "2"
    return f"a stack of {count} blocks: {_np(b, 'block')} at the bottom and {_np(a, 'block')} on top"


def normalise(spec: Scene) -> Scene:
    """The spec with positions dropped, multi objects in a fixed order, a relation stated as above / left of."""
    objs = tuple(Obj(*o.attrs) for o in spec.objects)
    if spec.kind == "multi":
        objs = tuple(sorted(objs, key=lambda o: o.attrs))
    if spec.kind == "relation" and spec.relation not in NORMAL:
        return Scene(spec.kind, objs[::-1], CONVERSE[spec.relation])
    return Scene(spec.kind, objs, spec.relation)


# --------------------------------------------------------------------------- parsing

def _alt(words) -> str:
    return "(" + "|".join(words) + ")"


def _obj(article: str, noun: str | None = None) -> str:
    """An object phrase's pattern; groups: size, colour and (unless `noun` is given) shape."""
    return rf"{article} {_alt(SIZES)} {_alt(COLOURS)} {noun or _alt(SHAPES)}"


_CLAUSE = rf"a {_alt(SHAPES)} that is {_alt(SIZES)} and {_alt(COLOURS)}"
_REL = _alt(RELATION_WORDS.values())
_WORD_RELATION = {w: r for r, w in RELATION_WORDS.items()}
_UNSYNONYM = {v: k for k, v in SYNONYMS.items()}
_NUMBERS = {**{w: n for n, w in NUMBER_WORDS.items()}, **{str(n): n for n in NUMBER_WORDS}}


def _items(pattern: str, text: str, order: tuple[int, int, int]) -> list[Obj] | None:
    """The objects of a list "X, Y and Z" of `pattern` items (groups in `order`: shape, colour, size), or None."""
    if not re.fullmatch(rf"{pattern}(?:, {pattern})* and {pattern}", text):
        return None
    return [Obj(*(m[i] for i in order)) for m in re.findall(pattern, text)]


def _read(text: str) -> Scene | None:
    a, the = _obj("a"), _obj("the")
    m = re.fullmatch(rf"(?:there is )?{a} {_REL} {a}", text) or re.fullmatch(rf"{the} is {_REL} {the}", text)
    if m:
        return Scene("relation", (Obj(m[3], m[2], m[1]), Obj(m[7], m[6], m[5])), _WORD_RELATION[m[4]])
    a, the = _obj("a", "block"), _obj("the", "block")
    m = re.fullmatch(rf"(?:there is )?{a} sitting on {a}", text) or re.fullmatch(rf"{the} is sitting on {the}", text)
    if m:
        return Scene("stack", (Obj("square", m[2], m[1]), Obj("square", m[4], m[3])), "on")
    m = re.fullmatch(rf"a stack of (two|2) blocks: {a} at the bottom and {a} on top", text)
    if m:
        return Scene("stack", (Obj("square", m[5], m[4]), Obj("square", m[3], m[2])), "on")
    m = re.fullmatch(r"there are (\w+) shapes: (.*)", text)
    body = m[2] if m else text
    objs = _items(_obj("a"), body, (2, 1, 0)) or (None if m else _items(_CLAUSE, body, (0, 2, 1)))
    if objs is None or (m and _NUMBERS.get(m[1]) != len(objs)):
        return None
    return Scene("multi", tuple(objs))


def spec_from_phrasing(text: str) -> Scene:
    """The normalised spec (see `normalise`) a phrasing of any family describes; unreadable text is an error."""
    words = " ".join(text.lower().split())
    spec = _read(" ".join(_UNSYNONYM.get(w, w) for w in words.split(" ")))
    if spec is None:
        raise DalleEvalError(f"cannot read {text!r} as a phrasing of a multi, relation or stack scene")
    return normalise(spec)
