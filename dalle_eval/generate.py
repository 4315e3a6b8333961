"""`sample`: captions -> samples dir (README "Artifacts"): `{prompt_id}_{index}.png` + samples.jsonl.

The folder records what made it (fingerprint.json: checkpoint, captions, sampling settings, seed, format).
Resumable: the same run again skips the images already there (listed in samples.jsonl, file present), so a
killed run continues and a larger --n extends; another run into the folder is refused unless --overwrite.
"""

from __future__ import annotations

import json
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dalle_eval.artifacts import (
    append_jsonl_rows,
    atomic_path,
    fingerprint,
    iter_jsonl,
    read_json,
    read_jsonl,
    read_rgb,
    write_json,
)
from dalle_eval.config import SampleConfig
from dalle_eval.errors import DalleEvalError
from dalle_eval.images import center_square_resize
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER, load_transformer
from dalle_eval.model.dvae import pixels_to_pil
from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
from dalle_eval.model.sampling import completion_keep, sample_codes
from dalle_eval.model.tokenizer import encode_captions, load_tokenizer, pad_batch
from dalle_eval.outputs import file_sha256
from dalle_eval.report import image_grid
from dalle_eval.samples import SAMPLES, claim_samples, row_files

SAMPLES_FORMAT = 1  # the samples-dir layout this code writes: part of every samples fingerprint


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
        for i, (where, row) in enumerate(iter_jsonl(path, "--prompts ")):
            if not isinstance(row.get("caption"), str) or not row["caption"].strip():
                raise DalleEvalError(f"{where}: no caption (expected {{\"prompt_id\", \"caption\": text}})")
            prompts.append({**row, "prompt_id": str(row.get("prompt_id", i))})
        return prompts
    return [{"prompt_id": str(i), "caption": line.strip()} for i, line in enumerate(lines)]


def image_seed(seed: int, prompt_id: str, index: int) -> int:
    return zlib.crc32(f"{seed}/{prompt_id}/{index}".encode())


def codes_to_images(image_tokenizer, codes: torch.Tensor) -> list[Image.Image]:
    """(B, g, g) codes -> images, decoded by the image tokenizer (any kind: model/image_tokenizer.py)."""
    return pixels_to_pil(image_tokenizer.decode(codes))


def image_to_codes(image_tokenizer, path: Path) -> torch.Tensor:
    """Center-crop and resize an image to the image tokenizer's size, encode -> (1, g, g) codes."""
    try:
        im = read_rgb(path)
    except DalleEvalError as e:
        raise DalleEvalError(f"--image {e}") from None
    im = center_square_resize(im, image_tokenizer.image_size)
    x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    return image_tokenizer.encode(x.to(next(image_tokenizer.parameters()).device))


def checkpoint_id(ckpt: Path) -> str:
    """What a transformer checkpoint samples with: its weights, image tokenizer weights and tokenizer (sha256 of each file,
    hashed once per process) and its model config. Training on writes new weights: a new id."""
    ckpt = Path(ckpt)
    files = [ckpt / "model.safetensors", ckpt / DVAE_DIR / "model.safetensors", ckpt / TOKENIZER]
    for f in files:
        if not f.is_file():
            raise DalleEvalError(f"--ckpt {ckpt}: no {f.relative_to(ckpt)}; expected a transformer checkpoint dir")
    model = read_json(ckpt / "config.json", "checkpoint config").get("config", {}).get("transformer")
    return fingerprint({"files": [file_sha256(f) for f in files], "transformer": model})


def prompts_id(prompts: list[dict]) -> str:
    """The prompt set: ids, captions and (probes) specs."""
    return fingerprint([[str(p["prompt_id"]), p["caption"], p.get("spec")] for p in prompts])


def _reference_id(value: str) -> str:
    """A CLIP model config or weights reference: a local file by its content, a name or tag as it is."""
    return file_sha256(value) if value and Path(value).is_file() else value


