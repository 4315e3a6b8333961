"""Image-token sampling speed: KV cache vs full recompute (baseline).

    python benchmarks/sampling.py [tiny] [mid]    (default both; run with OMP_NUM_THREADS=1 for per-core figures)

tiny: the samplers run in full: the KV-cached sampler (one `DecodeStep` per token), the same cache driven
through `DalleTransformer.forward` per token (the decode step before issue 18, same codes), and full recompute;
ms per decode step (at batch 1: per token, the Python/dispatch-bound figure), then the DecodeStep call alone
(the per-token cost) and the rest of a sampling call (set-up, prompt, draws: paid once per image).
mid (12 layers, d_model 512, 64 text + 32x32 = 1024 image tokens): both cached samplers run in full; full recompute would take ~half an hour, so its per-step time is
measured at prefix lengths 0, 256, 512, 768, 1023 and integrated (trapezoid) over the 1024 steps.
Prints image tokens/s, the speed-up, and the fraction of this machine's fp32 matmul peak the cached sampler
reaches (2 N FLOPs per generated token): the peak of benchmarks/peak.py at this thread count, read from its
peak.json, else measured quickly in-process (each figure names which).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch
from dalle_eval.model.sampling import _draw, sample_codes, uniforms_for
from dalle_eval.model.transformer import DalleTransformer, DecodeStep
from peak import peak_gflops

from dalle_eval.config import load_config


def tokens_per_second(model, batch: int, sampler=sample_codes, repeats: int = 3, **kwargs) -> float:
    """Best of `repeats` runs (the machine is shared; the minimum time is the least disturbed)."""
    text = model.pad_text(torch.randint(0, model.cfg.text_vocab, (batch, model.cfg.text_len)))
    sampler(model, text[:1], [0], **kwargs)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sampler(model, text, list(range(batch)), **kwargs)
        best = min(best, time.perf_counter() - t0)
    return batch * model.cfg.image_len / best


@torch.no_grad()
def sample_through_forward(model, text: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """The cached sampler before `DecodeStep` (commit ad69a0e): every token through forward(None, codes, cache)."""
    u, B, N = uniforms_for(seeds, model.cfg.image_len), text.shape[0], model.cfg.image_len
    codes, cache = torch.zeros(B, N, dtype=torch.long), model.new_cache(B)
    logits = model.image_logits(text, codes[:, :0], cache)
    for t in range(N):
        codes[:, t] = _draw(logits, u[:, t], 1.0, 0)
        if t + 1 < N:
            logits = model.image_logits(None, codes[:, t : t + 1], cache)
    return codes


def decode_step_ms(model, batch: int, repeats: int = 5) -> tuple[float, float]:
    """(ms per DecodeStep call, ms per image of the rest: cache set-up, prompt prefill, the draws), best run of
    `repeats`: the step is the per-token cost; the rest is paid once per image and spread over its tokens."""
    text = model.pad_text(torch.randint(0, model.cfg.text_vocab, (batch, model.cfg.text_len)))
    real, spent = DecodeStep.__call__, [0.0, 0]

    def timed(self, codes, cache):
        t0 = time.perf_counter()
        out = real(self, codes, cache)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return out

    best = (float("inf"), float("inf"))
    DecodeStep.__call__ = timed
    try:
        sample_codes(model, text[:1], [0])  # warm-up
        for _ in range(repeats):
            spent[:] = [0.0, 0]
            t0 = time.perf_counter()
            sample_codes(model, text, list(range(batch)))
            total = time.perf_counter() - t0
            best = min(best, (1e3 * spent[0] / spent[1], 1e3 * (total - spent[0])))
    finally:
        DecodeStep.__call__ = real
    return best


def tiny(peak: tuple[float, str]) -> None:
    cfg = load_config(["tiny"]).transformer
    torch.manual_seed(0)
    model = DalleTransformer(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    for batch in (1, 16):
        cached = tokens_per_second(model, batch)
        forward = tokens_per_second(model, batch, sample_through_forward)
        full = tokens_per_second(model, batch, use_cache=False)
        gflops = 2 * n * cached / 1e9
        print(f"tiny ({n / 1e6:.2f}M params, {cfg.n_layer} layers, {cfg.image_len} image tokens), batch {batch:2d}: "
              f"KV cache {cached:8.0f} tok/s = {1e3 * batch / cached:.3f} ms/step | cached forward per token (before "
              f"DecodeStep) {forward:8.0f} tok/s = {1e3 * batch / forward:.3f} ms/step, {cached / forward:4.2f}x | "
              f"full recompute {full:8.0f} tok/s, {cached / full:5.2f}x | {100 * gflops / peak[0]:.1f}% of the {peak[1]}")
        step, rest = decode_step_ms(model, batch)
        print(f"  of which one DecodeStep call (one token of each row through {cfg.n_layer} layers): {step:.3f} ms; "
              f"per sampling call {rest:.2f} ms more (cache and step set-up, the {cfg.text_len}-token prompt, "
              f"the draws) = {rest / cfg.image_len:.3f} ms per step of {cfg.image_len}")



def mid_size(peak: tuple[float, str], batch: int = 4) -> None:
    cfg = dataclasses.replace(load_config(["tiny"]).transformer, n_layer=12, d_model=512, n_head=8, d_head=64,
                              text_len=64, grid=32, text_vocab=16384, image_vocab=8192, conv_kernel=11)
    torch.manual_seed(0)
    model = DalleTransformer(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    cached = tokens_per_second(model, batch, repeats=1)
    forward = tokens_per_second(model, batch, sample_through_forward, repeats=1)
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
          f"cached forward per token {forward:8.0f} tok/s, {cached / forward:4.2f}x | full recompute {full:8.1f} tok/s "
          f"(integrated) | speed-up {cached / full:5.1f}x | {100 * gflops / peak[0]:.1f}% of the {peak[1]}")


def main(sizes: list[str]) -> None:
    peak = peak_gflops("fp32")
    if "tiny" in sizes:
        tiny(peak)
    if "mid" in sizes:
        mid_size(peak)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny", "mid"])
