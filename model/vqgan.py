"""A VQGAN image tokenizer (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis", sec. 3.1).

Our own modules for the encoder, vector quantizer and decoder of a taming-transformers `VQModel`; module and
parameter names match that checkpoint's `state_dict` keys (`encoder.down.0.block.0.norm1.weight`, ...), so
its weights load here with no taming import. Sizes come from the checkpoint's config (ddconfig: ch, ch_mult,
num_res_blocks, attn_resolutions, z_channels; embed_dim, n_embed). Pixels are [-1, 1] inside, [0, 1] outside.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dalle_eval.errors import DalleEvalError


@dataclass(frozen=True)
class VQGANConfig:
    """A taming `VQModel`'s sizes (its config.yaml's model.params and ddconfig)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # f16: the image is halved len(ch_mult) - 1 times
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sizes (at `resolution`) that get self-attention
    resolution: int = 256  # the training size; fixes where attention sits, not the size encoded
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    in_channels: int = 3
    out_ch: int = 3
    image_size: int = 256  # the size this tokenizer encodes (= data.resolution); any multiple of the factor

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.factor


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)  # 32 groups, as the DDPM/VQGAN convolution stacks


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map, with a residual connection."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)  # (B, HW, C)
        k = self.k(h).reshape(b, c, hh * ww)  # (B, C, HW)
        v = self.v(h).reshape(b, c, hh * ww)  # (B, C, HW)
        attn = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # (B, HW query, HW key)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding: exactly half the size


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(c_in: int, c_out: int, n_blocks: int, attn: bool) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(n_blocks))
    level.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(n_blocks) if attn)
    return level


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


def _middle(c: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
    return mid


class Encoder(nn.Module):
    """(B, 3, H, W) pixels in [-1, 1] -> (B, z_channels, H/f, W/f)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        c_in, res = cfg.ch, cfg.resolution
        for i, mult in enumerate(cfg.ch_mult):
            level = _level(c_in, cfg.ch * mult, cfg.num_res_blocks, res in cfg.attn_resolutions)
            c_in = cfg.ch * mult
            if i < len(cfg.ch_mult) - 1:
                level.downsample, res = Downsample(c_in), res // 2
            self.down.append(level)
        self.mid = _middle(c_in)
        self.norm_out, self.conv_out = _norm(c_in), nn.Conv2d(c_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, g, g) -> (B, 3, g*f, g*f) pixels in about [-1, 1]."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        c_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // cfg.factor
        self.conv_in = nn.Conv2d(cfg.z_channels, c_in, 3, padding=1)
        self.mid = _middle(c_in)
        levels = []
        for i in reversed(range(len(cfg.ch_mult))):  # coarsest first; stored finest first (up.0 = full size)
            level = _level(c_in, cfg.ch * cfg.ch_mult[i], cfg.num_res_blocks + 1, res in cfg.attn_resolutions)
            c_in = cfg.ch * cfg.ch_mult[i]
            if i > 0:
                level.upsample, res = Upsample(c_in), res * 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out, self.conv_out = _norm(c_in), nn.Conv2d(c_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by Euclidean distance (paper eq. 2)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, g, g) -> (B, g, g) int64: argmin_k |z - e_k|^2 = |z|^2 + |e_k|^2 - 2 z.e_k."""
        b, d, gh, gw = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*g*g, D)
        e = self.embedding.weight  # (K, D)
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()  # (B*g*g, K)
        return dist.argmin(1).reshape(b, gh, gw)


class VQGAN(nn.Module):
    """The image tokenizer: encode pixels in [0, 1] to (B, g, g) codes, decode codes to pixels in [0, 1]."""

    kind = "vqgan"

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        if cfg.image_size % cfg.factor:
            raise ValueError(f"image size {cfg.image_size} is not a multiple of the VQGAN's factor {cfg.factor}")
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)

    image_size = property(lambda self: self.cfg.image_size)
    grid = property(lambda self: self.cfg.grid)
    vocab_size = property(lambda self: self.cfg.n_embed)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, H/f, W/f) int64 codes."""
        if images.ndim != 4 or images.shape[1] != self.cfg.in_channels:
            raise ValueError(f"VQGAN input must be (B, {self.cfg.in_channels}, H, W), got {tuple(images.shape)}")
        return self.quantize.indices(self.quant_conv(self.encoder(images * 2 - 1)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, g, g) codes -> (B, 3, g*f, g*f) pixels in [0, 1]."""
        z = self.quantize.embedding(codes.long()).permute(0, 3, 1, 2).contiguous()  # (B, D, g, g)
        return ((self.decoder(self.post_quant_conv(z)) + 1) / 2).clamp(0, 1)


