"""Transformer training-step throughput: paper sparse masks vs dense causal (baseline) at the tiny config.

Prints tokens/s for both, their ratio, and the fraction of this machine's fp32 matmul peak
(~160 GFLOP/s on 2 threads, ../shared/ENV.md) reached by the sparse model (6 N FLOPs per token,
N = block parameters). Then one mid-size line (12 layers, d_model 512, 64 text + 32x32 image
tokens, batch 2, sparse only: on the CPU the masks are dense, so dense costs the same), where the
FLOP count adds the output head and the attention scores (PaLM appendix B: 6 N + 12 n_layer T d_attn,
N = block + head parameters, T = positions fed). The step against lucidrains' dalle-pytorch is
`peer_dalle_pytorch.py train` (make bench-peers).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from dalle_eval.config import load_config
from model.transformer import DalleTransformer

PEAK_GFLOPS = 160.0


def tokens_per_second(cfg, batch: int = 32, steps: int = 10, warm: int = 2) -> tuple[float, int]:
    torch.manual_seed(0)
    model = DalleTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.randint(0, cfg.text_vocab, (batch, cfg.text_len))
    codes = torch.randint(0, cfg.image_vocab, (batch, cfg.image_len))
    for i in range(steps + warm):
        if i == warm:
            t0 = time.perf_counter()
        loss = model.loss(text, codes)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    n_params = sum(p.numel() for p in model.blocks.parameters())
    return batch * (cfg.text_len + cfg.image_len) / dt, n_params


def mid_size(batch: int = 2) -> None:
    cfg = dataclasses.replace(load_config(["tiny"]).transformer, n_layer=12, d_model=512, n_head=8, d_head=64,
                              text_len=64, grid=32, text_vocab=16384, image_vocab=8192, conv_kernel=11)
    tps, n_blocks = tokens_per_second(cfg, batch=batch, steps=2, warm=1)
    n = n_blocks + cfg.d_model * (cfg.text_vocab + cfg.text_len + cfg.image_vocab)  # + output head
    T = cfg.text_len + cfg.image_len - 1
    per_token = 6 * n + 12 * cfg.n_layer * T * cfg.n_head * cfg.d_head
    gflops = per_token * tps * T / (T + 1) / 1e9  # tokens/s counts T + 1 tokens per sample
    print(f"mid transformer train step (batch {batch}, {cfg.text_len}+{cfg.image_len} tokens, {n / 1e6:.1f}M block+head "
          f"params), sparse masks: {tps:8.0f} tokens/s ({batch * (T + 1) / tps:.2f} s/step, {gflops:.1f} GFLOP/s = "
          f"{100 * gflops / PEAK_GFLOPS:.1f}% of fp32 peak)")


def main() -> None:
    cfg = load_config(["tiny"]).transformer
    sparse, n = tokens_per_second(cfg)
    dense, _ = tokens_per_second(dataclasses.replace(cfg, attention="full"))
    gflops = 6 * n * sparse / 1e9
    print(f"tiny transformer train step (batch 32, {cfg.text_len}+{cfg.image_len} tokens, {n / 1e6:.2f}M block params)")
    print(f"  sparse masks : {sparse:10.0f} tokens/s  ({gflops:.1f} GFLOP/s = {100 * gflops / PEAK_GFLOPS:.1f}% of fp32 peak)")
    print(f"  dense causal : {dense:10.0f} tokens/s  (baseline)")
    print(f"  ratio sparse/dense: {sparse / dense:.2f}x  (masks are dense booleans on CPU: same cost, by design)")
    mid_size()


if __name__ == "__main__":
    main()
