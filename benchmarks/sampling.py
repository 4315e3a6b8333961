"""Image-token sampling speed: KV cache vs full recompute (baseline), at the tiny config.

Prints image tokens/s for both, the speed-up, and the fraction of the fp32 matmul peak
(~160 GFLOP/s on 2 threads) the cached sampler reaches (2 N FLOPs per generated token).
"""

from __future__ import annotations

import time

import torch

from dalle_eval.config import load_config
from model.sampling import sample_codes
from model.transformer import DalleTransformer

PEAK_GFLOPS = 160.0


def tokens_per_second(model, batch: int, use_cache: bool) -> float:
    text = model.pad_text(torch.randint(0, model.cfg.text_vocab, (batch, model.cfg.text_len)))
    sample_codes(model, text[:1], [0], use_cache=use_cache)  # warm-up
    t0 = time.perf_counter()
    sample_codes(model, text, list(range(batch)), use_cache=use_cache)
    return batch * model.cfg.image_len / (time.perf_counter() - t0)


def main() -> None:
    cfg = load_config(["tiny"]).transformer
    torch.manual_seed(0)
    model = DalleTransformer(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    for batch in (1, 16):
        cached = tokens_per_second(model, batch, True)
        full = tokens_per_second(model, batch, False)
        gflops = 2 * n * cached / 1e9
        print(f"tiny ({n / 1e6:.2f}M params, {cfg.image_len} image tokens), batch {batch:2d}: "
              f"KV cache {cached:8.0f} tok/s | full recompute {full:8.0f} tok/s | speed-up {cached / full:5.2f}x | "
              f"{100 * gflops / PEAK_GFLOPS:.1f}% of fp32 peak")


if __name__ == "__main__":
    main()
