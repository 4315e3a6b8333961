"""The paraphrase suite's own figures: does a model understand the scene or the template?

One binding spec is asked in 5-6 phrasings (shapes/phrasing.py); per scorer, on its all-or-nothing check
(parser, dvae_ceiling: "image"; likelihood, clip: "ranked_first"), with p = a phrasing's share of passing
images for a spec:

- accuracy per phrasing (mean p over specs) and the worst phrasing's;
- consistency: P(all phrasings pass | canonical passes) = sum_specs prod_phrasings p / sum_specs p_canonical;
- no correct interpretation (issue 17's name, after the DALL·E blog): the share of specs for which no phrasing
  gives a correct image, mean over specs of prod_phrasings (1 - p);
- likelihood only: ranking agreement, Kendall's W of the truth-and-foils rankings across the phrasings of a
  spec (foils aligned by kind), mean over specs; independent random rankings give 1/m for m phrasings.

With one image per prompt these are plain counts; with more, the probabilities for one random image per
phrasing. Chance is each figure computed from the checks' chance levels; the random generator and the
oracle (the spec rendered and parsed) are computed like the model's, for parser rows.
"""

from __future__ import annotations

import math
from collections import defaultdict

from scipy.stats import rankdata

from dalle_eval.probes.checks import result
from dalle_eval.probes.scoring import oracle_image, score_scene_image
from dalle_eval.shapes import Scene
from dalle_eval.shapes.phrasing import FAMILIES

KEY_CHECK = {"parser": "image", "dvae_ceiling": "image", "likelihood": "ranked_first", "clip": "ranked_first"}
ORACLE_RESOLUTION = 64


def oracle_results(prompts: list[dict], resolution: int = ORACLE_RESOLUTION) -> list[dict]:
    """Parser results of the oracle generator (each prompt's spec rendered) on the paraphrase prompts."""
    out = []
    for p in (p for p in prompts if p["suite"] == "paraphrase"):
        checks = score_scene_image(Scene.from_json(p["spec"]), oracle_image(p, resolution))
        out += [result(p, c, ok, ch, "parser") for c, (ok, ch) in checks.items()]
    return out


def _shares(prompts: list[dict], results: list[dict], scorer: str) -> dict[str, dict[str, tuple[float, float]]]:
    """spec_id -> phrasing -> (share passed, mean chance) of the scorer's key check, for specs with every
    phrasing scored."""
    by_id = {p["prompt_id"]: p for p in prompts if p["suite"] == "paraphrase"}
    hits: dict[tuple[str, str], list] = defaultdict(list)
    for r in results:
        p = by_id.get(r["prompt_id"])
        if p is not None and r["scorer"] == scorer and r["check"] == KEY_CHECK[scorer]:
            hits[(p["spec_id"], p["phrasing"])].append(r)
    want: dict[str, set] = defaultdict(set)
    for p in by_id.values():
        want[p["spec_id"]].add(p["phrasing"])
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for spec_id, phrasings in want.items():
        if all((spec_id, f) in hits for f in phrasings):
            out[spec_id] = {f: (sum(r["passed"] for r in hits[(spec_id, f)]) / len(hits[(spec_id, f)]),
                                sum(r["chance"] for r in hits[(spec_id, f)]) / len(hits[(spec_id, f)]))
                            for f in phrasings}
    return out


def _figures(specs: dict[str, dict[str, float]]) -> dict[tuple[str, str | None], float | None]:
    """(metric, phrasing) -> value from spec_id -> phrasing -> p (see the module doc); {} without specs."""
    if not specs:
        return {}
    per = {f: [ps[f] for ps in specs.values() if f in ps] for f in FAMILIES}
    acc = {f: sum(v) / len(v) for f, v in per.items() if v}
    worst = min(acc, key=acc.get)
    canonical = sum(ps["canonical"] for ps in specs.values())
    every = sum(math.prod(ps.values()) for ps in specs.values())
    return {**{("accuracy", f): a for f, a in acc.items()}, ("worst phrasing", worst): acc[worst],
            ("consistency", None): every / canonical if canonical else None,
            ("no correct interpretation", None): sum(math.prod(1 - p for p in ps.values()) for ps in specs.values())
            / len(specs)}


def kendall_w(rankings: list[list[float]]) -> float:
    """Kendall's coefficient of concordance of m score vectors over the same n candidates (1 = identical order)."""
    m, n = len(rankings), len(rankings[0])
    ranks = [sum(col) for col in zip(*(rankdata(r) for r in rankings))]
    s = sum((r - m * (n + 1) / 2) ** 2 for r in ranks)
    return 12 * s / (m * m * (n**3 - n))


def ranking_agreement(prompts: list[dict], results: list[dict]) -> tuple[float, float, int] | None:
    """(mean Kendall's W, its chance: mean 1/m, specs) of the likelihood rankings across phrasings, or None."""
    by_id = {p["prompt_id"]: p for p in prompts if p["suite"] == "paraphrase"}
    scores: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        p = by_id.get(r["prompt_id"])
        if p is not None and r["scorer"] == "likelihood" and r["check"] == "ranked_first":
            scores[p["spec_id"]].append({"truth": r["logp"], **{f["kind"]: f["logp"] for f in r["foils"]}})
    ws, chance = [], []
    for rows in scores.values():
        kinds = sorted(set.intersection(*(set(r) for r in rows)))
        if len(rows) >= 2 and len(kinds) >= 2:
            ws.append(kendall_w([[r[k] for k in kinds] for r in rows]))
            chance.append(1 / len(rows))
    return (sum(ws) / len(ws), sum(chance) / len(chance), len(ws)) if ws else None


def _p(shares: dict) -> dict[str, dict[str, float]]:
    return {s: {f: p for f, (p, _) in ps.items()} for s, ps in shares.items()}


def paraphrase_table(prompts: list[dict], results: list[dict], random_results: list[dict]) -> list[dict]:
    """The paraphrase figures per scorer: rows {scorer, metric, phrasing, value, chance, random, oracle, specs};
    random and oracle (parser rows only) on the same specs; a worst-phrasing row compares that phrasing."""
    rows = []
    for scorer in sorted({r["scorer"] for r in results if r["suite"] == "paraphrase"} & set(KEY_CHECK)):
        shares = _shares(prompts, results, scorer)
        if not shares:
            continue
        value = _figures(_p(shares))
        chance = _figures({s: {f: c for f, (_, c) in ps.items()} for s, ps in shares.items()})
        others = {"random": {}, "oracle": {}}
        if scorer == "parser":
            for name, res in (("random", random_results), ("oracle", oracle_results(prompts))):
                others[name] = _figures({s: ps for s, ps in _p(_shares(prompts, res, scorer)).items() if s in shares})
        for (metric, phrasing), v in value.items():
            key = ("accuracy", phrasing) if metric == "worst phrasing" else (metric, phrasing)
            specs = sum(phrasing in ps for ps in shares.values()) if phrasing else len(shares)
            rows.append({"scorer": scorer, "metric": metric, "phrasing": phrasing, "value": v, "chance": chance[key],
                         **{name: fig.get(key) for name, fig in others.items()}, "specs": specs})
    agreement = ranking_agreement(prompts, results)
    if agreement is not None:
        w, chance_w, n = agreement
        rows.append({"scorer": "likelihood", "metric": "ranking agreement", "phrasing": None, "value": w,
                     "chance": chance_w, "random": None, "oracle": None, "specs": n})
    return rows
