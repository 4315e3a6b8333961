"""Probe scoring speed on the tiny model: likelihood scoring vs sampling-based scoring (generate + parse).

The same prompts both ways, in the same process, on a random-init `tiny` transformer + dVAE (speed does
not depend on the weights) with a BPE trained on the probe captions:
- shapes (attributes + binding): likelihood = oracle render -> dVAE encode -> log p(codes | caption) for
  the truth and every foil; sampling = draw one image per prompt (KV cache) -> decode -> parse.
- raven: likelihood = 8 candidate matrices encoded and scored on the answer-cell tokens; sampling = one
  completion of the answer cell -> decode -> nearest candidate.
Items/s counts prompts: sampling with one image per prompt, and with eval.probe_samples = 4 (the probes'
default, what `probes run --ckpt` does), best of two runs (a shared machine); then the same at 256 image
tokens (grid 16, 128 px) on fewer items, one run, one image per prompt. About two minutes on 2 CPU cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.sampling import sample_codes
from dalle_eval.model.tokenizer import train_bpe
from dalle_eval.model.transformer import DalleTransformer

from dalle_eval.config import load_config
from dalle_eval.generate import codes_to_images
from dalle_eval.probes import make_prompts
from dalle_eval.probes.likelihood import ProbeModel, likelihood_raven, likelihood_shapes
from dalle_eval.probes.raven_probe import model_completer
from dalle_eval.probes.scoring import score_raven_image, score_scene_image
from dalle_eval.raven import RavenItem
from dalle_eval.shapes import Scene

N_SHAPES, N_RAVEN, BATCH = 64, 16, 64


def _model(folder: Path, grid: int = 8) -> ProbeModel:
    """tiny, or tiny at grid x grid image tokens (the dVAE downsamples 8x: a grid of 16 = 128-px images)."""
    cfg = load_config(["tiny"], [f"transformer.grid={grid}", f"dvae.image_size={8 * grid}", f"data.resolution={8 * grid}"])
    torch.manual_seed(0)
    captions = [p["caption"] for p in make_prompts("all")] + ["a small red circle", "two large blue squares"]
    tok = train_bpe(captions * 4, cfg.transformer.text_vocab, folder / "tokenizer.json")
    return ProbeModel(DalleTransformer(cfg.transformer).eval(), DVAE(cfg.dvae).eval(), tok)


def _sampling_shapes(pm: ProbeModel, prompts: list[dict], per_prompt: int = 1) -> None:
    todo = [(p, j) for p in prompts for j in range(per_prompt)]
    for i in range(0, len(todo), BATCH):
        chunk = todo[i : i + BATCH]
        codes = sample_codes(pm.model, pm.text([p["caption"] for p, _ in chunk]), list(range(len(chunk))), 1.0, 32)
        for (p, _), img in zip(chunk, codes_to_images(pm.dvae, codes)):
            score_scene_image(Scene.from_json(p["spec"]), img)


def _sampling_raven(pm: ProbeModel, prompts: list[dict], per_prompt: int = 1) -> None:
    complete = model_completer(pm, 1.0, 32)
    for p in prompts:
        item = RavenItem.from_json(p["spec"])
        for img in complete(item, p["caption"], list(range(per_prompt))):
            score_raven_image(item, img)


def _rate(fn, pm: ProbeModel, prompts: list[dict], *args, repeats: int = 2) -> float:
    """Prompts per second, best of `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(prompts, pm, *args) if fn in (likelihood_shapes, likelihood_raven) else fn(pm, prompts, *args)
        best = min(best, time.perf_counter() - t0)
    return len(prompts) / best


def main() -> None:
    torch.set_num_threads(2)
    shapes = (make_prompts("attributes") + make_prompts("binding"))[::3][:N_SHAPES]
    raven = make_prompts("raven", raven_items=N_RAVEN)
    print("probe scoring, random-init tiny transformer (4 layers, d 192) + dVAE, 2 CPU threads; items/s")
    for grid in (8, 16):  # tiny's 64 image tokens, and 256 (128 px): sampling is one step per image token
        big = grid > 8  # fewer items, one run, one image per prompt: 256-token sampling is slow on a CPU
        with tempfile.TemporaryDirectory() as tmp:
            pm = _model(Path(tmp), grid)
            likelihood_shapes(shapes[:4], pm)  # warm-up
            _sampling_shapes(pm, shapes[:2])
            for name, lik, smp, prompts in (("shapes", likelihood_shapes, _sampling_shapes, shapes[: 12 if big else None]),
                                            ("raven", likelihood_raven, _sampling_raven, raven[: 4 if big else None])):
                reps = 1 if big else 2
                rate, one = _rate(lik, pm, prompts, repeats=reps), _rate(smp, pm, prompts, 1, repeats=reps)
                four = f"4 images {_rate(smp, pm, prompts, 4):6.1f}" if not big else "4 images    -  "
                print(f"{grid * grid:4d} image tokens  {name:<7} {len(prompts):3d} items | likelihood {rate:6.1f} | "
                      f"sampling + parse: 1 image {one:6.1f}, {four} | likelihood {rate / one:4.1f}x faster than 1 image")

if __name__ == "__main__":
    main()
