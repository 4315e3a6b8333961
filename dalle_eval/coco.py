"""MS-COCO-format validation data for `coco-fid`: find the files, pick the seeded caption subset, export it.

    find_coco(dir)            -> (captions JSON, image folder) for 2014/2017 layouts or a flat dir
    choose_subset(...)        -> the prompts: [{prompt_id, image_id, caption, image}], seeded
    load_or_choose_subset(..) -> the same, saved as OUT/subset.json and reused by later runs
    export_captions(...)      -> JSONL {prompt_id, caption, image_id} for any other generator

The paper evaluates on 30,000 captions of the validation set, one per image; prompt ids are COCO
caption (annotation) ids, so a subset exported here and one reloaded from a file name the same rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from dalle_eval.artifacts import atomic_path, read_json, read_jsonl, sha256_file, write_json
from dalle_eval.errors import DalleEvalError

SUBSET = "subset.json"


def find_coco(coco: Path) -> tuple[Path, Path]:
    """COCO dir -> (captions_val20xx.json, image folder). Accepts the official layout (annotations/ +
    val2014/ or val2017/), a flat dir (captions JSON + images/), or the captions JSON file itself."""
    coco = Path(coco)
    if coco.is_file():
        files, root = [coco], coco.parent.parent if coco.parent.name == "annotations" else coco.parent
    else:
        files = sorted(coco.glob("captions_val*.json")) or sorted(coco.glob("annotations/captions_val*.json"))
        root = coco
    if not files:
        raise DalleEvalError(f"--coco {coco}: no captions_val*.json here or in annotations/ (expected MS-COCO "
                             "layout: annotations/captions_val2014.json + val2014/, or captions JSON + images/)")
    split = files[0].stem.replace("captions_", "")  # val2014 / val2017 / val
    for d in (root / split, root / "images" / split, root / "images"):
        if d.is_dir():
            return files[0], d
    raise DalleEvalError(f"--coco {coco}: no image folder for {files[0].name} (looked for {split}/, images/{split}/, images/)")


def _annotations(captions: Path, image_dir: Path) -> tuple[dict[int, str], dict[int, list[dict]]]:
    data = read_json(captions, "COCO captions")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DalleEvalError(f"{captions}: not a COCO captions file (expected 'images' and 'annotations' lists)")
    files, per_image = {}, {}
    for i, im in enumerate(data["images"]):
        if "id" not in im or "file_name" not in im:
            raise DalleEvalError(f"{captions}: images[{i}] lacks 'id' or 'file_name'")
        files[im["id"]] = str(image_dir / im["file_name"])
    for i, a in enumerate(data["annotations"]):
        if not {"id", "image_id", "caption"} <= a.keys():
            raise DalleEvalError(f"{captions}: annotations[{i}] lacks 'id', 'image_id' or 'caption'")
        if a["image_id"] in files and str(a["caption"]).strip():
            per_image.setdefault(a["image_id"], []).append(a)
    return files, per_image


def choose_subset(captions: Path, image_dir: Path, n: int, seed: int, per_image: int = 1) -> list[dict]:
    """n captions, `per_image` from each of ceil(n / per_image) images drawn with `seed` -> sorted by prompt_id."""
    if n < 1 or per_image < 1:
        raise DalleEvalError(f"eval.n_captions ({n}) and eval.captions_per_image ({per_image}) must be >= 1")
    files, anns = _annotations(captions, image_dir)
    rng = random.Random(f"coco-subset-{seed}")
    images = sorted(anns)
    rng.shuffle(images)
    chosen = []
    for image_id in images[: -(-n // per_image)]:
        pool = sorted(anns[image_id], key=lambda a: a["id"])
        for a in rng.sample(pool, min(per_image, len(pool))):
            chosen.append({"prompt_id": str(a["id"]), "image_id": image_id, "caption": str(a["caption"]).strip(),
                           "image": files[image_id]})
    if len(chosen) < n:
        print(f"coco-fid: {captions.name} has {len(chosen)} usable captions (< eval.n_captions={n}); using all")
    return sorted(chosen[:n], key=lambda c: (len(c["prompt_id"]), c["prompt_id"]))


def load_or_choose_subset(coco: Path, out: Path, n: int, seed: int, per_image: int = 1,
                          subset_file: Path | None = None) -> list[dict]:
    """The run's prompts: from --subset FILE, else OUT/subset.json when made with the same inputs, else
    chosen now and saved there (so a resumed or repeated run evaluates the very same captions)."""
    captions, image_dir = find_coco(coco)
    if subset_file is not None:
        return read_subset(subset_file, captions, image_dir)
    spec = {"captions_file": captions.name, "captions_sha256": sha256_file(captions), "n": n, "seed": seed,
            "captions_per_image": per_image}
    saved = Path(out) / SUBSET
    if saved.exists():
        old = read_json(saved, "subset")
        if {k: old.get(k) for k in spec} != spec:
            diff = ", ".join(f"{k}: {old.get(k)} -> {v}" for k, v in spec.items() if old.get(k) != v)
            raise DalleEvalError(f"{saved} was chosen with other inputs ({diff}); use a new --out, or delete it "
                                 "(its samples belong to the old subset)")
        return read_subset(saved, captions, image_dir)
    prompts = choose_subset(captions, image_dir, n, seed, per_image)
    write_json(saved, {**spec, "prompts": [{k: p[k] for k in ("prompt_id", "image_id", "caption")} for p in prompts]})
    return prompts


def read_subset(path: Path, captions: Path, image_dir: Path) -> list[dict]:
    """subset.json of a run, or an exported JSONL ({prompt_id, caption, image_id} per line)."""
    path = Path(path)
    if not path.exists():
        raise DalleEvalError(f"--subset {path}: file not found")
    rows = read_json(path, "subset").get("prompts", []) if path.suffix == ".json" else read_jsonl(path)
    if not rows:
        raise DalleEvalError(f"--subset {path}: no prompts in the file")
    files, _ = _annotations(captions, image_dir)
    prompts = []
    for i, r in enumerate(rows, 1):
        if not {"prompt_id", "caption", "image_id"} <= r.keys():
            raise DalleEvalError(f"{path}: row {i} lacks prompt_id, caption or image_id")
        if r["image_id"] not in files:
            raise DalleEvalError(f"{path}: row {i}: image_id {r['image_id']} is not in {captions}")
        prompts.append({**r, "prompt_id": str(r["prompt_id"]), "image": files[r["image_id"]]})
    return prompts


def export_captions(prompts: list[dict], path: Path) -> Path:
    """JSONL {prompt_id, caption, image_id}: what another generator needs to make the images."""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text("".join(json.dumps({k: p[k] for k in ("prompt_id", "caption", "image_id")}) + "\n"
                                     for p in prompts))
    return Path(path)
