"""Caption BPE (paper section 2.2: lowercased BPE, 16,384 tokens) with HF `tokenizers`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dalle_eval.artifacts import atomic_path
from dalle_eval.errors import DalleEvalError


def train_bpe(captions: Iterable[str], vocab_size: int, path: Path) -> Tokenizer:
    """Byte-level BPE on lowercased captions; never produces unknown tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(captions, trainer)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return tok


def load_tokenizer(path: Path) -> Tokenizer:
    if not Path(path).exists():
        raise DalleEvalError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 — tokenizers raises a bare Exception on malformed files
        raise DalleEvalError(f"{path}: not a tokenizers JSON file ({e})") from None


def encode_captions(tok: Tokenizer, captions: list[str], text_len: int) -> tuple[list[np.ndarray], int]:
    """-> int32 id arrays truncated to text_len, and how many captions were truncated."""
    ids = [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(captions)]
    truncated = sum(len(a) > text_len for a in ids)
    return [a[:text_len] for a in ids], truncated


def pad_batch(ids: list[np.ndarray], text_len: int) -> torch.Tensor:
    """-> (B, text_len) int64 with -1 at padding (the model turns it into per-position pad tokens)."""
    out = torch.full((len(ids), text_len), -1, dtype=torch.long)
    for i, a in enumerate(ids):
        out[i, : len(a)] = torch.from_numpy(a[:text_len].astype(np.int64))
    return out
