"""Image shards -> token shards: BPE caption ids + dVAE codes, one output shard per input shard.

Each token shard is written atomically and skipped on re-run, so a killed run redoes at most the
shard in flight. The token folder is self-contained: it holds the tokenizer and a copy of the dVAE
checkpoint, and its manifest records their fingerprints (DESIGN.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dalle_eval.artifacts import MANIFEST, sha256_file, write_json
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import count_samples, image_to_array, iter_shards, shard_name, write_shard
from model.checkpoint import DVAE_DIR, TOKENIZER, load_dvae, read_ckpt_config
from model.tokenizer import encode_captions, load_tokenizer


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


def encode_shards(
    image_shards: list[Path], out: Path, dvae_ckpt: Path, tokenizer_path: Path, text_len: int, batch: int, device: str
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    copy_dvae(dvae_ckpt, out / DVAE_DIR)
    if Path(tokenizer_path).resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_path, out / TOKENIZER)
    tok = load_tokenizer(out / TOKENIZER)
    _, dcfg = read_ckpt_config(out / DVAE_DIR, "dvae")
    dvae = load_dvae(out / DVAE_DIR).to(device)

    n_samples = truncated = 0
    shards, sizes = [], []
    for s, src in enumerate(tqdm(image_shards, desc="encode shards (BPE + dVAE)", unit="shard")):
        dst = out / shard_name(s)
        shards.append(dst.name)
        if dst.exists():  # finished by an earlier run
            sizes.append(count_samples(dst))
            n_samples += sizes[-1]
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
        n_samples += len(samples)
        sizes.append(len(samples))

    manifest = {
        "kind": "tokens",
        "n_samples": n_samples,
        "n_shards": len(shards),
        "shards": shards,
        "shard_sizes": sizes,
        "text_len": text_len,
        "grid": dcfg.dvae.grid,
        "text_vocab": tok.get_vocab_size(),
        "image_vocab": dcfg.dvae.vocab_size,
        "truncated_captions": truncated,
        "tokenizer_sha256": sha256_file(out / TOKENIZER),
        "dvae_sha256": sha256_file(out / DVAE_DIR / "model.safetensors"),
    }
    write_json(out / MANIFEST, manifest)
    return manifest
