"""Ours vs lucidrains' dalle-pytorch `generate_images`, same sizes, same process (make bench-peers).

dalle-pytorch only imports with an old stack (ENV.md), so it lives in its own venv (.venv-peer);
this script imports our model code from the repo (torch-only modules) next to it. Config of the
peer's baseline in ENV.md: dim 256, depth 4, 4 heads x 64, 32 text tokens of 1000, a 64 px
DiscreteVAE with 2 layers -> 16x16 = 256 image tokens of 512, batch 4, filter_thres 0.9 (top 10%).
Both sides generate all image tokens and decode them with their VAE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dalle_eval.config import DVAEConfig, TransformerConfig
from model.dvae import DVAE
from model.sampling import sample_codes
from model.transformer import DalleTransformer

BATCH, TEXT_LEN, TEXT_VOCAB, IMAGE_VOCAB, GRID = 4, 32, 1000, 512, 16


def time_it(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


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

    return time_it(run, repeats=2 if size == "tiny" else 1)


def theirs(size: str, attn_types: tuple[str, ...]) -> float:
    from dalle_pytorch import DALLE, DiscreteVAE

    batch, text_len, text_vocab, image_vocab, px, vae_layers, dim, depth, heads = SIZES[size]
    torch.manual_seed(0)
    vae = DiscreteVAE(image_size=px, num_layers=vae_layers, num_tokens=image_vocab, codebook_dim=256, hidden_dim=64)
    dalle = DALLE(dim=dim, vae=vae, num_text_tokens=text_vocab, text_seq_len=text_len, depth=depth, heads=heads,
                  dim_head=64, attn_types=attn_types).eval()
    text = torch.randint(1, text_vocab, (batch, text_len))
    return time_it(lambda: dalle.generate_images(text, filter_thres=0.9, use_cache=True), repeats=1)


def main() -> None:
    torch.set_grad_enabled(False)
    sizes = sys.argv[1:] or ["tiny"]  # `mid` takes minutes on the peer's side
    for size in sizes:
        batch, _, _, _, px, vae_layers, *_ = SIZES[size]
        n_tokens = batch * (px // 2**vae_layers) ** 2
        for ours_attn, their_attn in (("full", ("full",)), ("sparse", ("axial_row", "axial_col", "conv_like"))):
            a, b = ours(size, ours_attn), theirs(size, their_attn)
            print(f"{size}: generate {batch} image(s) x {n_tokens // batch} tokens, {ours_attn} attention: ours {a:6.2f} s "
                  f"({n_tokens / a:6.0f} tok/s) | dalle-pytorch (use_cache=True) {b:6.2f} s ({n_tokens / b:5.0f} tok/s) | "
                  f"ours is {b / a:5.1f}x faster")


if __name__ == "__main__":
    main()
