"""The shapes world as a data source: image shards, and a COCO-format validation split.

Sample i of a build is drawn from `random.Random(f"{seed}-{i}")`, so every shard is reproducible on
its own: a killed build re-renders only the shard that was in flight.

Control arm (`data.scramble`: "colour", "shape" or "size"): the training captions (shards' txt, pair table,
so also the BPE and the held-out validation shards) name, for every object, an independent uniformly random
value of that attribute, drawn from the sample's own stream `random.Random(f"{seed}-{i}-scramble-{attr}")`
(the scene's draws are untouched); image, scene JSON and every other word stay true. The model then learns
nothing about that attribute from text, while the probes still ask with true captions. The COCO-format split
keeps its true captions: it is an evaluation set (coco-fid, like the probes, asks for what is drawn) and is
identical in both arms. A scrambled caption may name a HELDOUT (colour, shape) pair; its image never shows one.

Paraphrase arm (`data.paraphrase`, the training side of the paraphrase probes): a `fraction` of the relation,
stack and multi captions is written in a phrasing (shapes/phrasing.py) drawn uniformly from the scene's
phrasings other than canonical and `heldout`, from the sample's own stream `random.Random(f"{seed}-{i}-paraphrase")`;
with scramble too, the scrambled scene is the one phrased. fraction 0 (the default) writes the canonical captions.
The COCO-format split keeps its canonical captions.

Translation arm (`data.translation_fraction`, the training side of the translation probes): that share of the
samples, decided by the sample's own stream `random.Random(f"{seed}-{i}-translation")`, is a two-panel scene
(shapes/panels.py) of the identity or recolour transform, whose caption is the panel caption (scramble and
paraphrase leave it alone); resize, reshape, mirrored and colour-swap never appear, so the probes ask whether
they emerge, as the DALL·E blog's zero-shot translations did. fraction 0 (the default) draws nothing from that
stream: images and captions byte for byte as without the arm. The COCO-format split has no two-panel scenes.

Raven arm (`data.raven_fraction`, the training side of the Raven probes): that share of the samples, decided
by the sample's own stream `random.Random(f"{seed}-{index}-raven")` (after the translation arm's draw), is a Raven
matrix drawn whole with its answer, captioned raven.CAPTION as the probes ask. Its items come from the stream
`raven-train-<seed>` (configuration from the same draw), which the probe items' `raven-<eval.seed>` never is;
scramble and paraphrase leave its caption alone. 0 (the default) draws nothing: the data byte for byte as before.

Stage-1 image set (`data.heldout_images`): the scenes may show the HELDOUT colour-shape pairs (sample_scene's
allow_heldout), so a dVAE trained on it has seen those pairs' pixels; build-dataset refuses to make tokens from
it, so no caption ever pairs them for the transformer.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from tqdm import tqdm

from dalle_eval.artifacts import write_json
from dalle_eval.config import ParaphraseConfig
from dalle_eval.images import png_bytes
from dalle_eval.raven import CAPTION as RAVEN_CAPTION
from dalle_eval.raven import CONFIGS as RAVEN_CONFIGS
from dalle_eval.raven import RavenItem, generate_item, render_matrix
from dalle_eval.shapes import COLOURS, SHAPES, SIZES, Scene, caption, render, sample_scene
from dalle_eval.shapes.panels import Translation, render_panels, training_translation
from dalle_eval.shapes.phrasing import KIND_FAMILIES, phrase
from dalle_eval.shards import shard_name, write_shard

COCO_ANNOTATIONS = "captions_val.json"


def _scene(seed: int, index: int, translation_fraction: float = 0.0, heldout_images: bool = False,
           raven_fraction: float = 0.0) -> Scene | Translation | RavenItem:
    """Training sample `index`'s scene: a two-panel scene with probability `translation_fraction`, a Raven
    matrix with probability `raven_fraction`, else a shapes scene (none holds a HELDOUT pair unless
    `heldout_images`: a stage-1 image set)."""
    if translation_fraction:
        rng = random.Random(f"{seed}-{index}-translation")
        if rng.random() < translation_fraction:
            return training_translation(rng)
    if raven_fraction:
        rng = random.Random(f"{seed}-{index}-raven")
        if rng.random() < raven_fraction:
            return generate_item(f"train-{seed}", index, rng.choice(sorted(RAVEN_CONFIGS)))
    return sample_scene(random.Random(f"{seed}-{index}"), allow_heldout=heldout_images)


CANONICAL = ParaphraseConfig()  # data.paraphrase off
SCRAMBLE_VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}


def training_caption(scene: Scene | Translation, seed: int, index: int, scramble: str = "",
                     paraphrase: ParaphraseConfig = CANONICAL) -> str:
    """The caption of training sample `index`: the true one, or with `scramble`'s attribute of each object
    replaced by an independent uniform draw from its values, and/or rephrased by `paraphrase` (each seeded by the
    sample: reproducible). A two-panel scene keeps its panel caption."""
    if isinstance(scene, Translation):
        return scene.caption()
    if isinstance(scene, RavenItem):
        return RAVEN_CAPTION
    if scramble:
        rng, values = random.Random(f"{seed}-{index}-scramble-{scramble}"), SCRAMBLE_VALUES[scramble]
        said = tuple(dataclasses.replace(o, **{scramble: rng.choice(values)}) for o in scene.objects)
        scene = dataclasses.replace(scene, objects=said)
    if paraphrase.fraction and scene.kind in KIND_FAMILIES:
        rng = random.Random(f"{seed}-{index}-paraphrase")
        allowed = [f for f in KIND_FAMILIES[scene.kind][1:] if f not in paraphrase.heldout]
        if rng.random() < paraphrase.fraction and allowed:
            return phrase(scene, rng.choice(allowed))
    return caption(scene)


def _sample(seed: int, index: int, scene, resolution: int, scramble: str, paraphrase: ParaphraseConfig) -> dict:
    if isinstance(scene, Translation):
        image = render_panels(scene, resolution)
    elif isinstance(scene, RavenItem):
        image = render_matrix(scene, resolution, scene.candidates[scene.answer])
    else:
        image = render(scene, resolution)
    return {
        "__key__": f"{index:09d}",
        "png": png_bytes(image),
        "txt": training_caption(scene, seed, index, scramble, paraphrase),
        "json": {"url": f"shapes://{seed}/{index}", "width": resolution, "height": resolution, "scene": scene.to_json()},
    }


def write_shapes_shards(out: Path, n: int, resolution: int, shard_size: int, seed: int,
                        scramble: str = "", paraphrase: ParaphraseConfig = CANONICAL,
                        translation_fraction: float = 0.0, heldout_images: bool = False,
                        raven_fraction: float = 0.0) -> list[dict]:
    """Render n training scenes into out/shard-*.tar (skipping whole shards already there), captions
    scrambled by `scramble` and rephrased by `paraphrase`, a `translation_fraction` of two-panel scenes, HELDOUT
    colour-shape pairs allowed with `heldout_images`, a `raven_fraction` of Raven matrices (see the module doc).

    Returns one pair-table row per sample.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    n_shards = (n + shard_size - 1) // shard_size
    for s in tqdm(range(n_shards), desc="render shapes shards", unit="shard"):
        scenes = [(i, _scene(seed, i, translation_fraction, heldout_images, raven_fraction))
                  for i in range(s * shard_size, min(n, (s + 1) * shard_size))]
        path = out / shard_name(s)
        if not path.exists():
            write_shard(path, (_sample(seed, i, scene, resolution, scramble, paraphrase) for i, scene in scenes))
        rows += [
            {"key": f"{i:09d}", "url": f"shapes://{seed}/{i}",
             "caption": training_caption(scene, seed, i, scramble, paraphrase),
             "status": "ok",
             "width": resolution, "height": resolution, "shard": path.name}
            for i, scene in scenes
        ]
    return rows


def write_coco_split(out: Path, n: int, resolution: int, seed: int) -> Path:
    """A COCO-format validation split (captions JSON + image folder) from a separate seed stream; true captions
    whatever data.scramble says (see the module doc)."""
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in tqdm(range(n), desc="render validation split", unit="img"):
        scene = sample_scene(random.Random(f"{seed}-val-{i}"))
        name = f"{i:012d}.png"
        if not (images_dir / name).exists():
            render(scene, resolution).save(images_dir / name)
        images.append({"id": i, "file_name": name, "width": resolution, "height": resolution})
        annotations.append({"id": i, "image_id": i, "caption": caption(scene), "scene": scene.to_json()})
    return write_json(out / COCO_ANNOTATIONS, {"images": images, "annotations": annotations})
