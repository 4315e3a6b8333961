"""Caption BPE (paper section 2.2: lowercased BPE, 16,384 tokens) with HF `tokenizers`."""

from __future__ import annotations

import json
import random
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


class BPEDropout:
    """Seeded BPE-dropout (Provilkov et al. 2020; DALL-E paper B.2: 10%) over a byte-level BPE
    tokenizer.json: at every merge step each applicable merge is skipped with probability p. The random
    draws come from the caller's `random.Random`, so the same seed gives the same segmentation (exact
    resume); p = 0 gives exactly the tokenizer's own ids."""

    def __init__(self, path: Path, p: float):
        self.tok, self.p = load_tokenizer(path), p
        model = json.loads(Path(path).read_text())["model"]
        if model.get("type") != "BPE":
            raise DalleEvalError(f"{path}: BPE dropout needs a BPE tokenizer, found {model.get('type')}")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.vocab = model["vocab"]

    def _merge(self, symbols: list[str], rng: random.Random) -> list[str]:
        while len(symbols) > 1:
            best = None  # (rank, position) of the lowest-rank merge that survives this step's dropout
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best is None or rank < best[0]) and (self.p == 0 or rng.random() >= self.p):
                    best = (rank, i)
            if best is None:
                return symbols
            i = best[1]
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return symbols

    def encode(self, text: str, rng: random.Random) -> np.ndarray:
        pieces = self.tok.pre_tokenizer.pre_tokenize_str(self.tok.normalizer.normalize_str(text))
        ids = [self.vocab[s] for piece, _ in pieces for s in self._merge(list(piece), rng)]
        return np.asarray(ids, dtype=np.int32)


def pad_batch(ids: list[np.ndarray], text_len: int) -> torch.Tensor:
    """-> (B, text_len) int64 with -1 at padding (the model turns it into per-position pad tokens)."""
    out = torch.full((len(ids), text_len), -1, dtype=torch.long)
    for i, a in enumerate(ids):
        out[i, : len(a)] = torch.from_numpy(a[:text_len].astype(np.int64))
    return out
