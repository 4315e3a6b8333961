"""Stage 1: the dVAE on image shards (paper appendix A.2).

loss = -log p(x | z) + beta * KL(q(z | x) || uniform), both summed as in the ELB: with per-pixel and
per-position means, the KL term is scaled by positions / pixels = g^2 / (3 H W).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dalle_eval.model.dvae import DVAE, code_usage_loss, kl_to_uniform, logit_laplace_nll, pixels_to_pil
from dalle_eval.model.schedule import LRSchedule
from dalle_eval.model.task import TaskHooks

from dalle_eval.config import Config
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import IMAGE_EXTS


def decode_image(sample: dict) -> tuple[torch.Tensor]:
    """An image-shard sample -> (uint8 (3, H, W),)."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return (torch.from_numpy(np.asarray(sample[ext].convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1),)
    raise KeyError(f"sample {sample.get('__key__')} has no image ({', '.join(IMAGE_EXTS)})")


class DVAETask(TaskHooks):
    def __init__(self, cfg: Config):
        self.cfg, self.tc = cfg, cfg.train.dvae
        # channels_last: ~2x faster convolutions on CPU (oneDNN) for these narrow layers
        self.model = DVAE(cfg.dvae).to(memory_format=torch.channels_last)
        self.decode = decode_image
        self.fingerprints: dict = {}
        self.ema: dict | None = None
        size, g = cfg.dvae.image_size, cfg.dvae.grid
        self.kl_scale = g * g / (3 * size * size)
        self.tokens_per_sample = g * g
        self.flops_per_sample = _flops_per_image(self.model, size)

    def check_sample(self, sample: tuple, folder: Path) -> None:
        size = self.cfg.dvae.image_size
        if tuple(sample[0].shape[-2:]) != (size, size):
            h, w = sample[0].shape[-2:]
            raise DalleEvalError(f"{folder}: images are {w}x{h} px but dvae.image_size is {size}")

    def shard_units(self) -> list[torch.nn.Module]:
        raise DalleEvalError("the dVAE trains with train.parallel=ddp (FSDP is for the transformer)")

    def optimizer(self) -> torch.optim.Optimizer:
        t = self.tc
        return torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)

    def schedule(self) -> LRSchedule:
        return LRSchedule("cosine", self.tc.lr, self.tc.lr_min, self.tc.steps)

    def beta(self, step: int) -> float:  # cosine increase 0 -> kl_weight over kl_warmup steps
        return self.tc.kl_weight * 0.5 * (1 - math.cos(math.pi * min(1.0, step / max(1, self.tc.kl_warmup))))

    def tau(self, step: int) -> float:  # exponential decay tau_start -> tau_end over tau_steps
        t = min(1.0, step / max(1, self.tc.tau_steps))
        return self.tc.tau_start * (self.tc.tau_end / self.tc.tau_start) ** t

    def prepare(self, batch, device: torch.device) -> torch.Tensor:
        return (batch[0].to(device, non_blocking=True).float() / 255.0).contiguous(memory_format=torch.channels_last)

    def loss(self, forward, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """recon + beta KL (the objective), and the batch's pixel MSE: the held-out metric, logged to compare."""
        stats, logits = forward(x, self.tau(step))
        if self.tc.recon_loss == "logit_laplace":
            recon = logit_laplace_nll(stats, x)
            with torch.no_grad():
                mse = F.mse_loss(DVAE.stats_to_pixels(stats), x)
        else:  # "mse"
            recon = mse = F.mse_loss(DVAE.stats_to_pixels(stats), x)
        kl = kl_to_uniform(logits)
        out = {"loss": recon + self.beta(step) * self.kl_scale * kl, "recon": recon, "kl": kl, "mse": mse.detach()}
        if self.tc.usage_weight:
            out["usage"] = code_usage_loss(logits)
            out["loss"] = out["loss"] + self.tc.usage_weight * out["usage"]
        return out

    def clip_gradients(self) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf")))

    def extra_metrics(self, step: int) -> dict:
        return {"beta": self.beta(step), "tau": self.tau(step)}

    def after_step(self) -> None:
        """Parameter EMA (paper A.2: decay 0.999); the exported weights are the average."""
        if not self.tc.ema:
            return
        params = self.model.state_dict()
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in params.items()}
            return
        for k, v in params.items():
            if v.is_floating_point():
                self.ema[k].lerp_(v.detach(), 1 - self.tc.ema)

    def extra_state(self) -> dict:
        return {"ema": self.ema} if self.ema is not None else {}

    def load_extra_state(self, state: dict) -> None:
        self.ema = state.get("ema")

    def export_weights(self) -> dict | None:
        return self.ema

    @torch.no_grad()
    def _reconstruct(self, val: list[tuple], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.model.eval()
        x = torch.stack([s[0] for s in val]).to(device).float() / 255.0
        codes = torch.cat([self.model.encode(x[i : i + 64]) for i in range(0, len(x), 64)])
        rec = torch.cat([self.model.decode(codes[i : i + 64]) for i in range(0, len(x), 64)])
        return x, codes, rec

    @torch.no_grad()
    def evaluate(self, val: list[tuple], device: torch.device, final: bool = False) -> dict:
        """Reconstruction MSE / PSNR on held-out images and codebook usage (at the end: exported weights)."""
        if final and self.ema is not None:
            self.model.load_state_dict(self.ema)
        x, codes, rec = self._reconstruct(val, device)
        mse = float(F.mse_loss(rec, x))
        counts = torch.bincount(codes.flatten(), minlength=self.cfg.dvae.vocab_size).float()
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        return {
            "val_loss": mse,
            "val_mse": mse,
            "val_psnr_db": 10 * math.log10(1 / max(mse, 1e-12)),
            "codebook_perplexity": math.exp(entropy),
            "codebook_used_share": float((counts > 0).float().mean()),
            "n_val_images": len(x),
        }

    def sample_grid(self, val: list[tuple], path: Path, device: torch.device, main: bool) -> None:
        """Held-out images (top row) and their reconstructions through the codes (bottom row)."""
        from dalle_eval.report import image_grid

        x, _, rec = self._reconstruct(val[:8], device)
        to_pil = pixels_to_pil(torch.cat([x, rec]))
        if main:
            image_grid([(im, "input" if i < len(x) else "reconstruction") for i, im in enumerate(to_pil)], path, cols=len(x))


def _flops_per_image(model: DVAE, size: int) -> float:
    """Forward + backward FLOPs of one image, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        meta = DVAE(model.cfg)
        x = torch.zeros(1, 3, size, size)
        with FlopCounterMode(display=False) as counter:
            stats, logits = meta(x, 1.0)
            (stats.sum() + logits.sum()).backward()
    return float(counter.get_total_flops())
