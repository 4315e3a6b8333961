"""`sample`: captions -> samples dir (DESIGN.md): `{prompt_id}_{index}.png` + samples.jsonl.

Resumable: images already listed in samples.jsonl are skipped, so a killed run continues.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dalle_eval.artifacts import append_jsonl_rows, atomic_path, read_jsonl, write_json
from dalle_eval.config import SampleConfig
from dalle_eval.errors import DalleEvalError
from dalle_eval.samples import SAMPLES
from model.checkpoint import DVAE_DIR, TOKENIZER, load_dvae, load_transformer
from model.sampling import completion_keep, sample_codes
from model.tokenizer import encode_captions, load_tokenizer, pad_batch


def read_prompts(path: Path) -> list[dict]:
    """JSONL with {"prompt_id", "caption"} per line, or plain text with one caption per line."""
    path = Path(path)
    if not path.exists():
        raise DalleEvalError(f"--prompts {path}: file not found")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DalleEvalError(f"--prompts {path}: no prompts in the file")
    if path.suffix == ".jsonl":
        prompts = []
        for i, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DalleEvalError(f"--prompts {path}:{i}: not a JSON line") from None
            if "caption" not in row:
                raise DalleEvalError(f"--prompts {path}:{i}: no 'caption' field")
            prompts.append({**row, "prompt_id": str(row.get("prompt_id", i - 1))})
        return prompts
    return [{"prompt_id": str(i), "caption": line.strip()} for i, line in enumerate(lines)]


def image_seed(seed: int, prompt_id: str, index: int) -> int:
    return zlib.crc32(f"{seed}/{prompt_id}/{index}".encode())


def codes_to_images(dvae, codes: torch.Tensor) -> list[Image.Image]:
    pixels = dvae.decode(codes)  # (B, 3, H, W) in [0, 1]
    arr = (pixels.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def image_to_codes(dvae, path: Path) -> torch.Tensor:
    """Center-crop and resize an image to the dVAE's size, encode -> (1, g, g) codes."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except OSError as e:
        raise DalleEvalError(f"--image {path}: unreadable image ({e})") from None
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    size = dvae.cfg.image_size
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    return dvae.encode(x.to(next(dvae.parameters()).device))


def _write_prompt(cands: list, n: int, out: Path, cfg: SampleConfig, ckpt: Path, scorer, rows_file: str) -> None:
    """Save a prompt's images (the best n by CLIP when reranking) and append their rows together."""
    p = cands[0][0]
    scores = scorer.scores([c[3] for c in cands], [p["caption"]] * len(cands)).tolist() if scorer else None
    order = sorted(range(len(cands)), key=lambda i: -scores[i]) if scorer else range(len(cands))
    rows = []
    for rank, i in enumerate(list(order)[:n]):
        _, j, seed, img = cands[i]
        name = f"{p['prompt_id']}_{rank}.png"
        with atomic_path(out / name) as tmp:
            img.save(tmp, format="PNG")
        row = {"prompt_id": str(p["prompt_id"]), "index": rank, "caption": p["caption"], "file": name, "seed": seed,
               "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p, "ckpt": str(ckpt)}
        if scorer:
            row.update(clip_score=scores[i], rank=rank, candidate=j, rerank=len(cands), clip_model=cfg.clip_model)
        rows.append(row)
    append_jsonl_rows(out / rows_file, rows)


def done_rows(out: Path) -> list[dict]:
    """Rows of samples.jsonl and of the per-rank files of an unfinished sharded run, one per (prompt, index)."""
    rows = {}
    for f in [Path(out) / SAMPLES, *sorted(Path(out).glob("samples.rank*.jsonl"))]:
        for r in read_jsonl(f):
            rows.setdefault((str(r["prompt_id"]), r["index"]), r)
    return list(rows.values())


def merge_rank_rows(out: Path) -> int:
    """Fold the per-rank row files into samples.jsonl (atomically, duplicates dropped) -> rows in total."""
    ranks = sorted(Path(out).glob("samples.rank*.jsonl"))
    rows = done_rows(out)
    if ranks:
        with atomic_path(Path(out) / SAMPLES) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))
        for f in ranks:
            f.unlink()
    return len(rows)


def run_sample(
    ckpt: Path, prompts: list[dict], n: int, out: Path, cfg: SampleConfig, progress: bool = True,
    image: Path | None = None, keep_rows: int | None = None, region: tuple[int, int] | None = None,
    rows_file: str = SAMPLES,
) -> Path:
    """Generate n images per prompt into `out`; returns the samples.jsonl path.

    With `image` and keep_rows or region: image completion, the kept tokens come from the image.
    Rows go to `rows_file` (torchrun ranks each write their own, merged later by merge_rank_rows);
    prompts already listed in samples.jsonl or any rank's file are skipped.
    """
    ckpt, out = Path(ckpt), Path(out)
    model = load_transformer(ckpt).to(cfg.device)
    dvae = load_dvae(ckpt / DVAE_DIR).to(cfg.device)
    tok = load_tokenizer(ckpt / TOKENIZER)
    known = keep = None
    if image is not None:
        try:
            keep = completion_keep(model.cfg.grid, keep_rows, region)
        except ValueError as e:
            raise DalleEvalError(f"--keep-rows/--region: {e}") from None
        known = image_to_codes(dvae, Path(image)).cpu()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sample_config.json", {"ckpt": str(ckpt), "n": n, "sample": asdict(cfg), "image": str(image) if image else None,
                                            "keep_rows": keep_rows, "region": list(region) if region else None})
    scorer = None
    if cfg.rerank > 1:
        from dalle_eval.clip_rerank import ClipScorer

        if cfg.rerank < n:
            raise DalleEvalError(f"sample.rerank={cfg.rerank} draws fewer candidates than the {n} kept per caption")
        scorer = ClipScorer(cfg.clip_model, cfg.clip_pretrained or None, cfg.device)
    n_draw = cfg.rerank if scorer else n
    counts: dict[str, int] = {}
    for r in done_rows(out):
        counts[r["prompt_id"]] = counts.get(r["prompt_id"], 0) + 1
    todo = [(p, j) for p in prompts if counts.get(str(p["prompt_id"]), 0) < n for j in range(n_draw)]
    L = model.cfg.text_len
    pending: dict[str, list] = {}
    bar = tqdm(total=len(todo), desc=f"sample (best {n} of {n_draw} by CLIP)" if scorer else "sample", unit="img",
               disable=not progress)
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        ids, _ = encode_captions(tok, [p["caption"] for p, _ in chunk], L)
        seeds = [image_seed(cfg.seed, str(p["prompt_id"]), j) for p, j in chunk]
        text = model.pad_text(pad_batch(ids, L).to(cfg.device))
        prior = None if known is None else known.expand(len(chunk), -1, -1)
        codes = sample_codes(model, text, seeds, cfg.temperature, cfg.top_k, known=prior, keep=keep, top_p=cfg.top_p)
        for (p, j), seed, img in zip(chunk, seeds, codes_to_images(dvae, codes)):
            pending.setdefault(str(p["prompt_id"]), []).append((p, j, seed, img))
            if len(pending[str(p["prompt_id"])]) == n_draw:  # all candidates of this prompt are in
                _write_prompt(pending.pop(str(p["prompt_id"])), n, out, cfg, ckpt, scorer, rows_file)
        bar.update(len(chunk))
    bar.close()
    return out / SAMPLES
