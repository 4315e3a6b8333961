"""CLIP multiple choice (any generator): does open_clip find the image closer to its true caption than
to every foil? Works on the images of any model, and on prompts that bring their own "foils" (a list of
captions), e.g. real-world prompts; shapes prompts get theirs from foils.py.
"""

from __future__ import annotations

from pathlib import Path

from dalle_eval.artifacts import read_rgb
from dalle_eval.probes.checks import ranked_checks
from dalle_eval.probes.foils import foils_for
from dalle_eval.probes.suites import COMPLETION_SUITES


def prompt_foils(prompt: dict) -> list[dict]:
    if "foils" in prompt:  # given with the prompt: captions, or {kind, caption} objects
        return [f if isinstance(f, dict) else {"kind": "foil", "caption": f} for f in prompt["foils"]]
    return foils_for(prompt)


def clip_multiple_choice(prompts: list[dict], samples: list[dict], images_dir: Path, scorer) -> list[dict]:
    """Per image: "ranked_first" (chance 1/(1+k)) and "vs_<foil kind>" (chance 1/2); scorer: a ClipScorer."""
    by_id = {p["prompt_id"]: p for p in prompts if p["suite"] not in COMPLETION_SUITES}
    results = []
    for s in samples:
        p = by_id.get(str(s["prompt_id"]))
        if p is None:
            continue
        foils = prompt_foils(p)
        if not foils:
            continue
        captions = [p["caption"], *(f["caption"] for f in foils)]
        image = read_rgb(Path(images_dir) / s["file"])
        sims = scorer.scores([image] * len(captions), captions).tolist()
        truth, others = sims[0], sims[1:]
        results += ranked_checks(p, truth, [(f["kind"], o) for f, o in zip(foils, others)], "clip",
                                 {"similarity": truth}, file=s["file"])
    return results
