"""CLIP scoring with open_clip, for reranking samples (paper section 2.5: best of N by CLIP).

`model` is an open_clip model name (ViT-B-32, ...) or a path to a model-config JSON (registered
under its file stem); `pretrained` is an open_clip tag (downloads unless HF_HUB_OFFLINE) or a local
checkpoint path. Offline, a tag fails fast with a message saying to pass a local file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from dalle_eval.errors import DalleEvalError


class ClipScorer:
    def __init__(self, model: str, pretrained: str | None, device: str = "cpu"):
        import open_clip

        name = model
        if model.endswith(".json"):
            if not Path(model).exists():
                raise DalleEvalError(f"--clip-model {model}: model-config file not found")
            open_clip.add_model_config(model)
            name = Path(model).stem
        if pretrained and not Path(pretrained).exists() and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
            raise DalleEvalError(f"--clip-pretrained {pretrained}: file not found")
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained or None, device=device)
            self.tokenizer = open_clip.get_tokenizer(name)
        except RuntimeError as e:
            raise DalleEvalError(
                f"could not load CLIP {model} ({pretrained or 'random init'}): {str(e).splitlines()[0]} — "
                "offline, pass --clip-pretrained /path/to/open_clip_checkpoint"
            ) from None
        self.model.eval()
        self.device = device

    @torch.no_grad()
    def scores(self, images: list[Image.Image], captions: list[str], batch: int = 64) -> torch.Tensor:
        """Cosine similarity of each image with its caption -> (n,)."""
        out = []
        for i in range(0, len(images), batch):
            x = torch.stack([self.preprocess(im) for im in images[i : i + batch]]).to(self.device)
            t = self.tokenizer(captions[i : i + batch]).to(self.device)
            fi = torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)
            ft = torch.nn.functional.normalize(self.model.encode_text(t).float(), dim=-1)
            out.append((fi * ft).sum(-1).cpu())
        return torch.cat(out)
