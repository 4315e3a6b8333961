"""The discrete VAE of DALL·E (paper appendix A), parameter-compatible with OpenAI's `dall_e` package.

Module and parameter names (`blocks.group_1.block_1.res_path.conv_1.w`, ...) follow the released
encoder.pkl / decoder.pkl, so their weights load into these modules. Sizes are config fields:
`tiny` and `openai` are the same classes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dalle_eval.config import DVAEConfig

if TYPE_CHECKING:
    from PIL import Image

LOGIT_LAPLACE_EPS = 0.1  # paper section A.3: pixels are squashed into [eps, 1 - eps]


def map_pixels(x: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS) -> torch.Tensor:
    """[0, 1] pixels -> [eps, 1 - eps], the support of the logit-Laplace distribution."""
    return (1 - 2 * eps) * x + eps


def unmap_pixels(x: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS) -> torch.Tensor:
    return torch.clamp((x - eps) / (1 - 2 * eps), 0, 1)



def pixels_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) pixels in [0, 1] (the dVAE's output) -> RGB PIL images.

    Rounds to the nearest byte, not down: an image read as uint8 / 255 comes back as the same bytes
    (truncation turns a float error of 254.9999 into 254) and decoding is not biased half a level dark."""
    from PIL import Image

    arr = (pixels.detach().permute(0, 2, 3, 1).float() * 255).round().clamp(0, 255).byte().cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class Conv2d(nn.Module):
    """'same'-padded convolution with OpenAI's parameter names `w`, `b` and init N(0, 1/fan_in)."""

    def __init__(self, n_in: int, n_out: int, kw: int):
        super().__init__()
        self.kw = kw
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw**2))
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, self.b, padding=(self.kw - 1) // 2)


class _Block(nn.Module):
    """Residual block: identity (or 1x1 conv) + post_gain * bottleneck path; post_gain = 1 / n_layers^2."""

    def __init__(self, n_in: int, n_out: int, n_layers: int, kernels: tuple[int, int, int, int]):
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / n_layers**2
        self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        dims = [(n_in, n_hid), (n_hid, n_hid), (n_hid, n_hid), (n_hid, n_out)]
        layers = []
        for i, ((a, b), k) in enumerate(zip(dims, kernels), start=1):
            layers += [(f"relu_{i}", nn.ReLU()), (f"conv_{i}", Conv2d(a, b, k))]
        self.res_path = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _groups(cfg: DVAEConfig, widths: list[int], first_in: int, kernels, resample: nn.Module | None, name: str):
    n_layers = cfg.group_count * cfg.n_blk_per_group
    groups = []
    n_in = first_in
    for g, width in enumerate(widths, start=1):
        blocks = []
        for i in range(cfg.n_blk_per_group):
            blocks.append((f"block_{i + 1}", _Block(n_in, width, n_layers, kernels)))
            n_in = width
        if g < len(widths) and resample is not None:
            blocks.append((name, resample()))
        groups.append((f"group_{g}", nn.Sequential(OrderedDict(blocks))))
    return groups


class Encoder(nn.Module):
    """(B, 3, H, W) mapped pixels -> (B, vocab, H/2^(G-1), W/2^(G-1)) logits over the codebook."""

    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [2**g * cfg.n_hid for g in range(cfg.group_count)]  # OpenAI: 1, 2, 4, 8 x n_hid
        pool = lambda: nn.MaxPool2d(kernel_size=2)
        self.blocks = nn.Sequential(
            OrderedDict(
                [
                    ("input", Conv2d(cfg.input_channels, cfg.n_hid, 7)),
                    *_groups(cfg, widths, cfg.n_hid, (3, 3, 3, 1), pool, "pool"),
                    ("output", nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=Conv2d(widths[-1], cfg.vocab_size, 1)))),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.input_channels:
            raise ValueError(f"encoder input must be (B, {self.cfg.input_channels}, H, W), got {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise ValueError(f"encoder input must be float32, got {x.dtype}")
        return self.blocks(x)


class Decoder(nn.Module):
    """(B, vocab, g, g) one-hot (or relaxed) codes -> (B, 6, H, W): mu and ln b per RGB channel."""

    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [2**g * cfg.n_hid for g in reversed(range(cfg.group_count))]  # OpenAI: 8, 4, 2, 1 x n_hid
        up = lambda: nn.Upsample(scale_factor=2, mode="nearest")
        self.blocks = nn.Sequential(
            OrderedDict(
                [
                    ("input", Conv2d(cfg.vocab_size, cfg.n_init, 1)),
                    *_groups(cfg, widths, cfg.n_init, (1, 3, 3, 3), up, "upsample"),
                    ("output", nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=Conv2d(widths[-1], 2 * cfg.input_channels, 1)))),
                ]
            )
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.cfg.vocab_size:
            raise ValueError(f"decoder input must be (B, {self.cfg.vocab_size}, g, g), got {tuple(z.shape)}")
        if z.dtype != torch.float32:
            raise ValueError(f"decoder input must be float32, got {z.dtype}")
        return self.blocks(z)


class DVAE(nn.Module):
    kind = "dalle_eval"  # the image-tokenizer kind (model/image_tokenizer.py); OpenAI's released weights: "openai"

    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        if cfg.image_size % 2 ** (cfg.group_count - 1):
            raise ValueError(f"dvae.image_size {cfg.image_size} is not divisible by 2**(group_count-1)")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    image_size = property(lambda self: self.cfg.image_size)
    grid = property(lambda self: self.cfg.grid)
    vocab_size = property(lambda self: self.cfg.vocab_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, g, g) int64 codes (argmax of the encoder logits)."""
        return self.encoder(map_pixels(images)).argmax(1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, g, g) codes -> (B, 3, H, W) pixels in [0, 1]."""
        z = F.one_hot(codes.long(), self.cfg.vocab_size).permute(0, 3, 1, 2).float()
        return self.stats_to_pixels(self.decoder(z))

    @staticmethod
    def stats_to_pixels(stats: torch.Tensor) -> torch.Tensor:
        return unmap_pixels(torch.sigmoid(stats[:, :3]))

    def forward(self, images: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gumbel-softmax relaxation (paper A.2): returns (decoder stats, encoder logits)."""
        logits = self.encoder(map_pixels(images))  # (B, K, g, g)
        z = F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)
        return self.decoder(z), logits


def logit_laplace_nll(stats: torch.Tensor, images: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS) -> torch.Tensor:
    """Mean per-pixel -log p(x) under the logit-Laplace distribution (paper eq. A.3).

    p(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x)), x = mapped pixel in (eps, 1 - eps).
    """
    x = map_pixels(images, eps)
    mu, ln_b = stats[:, :3], stats[:, 3:]
    return (math.log(2) + ln_b + torch.log(x * (1 - x)) + (torch.logit(x) - mu).abs() * torch.exp(-ln_b)).mean()


def code_usage_loss(logits: torch.Tensor) -> torch.Tensor:
    """1 - perplexity / K of the batch's average posterior (wav2vec 2.0's diversity loss, Baevski et al. 2020):
    0 when every code is used equally, near 1 when the batch collapses onto one code."""
    avg = F.softmax(logits, dim=1).mean(dim=(0, 2, 3))
    return 1 - torch.exp(-(avg * torch.log(avg + 1e-9)).sum()) / logits.shape[1]


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(q(z|x) || uniform over the K codes) = sum q log q + log K."""
    logq = F.log_softmax(logits, dim=1)
    return (logq.exp() * logq).sum(1).mean() + math.log(logits.shape[1])
