"""FID, IS and KID from one pass of the FID Inception (torch-fidelity's FeatureExtractorInceptionV3).

Inside the network every image is resized to 299 px with torch-fidelity's TF1-compatible bilinear
(antialias off), as in torch-fidelity and torchmetrics(antialias=False). FID uses the 2048-d pool
features with float64 statistics; IS the unbiased logits, shuffled and cut into 10 splits exactly as
torch-fidelity does (seed 2020), so the numbers agree with its `calculate_metrics`; KID likewise.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dalle_eval.artifacts import atomic_path, read_rgb
from dalle_eval.errors import DalleEvalError

RESIZE_POLICY = "inception bilinear to 299 px, TF1-compatible (torch-fidelity), antialias off"


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Heusel et al. 2017, eq. 6).

    Tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix: two
    symmetric eigendecompositions, 6x faster than scipy's sqrtm at 2048-d and stable when the covariances
    are singular (fewer images than dimensions); tiny negative eigenvalues from rounding count as 0.
    """
    w, v = np.linalg.eigh(sigma1)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2)
    m = half @ sigma2 @ half
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_to_features(mu1: np.ndarray, sigma1: np.ndarray, features: np.ndarray) -> float:
    """FID between stats (mu1, sigma1) and the Gaussian fit of `features` (N, d), equal to
    frechet_distance(mu1, sigma1, *gaussian_stats(features)).

    With fewer samples than dimensions S2 = X^T X / (N - 1) (X centred) has rank < N, and the nonzero
    eigenvalues of S1 S2 are those of the N x N matrix X S1 X^T / (N - 1): an N^3 problem, not d^3.
    """
    n, d = features.shape
    if n > d // 2:
        return frechet_distance(mu1, sigma1, *gaussian_stats(features))
    mu2 = features.mean(0)
    x = features.astype(np.float64) - mu2
    m = x @ sigma1 @ x.T / (n - 1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + (x * x).sum() / (n - 1) - 2 * tr_covmean)


def torch_fidelity_order(paths: Iterable[str | Path]) -> list[Path]:
    """The paths in the order torch-fidelity reads a folder of them: sorted by resolved path (os.path.realpath).

    IS (contiguous splits of a seeded permutation) and KID (subsets drawn by index) depend on the order of the
    samples, so both sets follow torch-fidelity's to give its numbers; FID does not depend on it.
    """
    return sorted((Path(p) for p in paths), key=lambda p: os.path.realpath(p))


SHUFFLE_SEED = 2020  # torch-fidelity's rng_seed: the sample order of IS splits and KID subsets


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = SHUFFLE_SEED) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split (Salimans et al. 2016) -> (mean, std over splits).

    Samples are shuffled with RandomState(seed) and split at i*N//splits, as torch-fidelity does.
    """
    n = len(logits)
    x = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))].double()
    p, log_p = x.softmax(1), x.log_softmax(1)
    scores = []
    for i in range(splits):
        pc, lc = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        kl = (pc * (lc - pc.mean(0, keepdim=True).log())).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = SHUFFLE_SEED) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3 over random subsets (Binkowski et al. 2018, eq. 3).

    f1 = generated, f2 = real features: subsets are drawn in that order, as torch-fidelity does (input1, input2).
    """
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise DalleEvalError(f"KID needs at least 2 images per set (got {len(f1)} and {len(f2)})")
    rng, d, out = np.random.RandomState(seed), f1.shape[1], []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        out.append(off - 2 * kxy.sum() / (m * m))
    return float(np.mean(out)), float(np.std(out))


FEATURES = ("2048", "logits_unbiased")  # what one forward pass returns: FID's pool features, IS's logits


