"""The DALL·E transformer: decoder-only over [256 text | 1024 image] tokens (paper section 2.2).

Text ids use a separate learned padding token per text position (id = text_vocab + position);
image positions get row + column embeddings; each layer uses the mask of model/masks.py. Every size
from `tiny` to `dalle-12b` is this one class.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from dalle_eval.model.masks import MASK_KINDS, dense_mask, layer_kinds, mask_mod
from torch import nn

from dalle_eval.config import TransformerConfig
from dalle_eval.errors import DalleEvalError


class KVCache:
    """Preallocated keys and values of every layer for incremental decoding; `length` positions are filled.

    kv (n_layer, 2, B, nh, max_len, hs): one layer's k and v side by side, so one copy writes both; k and v are views.
    """

    def __init__(self, cfg: TransformerConfig, batch: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layer, 2, batch, cfg.n_head, max_len, cfg.d_head)
        self.kv = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def k(self) -> torch.Tensor:
        return self.kv[:, 0]  # (n_layer, B, nh, max_len, hs)

    @property
    def v(self) -> torch.Tensor:
        return self.kv[:, 1]

    def repeat_rows(self, n: int) -> KVCache:
        """A cache of batch * n rows, rows b*n .. b*n+n-1 holding row b's filled positions: n continuations of
        each cached prefix (the 8 Raven candidates after their shared caption and image rows)."""
        out, old = copy.copy(self), self.kv[..., : self.length, :]  # (n_layer, 2, B, nh, length, hs)
        out.kv = self.kv.new_empty(self.kv.shape[0], 2, self.kv.shape[2] * n, *self.kv.shape[3:])
        out.kv[..., : self.length, :].unflatten(2, (-1, n)).copy_(old.unsqueeze(3))  # one broadcast copy
        return out


# On the CPU, bf16 attention over at most this many keys runs in fp32: the bf16 kernel's backward took 2.9x fp32's
# time at tiny's 88 positions (bf16 training step 1.59x fp32's speed with it, 2.11x without), 1.88x vs 1.97x at
# 280 (16x16 grid), while at 1,088 (32x32) bf16 attention paid (2.22x vs 1.91x; benchmarks/README.md).
FP32_ATTENTION_UP_TO = 512


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """scaled_dot_product_attention; bf16 on the CPU over <= FP32_ATTENTION_UP_TO keys is computed in fp32 and
    returned in the queries' dtype (faster there, and more exact)."""
    if q.dtype != torch.bfloat16 or q.device.type != "cpu" or k.shape[-2] > FP32_ATTENTION_UP_TO:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if mask.is_floating_point():
        mask = mask.float()
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p)
    return y.to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        inner = cfg.n_head * cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * inner)
        self.proj = nn.Linear(inner, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None, layer: int = 0, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """at: (T,) bool, the queries whose outputs are wanted (keys/values still cover every position); default all."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        if cache is not None:  # append this call's keys/values, attend over everything so far
            start = cache.length
            cache.k[layer, :, :, start : start + T] = k
            cache.v[layer, :, :, start : start + T] = v
            k, v = cache.k[layer, :, :, : start + T], cache.v[layer, :, :, : start + T]  # (B, nh, start+T, hs)
        if at is not None:
            q, mask = q[:, :, at], mask[at]  # (B, nh, T', hs), (T', start+T)
        if isinstance(mask, torch.Tensor):
            drop = self.dropout if self.training else 0.0
            y = attend(q, k, v, mask, drop)  # (B, nh, T, hs)
        else:  # a FlexAttention BlockMask built from the same mask_mod (no attention dropout there)
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, block_mask=mask)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).flatten(2))  # (B, T, nh*hs)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.GELU(), nn.Linear(hidden, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None, layer: int = 0, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """at: (T,) bool, the positions whose outputs are wanted (B, T', d); the cache still gets every position."""
        y = self.attn(self.ln_1(x), mask, cache, layer, at)
        x = (x if at is None else x[:, at]) + self.drop(y)
        return x + self.drop(self.mlp(self.ln_2(x)))


class DalleTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        L, d = cfg.text_len, cfg.d_model
        self.text_vocab_total = cfg.text_vocab + L  # BPE ids + one padding token per position
        self.text_emb = nn.Embedding(self.text_vocab_total, d)
        self.text_pos = nn.Embedding(L, d)
        self.image_emb = nn.Embedding(cfg.image_vocab, d)
        self.row_emb = nn.Embedding(cfg.grid, d)
        self.col_emb = nn.Embedding(cfg.grid, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.text_vocab_total + cfg.image_vocab, bias=False)
        self.kinds = layer_kinds(cfg.n_layer, cfg.attention)
        # saved with the weights: a checkpoint names the mask order it was trained with (see _check_layer_pattern)
        self.register_buffer("layer_pattern", torch.tensor([MASK_KINDS.index(k) for k in self.kinds]))  # (n_layer,)
        self.register_load_state_dict_pre_hook(_check_layer_pattern)
        self._block_masks: dict = {}
        for kind in sorted(set(self.kinds)):
            self.register_buffer(f"mask_{kind}", dense_mask(kind, L, cfg.grid, cfg.conv_kernel), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def pad_text(self, text: torch.Tensor) -> torch.Tensor:
        """(B, L) BPE ids with -1 for padding -> ids where padding at position p is text_vocab + p."""
        if text.shape[1] != self.cfg.text_len:
            raise ValueError(f"text must have {self.cfg.text_len} positions, got {text.shape[1]}")
        if (text >= self.cfg.text_vocab).any():
            raise ValueError(f"text id {int(text.max())} >= transformer.text_vocab {self.cfg.text_vocab}")
        pos = torch.arange(self.cfg.text_len, device=text.device).expand_as(text)
        return torch.where(text < 0, self.cfg.text_vocab + pos, text)

    def forward(
        self, text: torch.Tensor | None, codes: torch.Tensor, cache: KVCache | None = None, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V_text + V_image) for the T positions this call adds.

        Without a cache (or with an empty one): text (B, L) padded ids + codes (B, n), n < grid**2.
        With a filled cache: text=None and codes (B, t) = the next t image tokens; earlier positions'
        keys/values come from the cache, and each layer's mask rows are those of the full sequence.
        at: (T,) bool, only those positions' logits (B, at.sum(), V), for scoring: the last layer computes only
        their attention outputs and MLP (nothing later reads the others'), the head only their logits.
        """
        L, g = self.cfg.text_len, self.cfg.grid
        start = cache.length if cache is not None else 0
        parts = []
        if start == 0:
            parts.append(self.text_emb(text) + self.text_pos.weight)  # (B, L, d)
        elif text is not None:
            raise ValueError("text goes in the first call only; later calls add image tokens to the cache")
        n = codes.shape[1]
        if n:
            pos = torch.arange(max(0, start - L), max(0, start - L) + n, device=codes.device)
            parts.append(self.image_emb(codes) + self.row_emb(pos // g) + self.col_emb(pos % g))  # (B, n, d)
        x = torch.cat(parts, dim=1)
        T = x.shape[1]
        backend = self.cfg.attention_backend
        flex = cache is None and at is None and (backend == "flex" or (backend == "auto" and x.is_cuda))
        for i, (kind, block) in enumerate(zip(self.kinds, self.blocks)):
            mask = self.block_mask(kind, T, x.device) if flex else getattr(self, f"mask_{kind}")[start : start + T, : start + T]
            keep = at if i == len(self.blocks) - 1 else None  # earlier layers: every position feeds a later key/value
            if self.cfg.checkpoint_activations and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, mask, None, i, keep, use_reentrant=False)
            else:
                x = block(x, mask, cache, i, keep)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))

    def block_mask(self, kind: str, T: int, device: torch.device):
        """FlexAttention block mask of the first T positions, from the same mask_mod as the dense mask."""
        key = (kind, T, str(device))
        if key not in self._block_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            allowed = mask_mod(kind, self.cfg.text_len, self.cfg.grid, self.cfg.conv_kernel)
            self._block_masks[key] = create_block_mask(
                lambda b, h, q, kv: allowed(q, kv), B=None, H=None, Q_LEN=T, KV_LEN=T, device=device
            )
        return self._block_masks[key]

    def loss(self, text: torch.Tensor, codes: torch.Tensor, forward=None) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy per modality, weighted text 1/8, image 7/8 (paper B.2).

        forward: the module to run (a DDP/compiled wrapper of this model when training).
        """
        L, Vt = self.cfg.text_len, self.text_vocab_total
        logits = (self if forward is None else forward)(text, codes[:, :-1])  # the last image token predicts nothing
        text_loss = F.cross_entropy(logits[:, : L - 1, :Vt].flatten(0, 1), text[:, 1:].flatten())
        image_loss = F.cross_entropy(logits[:, L - 1 :, Vt:].flatten(0, 1), codes.flatten())
        total = self.cfg.text_loss_weight * text_loss + self.cfg.image_loss_weight * image_loss
        return {"loss": total, "text_loss": text_loss, "image_loss": image_loss}

    def image_logits(self, text: torch.Tensor | None, codes: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits over the image vocabulary for the image token after the last position."""
        return self(text, codes, cache)[:, -1, self.text_vocab_total :]

    def new_cache(self, batch: int) -> KVCache:
        p = self.head.weight
        return KVCache(self.cfg, batch, self.cfg.text_len + self.cfg.image_len - 1, p.device, p.dtype)


class DecodeStep:
    """One image token through the network on a filled KVCache -> its image logits (B, V_image).

    The ops of `DalleTransformer.forward(None, codes (B, 1), cache)` with the same shapes and strides, so the
    logits are bit-identical (tests/test_decode_fast.py), minus the Python around them: no module calls, no
    position arithmetic or mask slicing per step (looked up), one copy writes a layer's k and v. Build one per
    sampling call: it views the weights and copies the position embeddings as they are then.
    """

    def __init__(self, model: DalleTransformer):
        cfg = model.cfg
        self.L, self.Vt, self.heads = cfg.text_len, model.text_vocab_total, (cfg.n_head, cfg.d_head)
        pos = torch.arange(cfg.image_len)
        self.image_w = model.image_emb.weight
        self.pos_rows = model.row_emb.weight.detach()[pos // cfg.grid]  # (N, d): image position -> its row embedding
        self.pos_cols = model.col_emb.weight.detach()[pos % cfg.grid]  # (N, d)
        self.layers = [(_ln(b.ln_1), _linear(b.attn.qkv), _linear(b.attn.proj), _ln(b.ln_2), _linear(b.mlp[0]),
                        _linear(b.mlp[2])) for b in model.blocks]
        self.ln_f, self.head = _ln(model.ln_f), model.head.weight[self.Vt :].t()  # image rows only: no text logits
        T = cfg.text_len + cfg.image_len - 1
        rows = {k: _additive(getattr(model, f"mask_{k}"), self.image_w.dtype) for k in set(model.kinds)}
        rows = {k: [m[p : p + 1, : p + 1] for p in range(T)] for k, m in rows.items()}
        self.masks = [tuple(rows[k][p] for k in model.kinds) for p in range(T)]  # position -> each layer's (1, p+1)

    def __call__(self, codes: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """codes (B,): the image token at position cache.length; appends its keys/values to the cache."""
        B, start = codes.shape[0], cache.length
        if start < self.L:
            raise ValueError(f"the cache holds {start} positions: run the {self.L} text positions through forward first")
        x = F.embedding(codes, self.image_w) + self.pos_rows[start - self.L] + self.pos_cols[start - self.L]  # (B, d)
        filled = cache.kv[..., : start + 1, :]  # (n_layer, 2, B, nh, start+1, hs)
        for (ln_1, (bqkv, wqkv), (bo, wo), ln_2, (b1, w1), (b2, w2)), kv, mask in zip(self.layers, filled, self.masks[start]):
            qkv = torch.addmm(bqkv, F.layer_norm(x, *ln_1), wqkv)  # (B, 3 nh hs): F.linear's own call
            qkv = qkv.view(B, 1, 3, *self.heads).permute(2, 0, 3, 1, 4)  # (3, B, nh, 1, hs)
            kv[..., start:, :].copy_(qkv[1:])
            y = attend(qkv[0], kv[0], kv[1], mask)  # (B, nh, 1, hs)
            x = x + torch.addmm(bo, y.view(B, -1), wo)
            x = x + torch.addmm(b2, F.gelu(torch.addmm(b1, F.layer_norm(x, *ln_2), w1)), w2)
        cache.length += 1
        return torch.mm(F.layer_norm(x, *self.ln_f), self.head)  # (B, V_image)


def _ln(m: nn.LayerNorm) -> tuple:
    return m.normalized_shape, m.weight, m.bias, m.eps


def _linear(m: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return m.bias, m.weight.t()  # addmm(bias, x, weight.t()): what F.linear runs for 2-d x


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as the 0 / -inf float mask SDPA converts it to on every call (the same values: same logits)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _pre_fix_kinds(n_layer: int, attention: str) -> list[str]:
    """The layer order before issue 12: the paper's (i - 2) mod 4 applied to 0-based i (row, row, column, ...)."""
    if attention != "sparse":
        return layer_kinds(n_layer, attention)
    kinds = ["column" if (i - 2) % 4 == 0 else "row" for i in range(n_layer)]
    kinds[-1] = "conv"
    return kinds


def _check_layer_pattern(model: DalleTransformer, state_dict: dict, prefix: str, *_) -> None:
    """Refuse weights trained with another mask order: each layer's weights would meet another mask.

    A state dict without `layer_pattern` predates it and was trained with the pre-fix order: accepted
    when that order equals this model's (attention=full, or n_layer <= 2), refused otherwise.
    """
    key = prefix + "layer_pattern"
    if key in state_dict:
        theirs = [MASK_KINDS[i] for i in state_dict[key].tolist()]
        if theirs != model.kinds:
            raise DalleEvalError(f"these weights were trained with the layer masks ({', '.join(theirs)}) but this "
                                 f"model has ({', '.join(model.kinds)}): check transformer.n_layer and .attention")
        return
    old = _pre_fix_kinds(model.cfg.n_layer, model.cfg.attention)
    if old != model.kinds:
        raise DalleEvalError(
            f"these weights were trained with the old layer order ({', '.join(old)}), the paper's (i - 2) mod 4 "
            f"rule applied to 0-based layer numbers; the model now uses the paper's order ({', '.join(model.kinds)}) "
            "and would give each layer's weights another mask: retrain the transformer with this version")
    state_dict[key] = model.layer_pattern.clone()


def count_parameters(cfg: TransformerConfig) -> dict[str, int]:
    """Parameters by group, built on the meta device (no memory even for dalle-12b)."""
    with torch.device("meta"):
        m = DalleTransformer(cfg)
    blocks = sum(p.numel() for p in m.blocks.parameters())
    total = sum(p.numel() for p in m.parameters())
    return {"total": total, "blocks": blocks, "embeddings_and_head": total - blocks}


def train_flops(cfg: TransformerConfig) -> dict[str, float]:
    """Training FLOPs (forward + backward) of one sample: the one count behind `info`, MFU and the benchmarks.

    Per position fed, 6 N (PaLM, Chowdhery et al. 2022, appendix B) with N = the parameters in a matmul:
    blocks, final LayerNorm and output head (not the five embedding lookups). Attention: PaLM's 12 L H Q T
    per token is 12 d_attn (q.k and p.v: 2 + 2 FLOPs per channel forward, x3 with the backward) for every
    one of the T x T query-key pairs of a dense, non-causal layer. Here it is counted only for the pairs
    each layer's mask allows (model/masks.py: causal, and row/column/conv sparse), so this is the model's
    own FLOPs: a dense-mask SDPA computes more (all T x T scores) and FlexAttention skips most of the
    rest, and MFU never credits masked-out work. Positions fed: text_len + image_len - 1 (the last image
    token predicts nothing). -> per_sample, positions, per_position, matmul_params, attention_pairs.
    """
    T = cfg.text_len + cfg.image_len - 1
    with torch.device("meta"):
        m = DalleTransformer(cfg)
    n = sum(p.numel() for p in m.parameters()) - sum(e.weight.numel() for e in m.modules() if isinstance(e, nn.Embedding))
    allowed = {k: int(dense_mask(k, cfg.text_len, cfg.grid, cfg.conv_kernel)[:T, :T].sum()) for k in set(m.kinds)}
    pairs = sum(allowed[k] for k in m.kinds)  # over all layers
    per_sample = 6 * n * T + 12 * cfg.n_head * cfg.d_head * pairs
    return {"per_sample": per_sample, "positions": T, "per_position": per_sample / T, "matmul_params": n,
            "attention_pairs": pairs}
