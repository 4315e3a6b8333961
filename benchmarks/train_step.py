"""Transformer training-step throughput at the tiny config: paper sparse masks vs dense causal (baseline).

Prints tokens/s for both, their ratio, and the fraction of this machine's fp32 matmul peak
(~160 GFLOP/s on 2 threads, ../shared/ENV.md) reached by the sparse model (6 N FLOPs per token).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from dalle_eval.config import load_config
from model.transformer import DalleTransformer

PEAK_GFLOPS = 160.0


def tokens_per_second(cfg, batch: int = 32, steps: int = 10) -> tuple[float, int]:
    torch.manual_seed(0)
    model = DalleTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.randint(0, cfg.text_vocab, (batch, cfg.text_len))
    codes = torch.randint(0, cfg.image_vocab, (batch, cfg.image_len))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = model.loss(text, codes)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    n_params = sum(p.numel() for p in model.blocks.parameters())
    return batch * (cfg.text_len + cfg.image_len) / dt, n_params


def main() -> None:
    cfg = load_config(["tiny"]).transformer
    sparse, n = tokens_per_second(cfg)
    dense, _ = tokens_per_second(dataclasses.replace(cfg, attention="full"))
    gflops = 6 * n * sparse / 1e9
    print(f"tiny transformer train step (batch 32, {cfg.text_len}+{cfg.image_len} tokens, {n / 1e6:.2f}M block params)")
    print(f"  sparse masks : {sparse:10.0f} tokens/s  ({gflops:.1f} GFLOP/s = {100 * gflops / PEAK_GFLOPS:.1f}% of fp32 peak)")
    print(f"  dense causal : {dense:10.0f} tokens/s  (baseline)")
    print(f"  ratio sparse/dense: {sparse / dense:.2f}x  (masks are dense booleans on CPU: same cost, by design)")


if __name__ == "__main__":
    main()
