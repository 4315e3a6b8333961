"""The paper's attention masks over [text tokens | image tokens] (appendix B.1, figure 11).

One definition, `mask_mod(q, k) -> bool`, written in tensor ops so it serves both backends: a dense
boolean mask for `scaled_dot_product_attention`, and FlexAttention's `create_block_mask` on CUDA.
Text attends causally to text; every image token attends to all text; image -> image by kind:
  row:    the previous `grid` image positions (Sparse Transformer "strided" row pattern)
  column: earlier positions in the same column
  conv:   causal neighbours within a conv_kernel x conv_kernel window (11x11 in the paper)
  full:   dense causal (no sparsity; a baseline)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MASK_KINDS = ("row", "column", "conv", "full")


def layer_kinds(n_layer: int, attention: str) -> list[str]:
    """The mask of each layer, first to last: row, column, row, row, row, column, ..., conv.

    Paper appendix B.1 numbers layers from 1: layer i uses column attention if (i - 2) mod 4 == 0, row
    attention otherwise, and the last layer convolutional attention.
    """
    if attention == "full":
        return ["full"] * n_layer
    kinds = ["column" if (i - 2) % 4 == 0 else "row" for i in range(1, n_layer + 1)]  # i: the paper's 1-based layer
    kinds[-1] = "conv"
    return kinds


def mask_mod(kind: str, text_len: int, grid: int, conv_kernel: int = 11) -> Callable:
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    half = conv_kernel // 2

    def allowed(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qi, ki = q - text_len, k - text_len  # image positions (negative for text)
        if kind == "full":
            image_ok = ki >= 0
        elif kind == "row":
            image_ok = qi - ki <= grid
        elif kind == "column":
            image_ok = (qi - ki) % grid == 0
        else:
            image_ok = ((qi // grid - ki // grid).abs() <= half) & ((qi % grid - ki % grid).abs() <= half)
        return (k <= q) & ((k < text_len) | ((qi >= 0) & image_ok))

    return allowed


def dense_mask(kind: str, text_len: int, grid: int, conv_kernel: int = 11) -> torch.Tensor:
    """(T, T) bool, True where query row may attend key column; T = text_len + grid**2."""
    t = torch.arange(text_len + grid * grid)
    return mask_mod(kind, text_len, grid, conv_kernel)(t[:, None], t[None, :])