# --------------------------------------------------------------------------- taming-transformers checkpoints

TAMING_TARGET = "taming.models.vqgan.VQModel"
_WEIGHT_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")  # not loss.* (LPIPS, GAN)
# Lightning checkpoints may pickle callback and hyper-parameter objects beside the weights: inert stubs, never run
_LIGHTNING_STUBS = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "numpy.", "taming.",
                    "torch.nn.modules.", "torch.optim.", "functools", "collections", "pathlib", "typing", "argparse")
_GET_IT = "the taming-transformers README links the f16 VQGANs (ImageNet, OpenImages): a .ckpt and its .yaml"


def read_taming_config(path: Path, image_size: int) -> VQGANConfig:
    """A taming config.yaml (model: {target, params: {embed_dim, n_embed, ddconfig}}) -> VQGANConfig."""
    import yaml  # PyYAML: parsed with safe_load (plain data only)

    try:
        model = yaml.safe_load(Path(path).read_text())["model"]
        target, params = model.get("target"), model["params"]
        dd = params["ddconfig"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise DalleEvalError(f"{path}: not a taming-transformers VQGAN config.yaml "
                             f"(model.params.ddconfig: {type(e).__name__} {e}); {_GET_IT}") from None
    if target != TAMING_TARGET:
        raise DalleEvalError(f"{path}: model.target is {target}; only {TAMING_TARGET} (vector-quantized, e.g. the f16 "
                             "VQGANs with 1024 or 16384 codes) is supported")
    if dd.get("double_z", False):
        raise DalleEvalError(f"{path}: ddconfig.double_z is true; a VQModel's encoder has double_z: false")
    try:
        return VQGANConfig(
            ch=int(dd["ch"]), ch_mult=tuple(int(m) for m in dd["ch_mult"]), num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in dd["attn_resolutions"]), resolution=int(dd["resolution"]),
            z_channels=int(dd["z_channels"]), embed_dim=int(params["embed_dim"]), n_embed=int(params["n_embed"]),
            in_channels=int(dd.get("in_channels", 3)), out_ch=int(dd.get("out_ch", 3)), image_size=image_size,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DalleEvalError(f"{path}: the VQGAN config lacks or mistypes {e}") from None


def _lightning_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of a Lightning .ckpt: weights_only=True first, else a restricted unpickler."""
    from dalle_eval.model.openai_dvae import restricted_torch_load

    if not Path(path).is_file():
        raise DalleEvalError(f"{path}: not found — {_GET_IT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects besides tensors (callbacks, hparams): stubbed, never run
        try:
            ckpt = restricted_torch_load(path, _LIGHTNING_STUBS, "a Lightning checkpoint")
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise DalleEvalError(f"{path}: not a taming-transformers checkpoint ({e})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise DalleEvalError(f"{path}: not a taming-transformers checkpoint ({e})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise DalleEvalError(f"{path}: no state_dict (expected a Lightning checkpoint of a VQModel)")
    return {k: v for k, v in state.items() if k.startswith(_WEIGHT_PREFIXES) and isinstance(v, torch.Tensor)}


def load_taming_vqgan(ckpt_path: str | Path, config_path: str | Path, image_size: int = 256) -> VQGAN:
    """A taming-transformers VQModel (MODEL.ckpt + CONFIG.yaml) as our VQGAN, encoding `image_size` px images."""
    cfg = read_taming_config(Path(config_path), image_size)
    if image_size % cfg.factor:
        raise DalleEvalError(f"image size {image_size} (data.resolution): this VQGAN needs a multiple of {cfg.factor}")
    model = VQGAN(cfg)
    state = _lightning_state_dict(Path(ckpt_path))
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise DalleEvalError(f"{ckpt_path}: weights do not fit {config_path} ({len(missing)} missing, e.g. "
                             f"{missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise DalleEvalError(f"{ckpt_path}: weights do not fit {config_path} ({str(e).splitlines()[1:2]})") from None
    return model.eval()
