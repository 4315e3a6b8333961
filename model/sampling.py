"""Autoregressive image-token sampling with temperature and top-k, bit-identical under a seed."""

from __future__ import annotations

import torch
from dalle_eval.model.transformer import DalleTransformer, DecodeStep


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus: the smallest set holding probability >= top_p)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature != 1:  # x / 1 == x exactly: skip the op
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # tokens after the nucleus is already full
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def uniforms_for(seeds: list[int], n: int) -> torch.Tensor:
    """(B, n) uniforms, row b from its own generator: an image depends on its seed, not its batch."""
    return torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _draw(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0) -> torch.Tensor:
    """Inverse-CDF draw: logits (B, V), u (B,) uniforms -> (B,) token ids."""
    cdf = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1).cumsum(-1)  # (B, V)
    return (cdf < u[:, None] * cdf[:, -1:]).sum(-1).clamp(max=cdf.shape[-1] - 1)


def completion_keep(grid: int, keep_rows: int | None = None, region: tuple[int, int] | None = None) -> torch.Tensor:
    """(grid*grid,) bool: True where a known image token is kept (paper section 3 completions).

    keep_rows=R keeps the top R rows and regenerates everything below; region=(x0, y0) regenerates
    the rectangle from column x0, row y0 to the bottom-right corner (the Raven cell) and keeps the rest.
    """
    rows = torch.arange(grid).repeat_interleave(grid)
    cols = torch.arange(grid).repeat(grid)
    if (keep_rows is None) == (region is None):
        raise ValueError("give exactly one of keep_rows or region")
    if keep_rows is not None:
        if not 0 <= keep_rows <= grid:
            raise ValueError(f"keep_rows must be in [0, {grid}], got {keep_rows}")
        return rows < keep_rows
    x0, y0 = region
    if not (0 <= x0 < grid and 0 <= y0 < grid):
        raise ValueError(f"region corner ({x0}, {y0}) is outside the {grid}x{grid} grid")
    return ~((rows >= y0) & (cols >= x0))


def sample_codes(
    model: DalleTransformer,
    text: torch.Tensor,
    seeds: list[int],
    temperature: float = 1.0,
    top_k: int = 0,
    use_cache: bool = True,
    top_p: float = 1.0,
    known: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """text (B, L) padded ids -> (B, grid, grid) image codes, one token at a time in raster order.

    Token t of image b is drawn by inverse-CDF sampling with the t-th uniform of seed b, so output
    is bit-identical for a seed whatever the batch size or the other prompts in the batch.
    With the KV cache each step runs one position through the network (`DecodeStep`); use_cache=False
    recomputes the whole prefix every step (the reference the cache is tested against).
    Completion: `known` (B, grid, grid) codes and `keep` (grid*grid,) bool keep those tokens fixed.
    """
    model.eval()
    B, g = text.shape[0], model.cfg.grid
    if len(seeds) != B:
        raise ValueError(f"need one seed per row: {len(seeds)} seeds for {B} rows")
    keep = torch.zeros(g * g, dtype=torch.bool) if keep is None else keep.cpu()
    with torch.inference_mode():
        codes = _sample_columns(model, text, seeds, (temperature, top_k, top_p), use_cache, known, keep)
    return codes.t().reshape(B, g, g).clone(memory_format=torch.contiguous_format)  # made here: a normal tensor


def _sample_columns(model, text, seeds, filters, use_cache, known, keep) -> torch.Tensor:
    """sample_codes' loop -> (N, B) codes, token t of every row in row t (one contiguous write and read per step)."""
    B, N = text.shape[0], keep.numel()
    u = uniforms_for(seeds, N).t().contiguous().to(text.device)  # (N, B)
    codes = torch.zeros(N, B, dtype=torch.long, device=text.device)
    if keep.any():
        on = keep.to(codes.device)
        codes[on] = known.reshape(B, N).t().to(codes.device)[on]
    kept = keep.tolist()
    n0 = int(keep.long().cumprod(0).sum())  # the kept prefix goes through the network in one call
    cache, step = (model.new_cache(B), DecodeStep(model)) if use_cache else (None, None)
    logits = model.image_logits(text, codes[:n0].t(), cache) if n0 < N else None
    for t in range(n0, N):
        if not kept[t]:
            codes[t] = _draw(logits, u[t], *filters)
        if t + 1 < N:
            logits = step(codes[t], cache) if use_cache else model.image_logits(text, codes[: t + 1].t())
    return codes


@torch.no_grad()
def score(
    model: DalleTransformer, text: torch.Tensor, codes: torch.Tensor, region: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (per-token log-probs (B, g*g), their sum over `region` (g*g,) bool, default all) per row.

    Rank a caption against foils (same codes, other texts) or Raven candidates (same text, other
    codes in the answer region) by the model's own log p(image codes | text); candidates that share
    their first tokens score faster through `score_candidates` (the same sums, tested against this).
    """
    lp = image_log_probs(model, text, codes)
    mask = torch.ones(lp.shape[1], dtype=torch.bool, device=lp.device) if region is None else region.to(lp.device)
    return lp, lp[:, mask].sum(-1)


@torch.no_grad()
def image_log_probs(model: DalleTransformer, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """log p(code_t | text, codes_<t) for every image token: text (B, L), codes (B, g, g) -> (B, g*g).

    Sum over a region (e.g. a completion_keep complement) to rank captions or Raven candidates.
    """
    model.eval()
    flat = codes.reshape(codes.shape[0], -1)
    logits = model(text, flat[:, :-1])[:, model.cfg.text_len - 1 :, model.text_vocab_total :]  # (B, N, V)
    return torch.log_softmax(logits.float(), -1).gather(-1, flat[:, :, None]).squeeze(-1)


@torch.no_grad()
def score_candidates(model: DalleTransformer, text: torch.Tensor, codes: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Summed log p(codes | text) over `region` for C candidate images per caption: text (B, L), codes (B, C, g, g),
    region (g*g,) bool -> (B, C); equal to `score` of every (caption, candidate) pair (tested).

    The caption and the image tokens before the first one where the candidates differ are the same for all C:
    they run once per caption into the KV cache, and only the later positions run per candidate, batched
    (Raven: from about the answer cell's first row on).
    """
    model.eval()
    B, C = codes.shape[:2]
    flat = codes.reshape(B, C, -1)  # (B, C, N)
    N, L, Vt = flat.shape[-1], model.cfg.text_len, model.text_vocab_total
    shared = (flat == flat[:, :1]).all(1).all(0)  # (N,) every candidate of every caption has the same token here
    P = min(int(shared.long().cumprod(0).sum()), N - 2)  # inputs 0..P-1 shared; N - 2 leaves one per-candidate input
    region = region.to(flat.device)
    cache = model.new_cache(B)
    at = torch.cat([torch.zeros(L - 1, dtype=torch.bool, device=flat.device), region[: P + 1]])  # position L-1+t predicts t
    once = model(text, flat[:, 0, :P], cache, at)  # (B, R0, V): the region's tokens up to P
    own = model(None, flat[:, :, P:-1].flatten(0, 1), cache.repeat_rows(C), region[P + 1 :])  # (B*C, R-R0, V): after P
    logits = torch.cat([once.repeat_interleave(C, 0), own], 1)[..., Vt:]  # (B*C, R, V_image)
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(-1, flat.flatten(0, 1)[:, region, None]).squeeze(-1).sum(-1).view(B, C)
