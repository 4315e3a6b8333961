"""Streaming data loader vs the model it feeds: samples/s of StreamLoader over token shards, against
the samples/s one training step consumes (tiny transformer, batch 32, same process). The loader must
be >= 10x faster than the model so data never stalls training.

Shards are synthetic (random ids, the real on-disk format: webdataset tars with text.npy + codes.npy)
at two sizes: tiny (24 text ids, 8x8 codes) and paper (256 text ids, 32x32 codes).
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dalle_eval.model.stage2 import decode_tokens
from dalle_eval.model.stream import ShardStream, StreamLoader
from dalle_eval.model.transformer import DalleTransformer

from dalle_eval.config import load_config
from dalle_eval.shards import shard_name, write_shard

SHARDS, PER_SHARD, BATCH = 8, 500, 32


def write_tokens(folder: Path, text_len: int, grid: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for s in range(SHARDS):
        samples = ({"__key__": f"{s:04d}{i:05d}", "txt": "a red circle",
                    "text.npy": rng.integers(0, 500, rng.integers(4, text_len), dtype=np.int32),
                    "codes.npy": rng.integers(0, 8192, (grid, grid)).astype(np.uint16)} for i in range(PER_SHARD))
        write_shard(folder / shard_name(s), samples)
        names.append(shard_name(s))
    return names


def loader_rate(folder: Path, names: list[str], text_len: int, workers: int, batches: int = 60) -> float:
    stream = ShardStream(folder, names, [PER_SHARD] * SHARDS, functools.partial(decode_tokens, text_len=text_len),
                         n_streams=max(1, workers), window=2, seed=0)
    loader = StreamLoader(stream, 0, 1, BATCH, workers)
    loader.next()  # start-up (worker fork, first window)
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.next()
    return batches * BATCH / (time.perf_counter() - t0)


def model_rate(steps: int = 8) -> float:
    cfg = load_config(["tiny"]).transformer
    torch.manual_seed(0)
    model = DalleTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = model.pad_text(torch.randint(0, cfg.text_vocab, (BATCH, cfg.text_len)))
    codes = torch.randint(0, cfg.image_vocab, (BATCH, cfg.image_len))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(text, codes)["loss"].backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - t0)


def main() -> None:
    consumed = model_rate()
    print(f"tiny transformer training consumes {consumed:,.0f} samples/s (batch {BATCH})")
    for name, text_len, grid in (("tiny", 24, 8), ("paper", 256, 32)):
        with tempfile.TemporaryDirectory() as tmp:
            names = write_tokens(Path(tmp), text_len, grid)
            for workers in (0, 1):
                rate = loader_rate(Path(tmp), names, text_len, workers)
                print(f"  loader {name:5s} ({text_len} ids + {grid}x{grid} codes), {workers} worker(s): "
                      f"{rate:9,.0f} samples/s = {rate / consumed:6.1f}x what tiny training consumes")


if __name__ == "__main__":
    main()
