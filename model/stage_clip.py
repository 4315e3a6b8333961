"""`train --stage clip`: a small open_clip CLIP trained on an image-shard folder's images and captions.

Symmetric InfoNCE with a learned temperature (Radford et al. 2021, fig. 3): each image against every caption of
its micro-batch and the reverse. Identical captions in a batch (frequent in the shapes world: "a small red
square") are all positives, with equal shares of the target, instead of negatives of each other.

The run dir is a local open_clip checkpoint: RUN/clip_model.json (open_clip's model-config format) and
RUN/model.safetensors, which reranking and CLIP scores load with
`--clip-model RUN/clip_model.json --clip-pretrained RUN/model.safetensors` (model/clip.py).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dalle_eval.model.schedule import LRSchedule
from dalle_eval.model.task import TaskHooks

from dalle_eval.artifacts import atomic_path
from dalle_eval.config import ClipConfig, Config
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS

MODEL_CONFIG = "clip_model.json"  # open_clip registers a config JSON under its file stem
VOCAB = 49408  # open_clip's SimpleTokenizer (CLIP's BPE): the text tower's vocabulary


def open_clip_config(c: ClipConfig) -> dict:
    """The clip section as an open_clip model config (open_clip.add_model_config's format)."""
    return {"embed_dim": c.embed_dim,
            "vision_cfg": {"image_size": c.image_size, "layers": c.vision_layers, "width": c.vision_width,
                           "patch_size": c.patch_size, "head_width": c.vision_head_width},
            "text_cfg": {"context_length": c.context_length, "vocab_size": VOCAB, "width": c.text_width,
                         "heads": c.text_heads, "layers": c.text_layers}}


def build_clip(c: ClipConfig) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP with the clip section's sizes (what create_model makes of its JSON)."""
    from open_clip.model import CLIP

    for what, size, unit in (("image_size", c.image_size, "patch_size"), ("vision_width", c.vision_width, "vision_head_width"),
                             ("text_width", c.text_width, "text_heads")):
        divisor = getattr(c, unit)
        if size % divisor:
            raise DalleEvalError(f"clip.{what}={size} must be a multiple of clip.{unit}={divisor}")
    cfg = open_clip_config(c)
    return CLIP(cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])


