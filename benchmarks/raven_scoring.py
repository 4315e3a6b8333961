"""Raven likelihood scoring, items/s: the shared prefix computed once into the KV cache vs a full forward per candidate.

    python benchmarks/raven_scoring.py [--items 32] [--repeats 3] [--threads 0] [--set dvae.group_count=3 ...]

Random-init `tiny` transformer and dVAE (speed does not depend on the weights), by default at shapes-long's
16x16 grid (dvae.group_count=3: 64 px -> 256 image tokens), a BPE trained on the items' captions. Both paths
score the same encoded matrices (8 candidates per item, encoded once, outside the timing), in one process:
- prefix: RavenLikelihood as the probes run it (sampling.score_candidates): the caption and the image tokens
  before the first one where an item's candidates differ run once per item, the rest per candidate, batched;
- full forward: sampling.score on every (caption, candidate) sequence in batches of 64, as RavenLikelihood did
  before (the reference the tests compare against).
Prints items/s of each (best of --repeats after a warm-up), the ratio, the largest score difference, and
where the candidates first differ (the dVAE's receptive field can reach above the answer cell).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.sampling import completion_keep, score
from dalle_eval.model.tokenizer import train_bpe
from dalle_eval.model.transformer import DalleTransformer
from timing import best_time

from dalle_eval.config import load_config
from dalle_eval.probes import make_prompts
from dalle_eval.probes.likelihood import ProbeModel, RavenLikelihood, answer_region

BATCH = 64  # sequences per forward, both paths (RavenLikelihood's default)


def full_forward(probe: RavenLikelihood) -> torch.Tensor:
    """(items, 8) scores from one full forward per (caption, candidate): the reference path."""
    items, C, g = probe.codes.shape[:3]
    text, codes = probe.text.repeat_interleave(C, 0), probe.codes.flatten(0, 1)
    region = ~completion_keep(g, region=answer_region(probe.pm.image_size, g))
    return torch.cat([score(probe.pm.model, text[i : i + BATCH], codes[i : i + BATCH], region)[1]
                      for i in range(0, len(text), BATCH)]).view(items, C)


def first_differences(probe: RavenLikelihood) -> list[int]:
    """Per item, the raster index of the first image token where its 8 candidates differ (grid**2: none)."""
    flat = probe.codes.flatten(2)  # (items, 8, N)
    return (flat == flat[:, :1]).all(1).long().cumprod(1).sum(1).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--set", dest="sets", action="append", default=None,
                    help="config override, repeatable (default: dvae.group_count=3, a 16x16 grid)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(["tiny"], args.sets or ["dvae.group_count=3"])
    prompts = make_prompts("raven", raven_items=args.items)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe([p["caption"] for p in prompts] * 4, cfg.transformer.text_vocab, Path(tmp) / "tokenizer.json")
    pm = ProbeModel(DalleTransformer(cfg.transformer).eval(), DVAE(cfg.dvae).eval(), tok)
    probe = RavenLikelihood(prompts, pm, BATCH)
    t = cfg.transformer
    g, x0, y0 = t.grid, *answer_region(pm.image_size, t.grid)
    first = first_differences(probe)
    print(f"Raven likelihood scoring: random-init {t.n_layer}-layer d {t.d_model} transformer ({t.attention}), "
          f"{t.text_len} text + {g}x{g} image tokens, {args.items} items x 8 candidates, "
          f"{torch.get_num_threads()} thread(s), best of {args.repeats}")
    print(f"  answer region from token {y0 * g + x0} (row {y0}, column {x0}): {(g - x0) * (g - y0)} scored tokens; "
          f"candidates first differ at token {min(first)}..{max(first)} (mean {sum(first) / len(first):.0f})")
    diff = (torch.tensor([r["logp"] for r in probe()]) - full_forward(probe)).abs().max().item()
    prefix, full = best_time(probe, args.repeats), best_time(lambda: full_forward(probe), args.repeats)
    print(f"  shared prefix (KV cache): {args.items / prefix:7.1f} items/s | full forward per candidate: "
          f"{args.items / full:7.1f} items/s | ratio {full / prefix:.2f}x | largest score difference {diff:.1e}")


if __name__ == "__main__":
    main()
