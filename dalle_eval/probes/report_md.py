"""report.md for the probes: one table per suite and scorer, and grids of successes and failures."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from dalle_eval.artifacts import read_jsonl
from dalle_eval.report import ci, image_grid, md_table, pct
from dalle_eval.samples import SAMPLES

HOW = {
    "parser": "exact: the image is parsed back into objects (shapes) or matched to the nearest Raven candidate",
    "likelihood": "the model's own log p(image codes | text): true caption vs foils on the oracle image; "
                  "Raven candidates by the log-prob of the answer-cell tokens; translation: the true bottom panel vs "
                  "the copy of the top and the other transforms, by log p(bottom tokens | caption, top tokens)",
    "clip": "open_clip multiple choice: the image's similarity to the true caption vs each foil",
    "dvae_ceiling": "the ceiling of this image tokenizer: each prompt's oracle image (Raven: the true matrix) "
                    "encoded and decoded by the checkpoint's dVAE, then parser-scored; no model writing these "
                    "codes can score higher",
}
COLUMNS = ["category", "check", "split", "n", "prompts", "accuracy", "ci95", "chance", "random generator"]
PARTIAL = "†"
GRID = 18  # images per grid


def _image_outcomes(results: list[dict], suite: str) -> dict[str, bool]:
    """file -> every parser check of the image passed (Raven: the right candidate; CLIP: truth ranked first)."""
    ok: dict[str, bool] = {}
    for scorer, checks in (("parser", None), ("clip", ("ranked_first",))):  # CLIP when nothing was parsed
        for r in results:
            if r["suite"] == suite and r["scorer"] == scorer and "file" in r and (checks is None or r["check"] in checks):
                ok[r["file"]] = ok.get(r["file"], True) and r["passed"]
        if ok:
            break
    return ok


def raven_label(captions: dict, chosen: dict, correct: dict):
    """A Raven grid cell: its caption, the candidate the image was read as and the correct one (1-8)."""
    return lambda f: f"{captions.get(f, '')} | chose {chosen[f] + 1}, correct {correct[f] + 1}"


def display_row(row: dict) -> dict:
    """A table row as report.md shows it: percentages, interval, † on partial coverage, '—' for no random column."""
    rand = row.get("random")
    return {**row, "accuracy": pct(row["accuracy"]) + (PARTIAL if row.get("partial") else ""), "ci95": ci(row["ci95"]),
            "chance": pct(row["chance"]), "random generator": "—" if rand is None else pct(rand)}


def _coverage_md(cover: list[dict]) -> str:
    """Prompts expected / with images per suite and category; a note when any are missing."""
    if not cover:
        return ""
    rows = [{**c, "missing": len(c["missing"])} for c in cover if not c["category"].startswith("rule:")]
    md = "\n## Coverage\n\n" + md_table(rows, ["suite", "category", "expected", "with_images", "missing"])
    if any(c["missing"] for c in cover):
        md += (f"\n**Partial coverage:** some prompts have no image (ids in report.json `coverage`); figures "
               f"marked {PARTIAL} are computed on the prompts that have images only. "
               "`--require-complete` makes this an error.\n")
    return md


def _paraphrase_md(rows: list[dict] | None) -> str:
    """The paraphrase suite's figures (probes/paraphrase.py) as one table."""
    if not rows:
        return ""
    def show(row: dict, x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}" if row["metric"] == "ranking agreement" else pct(x)

    shown = [{**r, "phrasing": r["phrasing"] or "", "value": show(r, r["value"]), "chance": show(r, r["chance"]),
              "random generator": show(r, r["random"]), "oracle": show(r, r["oracle"])} for r in rows]
    return ("\n## paraphrase — consistency across phrasings\n\nOne spec, 5-6 equivalent captions (canonical, permuted "
            "objects, converse relation, there-is, numerals, clause, bottom-up stack, synonyms); the all-or-nothing check "
            "(parser: image, likelihood: ranked first). consistency = P(all phrasings pass | canonical passes); no "
            "correct interpretation = the share of specs no phrasing gets right; ranking "
            "agreement = Kendall's W of the likelihood rankings of truth and foils across phrasings. `oracle`: each "
            "spec rendered and parsed.\n\n"
            + md_table(shown, ["scorer", "metric", "phrasing", "value", "chance", "random generator", "oracle", "specs"]))


