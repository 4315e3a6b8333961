"""The samples dir contract (DESIGN.md): `{prompt_id}_{index}.png` + samples.jsonl, made here or by any generator."""

from __future__ import annotations

from pathlib import Path

from dalle_eval.config import Config
from dalle_eval.errors import DalleEvalError

SAMPLES = "samples.jsonl"


def resolve_samples_dir(ckpt: Path | None, images: Path | None, prompts: list[dict], n: int, out: Path, cfg: Config, progress: bool) -> Path:
    if (ckpt is None) == (images is None):
        raise DalleEvalError("give exactly one of --ckpt (generate with a model) or --images (a samples dir)")
    if images is not None:
        if not (Path(images) / SAMPLES).exists():
            raise DalleEvalError(f"--images {images}: no {SAMPLES}; expected a samples dir (see README: artifact layout)")
        return Path(images)
    from dalle_eval.generate import run_sample  # model code only when generating

    run_sample(ckpt, prompts, n, out / "samples", cfg.sample, progress)
    return out / "samples"
