"""Shared fixtures: a tiny shapes dataset, dVAE and token shards built once per session (CPU, seconds)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from dalle_eval.config import load_config

# Smaller than `tiny` so each training step takes milliseconds.
FAST = [
    "dvae.n_hid=8",
    "train.dvae.batch_size=8",
    "train.dvae.steps=6",
    "transformer.n_layer=2",
    "transformer.d_model=64",
    "transformer.n_head=2",
    "transformer.d_head=32",
    "train.transformer.batch_size=8",
    "train.transformer.steps=6",
    "train.transformer.warmup=2",
    'train.transformer.precision=""',  # fp32 (train.precision), not tiny's bf16: tests set precision themselves
    "train.log_every=2",
    "train.ckpt_every=3",
    "train.val_every=4",
    "train.val_samples=16",
    "train.sample_every=0",
    "train.probe_every=0",  # probes inside training have their own tests (test_training_probes.py)
    "train.num_workers=0",
    "train.peak_tflops=0.16",
    "data.shard_size=64",
    "data.n_val=16",
    "data.download_retries=0",
    "sample.batch_size=8",
    "eval.n_captions=8",
    "eval.fid_batch=8",
    "eval.probe_samples=1",
]


@pytest.fixture(scope="session")
def fast_cfg():
    return load_config(["tiny"], FAST)


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory, fast_cfg):
    from dalle_eval.pipelines.build import build_dataset

    out = tmp_path_factory.mktemp("data")
    build_dataset(fast_cfg, "shapes", out, n=160)
    return out


@pytest.fixture(scope="session")
def dvae_ckpt(tmp_path_factory, fast_cfg, shapes_data):
    from dalle_eval.model.train import train

    out = tmp_path_factory.mktemp("dvae")
    train("dvae", shapes_data, fast_cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def token_data(fast_cfg, shapes_data, dvae_ckpt):
    from dalle_eval.pipelines.build import build_dataset

    build_dataset(fast_cfg, "shapes", shapes_data, n=160, dvae=dvae_ckpt)
    return shapes_data


@pytest.fixture(scope="session")
def transformer_ckpt(tmp_path_factory, fast_cfg, token_data):
    from dalle_eval.model.train import train

    out = tmp_path_factory.mktemp("transformer")
    train("transformer", token_data, fast_cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A small open_clip model config and random weights on disk (no downloads) -> (config JSON, weights)."""
    import json

    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    (folder / "tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(folder / "tiny-clip.json"))
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip", pretrained=None).state_dict(), folder / "tiny-clip.pt")
    return str(folder / "tiny-clip.json"), str(folder / "tiny-clip.pt")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Caches (FID reference statistics) go to a temp dir, never to the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