def decode_pair(sample: dict, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """An image-shard sample -> (uint8 (3, H, W), its caption's token ids (context_length,))."""
    image = next((sample[ext] for ext in IMAGE_EXTS if ext in sample), None)
    if image is None or not isinstance(sample.get("txt"), str):
        raise KeyError(f"sample {sample.get('__key__')} needs an image and a txt caption")
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    return pixels, tokenizer([sample["txt"]])[0]


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
                     text_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (Radford et al. 2021): mean of the image->text and text->image cross-entropies of the
    scaled cosine logits; the target of a row is shared equally by the batch's captions identical to its own."""
    fi, ft = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    logits = scale * fi @ ft.T  # (B, B): image i vs caption j; scale = exp(the learned log-temperature)
    same = (text_ids[:, None, :] == text_ids[None, :, :]).all(-1).float()
    target = same / same.sum(1, keepdim=True)  # symmetric: the same targets both ways
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ClipTask(TaskHooks):
    def __init__(self, cfg: Config, out: Path, write_config: bool = True):
        import open_clip

        self.cfg, self.tc = cfg, cfg.train.clip
        self.model = build_clip(cfg.clip)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.clip.context_length)
        self.decode = functools.partial(decode_pair, tokenizer=self.tokenizer)
        self.fingerprints: dict = {}
        self.mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)  # what create_model_and_transforms
        self.std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)  # normalises with for this config
        c = cfg.clip
        self.tokens_per_sample = c.context_length + (c.image_size // c.patch_size) ** 2
        self.flops_per_sample = 6 * sum(p.numel() for n, p in self.model.named_parameters() if "token_embedding" not in n) \
            * self.tokens_per_sample / 2  # 6 N per token, each tower seeing about half the tokens: an estimate for MFU
        if write_config:
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / MODEL_CONFIG) as tmp:
                tmp.write_text(json.dumps(open_clip_config(c), indent=2) + "\n")

    def check_sample(self, sample: tuple, folder: Path) -> None:
        if sample[0].shape[0] != 3:
            raise DalleEvalError(f"{folder}: images have {sample[0].shape[0]} channels, expected RGB")

    def shard_units(self) -> list[torch.nn.Module]:
        raise DalleEvalError("the CLIP stage trains with train.parallel=ddp (FSDP is for the transformer)")

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on gains, biases, embeddings and the temperature (Radford et al. 2021)."""
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        ids = {id(p) for p in decay}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        t = self.tc
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)

    def schedule(self) -> LRSchedule:
        return LRSchedule("cosine", self.tc.lr, self.tc.lr_min, self.tc.steps, self.tc.warmup)

    def prepare(self, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> normalised floats at clip.image_size (bicubic, as open_clip's preprocessing), ids."""
        x = batch[0].to(device, non_blocking=True).float() / 255.0
        size = self.cfg.clip.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        return (x - self.mean.to(device)) / self.std.to(device), batch[1].to(device, non_blocking=True)

    def loss(self, forward, batch, step: int) -> dict[str, torch.Tensor]:
        images, ids = batch
        fi, ft, scale = forward(images, ids)  # open_clip's CLIP returns the scale exponentiated
        return {"loss": contrastive_loss(fi, ft, scale, ids), "logit_scale": scale.detach()}

    def clip_gradients(self) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip))

    def after_step(self) -> None:
        with torch.no_grad():  # Radford et al. 2021: the temperature is clipped to keep logits scaled by <= 100
            self.model.logit_scale.clamp_(0, np.log(100))

    @torch.no_grad()
    def _features(self, val: list[tuple], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings of held-out pairs, and their token ids."""
        self.model.eval()
        fi, ft, ids = [], [], []
        for i in range(0, len(val), 64):
            images, t = self.prepare([torch.stack(p) for p in zip(*val[i : i + 64])], device)
            fi.append(F.normalize(self.model.encode_image(images), dim=-1))
            ft.append(F.normalize(self.model.encode_text(t), dim=-1))
            ids.append(t)
        return torch.cat(fi), torch.cat(ft), torch.cat(ids)

    @torch.no_grad()
    def evaluate(self, val: list[tuple], device: torch.device, final: bool = False) -> dict:
        """Held-out contrastive loss (in batches of train.clip.batch_size) and how often an image's own caption
        scores above another held-out image's caption that reads differently (chance 0.5)."""
        fi, ft, ids = self._features(val, device)
        total, n = 0.0, 0
        for i in range(0, len(val), self.tc.batch_size):  # a batch of one has no negatives
            s = slice(i, i + self.tc.batch_size)
            if len(ids[s]) > 1:
                total += float(contrastive_loss(fi[s], ft[s], self.model.logit_scale.exp(), ids[s])) * len(ids[s])
                n += len(ids[s])
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))
        other = torch.empty_like(order)
        other[order] = order.roll(-1)  # each image: another held-out image's caption (a seeded cycle)
        differs = (ids != ids[other]).any(-1)
        own, foil = (fi * ft).sum(-1), (fi * ft[other]).sum(-1)
        return {"val_loss": total / max(1, n), "val_pair_accuracy": float((own > foil)[differs].float().mean()),
                "val_pairs": int(differs.sum()), "logit_scale": float(self.model.logit_scale.exp()), "n_val": len(val)}

    def sample_grid(self, val: list[tuple], path: Path, device: torch.device, main: bool) -> None:
        """Held-out images, each labelled with the held-out caption CLIP scores highest for it (retrieval)."""
        from dalle_eval.model.dvae import pixels_to_pil

        from dalle_eval.report import image_grid

        fi, ft, ids = self._features(val, device)
        texts = [self.tokenizer.decode(t[(t > 0) & (t < VOCAB - 2)].tolist()).strip() for t in ids]
        best = (fi[:12] @ ft.T).argmax(1).tolist()
        images = pixels_to_pil(torch.stack([s[0] for s in val[:12]]).float() / 255.0)
        if main:
            image_grid([(im, f"{'ok' if ids[j].equal(ids[i]) else 'x'}: {texts[j]}") for i, (im, j) in
                        enumerate(zip(images, best))], path)