def sample_fingerprint(ckpt: Path, cfg: SampleConfig, completion: dict | None = None) -> dict:
    """What decides a samples dir's images besides the prompts (the caller adds those): the checkpoint and
    every sampling setting but batch_size (an image depends only on its own seed: the same for any batch) and
    the device's index (its type stays: CPU and CUDA round differently). Not n: a larger n extends."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}
    settings["device"] = torch.device(cfg.device).type
    if cfg.rerank > 1:
        settings.update(clip_model=_reference_id(cfg.clip_model), clip_pretrained=_reference_id(cfg.clip_pretrained))
    else:  # no reranking: CLIP plays no part
        settings = {k: v for k, v in settings.items() if "clip" not in k} | {"rerank": 1}
    return {"format": SAMPLES_FORMAT, "ckpt": checkpoint_id(ckpt), **settings, "completion": completion}


def caption_tokens(tok, prompts: list[dict], text_len: int) -> dict[str, int]:
    """Each prompt's caption length in BPE tokens; warns, naming them, about captions longer than the model's
    text window: the model never sees their end (samples.jsonl marks them text_truncated)."""
    ids, _ = encode_captions(tok, [p["caption"] for p in prompts], 10**9)
    tokens = {str(p["prompt_id"]): len(a) for p, a in zip(prompts, ids)}
    cut = [(pid, k) for pid, k in tokens.items() if k > text_len]
    if cut:
        shown = ", ".join(f"prompt {pid}: {k} tokens" for pid, k in cut[:3]) + (", ..." if len(cut) > 3 else "")
        warnings.warn(f"{len(cut)} of {len(tokens)} captions are longer than the model's {text_len}-token text window "
                      f"and were cut, the model never sees their end ({shown}); samples.jsonl marks them "
                      "text_truncated", stacklevel=3)
    return tokens


def _write_prompt(cands: list, n: int, out: Path, cfg: SampleConfig, ckpt: Path, scorer, rows_file: str,
                  have: frozenset = frozenset(), listed: frozenset = frozenset(), extra: dict | None = None) -> None:
    """Save a prompt's images (the best n by CLIP when reranking) and append their rows together; images in
    `have` are kept as they are, and a row in `listed` (its file was lost) is not written twice. `extra`: fields
    added to every row (the caption's token count and whether the text window cut it)."""
    p = cands[0][0]
    pid = str(p["prompt_id"])
    scores = scorer.scores([c[3] for c in cands], [p["caption"]] * len(cands)).tolist() if scorer else None
    if scorer:  # index = rank by CLIP score
        picks = list(enumerate(sorted(range(len(cands)), key=lambda i: -scores[i])[:n]))
    else:  # index = the draw's own index (its seed)
        picks = [(c[1], i) for i, c in enumerate(cands)]
    rows = []
    for index, i in picks:
        if (pid, index) in have:
            continue
        _, j, seed, img = cands[i]
        name = f"{pid}_{index}.png"
        with atomic_path(out / name) as tmp:
            img.save(tmp, format="PNG")
        if (pid, index) in listed:
            continue
        row = {"prompt_id": pid, "index": index, "caption": p["caption"], "file": name, "seed": seed,
               "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p, "ckpt": str(ckpt), **(extra or {})}
        if scorer:
            row.update(clip_score=scores[i], rank=index, candidate=j, rerank=len(cands), clip_model=cfg.clip_model,
                       random_clip=scorer.random)
        rows.append(row)
    if rows:
        append_jsonl_rows(out / rows_file, rows)


def done_rows(out: Path) -> list[dict]:
    """Rows of samples.jsonl and of the per-rank files of an unfinished sharded run, one per (prompt, index)."""
    rows = {}
    for f in row_files(out):
        for r in read_jsonl(f):
            rows.setdefault((str(r["prompt_id"]), r["index"]), r)
    return list(rows.values())


def finished_rows(out: Path) -> list[dict]:
    """done_rows whose image file exists."""
    return [r for r in done_rows(out) if (Path(out) / str(r.get("file"))).is_file()]


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
    rows_file: str = SAMPLES, overwrite: bool = False, claim: bool = True,
) -> Path:
    """Generate n images per prompt into `out`; returns the samples.jsonl path.

    With `image` and keep_rows or region: image completion, the kept tokens come from the image.
    `claim`: record this run's fingerprint in `out` first (a folder of another run is refused, or replaced
    with `overwrite`); False when the caller claimed the folder for a larger run (probes, coco-fid ranks).
    Rows go to `rows_file` (torchrun ranks each write their own, merged later by merge_rank_rows);
    images listed in samples.jsonl or any rank's file, with their file present, are skipped.
    """
    ckpt, out = Path(ckpt), Path(out)
    model = load_transformer(ckpt).to(cfg.device)
    image_tokenizer = load_image_tokenizer_dir(ckpt / DVAE_DIR).to(cfg.device)
    tok = load_tokenizer(ckpt / TOKENIZER)
    known = keep = None
    if image is not None:
        try:
            keep = completion_keep(model.cfg.grid, keep_rows, region)
        except ValueError as e:
            raise DalleEvalError(f"--keep-rows/--region: {e}") from None
        known = image_to_codes(image_tokenizer, Path(image)).cpu()
    scorer = None
    if cfg.rerank > 1:
        from dalle_eval.model.clip import ClipScorer

        if cfg.rerank < n:
            raise DalleEvalError(f"sample.rerank={cfg.rerank} draws fewer candidates than the {n} kept per caption")
        scorer = ClipScorer(cfg.clip_model, cfg.clip_pretrained or None, cfg.device, allow_random=cfg.random_clip)
    if claim:
        completion = None if image is None else {"image": file_sha256(image), "keep_rows": keep_rows,
                                                 "region": list(region) if region else None}
        claim_samples(out, {**sample_fingerprint(ckpt, cfg, completion), "captions": prompts_id(prompts)}, overwrite,
                      f"sample --ckpt {ckpt}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sample_config.json", {"ckpt": str(ckpt), "n": n, "sample": asdict(cfg), "image": str(image) if image else None,
                                            "keep_rows": keep_rows, "region": list(region) if region else None})
    n_draw = cfg.rerank if scorer else n
    listed = frozenset((str(r["prompt_id"]), r["index"]) for r in done_rows(out))
    have = frozenset((str(r["prompt_id"]), r["index"]) for r in finished_rows(out))
    todo, expect = [], {}
    for p in prompts:
        missing = [j for j in range(n) if (str(p["prompt_id"]), j) not in have]
        if missing:  # reranking draws every candidate again (to rank them) but writes only the missing ranks
            draws = range(n_draw) if scorer else missing
            expect[str(p["prompt_id"])] = len(draws)
            todo += [(p, j) for j in draws]
    L = model.cfg.text_len
    tokens = caption_tokens(tok, prompts, L)
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
        for (p, j), seed, img in zip(chunk, seeds, codes_to_images(image_tokenizer, codes)):
            pid = str(p["prompt_id"])
            pending.setdefault(pid, []).append((p, j, seed, img))
            if len(pending[pid]) == expect[pid]:  # all draws of this prompt are in
                _write_prompt(pending.pop(pid), n, out, cfg, ckpt, scorer, rows_file, have, listed,
                              {"text_tokens": tokens[pid], "text_truncated": tokens[pid] > L})
        bar.update(len(chunk))
    bar.close()
    return out / SAMPLES


def parse_region(region: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """--region "X0,Y0" (or a pair of ints) -> (x0, y0): the token column and row where the regenerated
    rectangle starts (it runs to the bottom-right); None stays None."""
    if region is None:
        return None
    try:
        corner = tuple(int(v) for v in (region.split(",") if isinstance(region, str) else region))
    except (TypeError, ValueError):
        corner = ()
    if len(corner) != 2:
        raise DalleEvalError(f"--region {region!r}: expected two integers X0,Y0 (token column, row)")
    return corner


def sample_command(
    ckpt: Path, cfg: SampleConfig, out: Path, prompts_file: Path | None = None, caption: str | None = None,
    n: int = 4, image: Path | None = None, keep_rows: int | None = None,
    region: str | tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True,
) -> dict:
    """`dalle-eval sample`: n images per caption (a prompts file, or one caption) into the samples dir `out`, and
    OUT/grid.png of the first 36; with `image` and keep_rows or region ("X0,Y0"), image completion.

    Refuses (DalleEvalError, named as the command's options) anything but exactly one of prompts_file and
    caption, an empty caption, and image without exactly one of keep_rows and region (or those without image).
    -> {"images": the images of these prompts now in `out`, "prompts", "samples": samples.jsonl, "grid",
    "random_clip": reranked with a random-init CLIP, "captions_cut": prompts longer than the text window}.
    """
    if (prompts_file is None) == (caption is None):
        raise DalleEvalError("give exactly one of --prompts FILE or --caption TEXT")
    if caption is not None and not caption.strip():
        raise DalleEvalError("--caption is empty: give the text to draw")
    if (image is None) != (keep_rows is None and region is None) or (keep_rows is not None and region is not None):
        raise DalleEvalError("image completion needs --image with exactly one of --keep-rows R or --region X0,Y0")
    corner = parse_region(region)
    items = read_prompts(prompts_file) if prompts_file else [{"prompt_id": "0", "caption": caption}]
    path = run_sample(ckpt, items, n, out, cfg, progress, image=image, keep_rows=keep_rows, region=corner,
                      overwrite=overwrite)
    wanted = {str(p["prompt_id"]) for p in items}
    rows = [r for r in finished_rows(out) if str(r["prompt_id"]) in wanted and r["index"] < n]  # files that exist
    grid = image_grid([(Path(out) / r["file"], r["caption"]) for r in rows[:36]], Path(out) / "grid.png")
    return {"images": len(rows), "prompts": len(items), "samples": path, "grid": grid,
            "random_clip": any(r.get("random_clip") for r in rows),
            "captions_cut": len({str(r["prompt_id"]) for r in rows if r.get("text_truncated")})}
