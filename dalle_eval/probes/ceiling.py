"""The dVAE ceiling: the best score any transformer over this image tokenizer can reach on the probe suites.

Each shapes prompt's oracle image (its spec drawn by the renderer, as the likelihood scorer uses it) and
each Raven item's true matrix and each translation prompt's correct two-panel canvas go through the dVAE (encode, decode) and are then scored exactly as a
generated image would be: the shapes parser and its checks, the Raven candidate matcher, the translation checks. A check the round
trip fails cannot be passed by a model that writes these codes, whatever it learned.
"""

from __future__ import annotations

import numpy as np
import torch

from dalle_eval.model.dvae import pixels_to_pil
from dalle_eval.probes.chance import scene_chance
from dalle_eval.probes.checks import result
from dalle_eval.probes.scoring import oracle_image, score_raven_image, score_scene_image
from dalle_eval.probes.translation import score_translation_image, translation_chance
from dalle_eval.raven import RavenItem, render_matrix
from dalle_eval.shapes import Scene
from dalle_eval.shapes.panels import Translation, render_panels

SCORER = "dvae_ceiling"


def _true_image(prompt: dict, size: int):
    if prompt["suite"] == "raven":
        item = RavenItem.from_json(prompt["spec"])
        return render_matrix(item, size, item.candidates[item.answer])
    if prompt["suite"] == "translation":
        return render_panels(Translation.from_json(prompt["spec"]), size)
    return oracle_image(prompt, size)


def _chance(prompt: dict) -> dict[str, float] | None:
    if prompt["suite"] == "translation":
        return translation_chance(Translation.from_json(prompt["spec"]))
    return None if prompt["suite"] == "raven" else scene_chance(Scene.from_json(prompt["spec"]))


class DVAECeiling:
    """The probe prompts' oracle images, drawn once at the dVAE's size; calling it with a dVAE scores their
    round trips (scorer "dvae_ceiling", the parser's checks and chance levels)."""

    def __init__(self, prompts: list[dict], image_size: int, batch: int = 64):
        self.prompts, self.batch = list(prompts), batch
        images = [_true_image(p, image_size) for p in self.prompts]
        self.pixels = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
                                       ).permute(0, 3, 1, 2) if images else None
        self.chances = [_chance(p) for p in self.prompts]

    @torch.no_grad()
    def round_trips(self, dvae) -> list:
        device = next(dvae.parameters()).device
        out = []
        for i in range(0, len(self.prompts), self.batch):
            x = self.pixels[i : i + self.batch].to(device).float().div(255)
            out += pixels_to_pil(dvae.decode(dvae.encode(x)))
        return out

    def __call__(self, dvae) -> list[dict]:
        if not self.prompts:
            return []
        was_training = dvae.training
        dvae.eval()
        try:
            images = self.round_trips(dvae)
        finally:
            dvae.train(was_training)
        results = []
        for p, image, chance in zip(self.prompts, images, self.chances):
            if p["suite"] == "raven":
                item = RavenItem.from_json(p["spec"])
                checks, chosen = score_raven_image(item, image)
                results += [result(p, c, ok, ch, SCORER, chosen=chosen) for c, (ok, ch) in checks.items()]
            elif p["suite"] == "translation":
                checks = score_translation_image(Translation.from_json(p["spec"]), image, chance)
                results += [result(p, c, ok, ch, SCORER) for c, (ok, ch) in checks.items()]
            else:
                checks = score_scene_image(Scene.from_json(p["spec"]), image, chance)
                results += [result(p, c, ok, ch, SCORER) for c, (ok, ch) in checks.items()]
        return results
