"""CLIP scoring with open_clip, for reranking samples (paper section 2.5: best of N by CLIP).

`model` is an open_clip model name (ViT-B-32, ...) or a path to a model-config JSON (registered
under its file stem); `pretrained` is an open_clip tag (downloads unless HF_HUB_OFFLINE) or a local
checkpoint path. Offline, a tag fails fast with a message saying to pass a local file. A `train --stage clip` run
(model/stage_clip.py) is such a pair: --clip-model RUN/clip_model.json --clip-pretrained RUN/model.safetensors.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from dalle_eval.config import RANDOM_CLIP
from dalle_eval.errors import DalleEvalError

__all__ = ["RANDOM_CLIP", "ClipScorer"]


def _no_weights(model: str) -> DalleEvalError:
    return DalleEvalError(
        f"no CLIP weights for {model}: give --clip-pretrained FILE|TAG (sample.clip_pretrained, filter.clip_pretrained); "
        "a random-init CLIP makes reranking and CLIP scores meaningless (--random-clip allows one for offline smoke tests)"
    )


def _check_pretrained(pretrained: str) -> None:
    """A local checkpoint path must be a file; anything else is an open_clip tag."""
    p = Path(pretrained)
    if p.is_dir():
        raise DalleEvalError(f"--clip-pretrained {pretrained}: a folder, expected an open_clip checkpoint file or tag")
    if not p.exists() and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        raise DalleEvalError(f"--clip-pretrained {pretrained}: file not found")


class ClipScorer:
    """open_clip image-text cosine. Without weights (`pretrained` empty) it refuses unless allow_random: then
    `random` is True and every figure made with it must say so (RANDOM_CLIP)."""

    def __init__(self, model: str, pretrained: str | None, device: str = "cpu", allow_random: bool = False):
        import open_clip

        if not pretrained and not allow_random:
            raise _no_weights(model)
        self.random = not pretrained
        name = model
        if model.endswith(".json"):
            if not Path(model).is_file():
                raise DalleEvalError(f"--clip-model {model}: model-config file not found")
            open_clip.add_model_config(model)
            name = Path(model).stem
        if pretrained:
            _check_pretrained(pretrained)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained or None, device=device)
            self.tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise DalleEvalError(
                f"could not load CLIP {model} ({pretrained or 'random init'}): {str(e).splitlines()[0] if str(e) else type(e).__name__} — "
                "offline, pass --clip-pretrained /path/to/open_clip_checkpoint"
            ) from None
        self.model.eval()
        self.device = device

    def scores(self, images: Sequence[Image.Image], captions: Sequence[str], batch: int = 64) -> torch.Tensor:
        """Cosine similarity of each image with its caption -> (n,)."""
        return clip_cosine(self.model, self.preprocess, self.tokenizer, images, captions, batch)


@torch.inference_mode()
def clip_cosine(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, images: Sequence[Image.Image],
                captions: Sequence[str], batch: int = 64) -> torch.Tensor:
    """Cosine similarity of each image's and its caption's CLIP embedding -> (n,) float32 on the CPU (the one
    copy: the evaluation scorer and the data pipeline's CLIP filter both use it). Images are read as RGB."""
    if len(images) != len(captions):
        raise ValueError(f"clip_cosine: {len(images)} images but {len(captions)} captions")
    device = next(model.parameters()).device
    model.eval()
    out = [torch.zeros(0)]
    for i in range(0, len(images), batch):
        x = torch.stack([preprocess(im.convert("RGB")) for im in images[i : i + batch]]).to(device)
        t = tokenizer(list(captions[i : i + batch])).to(device)
        fi = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)  # (B, D)
        ft = torch.nn.functional.normalize(model.encode_text(t).float(), dim=-1)  # (B, D)
        out.append((fi * ft).sum(-1).cpu())
    return torch.cat(out)
