"""The likelihood scorer: rank by the model's own log p(image codes | text). Cheap and sampling-free.

Shapes prompts: the oracle image of the true spec (rendered, then dVAE-encoded) is scored under the true
caption and under each foil (foils.py); the truth must score highest (checks.ranked_first: a tie at the top is broken
by a seeded draw, so a model that cannot tell tied candidates apart scores chance, not zero).
Raven: the full matrix is rendered with each of the 8 candidates in the bottom-right cell, encoded, and
the candidates are ranked by the summed log-prob of the image tokens covering the answer cell; the caption
and the rows above the cell, the same for all 8, run through the transformer once (sampling.score_candidates).
Translation: log p(bottom tokens | caption, top tokens) of the true bottom panel against the copy of the top and
the other transforms (translation.alternatives), each under the codes of the context's top panel; the caption
and the top rows run once per prompt (score_candidates again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dalle_eval.errors import DalleEvalError
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER, load_transformer
from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
from dalle_eval.model.sampling import completion_keep, score, score_candidates
from dalle_eval.model.tokenizer import encode_captions, load_tokenizer, pad_batch
from dalle_eval.probes.chance import N_CANDIDATES
from dalle_eval.probes.checks import ranked_checks, ranked_first, result
from dalle_eval.probes.foils import foils_for
from dalle_eval.probes.scoring import oracle_image
from dalle_eval.probes.suites import COMPLETION_SUITES
from dalle_eval.probes.translation import alternatives
from dalle_eval.raven import RavenItem, answer_box, render_matrix
from dalle_eval.shapes.panels import Translation, render_panels


@dataclass
class ProbeModel:
    """A transformer checkpoint with its own dVAE and tokenizer (what scoring and completion need)."""

    model: torch.nn.Module
    dvae: torch.nn.Module
    tok: object
    device: str = "cpu"

    @staticmethod
    def load(ckpt: Path, device: str = "cpu") -> ProbeModel:
        ckpt = Path(ckpt)
        return ProbeModel(load_transformer(ckpt).to(device), load_image_tokenizer_dir(ckpt / DVAE_DIR).to(device),
                          load_tokenizer(ckpt / TOKENIZER), device)

    @property
    def image_size(self) -> int:
        return self.dvae.cfg.image_size

    @property
    def grid(self) -> int:
        return self.model.cfg.grid

    def text(self, captions: list[str]) -> torch.Tensor:
        L = self.model.cfg.text_len
        ids, _ = encode_captions(self.tok, captions, L)
        return self.model.pad_text(pad_batch(ids, L).to(self.device))  # (B, L)

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images at the dVAE's size -> (B, grid, grid) codes."""
        x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]))
        return self.dvae.encode(x.permute(0, 3, 1, 2).float().div(255).to(self.device))


