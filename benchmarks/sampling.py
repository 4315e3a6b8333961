"""Image-token sampling speed: KV cache vs full recompute (baseline).

tiny: both samplers run in full. mid (12 layers, d_model 512, 64 text + 32x32 = 1024 image tokens):
the cached sampler runs in full; full recompute would take ~half an hour, so its per-step time is
measured at prefix lengths 0, 256, 512, 768, 1023 and integrated (trapezoid) over the 1024 steps.
Prints image tokens/s, the speed-up, and the fraction of this machine's fp32 matmul peak the cached sampler
reaches (2 N FLOPs per generated token): the peak of benchmarks/peak.py at this thread count, read from its
peak.json, else measured quickly in-process (each figure names which).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from dalle_eval.model.sampling import sample_codes
from dalle_eval.model.transformer import DalleTransformer
from peak import peak_gflops

from dalle_eval.config import load_config


def tokens_per_second(model, batch: int, use_cache: bool, repeats: int = 3) -> float:
    """Best of `repeats` runs (the machine is shared; the minimum time is the least disturbed)."""
    text = model.pad_text(torch.randint(0, model.cfg.text_vocab, (batch, model.cfg.text_len)))
    sample_codes(model, text[:1], [0], use_cache=use_cache)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sample_codes(model, text, list(range(batch)), use_cache=use_cache)
        best = min(best, time.perf_counter() - t0)
    return batch * model.cfg.image_len / best


def mid_size(peak: tuple[float, str], batch: int = 4) -> None:
    cfg = dataclasses.replace(load_config(["tiny"]).transformer, n_layer=12, d_model=512, n_head=8, d_head=64,
                              text_len=64, grid=32, text_vocab=16384, image_vocab=8192, conv_kernel=11)
    torch.manual_seed(0)
    model = DalleTransformer(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    cached = tokens_per_second(model, batch, True, repeats=1)
    text = model.pad_text(torch.randint(0, cfg.text_vocab, (batch, cfg.text_len)))
    points, times = [0, 256, 512, 768, 1023], []
    with torch.no_grad():
        for t in points:
            codes = torch.randint(0, cfg.image_vocab, (batch, t))
            model.image_logits(text, codes)  # warm-up
            t0 = time.perf_counter()
            model.image_logits(text, codes)
            times.append(time.perf_counter() - t0)
    total = sum((points[i + 1] - points[i]) * (times[i] + times[i + 1]) / 2 for i in range(len(points) - 1)) + times[-1]
    full = batch * cfg.image_len / total
    gflops = 2 * n * cached / 1e9
    print(f"mid ({n / 1e6:.1f}M params, {cfg.image_len} image tokens), batch {batch}: KV cache {cached:8.0f} tok/s | "
          f"full recompute {full:8.1f} tok/s (integrated) | speed-up {cached / full:5.1f}x | "
          f"{100 * gflops / peak[0]:.1f}% of the {peak[1]}")


def main() -> None:
    peak = peak_gflops("fp32")
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
              f"{100 * gflops / peak[0]:.1f}% of the {peak[1]}")
    mid_size(peak)


if __name__ == "__main__":
    main()
