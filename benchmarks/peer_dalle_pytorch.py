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


def ours(attention: str) -> float:
    torch.manual_seed(0)
    cfg = TransformerConfig(text_len=TEXT_LEN, text_vocab=TEXT_VOCAB, image_vocab=IMAGE_VOCAB, grid=GRID, n_layer=4,
                            n_head=4, d_head=64, d_model=256, attention=attention, conv_kernel=11)
    model = DalleTransformer(cfg).eval()
    dvae = DVAE(DVAEConfig(image_size=64, vocab_size=IMAGE_VOCAB, group_count=3, n_hid=32, n_blk_per_group=1, n_init=64)).eval()
    text = model.pad_text(torch.randint(0, TEXT_VOCAB, (BATCH, TEXT_LEN)))
    top_k = int(0.1 * IMAGE_VOCAB)  # = dalle-pytorch's filter_thres 0.9

    def run():
        dvae.decode(sample_codes(model, text, list(range(BATCH)), top_k=top_k))

    return time_it(run)


def theirs(attn_types: tuple[str, ...]) -> float:
    from dalle_pytorch import DALLE, DiscreteVAE

    torch.manual_seed(0)
    vae = DiscreteVAE(image_size=64, num_layers=2, num_tokens=IMAGE_VOCAB, codebook_dim=256, hidden_dim=64)
    dalle = DALLE(dim=256, vae=vae, num_text_tokens=TEXT_VOCAB, text_seq_len=TEXT_LEN, depth=4, heads=4, dim_head=64,
                  attn_types=attn_types).eval()
    text = torch.randint(1, TEXT_VOCAB, (BATCH, TEXT_LEN))
    return time_it(lambda: dalle.generate_images(text, filter_thres=0.9, use_cache=True), repeats=1)


def main() -> None:
    torch.set_grad_enabled(False)
    n_tokens = BATCH * GRID * GRID
    for ours_attn, their_attn in (("full", ("full",)), ("sparse", ("axial_row", "axial_col", "conv_like"))):
        a, b = ours(ours_attn), theirs(their_attn)
        print(f"generate {BATCH} images x {GRID * GRID} tokens, {ours_attn} attention: ours {a:6.2f} s "
              f"({n_tokens / a:6.0f} tok/s) | dalle-pytorch (use_cache=True) {b:6.2f} s ({n_tokens / b:5.0f} tok/s) | "
              f"ours is {b / a:5.1f}x faster")


if __name__ == "__main__":
    main()