def answer_region(image_size: int, grid: int) -> tuple[int, int]:
    """(x0, y0) token corner of the rectangle covering the Raven answer cell at this image size."""
    x0, y0, _, _ = answer_box(image_size)
    patch = image_size / grid
    return int(x0 // patch), int(y0 // patch)


def _scores(pm: ProbeModel, text: torch.Tensor, codes: torch.Tensor, batch: int) -> list[float]:
    out = []
    for i in range(0, len(text), batch):
        _, summed = score(pm.model, text[i : i + batch], codes[i : i + batch])
        out += summed.tolist()
    return out


def encode_batched(pm: ProbeModel, images: list[Image.Image], batch: int) -> torch.Tensor:
    if not images:
        return torch.zeros(0, pm.grid, pm.grid, dtype=torch.long)
    return torch.cat([pm.encode(images[i : i + batch]) for i in range(0, len(images), batch)])


class ShapesLikelihood:
    """The shapes prompts' oracle images, encoded once, with their true and foil captions: calling it scores
    the model as it is now. Per prompt: "ranked_first" (truth above every foil, chance 1/(1+k)) and
    "vs_<foil kind>" (chance 1/2). Training probes call one instance after every probe_every steps."""

    def __init__(self, prompts: list[dict], pm: ProbeModel, batch: int = 64):
        self.prompts = [p for p in prompts if p["suite"] not in COMPLETION_SUITES]
        self.pm, self.batch = pm, batch
        images = [oracle_image(p, pm.image_size) for p in self.prompts]
        codes = encode_batched(pm, images, batch)
        self.foils = [foils_for(p) for p in self.prompts]
        captions, rows = [], []
        for k, (p, fs) in enumerate(zip(self.prompts, self.foils)):
            captions += [p["caption"], *(f["caption"] for f in fs)]
            rows += [k] * (1 + len(fs))
        self.text = pm.text(captions) if captions else None
        self.codes = codes[rows] if rows else None

    def __call__(self) -> list[dict]:
        if not self.prompts:
            return []
        lp = _scores(self.pm, self.text, self.codes, self.batch)
        results, at = [], 0
        for p, fs in zip(self.prompts, self.foils):
            truth, others = lp[at], lp[at + 1 : at + 1 + len(fs)]
            at += 1 + len(fs)
            results += ranked_checks(p, truth, [(f["kind"], o) for f, o in zip(fs, others)], "likelihood",
                                     {"logp": truth, "foils": [{"kind": f["kind"], "caption": f["caption"], "logp": o}
                                                               for f, o in zip(fs, others)]})
        return results


class RavenLikelihood:
    """Each Raven item rendered with each of its 8 candidates in the answer cell, encoded once: calling it
    ranks the candidates by the answer region's log-prob under the model as it is now ("answer", chance 1/8)."""

    def __init__(self, prompts: list[dict], pm: ProbeModel, batch: int = 64):
        self.prompts = [p for p in prompts if p["suite"] == "raven"]
        self.pm, self.batch = pm, batch
        self.items = [RavenItem.from_json(p["spec"]) for p in self.prompts]
        self.region = ~completion_keep(pm.grid, region=answer_region(pm.image_size, pm.grid))
        images = [render_matrix(item, pm.image_size, c) for item in self.items for c in item.candidates]
        self.codes = encode_batched(pm, images, batch).view(-1, N_CANDIDATES, pm.grid, pm.grid)  # (items, 8, g, g)
        self.text = pm.text([p["caption"] for p in self.prompts]) if self.items else None
        # a call's shared prefix ends where the candidates of any of its items first differ: group items by that token
        shared = (self.codes.flatten(2) == self.codes.flatten(2)[:, :1]).all(1)  # (items, g*g)
        self.order = shared.long().cumprod(1).sum(1).argsort(stable=True).cpu()  # (items,)

    def __call__(self) -> list[dict]:
        if not self.items:
            return []
        per = max(1, self.batch // N_CANDIDATES)  # items per call: `batch` candidate sequences
        lp_all = torch.empty(len(self.items), N_CANDIDATES)
        for i in range(0, len(self.items), per):
            at = self.order[i : i + per]
            lp_all[at] = score_candidates(self.pm.model, self.text[at], self.codes[at], self.region).cpu()
        results = []
        for p, item, lp in zip(self.prompts, self.items, lp_all.tolist()):
            passed, chosen, tied = ranked_first(lp, item.answer, f"{p['prompt_id']}/likelihood/answer")
            results.append(result(p, "answer", passed, 1 / N_CANDIDATES, "likelihood", chosen=chosen, tied=tied, logp=lp))
        return results


def panel_rows(grid: int) -> int:
    """Token rows of the top panel: half the grid (the two-panel canvas splits at its middle token row)."""
    if grid % 2:
        raise DalleEvalError(f"the translation suite splits the image at its middle token row: needs an even token "
                             f"grid, this checkpoint's is {grid}x{grid}")
    return grid // 2


class TranslationLikelihood:
    """Each translation prompt's candidate bottoms (truth first, translation.alternatives) drawn and encoded once,
    their top rows replaced by the codes of the context image (top panel, blank bottom) that completion starts
    from: calling it ranks them by log p(bottom tokens | caption, top tokens) ("ranked_first", chance 1/k for k
    candidates; "vs_copy", "vs_<transform>", chance 1/2)."""

    def __init__(self, prompts: list[dict], pm: ProbeModel, batch: int = 64):
        self.prompts = [p for p in prompts if p["suite"] == "translation"]
        self.pm, self.batch = pm, batch
        if not self.prompts:
            return
        g, size = pm.grid, pm.image_size
        rows = panel_rows(g)
        self.region = ~completion_keep(g, keep_rows=rows)
        specs = [Translation.from_json(p["spec"]) for p in self.prompts]
        cands = [alternatives(s) for s in specs]
        self.kinds = [[k for k, _ in c] for c in cands]
        C = max(map(len, cands))
        images = []
        for s, c in zip(specs, cands):  # the context, then C candidates (short lists padded with the truth)
            images += [render_panels(s, size, ()), *(render_panels(s, size, b) for _, b in c + c[:1] * (C - len(c)))]
        codes = encode_batched(pm, images, batch).view(len(specs), C + 1, g, g)
        self.codes = codes[:, 1:].clone()
        self.codes[:, :, :rows] = codes[:, :1, :rows]
        self.text = pm.text([p["caption"] for p in self.prompts])

    def __call__(self) -> list[dict]:
        if not self.prompts:
            return []
        per = max(1, self.batch // self.codes.shape[1])
        lp_all = torch.cat([score_candidates(self.pm.model, self.text[i : i + per], self.codes[i : i + per],
                                             self.region).cpu() for i in range(0, len(self.prompts), per)])
        results = []
        for p, kinds, lp in zip(self.prompts, self.kinds, lp_all.tolist()):
            truth, others = lp[0], lp[1 : len(kinds)]
            results += ranked_checks(p, truth, list(zip(kinds[1:], others)), "likelihood",
                                     {"logp": truth, "alternatives": dict(zip(kinds[1:], others))})
        return results


def likelihood_shapes(prompts: list[dict], pm: ProbeModel, batch: int = 64) -> list[dict]:
    return ShapesLikelihood(prompts, pm, batch)()


def likelihood_raven(prompts: list[dict], pm: ProbeModel, batch: int = 64) -> list[dict]:
    return RavenLikelihood(prompts, pm, batch)()


def likelihood_translation(prompts: list[dict], pm: ProbeModel, batch: int = 64) -> list[dict]:
    return TranslationLikelihood(prompts, pm, batch)()
