"""Autoregressive image-token sampling with temperature and top-k, bit-identical under a seed."""

from __future__ import annotations

import torch

from model.transformer import DalleTransformer


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def uniforms_for(seeds: list[int], n: int) -> torch.Tensor:
    """(B, n) uniforms, row b from its own generator: an image depends on its seed, not its batch."""
    return torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_codes(
    model: DalleTransformer,
    text: torch.Tensor,
    seeds: list[int],
    temperature: float = 1.0,
    top_k: int = 0,
) -> torch.Tensor:
    """text (B, L) padded ids -> (B, grid, grid) image codes, one token at a time in raster order.

    Token t of image b is drawn by inverse-CDF sampling with the t-th uniform of seed b, so output
    is bit-identical for a seed whatever the batch size or the other prompts in the batch.
    """
    model.eval()
    B, g = text.shape[0], model.cfg.grid
    if len(seeds) != B:
        raise ValueError(f"need one seed per row: {len(seeds)} seeds for {B} rows")
    u = uniforms_for(seeds, g * g).to(text.device)  # (B, g*g)
    codes = torch.zeros(B, 0, dtype=torch.long, device=text.device)
    for t in range(g * g):
        logits = filter_logits(model.image_logits(text, codes).float(), temperature, top_k)
        cdf = torch.softmax(logits, dim=-1).cumsum(-1)  # (B, V)
        nxt = (cdf < u[:, t : t + 1] * cdf[:, -1:]).sum(-1, keepdim=True).clamp(max=cdf.shape[-1] - 1)
        codes = torch.cat([codes, nxt], dim=1)
    return codes.view(B, g, g)
