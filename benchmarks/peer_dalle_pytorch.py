"""Ours vs lucidrains' dalle-pytorch: sampling and training step, same sizes, same process (make bench-peers).

    .venv-peer/bin/python benchmarks/peer_dalle_pytorch.py [sample] [tiny] [mid]   # generate_images
    .venv-peer/bin/python benchmarks/peer_dalle_pytorch.py train [tiny] [mid]      # fwd + bwd + AdamW

dalle-pytorch only imports with an old stack (pkg_resources, pytorch-lightning < 2, youtokentome built from
source; see the Makefile's bench-peers target), so it lives in its own venv (.venv-peer);
this script imports our model code from the repo (torch-only modules) next to it. Config of the
peer's baseline (its README-sized tiny model): dim 256, depth 4, 4 heads x 64, 32 text tokens of 1000, a 64 px
DiscreteVAE with 2 layers -> 16x16 = 256 image tokens of 512, batch 4, filter_thres 0.9 (top 10%).
Sampling: both sides generate all image tokens and decode them with their VAE.
Training (the peer's step measured alone here: 0.81 s at batch 8, benchmarks/README.md): both sides train on the same random
text ids and precomputed image token ids (the peer's DALLE.forward takes a (b, n) long `image` as
codes; its DiscreteVAE is only the required `vae` object, frozen and unused), AdamW, steps of the
two models interleaved so both see the same load, median after warm-up. Our achieved FLOP rate
uses dalle_eval.model.transformer.train_flops, the count of the training MFU and `dalle-eval info`: 6 N per
position fed (N = block + final LayerNorm + output head parameters, no embeddings) + 12 d_attn per
attention pair the layer's mask allows (PaLM appendix B's term over the unmasked pairs only; SDPA on
the CPU computes all T x T scores, also for our sparse masks, and that extra work is not credited),
against this machine's fp32 matmul peak at this thread count (benchmarks/peak.py: its peak.json, else
measured quickly in-process; each figure names which).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.sampling import sample_codes
from dalle_eval.model.transformer import DalleTransformer, train_flops
from peak import peak_gflops
from timing import best_time

from dalle_eval.config import DVAEConfig, TransformerConfig

BATCH, TEXT_LEN, TEXT_VOCAB, IMAGE_VOCAB, GRID = 4, 32, 1000, 512, 16


SIZES = {  # name: (batch, text_len, text_vocab, image_vocab, image px, vae layers, dim, depth, heads)
    "tiny": (BATCH, TEXT_LEN, TEXT_VOCAB, IMAGE_VOCAB, 64, 2, 256, 4, 4),
    "mid": (1, 64, 16384, 8192, 256, 3, 512, 12, 8),  # 32x32 = 1024 image tokens
}


def ours(size: str, attention: str) -> float:
    batch, text_len, text_vocab, image_vocab, px, vae_layers, dim, depth, heads = SIZES[size]
    torch.manual_seed(0)
    grid = px // 2**vae_layers
    cfg = TransformerConfig(text_len=text_len, text_vocab=text_vocab, image_vocab=image_vocab, grid=grid, n_layer=depth,
                            n_head=heads, d_head=64, d_model=dim, attention=attention, conv_kernel=11)
    model = DalleTransformer(cfg).eval()
    dvae = DVAE(DVAEConfig(image_size=px, vocab_size=image_vocab, group_count=vae_layers + 1, n_hid=32,
                           n_blk_per_group=1, n_init=64)).eval()
    text = model.pad_text(torch.randint(0, text_vocab, (batch, text_len)))
    top_k = int(0.1 * image_vocab)  # = dalle-pytorch's filter_thres 0.9

    def run():
        dvae.decode(sample_codes(model, text, list(range(batch)), top_k=top_k))

    return best_time(run, repeats=2 if size == "tiny" else 1, warmup=False)


def theirs(size: str, attn_types: tuple[str, ...]) -> float:
    from dalle_pytorch import DALLE, DiscreteVAE

    batch, text_len, text_vocab, image_vocab, px, vae_layers, dim, depth, heads = SIZES[size]
    torch.manual_seed(0)
    vae = DiscreteVAE(image_size=px, num_layers=vae_layers, num_tokens=image_vocab, codebook_dim=256, hidden_dim=64)
    dalle = DALLE(dim=dim, vae=vae, num_text_tokens=text_vocab, text_seq_len=text_len, depth=depth, heads=heads,
                  dim_head=64, attn_types=attn_types).eval()
    text = torch.randint(1, text_vocab, (batch, text_len))
    return best_time(lambda: dalle.generate_images(text, filter_thres=0.9, use_cache=True), repeats=1, warmup=False)


TRAIN_BATCH = {"tiny": 8, "mid": 2}  # tiny = the peer's baseline: batch 8 x (32 + 256) tokens
TRAIN_STEPS = {"tiny": (2, 10), "mid": (1, 3)}  # (warm-up, timed) steps per model
ATTENTION = (("full", ("full",)), ("sparse", ("axial_row", "axial_col", "conv_like")))  # ours <-> theirs


def train(size: str, ours_attn: str, their_attn: tuple[str, ...], peak: tuple[float, str]) -> None:
    from dalle_pytorch import DALLE, DiscreteVAE

    _, text_len, text_vocab, image_vocab, px, vae_layers, dim, depth, heads = SIZES[size]
    batch, grid = TRAIN_BATCH[size], px // 2**vae_layers
    torch.manual_seed(0)
    text = torch.randint(1, text_vocab, (batch, text_len))  # full length: no padding (0 = the peer's pad id)
    codes = torch.randint(0, image_vocab, (batch, grid * grid))

    cfg = TransformerConfig(text_len=text_len, text_vocab=text_vocab, image_vocab=image_vocab, grid=grid, n_layer=depth,
                            n_head=heads, d_head=64, d_model=dim, attention=ours_attn, conv_kernel=11)
    model = DalleTransformer(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    vae = DiscreteVAE(image_size=px, num_layers=vae_layers, num_tokens=image_vocab, codebook_dim=256, hidden_dim=64)
    dalle = DALLE(dim=dim, vae=vae, num_text_tokens=text_vocab, text_seq_len=text_len, depth=depth, heads=heads,
                  dim_head=64, attn_types=their_attn).train()
    their_params = [p for p in dalle.parameters() if p.requires_grad]  # the VAE is frozen by DALLE
    their_opt = torch.optim.AdamW(their_params, lr=1e-4)

    def ours_step():
        loss = model.loss(model.pad_text(text), codes)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def their_step():
        loss = dalle(text, codes, return_loss=True)
        their_opt.zero_grad(set_to_none=True)
        loss.backward()
        their_opt.step()

    warm, timed = TRAIN_STEPS[size]
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for i in range(warm + timed):
        for name, step in (("ours", ours_step), ("theirs", their_step)):
            t0 = time.perf_counter()
            step()
            if i >= warm:
                times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["ours"]), statistics.median(times["theirs"])
    a_min, b_min = min(times["ours"]), min(times["theirs"])
    pairs = statistics.median([t / o for o, t in zip(times["ours"], times["theirs"])])  # back-to-back steps: same load
    n_tokens = batch * (text_len + grid * grid)
    n_ours = train_flops(cfg)["matmul_params"]
    n_theirs = sum(p.numel() for p in dalle.transformer.parameters()) + sum(p.numel() for p in dalle.to_logits.parameters())
    gflops = batch * train_flops(cfg)["per_sample"] / a / 1e9
    print(f"{size}: train step, batch {batch} x {text_len}+{grid * grid} tokens, {ours_attn} attention "
          f"(median of {timed}): "
          f"ours {a:6.2f} s ({n_tokens / a:6.0f} tok/s, {gflops:5.1f} GFLOP/s = "
          f"{100 * gflops / peak[0]:4.1f}% of the {peak[1]}) | "
          f"dalle-pytorch {b:6.2f} s ({n_tokens / b:6.0f} tok/s) | ours/peer speed {b / a:4.2f}x (median of step pairs {pairs:4.2f}x) | "
          f"fastest steps: ours {a_min:.2f} s, theirs {b_min:.2f} s ({b_min / a_min:4.2f}x) | "
          f"block+head params ours {n_ours / 1e6:.1f}M, theirs {n_theirs / 1e6:.1f}M", flush=True)


def main() -> None:
    args = sys.argv[1:]
    mode = args.pop(0) if args and args[0] in ("sample", "train") else "sample"
    sizes = args or ["tiny"]  # `mid` takes minutes on the peer's side
    if mode == "train":
        peak = peak_gflops("fp32")
        for size in sizes:
            for ours_attn, their_attn in ATTENTION:
                train(size, ours_attn, their_attn, peak)
        return
    torch.set_grad_enabled(False)
    for size in sizes:
        batch, _, _, _, px, vae_layers, *_ = SIZES[size]
        n_tokens = batch * (px // 2**vae_layers) ** 2
        for ours_attn, their_attn in ATTENTION:
            a, b = ours(size, ours_attn), theirs(size, their_attn)
            print(f"{size}: generate {batch} image(s) x {n_tokens // batch} tokens, {ours_attn} attention: ours {a:6.2f} s "
                  f"({n_tokens / a:6.0f} tok/s) | dalle-pytorch (use_cache=True) {b:6.2f} s ({n_tokens / b:5.0f} tok/s) | "
                  f"ours is {b / a:5.1f}x faster")


if __name__ == "__main__":
    main()
