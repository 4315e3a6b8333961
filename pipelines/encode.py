"""Image shards -> token shards: BPE caption ids + dVAE codes, one output shard per input shard.

Each token shard is written atomically and skipped on re-run, so a killed run redoes at most the
shard in flight. The token folder is self-contained: it holds the tokenizer and a copy of the dVAE
checkpoint, and its manifest records their sha256 (README "Artifacts"), which training checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER, load_dvae, read_ckpt_config
from dalle_eval.model.tokenizer import encode_captions, load_tokenizer
from tqdm import tqdm

from dalle_eval.artifacts import sha256_file
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import image_to_array
from dalle_eval.shards import count_samples, iter_shards, shard_name, write_shard


def copy_dvae(dvae_ckpt: Path, dest: Path) -> Path:
    """Copy a dVAE checkpoint's config and weights (not its training state)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        src = Path(dvae_ckpt) / name
        if not src.exists():
            raise DalleEvalError(f"--dvae {dvae_ckpt}: no {name}; expected a dVAE checkpoint dir from `dalle-eval train --stage dvae`")
        shutil.copyfile(src, dest / name)
    return dest


def _encode_batch(dvae, images: list, device: str) -> np.ndarray:
    x = torch.from_numpy(np.stack([image_to_array(im) for im in images])).to(device)
    x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
    return dvae.encode(x).cpu().numpy().astype(np.uint16)  # (B, g, g)


def prepare_assets(out: Path, dvae_ckpt: Path, tokenizer_path: Path) -> None:
    """Copy the dVAE checkpoint and the tokenizer into the token folder (self-contained artifact)."""
    out.mkdir(parents=True, exist_ok=True)
    copy_dvae(dvae_ckpt, out / DVAE_DIR)
    if Path(tokenizer_path).resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_path, out / TOKENIZER)


def encode_shards(
    image_shards: list[Path], out: Path, text_len: int, batch: int, device: str, rank: int = 0, world: int = 1
) -> dict:
    """Encode image shard s into token shard s for every s = rank mod world (after prepare_assets).

    -> the manifest of the whole folder when world == 1, else this rank's {"truncated_captions"}.
    """
    tok = load_tokenizer(out / TOKENIZER)
    _, dcfg = read_ckpt_config(out / DVAE_DIR, "dvae")
    dvae = load_dvae(out / DVAE_DIR).to(device)

    truncated = 0
    mine = list(enumerate(image_shards))[rank::world]
    for s, src in tqdm(mine, desc="encode shards (BPE + dVAE)", unit="shard", disable=rank != 0):
        dst = out / shard_name(s)
        if dst.exists():  # finished by an earlier run
            continue
        samples = list(iter_shards([src]))
        for sample in samples:
            w, h = sample["image"].size
            if (w, h) != (dcfg.dvae.image_size, dcfg.dvae.image_size):
                raise DalleEvalError(
                    f"{src}: sample {sample['__key__']} is {w}x{h} px but the dVAE expects "
                    f"{dcfg.dvae.image_size}x{dcfg.dvae.image_size} (set data.resolution to match dvae.image_size)"
                )
        ids, cut = encode_captions(tok, [x["txt"] for x in samples], text_len)
        truncated += cut
        codes = [c for i in range(0, len(samples), batch) for c in _encode_batch(dvae, [x["image"] for x in samples[i : i + batch]], device)]
        write_shard(
            dst,
            (
                {"__key__": x["__key__"], "txt": x["txt"], "text.npy": t, "codes.npy": c, "json": x.get("json", {})}
                for x, t, c in zip(samples, ids, codes)
            ),
        )
    if world > 1:
        return {"truncated_captions": truncated}
    return token_manifest(out, len(image_shards), text_len, dcfg.dvae, tok.get_vocab_size(), truncated)


def token_manifest(out: Path, n_shards: int, text_len: int, dvae_cfg, text_vocab: int, truncated: int) -> dict:
    shards = [shard_name(s) for s in range(n_shards)]
    sizes = [count_samples(out / name) for name in shards]
    return {
        "kind": "tokens",
        "n_samples": sum(sizes),
        "n_shards": len(shards),
        "shards": shards,
        "shard_sizes": sizes,
        "text_len": text_len,
        "grid": dvae_cfg.grid,
        "text_vocab": text_vocab,
        "image_vocab": dvae_cfg.vocab_size,
        "truncated_captions": truncated,
        "tokenizer_sha256": sha256_file(out / TOKENIZER),
        "dvae_sha256": sha256_file(out / DVAE_DIR / "model.safetensors"),
    }
