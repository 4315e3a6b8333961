"""Image shards -> token shards: BPE caption ids + image codes, one output shard per input shard.

Each token shard is written atomically and skipped on re-run, so a killed run redoes at most the
shard in flight. The token folder is self-contained: it holds the tokenizer and the image tokenizer
(dvae/: our dVAE, OpenAI's dVAE or a VQGAN, model/image_tokenizer.py), and its manifest records their
sha256 and the image tokenizer's kind, grid and vocab (README "Artifacts"), which training checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER
from dalle_eval.model.image_tokenizer import (
    TokenizerSpec,
    load_image_tokenizer_dir,
    save_image_tokenizer,
    tokenizer_info,
)
from dalle_eval.model.tokenizer import encode_captions, load_tokenizer
from tqdm import tqdm

from dalle_eval.artifacts import sha256_file
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import image_to_array
from dalle_eval.shards import count_samples, iter_shards, shard_name, write_shard


def _encode_batch(image_tokenizer, images: list, device: str) -> np.ndarray:
    x = torch.from_numpy(np.stack([image_to_array(im) for im in images])).to(device)
    x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
    return image_tokenizer.encode(x).cpu().numpy().astype(np.uint16)  # (B, g, g); vocabularies up to 65536


def prepare_assets(out: Path, image_tokenizer: TokenizerSpec, tokenizer_path: Path, image_size: int) -> dict:
    """Write the image tokenizer (safetensors + json, whatever its kind) and copy the BPE tokenizer into the
    token folder (a self-contained artifact); -> the image tokenizer's description."""
    out.mkdir(parents=True, exist_ok=True)
    info = save_image_tokenizer(image_tokenizer, out / DVAE_DIR, image_size)
    if Path(tokenizer_path).resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_path, out / TOKENIZER)
    return info


def encode_shards(
    image_shards: list[Path], out: Path, text_len: int, batch: int, device: str, rank: int = 0, world: int = 1
) -> dict:
    """Encode image shard s into token shard s for every s = rank mod world (after prepare_assets).

    -> the manifest of the whole folder when world == 1, else this rank's {"truncated_captions"}.
    """
    tok = load_tokenizer(out / TOKENIZER)
    image_tokenizer = load_image_tokenizer_dir(out / DVAE_DIR).to(device)
    size = image_tokenizer.image_size
    if image_tokenizer.vocab_size > 2**16:
        raise DalleEvalError(f"{out / DVAE_DIR}: {image_tokenizer.vocab_size} codes do not fit codes.npy's uint16")

    truncated = 0
    mine = list(enumerate(image_shards))[rank::world]
    for s, src in tqdm(mine, desc=f"encode shards (BPE + {image_tokenizer.kind})", unit="shard", disable=rank != 0):
        dst = out / shard_name(s)
        if dst.exists():  # finished by an earlier run
            continue
        samples = list(iter_shards([src]))
        for sample in samples:
            w, h = sample["image"].size
            if (w, h) != (size, size):
                raise DalleEvalError(
                    f"{src}: sample {sample['__key__']} is {w}x{h} px but the {image_tokenizer.kind} image tokenizer "
                    f"encodes {size}x{size} (set data.resolution to match its image size)"
                )
        ids, cut = encode_captions(tok, [x["txt"] for x in samples], text_len)
        truncated += cut
        codes = [c for i in range(0, len(samples), batch) for c in _encode_batch(image_tokenizer, [x["image"] for x in samples[i : i + batch]], device)]
        write_shard(
            dst,
            (
                {"__key__": x["__key__"], "txt": x["txt"], "text.npy": t, "codes.npy": c, "json": x.get("json", {})}
                for x, t, c in zip(samples, ids, codes)
            ),
        )
    if world > 1:
        return {"truncated_captions": truncated}
    return token_manifest(out, len(image_shards), text_len, tok.get_vocab_size(), truncated)


def token_manifest(out: Path, n_shards: int, text_len: int, text_vocab: int, truncated: int) -> dict:
    """The token folder's manifest: grid and image vocab are the image tokenizer's (out/dvae/)."""
    image_tokenizer = tokenizer_info(out / DVAE_DIR)
    shards = [shard_name(s) for s in range(n_shards)]
    sizes = [count_samples(out / name) for name in shards]
    return {
        "kind": "tokens",
        "n_samples": sum(sizes),
        "n_shards": len(shards),
        "shards": shards,
        "shard_sizes": sizes,
        "text_len": text_len,
        "grid": image_tokenizer["grid"],
        "text_vocab": text_vocab,
        "image_vocab": image_tokenizer["vocab"],
        "truncated_captions": truncated,
        "tokenizer_sha256": sha256_file(out / TOKENIZER),
        "dvae_sha256": sha256_file(out / DVAE_DIR / "model.safetensors"),  # the weights as stored in dvae/
        "image_tokenizer": image_tokenizer,  # kind, grid, vocab, image size, sha256 of its source files
    }
