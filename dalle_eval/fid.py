"""FID and IS from one pass of the FID Inception (torchmetrics' NoTrainInceptionV3).

Resize policy: the Inception resizes every image to 299 px with torch-fidelity's TF1-compatible
bilinear (antialias off), the same as torch-fidelity and torchmetrics(antialias=False). FID uses the
2048-d pool features with float64 statistics; IS the unbiased logits in 10 ordered splits.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image
from scipy import linalg
from tqdm import tqdm

from dalle_eval.errors import DalleEvalError

RESIZE_POLICY = "inception bilinear to 299 px, TF1-compatible (torch-fidelity), antialias off"


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Heusel et al. 2017, eq. 6)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: nudge the diagonal (as in the reference code)
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` ordered chunks (Salimans et al. 2016) -> (mean, std)."""
    p = torch.softmax(logits.double(), dim=1)
    scores = []
    for chunk in p.chunk(splits):
        py = chunk.mean(0, keepdim=True)
        kl = (chunk * (chunk.clamp_min(1e-30).log() - py.clamp_min(1e-30).log())).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


def load_inception(weights: str | Path | None):
    """torchmetrics' FID Inception with 2048-d and logits outputs. weights=None: its own download."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    if weights is not None and not Path(weights).exists():
        raise DalleEvalError(
            f"--inception-weights {weights}: file not found (torch-fidelity's pt_inception-2015-12-05 state dict)"
        )
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(weights) if weights else None,
            antialias=False,
        )
    except OSError as e:  # offline without local weights
        raise DalleEvalError(
            f"could not download the FID Inception weights ({e}); pass --inception-weights PATH "
            "with a local copy of pt_inception-2015-12-05-6726825d.pth"
        ) from None


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """A randomly initialised FID Inception for tests and the offline demo: NOT comparable to published FID.

    Conv weights are re-drawn N(0, 2/fan_in): with the default init all features collapse and FID ~ 0.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), mock.patch.object(
        fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return Path(path)


def load_image_uint8(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DalleEvalError(f"{path}: unreadable image ({e})") from None


@torch.no_grad()
def inception_features(net, paths: list[Path], batch: int, desc: str, progress: bool = True):
    """-> (N, 2048) float64 pool features, (N, 1008) unbiased logits."""
    feats, logits = [], []
    for i in tqdm(range(0, len(paths), batch), desc=desc, unit="batch", disable=not progress):
        arrays = [load_image_uint8(p) for p in paths[i : i + batch]]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DalleEvalError(f"images in one set must share a size; found {sorted(shapes)} near {paths[i]}")
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8
        f, lg = net._torch_fidelity_forward(x)  # both outputs from one pass
        feats.append(f.double())
        logits.append(lg.double())
    return torch.cat(feats).numpy(), torch.cat(logits)


def fid_is(real: list[Path], fake: list[Path], weights: str | Path | None, batch: int = 32, progress: bool = True) -> dict:
    if len(real) < 2 or len(fake) < 2:
        raise DalleEvalError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fake)} generated)")
    net = load_inception(weights)
    fr, _ = inception_features(net, real, batch, "inception: real", progress)
    ff, lf = inception_features(net, fake, batch, "inception: generated", progress)
    mu_r, mu_f = fr.mean(0), ff.mean(0)
    fid = frechet_distance(mu_r, np.cov(fr, rowvar=False), mu_f, np.cov(ff, rowvar=False))
    is_mean, is_std = inception_score(lf, splits=min(10, len(fake)))
    return {"fid": fid, "is_mean": is_mean, "is_std": is_std, "n_real": len(real), "n_fake": len(fake),
            "resize_policy": RESIZE_POLICY}
