"""Probe suites — attributes, variable binding, Raven's matrices, paraphrases, translation — and their scorers.

suites.py makes the prompts (each with its structured spec), scoring.py is the exact parser scorer,
paraphrase.py the paraphrase suite's consistency figures, translation.py the translation suite's checks and
baselines (translation_probe.py completes and exports it, completion.py writes completions for it and Raven),
foils.py builds foil captions, likelihood.py ranks by the model's own log p(codes | text), clip_mc.py is
CLIP multiple choice for any generator, raven_probe.py completes Raven matrices, tables.py makes accuracy tables with intervals.
Only the parser path is imported here: model code loads when a model is used.
"""

from dalle_eval.probes.foils import foils_for
from dalle_eval.probes.scoring import score_samples, score_scene_image
from dalle_eval.probes.suites import RAVEN_CAPTION, RAVEN_ITEMS, SUITES, make_prompts, resolve_suites
from dalle_eval.probes.tables import chance_within_ci, summarise, wilson

__all__ = [
    "RAVEN_CAPTION", "RAVEN_ITEMS", "SUITES", "chance_within_ci", "foils_for", "make_prompts",
    "resolve_suites", "score_samples", "score_scene_image", "summarise", "wilson",
]