def load_inception(weights: str | Path | None) -> torch.nn.Module:
    """torch-fidelity's FID Inception returning (2048-d pool features, unbiased logits). weights=None: its download."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights is not None and not Path(weights).exists():
        raise DalleEvalError(
            f"--inception-weights {weights}: file not found (torch-fidelity's pt_inception-2015-12-05 state dict)"
        )
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES),
                                           feature_extractor_weights_path=str(weights) if weights else None)
    except OSError as e:  # offline without local weights
        if weights is not None:
            raise DalleEvalError(f"--inception-weights {weights}: unreadable ({e})") from None
        raise DalleEvalError(
            f"could not download the FID Inception weights ({e}); pass --inception-weights PATH "
            "with a local copy of pt_inception-2015-12-05-6726825d.pth"
        ) from None
    except (ValueError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as e:  # a truncated or other file
        if weights is None:
            raise
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DalleEvalError(f"--inception-weights {weights}: not a readable FID Inception state dict "
                             f"({type(e).__name__}: {reason[:160]}); expected pt_inception-2015-12-05-6726825d.pth") from None


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """A randomly initialised FID Inception for tests and the offline demo: NOT comparable to published FID.

    torch-fidelity's network keeps its own initialisation (it is given an empty weights file, loaded non-strictly);
    conv weights are then re-drawn N(0, 2/fan_in): with the default init all features collapse and FID ~ 0.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
            return super().load_state_dict(state_dict, strict=False, assign=assign)

    with atomic_path(path) as tmp:
        torch.save({}, tmp)
        torch.manual_seed(seed)
        net = Unloaded("inception-v3-compat", list(FEATURES), feature_extractor_weights_path=str(tmp))
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        torch.save(net.state_dict(), tmp)
    return Path(path)


def load_image_uint8(path: Path) -> np.ndarray:
    return np.asarray(read_rgb(path), dtype=np.uint8)


def image_batches(paths: list[Path], batch: int, load=load_image_uint8) -> Iterator[np.ndarray]:
    """uint8 (B, H, W, 3) batches of images loaded by `load` (all of one size, named if not)."""
    for i in range(0, len(paths), batch):
        arrays = [load(p) for p in paths[i : i + batch]]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DalleEvalError(f"images in one set must share a size; found {sorted(shapes)} near {paths[i]}")
        yield np.stack(arrays)


@torch.no_grad()
def inception_features(net, batches: Iterable[np.ndarray], total: int | None = None, desc: str = "inception",
                       progress: bool = True) -> tuple[np.ndarray, torch.Tensor]:
    """uint8 (B, H, W, 3) batches -> (N, 2048) float64 pool features, (N, 1008) unbiased logits."""
    feats, logits = [], []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for arr in batches:
            x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8
            f, lg = net(x)  # both outputs (FEATURES) from one pass
            feats.append(f.double())
            logits.append(lg.double())
            bar.update(len(arr))
    if not feats:
        return np.zeros((0, 2048)), torch.zeros(0, 1008, dtype=torch.float64)
    return torch.cat(feats).numpy(), torch.cat(logits)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, d) features: FID's Gaussian fit."""
    f = features.astype(np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def fid_is(real: list[Path], fake: list[Path], weights: str | Path | None, batch: int = 32, progress: bool = True) -> dict:
    """FID of two image lists (no resizing beyond the Inception's own) and IS of `fake`, each list taken in
    torch-fidelity's order (sorted resolved paths), as it would read a folder holding exactly those images."""
    if len(real) < 2 or len(fake) < 2:
        raise DalleEvalError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fake)} generated)")
    real, fake = torch_fidelity_order(real), torch_fidelity_order(fake)
    net = load_inception(weights)
    fr, _ = inception_features(net, image_batches(real, batch), len(real), "inception: real", progress)
    ff, lf = inception_features(net, image_batches(fake, batch), len(fake), "inception: generated", progress)
    fid = frechet_distance_to_features(*gaussian_stats(fr), ff)
    is_mean, is_std = inception_score(lf, splits=min(10, len(fake)))
    return {"fid": fid, "is_mean": is_mean, "is_std": is_std, "n_real": len(real), "n_fake": len(fake),
            "resize_policy": RESIZE_POLICY}
