"""Transformer training-step throughput: paper sparse masks vs dense causal (baseline) at the tiny config.

Prints tokens/s for both, their ratio, and the achieved FLOP rate as a fraction of this machine's fp32
matmul peak (benchmarks/peak.py at this thread count: its peak.json, else measured quickly in-process; each
figure names which). FLOPs per sample come from
dalle_eval.model.transformer.train_flops, the count the training MFU and `dalle-eval info` use: 6 N per position
fed (N = block + final LayerNorm + output head parameters) + 12 d_attn per attention pair the layer's
mask allows (PaLM appendix B's attention term, counted over the unmasked pairs only). On the CPU SDPA
computes all T x T scores, so the masked-out ones are work this rate does not credit. Then one mid-size
line (12 layers, d_model 512, 64 text + 32x32 image tokens, batch 2, sparse only: on the CPU the masks
are dense, so dense costs the same). Last, bf16 against fp32 (the baseline) at the tiny, shapes-long (16x16
grid) and mid sizes: the step under torch.autocast(bfloat16), weights and optimizer in fp32, as
train.precision=bf16 runs it. The step against lucidrains' dalle-pytorch is `peer_dalle_pytorch.py train`
(make bench-peers).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from dalle_eval.model.transformer import DalleTransformer, train_flops
from peak import peak_gflops

from dalle_eval.config import load_config


def tokens_per_second(cfg, batch: int = 32, steps: int = 10, warm: int = 2, bf16: bool = False) -> float:
    torch.manual_seed(0)
    model = DalleTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.randint(0, cfg.text_vocab, (batch, cfg.text_len))
    codes = torch.randint(0, cfg.image_vocab, (batch, cfg.image_len))
    for i in range(steps + warm):
        if i == warm:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(text, codes)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    return batch * (cfg.text_len + cfg.image_len) / dt


def gflops(cfg, tokens_per_s: float) -> float:
    """Achieved GFLOP/s: train_flops per sample x samples/s (tokens/s counts text_len + image_len per sample)."""
    return train_flops(cfg)["per_sample"] * tokens_per_s / (cfg.text_len + cfg.image_len) / 1e9


def mid_config():
    return dataclasses.replace(load_config(["tiny"]).transformer, n_layer=12, d_model=512, n_head=8, d_head=64,
                               text_len=64, grid=32, text_vocab=16384, image_vocab=8192, conv_kernel=11)


def bf16_vs_fp32(peak: tuple[float, str]) -> None:
    sizes = {"tiny (8x8)": (load_config(["tiny"]).transformer, 32, 10), "shapes-long (16x16)":
             (load_config(["shapes-long"]).transformer, 32, 4), "mid (32x32)": (mid_config(), 2, 2)}
    print("bf16 autocast vs fp32 (baseline), the same training step")
    for name, (cfg, batch, steps) in sizes.items():
        fp32, bf16 = (tokens_per_second(cfg, batch, steps, warm=1, bf16=b) for b in (False, True))
        print(f"  {name:20s} batch {batch:2d}: fp32 {fp32:8.0f} tokens/s ({gflops(cfg, fp32):.0f} GFLOP/s) | bf16 "
              f"{bf16:8.0f} tokens/s ({gflops(cfg, bf16):.0f} GFLOP/s = {100 * gflops(cfg, bf16) / peak[0]:.1f}% "
              f"of the {peak[1]}) | {bf16 / fp32:.2f}x")


def mid_size(peak: tuple[float, str], batch: int = 2) -> None:
    cfg = mid_config()
    tps = tokens_per_second(cfg, batch=batch, steps=2, warm=1)
    n, rate = train_flops(cfg)["matmul_params"], gflops(cfg, tps)
    print(f"mid transformer train step (batch {batch}, {cfg.text_len}+{cfg.image_len} tokens, {n / 1e6:.1f}M block+head "
          f"params), sparse masks: {tps:8.0f} tokens/s ({batch * (cfg.text_len + cfg.image_len) / tps:.2f} s/step, "
          f"{rate:.1f} GFLOP/s = {100 * rate / peak[0]:.1f}% of the {peak[1]})")


def main() -> None:
    peak = peak_gflops("fp32")
    cfg = load_config(["tiny"]).transformer
    dense_cfg = dataclasses.replace(cfg, attention="full")
    sparse, dense = tokens_per_second(cfg), tokens_per_second(dense_cfg)
    n, rate, dense_rate = train_flops(cfg)["matmul_params"], gflops(cfg, sparse), gflops(dense_cfg, dense)
    print(f"tiny transformer train step (batch 32, {cfg.text_len}+{cfg.image_len} tokens, {n / 1e6:.2f}M block+head params)")
    print(f"  sparse masks : {sparse:10.0f} tokens/s  ({rate:.1f} GFLOP/s = {100 * rate / peak[0]:.1f}% "
          f"of the {peak[1]})")
    print(f"  dense causal : {dense:10.0f} tokens/s  ({dense_rate:.1f} GFLOP/s = {100 * dense_rate / peak[0]:.1f}% "
          f"of the {peak[1]}; baseline)")
    print(f"  ratio sparse/dense: {sparse / dense:.2f}x  (masks are dense booleans on CPU: same cost, by design)")
    mid_size(peak)
    bf16_vs_fp32(peak_gflops("bf16"))


if __name__ == "__main__":
    main()
