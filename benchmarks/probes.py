"""Probe scoring speed on the tiny model: likelihood scoring vs sampling-based scoring (generate + parse).

The same prompts both ways, in the same process, on a random-init `tiny` transformer + dVAE (speed does
not depend on the weights) with a BPE trained on the probe captions:
- shapes (attributes + binding): likelihood = oracle render -> dVAE encode -> log p(codes | caption) for
  the truth and every foil; sampling = draw one image per prompt (KV cache) -> decode -> parse.
- raven: likelihood = 8 candidate matrices encoded and scored on the answer-cell tokens; sampling = one
  completion of the answer cell -> decode -> nearest candidate.
Items/s counts prompts (one image each for sampling; the probes' default draws eval.probe_samples = 4,
so the real sampling path is ~4x slower still). Under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from dalle_eval.config import load_config
from dalle_eval.generate import codes_to_images
from dalle_eval.probes import make_prompts
from dalle_eval.probes.likelihood import ProbeModel, likelihood_raven, likelihood_shapes
from dalle_eval.probes.raven_probe import model_completer
from dalle_eval.probes.scoring import score_raven_image, score_scene_image
from dalle_eval.raven import RavenItem
from dalle_eval.shapes import Scene
from model.dvae import DVAE
from model.sampling import sample_codes
from model.tokenizer import train_bpe
from model.transformer import DalleTransformer

N_SHAPES, N_RAVEN, BATCH = 48, 12, 16


def _model(folder: Path) -> ProbeModel:
    cfg = load_config(["tiny"])
    torch.manual_seed(0)
    captions = [p["caption"] for p in make_prompts("all")] + ["a small red circle", "two large blue squares"]
    tok = train_bpe(captions * 4, cfg.transformer.text_vocab, folder / "tokenizer.json")
    return ProbeModel(DalleTransformer(cfg.transformer).eval(), DVAE(cfg.dvae).eval(), tok)


def _sampling_shapes(pm: ProbeModel, prompts: list[dict]) -> None:
    for i in range(0, len(prompts), BATCH):
        chunk = prompts[i : i + BATCH]
        codes = sample_codes(pm.model, pm.text([p["caption"] for p in chunk]), list(range(len(chunk))), 1.0, 32)
        for p, img in zip(chunk, codes_to_images(pm.dvae, codes)):
            score_scene_image(Scene.from_json(p["spec"]), img)


def _sampling_raven(pm: ProbeModel, prompts: list[dict]) -> None:
    complete = model_completer(pm, 1.0, 32)
    for p in prompts:
        item = RavenItem.from_json(p["spec"])
        score_raven_image(item, complete(item, p["caption"], [0])[0])


def _rate(fn, *args) -> float:
    n = len(args[-1])
    t0 = time.perf_counter()
    fn(*args)
    return n / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        pm = _model(Path(tmp))
        shapes = (make_prompts("attributes") + make_prompts("binding"))[::3][:N_SHAPES]
        raven = make_prompts("raven", raven_items=N_RAVEN)
        likelihood_shapes(shapes[:4], pm)  # warm-up
        _sampling_shapes(pm, shapes[:2])
        lik_s = len(shapes) / _timed(lambda: likelihood_shapes(shapes, pm))
        smp_s = _rate(_sampling_shapes, pm, shapes)
        lik_r = len(raven) / _timed(lambda: likelihood_raven(raven, pm))
        smp_r = _rate(_sampling_raven, pm, raven)
        rows = [("shapes (attributes + binding)", len(shapes), lik_s, smp_s), ("raven", len(raven), lik_r, smp_r)]
    print("probe scoring on the tiny model (random init, 64 px, 8x8 codes, 4 layers), 2 CPU threads")
    for name, n, lik, smp in rows:
        print(f"{name:<30} {n:3d} items | likelihood {lik:7.1f} items/s | sampling + parse {smp:6.1f} items/s "
              f"| likelihood is {lik / smp:5.1f}x faster")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
