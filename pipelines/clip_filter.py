"""Post-filter, part 2 (optional): CLIP score of each image with its caption, low scores rejected.

Runs only when CLIP weights are given (random weights score noise). LAION-400M kept pairs with
ViT-B/32 cosine >= 0.3 (Schuhmann et al. 2021); LAION-5B used 0.28 for English (Schuhmann et al. 2022).
`clip` is a dalle_eval.model.clip.ClipScorer or an open_clip (model, preprocess, tokenizer) triple.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from dalle_eval.model.clip import clip_cosine as model_clip_cosine
from dalle_eval.pipelines.shard_images import iter_shard_samples
from PIL import Image
from tqdm import tqdm

from dalle_eval.config import FilterConfig


def clip_cosine(
    clip, images: Sequence[Image.Image], captions: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """model.clip.clip_cosine for a ClipScorer or an open_clip (model, preprocess, tokenizer) triple -> (n,) float32."""
    model, preprocess, tokenizer = clip if isinstance(clip, tuple) else (clip.model, clip.preprocess, clip.tokenizer)
    return model_clip_cosine(model, preprocess, tokenizer, images, captions, batch_size).numpy()


def _status(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.where(
        np.isnan(scores), "unreadable_image", np.where(scores >= threshold, "ok", "clip_score_low")
    )


def clip_filter(
    keys: Sequence[str],
    images: Sequence[Image.Image],
    captions: Sequence[str],
    clip,
    threshold: float = FilterConfig.clip_threshold,
    batch_size: int = 64,
) -> pd.DataFrame:
    """In-memory samples -> DataFrame[key, clip_score, status ('ok' | 'clip_score_low')]; kept: score >= threshold."""
    scores = clip_cosine(clip, images, captions, batch_size)
    return pd.DataFrame({"key": list(keys), "clip_score": scores, "status": _status(scores, threshold)})


def clip_filter_shards(
    shards: Sequence[str | Path],
    clip,
    threshold: float = FilterConfig.clip_threshold,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every sample of webdataset image shards (image + txt caption) -> DataFrame[key, clip_score,
    status ('ok' | 'clip_score_low' | 'unreadable_image'), error]; unreadable images get NaN, not a crash."""
    keys, errors, values, batch, rows = [], [], [], [], []

    def flush():
        scores = clip_cosine(clip, [s.image for s in batch], [s.caption or "" for s in batch], batch_size)
        for r, v in zip(rows, scores):
            values[r] = v
        bar.update(len(batch))
        batch.clear()
        rows.clear()

    with tqdm(desc=f"clip score {len(shards)} shard(s)", unit="img", disable=not progress) as bar:
        for s in iter_shard_samples(shards):
            keys.append(s.key)
            errors.append(s.error)
            values.append(np.nan)
            if s.image is None:
                bar.update(1)
                continue
            rows.append(len(keys) - 1)
            batch.append(s)
            if len(batch) >= batch_size:
                flush()
        flush()
    values = np.asarray(values, np.float32)
    if any(e is not None for e in errors):
        warnings.warn(
            f"{sum(e is not None for e in errors)} unreadable image(s) not scored, status unreadable_image"
        )
    return pd.DataFrame(
        {"key": keys, "clip_score": values, "status": _status(values, threshold), "error": errors}
    )