def _translation_md(rows: list[dict] | None) -> str:
    """The translation suite's parser rows beside its baselines (probes/translation.py)."""
    if not rows:
        return ""
    shown = [{**r, **{k: "—" if r[k] is None else pct(r[k]) for k in ("accuracy", "chance", "random", "copy", "oracle")}}
             for r in rows]
    return ("\n## translation — against its baselines\n\nThe bottom panel completed under the given top panel "
            "(parser; each panel parsed on its own). `translation` is all-or-nothing (count, transform, unchanged "
            "attributes, positions); `copied` (the bottom repeats the top) is a diagnostic. `copy`: the top drawn "
            "again below; `oracle`: the correct bottom drawn; `random generator`: a random bottom.\n\n"
            + md_table([{**r, "random generator": r["random"]} for r in shown],
                       ["transform", "check", "n", "accuracy", "chance", "random generator", "copy", "oracle"]))


def write_markdown(report: dict, results: list[dict], folder: Path | None, out: Path) -> None:
    md = f"# Probes: {report['suite']}\n\n"
    if folder is not None:
        md += f"Images: `{folder}` ({report['n_images']} images). "
    md += (f"{report['n_prompts']} prompts. 95% Wilson intervals on the effective sample size (checks of one "
           "prompt are correlated, so `n` checks over `prompts` prompts count as fewer). `chance` is the expected "
           "score of the suite's random generator (the prompt's number of objects, every attribute and position "
           "drawn uniformly; a random Raven candidate), exact; `random generator` is that generator rendered and "
           "scored on the same prompts. `seen` / `heldout`: prompts without / with a colour-shape pair never "
           "shown in training.\n")
    md += _coverage_md(report.get("coverage") or [])
    for suite in report["suites"]:
        for scorer in [*report["scorers"], "dvae_ceiling"]:
            rows = [display_row(r) for r in report["table"] if r["suite"] == suite and r["scorer"] == scorer]
            if rows:
                md += f"\n## {suite} — {scorer}\n\n{HOW[scorer]}.\n\n"
                md += md_table(rows, COLUMNS)
    md += _paraphrase_md(report.get("paraphrase"))
    md += _translation_md(report.get("translation"))
    window = report.get("text_window")
    if window and window["truncated"]:
        by = Counter(f"{t['suite']}/{t['category']}" for t in window["truncated"])
        md += (f"\n**{len(window['truncated'])} of {window['prompts']} prompts are longer than the model's "
               f"{window['text_len']}-token text window** ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}): "
               "the model never sees their end, so they score lower by construction. "
               "Their ids are in report.json (`text_window`).\n")
    if report["not_scored"]:
        md += f"\nNo images or scores for: {', '.join(report['not_scored'])}.\n"
    captions = {s["file"]: s.get("caption", "") for s in read_jsonl(folder / SAMPLES)} if folder else {}
    chosen = {r["file"]: r["chosen"] for r in results if "chosen" in r and "file" in r}
    correct = {r["file"]: r["correct"] for r in results if "correct" in r and "file" in r}
    for suite in report["suites"]:
        outcome = _image_outcomes(results, suite)
        for name, want in (("successes", True), ("failures", False)):
            files = [f for f, v in outcome.items() if v == want][:GRID]
            if not files:
                continue
            label = raven_label(captions, chosen, correct) if suite == "raven" else (lambda f: captions.get(f, ""))
            image_grid([(folder / f, label(f)) for f in files], out / f"{suite}_{name}.png")
            md += f"\n## {suite}: {name}\n\n![{suite} {name}]({suite}_{name}.png)\n"
    (out / "report.md").write_text(md)
