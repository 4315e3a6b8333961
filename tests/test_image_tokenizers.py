"""Image tokenizers as a choice: OpenAI's released dVAE and a taming-transformers VQGAN, cross-checked against the
reference packages (`dall_e`, `taming`: random weights saved the way each project saves them), then the whole chain
(build-dataset -> train transformer -> sample) through the CLI with each kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from dalle_eval.model.image_tokenizer import (
    INFO,
    load_image_tokenizer,
    load_image_tokenizer_dir,
    parse_image_tokenizer,
    save_image_tokenizer,
)
from dalle_eval.model.stage2 import check_manifest
from PIL import Image

from dalle_eval.cli import main
from dalle_eval.config import load_config
from dalle_eval.errors import DalleEvalError
from tests.conftest import FAST

dall_e = pytest.importorskip("dall_e", reason="install the dev extras (make install-dev): dall-e==0.1 with --no-deps")
taming_model = pytest.importorskip("taming.modules.diffusionmodules.model",
                                   reason="install the dev extras (make install-dev): taming-transformers-rom1504")
from taming.modules.vqvae.quantize import VectorQuantizer

SIZE = 64  # the tiny shapes world's resolution: OpenAI's dVAE -> 8x8 codes, the f16 VQGAN -> 4x4
# A tiny f16 VQGAN in taming's config format (5 levels: 64 -> 4 px; attention at the 8 px level and in the middle)
DDCONFIG = {"double_z": False, "z_channels": 32, "resolution": SIZE, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
VQ_PARAMS = {"embed_dim": 16, "n_embed": 48}


def _redraw_biases(module: torch.nn.Module) -> None:
    """Random biases and norm gains too, so a parameter copied to the wrong place shows."""
    for p in module.parameters():
        if p.ndim == 1:
            p.data.normal_(0, 0.1)


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory):
    torch.manual_seed(0)
    enc = dall_e.Encoder(n_hid=16, vocab_size=64, n_blk_per_group=1, requires_grad=False)
    dec = dall_e.Decoder(n_hid=16, n_init=16, vocab_size=64, n_blk_per_group=1, requires_grad=False)
    for m in (enc, dec):
        _redraw_biases(m)
    folder = tmp_path_factory.mktemp("openai")
    torch.save(enc, folder / "encoder.pkl")  # whole pickled modules, like the release
    torch.save(dec, folder / "decoder.pkl")
    return enc, dec, f"openai:{folder / 'encoder.pkl'},{folder / 'decoder.pkl'}"


class _TamingVQModel(torch.nn.Module):
    """taming.models.vqgan.VQModel's weights (that class needs pytorch-lightning): its own modules, its names."""

    def __init__(self):
        super().__init__()
        self.encoder = taming_model.Encoder(**DDCONFIG)
        self.decoder = taming_model.Decoder(**DDCONFIG)
        self.quantize = VectorQuantizer(VQ_PARAMS["n_embed"], VQ_PARAMS["embed_dim"], beta=0.25)
        self.quant_conv = torch.nn.Conv2d(DDCONFIG["z_channels"], VQ_PARAMS["embed_dim"], 1)
        self.post_quant_conv = torch.nn.Conv2d(VQ_PARAMS["embed_dim"], DDCONFIG["z_channels"], 1)

    @torch.no_grad()
    def codes_and_pixels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VQModel.encode's indices and VQModel.decode_code's images of them (taming's own code paths)."""
        _, _, (_, _, idx) = self.quantize(self.quant_conv(self.encoder(x * 2 - 1)))
        g = x.shape[-1] // 16
        z_q = self.quantize.get_codebook_entry(idx[:, 0], (len(x), g, g, VQ_PARAMS["embed_dim"]))
        return idx.reshape(len(x), g, g), self.decoder(self.post_quant_conv(z_q))


def write_vqgan(folder: Path, extra: dict | None = None) -> tuple[_TamingVQModel, str]:
    """A random-init VQModel saved as Lightning does ({"state_dict", ...}) + taming's config.yaml -> (model, spec)."""
    import argparse

    import yaml

    torch.manual_seed(1)
    ref = _TamingVQModel().eval()
    _redraw_biases(ref)
    state = {**ref.state_dict(), "loss.discriminator.main.0.weight": torch.zeros(2, 3, 4, 4)}  # not ours: skipped
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.0.8",
            "hparams": argparse.Namespace(lr=4.5e-6), **(extra or {})}  # an object: not weights_only-loadable
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / "last.ckpt")
    config = {"model": {"base_learning_rate": 4.5e-6, "target": "taming.models.vqgan.VQModel",
                        "params": {**VQ_PARAMS, "ddconfig": DDCONFIG,
                                   "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                                                  "params": {"disc_start": 250001}}}}}
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return ref, f"vqgan:{folder / 'last.ckpt'},{folder / 'model.yaml'}"


@pytest.fixture(scope="module")
def vqgan_files(tmp_path_factory):
    return write_vqgan(tmp_path_factory.mktemp("vqgan"))


def _images(n: int = 3) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(n, 3, SIZE, SIZE)


def test_openai_codes_and_pixels_match_dall_e_also_after_saving(openai_files, tmp_path):
    enc, dec, spec = openai_files
    x = _images()
    with torch.no_grad():
        theirs = enc(dall_e.map_pixels(x)).argmax(1)  # (B, 8, 8)
        z = torch.nn.functional.one_hot(theirs, 64).permute(0, 3, 1, 2).float()
        pixels = dall_e.unmap_pixels(torch.sigmoid(dec(z)[:, :3]))
    info = save_image_tokenizer(spec, tmp_path / "dvae", image_size=SIZE)
    for tok in (load_image_tokenizer(spec, image_size=SIZE), load_image_tokenizer_dir(tmp_path / "dvae")):
        assert (tok.kind, tok.grid, tok.vocab_size, tok.image_size) == ("openai", 8, 64, SIZE)
        assert torch.equal(tok.encode(x), theirs)
        assert (tok.decode(theirs) - pixels).abs().max() <= 1e-5
    assert info == json.loads((tmp_path / "dvae" / INFO).read_text())
    assert info["kind"] == "openai" and set(info["sha256"]) == {"encoder.pkl", "decoder.pkl"}


def test_vqgan_codes_and_pixels_match_taming_also_after_saving(vqgan_files, tmp_path):
    ref, spec = vqgan_files
    x = _images()
    theirs, decoded = ref.codes_and_pixels(x)
    pixels = ((decoded + 1) / 2).clamp(0, 1)
    assert len(theirs.unique()) > 1  # the check would be empty if every position took one code
    info = save_image_tokenizer(spec, tmp_path / "dvae", image_size=SIZE)
    for tok in (load_image_tokenizer(spec, image_size=SIZE), load_image_tokenizer_dir(tmp_path / "dvae")):
        assert (tok.kind, tok.grid, tok.vocab_size, tok.image_size) == ("vqgan", 4, 48, SIZE)
        assert torch.equal(tok.encode(x), theirs)
        assert (tok.decode(theirs) - pixels).abs().max() <= 1e-5
    assert info["kind"] == "vqgan" and set(info["sha256"]) == {"last.ckpt", "model.yaml"}
    assert not any(k.startswith("loss.") for k in load_image_tokenizer_dir(tmp_path / "dvae").state_dict())


def test_the_openai_size_is_not_assumed_tiny(openai_files):
    """Released weights: 256 px -> 32x32; the tokenizer takes the data's resolution, a multiple of 8."""
    tok = load_image_tokenizer(openai_files[2], image_size=256)
    assert (tok.grid, tok.image_size) == (32, 256) and tok.encode(torch.rand(1, 3, 256, 256)).shape == (1, 32, 32)
    with pytest.raises(DalleEvalError, match="needs a multiple of 8"):
        load_image_tokenizer(openai_files[2], image_size=60)


def test_specs_are_parsed_or_refused_in_one_line(tmp_path, openai_files, vqgan_files):
    assert parse_image_tokenizer(openai_files[2]).kind == "openai"
    assert parse_image_tokenizer(vqgan_files[1]).kind == "vqgan"
    (tmp_path / "a.pkl").write_bytes(b"")
    for spec, message in [
        (f"gumbel:{tmp_path / 'a.pkl'}", "unknown image tokenizer 'gumbel'"),
        (f"openai:{tmp_path / 'a.pkl'}", "openai takes two files, openai:ENCODER.pkl,DECODER.pkl"),
        (f"openai:{tmp_path / 'a.pkl'},{tmp_path / 'b.pkl'}", "b.pkl not found; get https://cdn.openai.com/dall-e"),
        (f"vqgan:{tmp_path / 'x.ckpt'},{tmp_path / 'a.pkl'}", "x.ckpt not found; get an f16 VQGAN"),
        (str(tmp_path), "no config.json; expected a dVAE checkpoint dir"),
    ]:
        with pytest.raises(DalleEvalError, match=message):
            parse_image_tokenizer(spec)


def test_vqgan_files_are_read_without_running_code(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _, spec = write_vqgan(tmp_path, extra={"callbacks": Evil()})
    with pytest.raises(DalleEvalError, match="refusing to load global (posix|os|nt).system"):
        load_image_tokenizer(spec, image_size=SIZE)
    config = tmp_path / "model.yaml"
    config.write_text(config.read_text().replace("taming.models.vqgan.VQModel", "taming.models.vqgan.GumbelVQ"))
    with pytest.raises(DalleEvalError, match="model.target is taming.models.vqgan.GumbelVQ; only"):
        load_image_tokenizer(spec, image_size=SIZE)
    config.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(DalleEvalError, match="not a taming-transformers VQGAN config.yaml"):
        load_image_tokenizer(spec, image_size=SIZE)


def test_a_grid_or_vocab_of_another_tokenizer_is_refused_naming_both(tmp_path):
    cfg = load_config(["tiny"], FAST)  # an 8x8 grid of 128 codes
    manifest = {"shards": [], "text_len": cfg.transformer.text_len, "grid": 16, "image_vocab": 16384,
                "text_vocab": 10, "tokenizer_sha256": "", "dvae_sha256": "", "image_tokenizer": {"kind": "vqgan"}}
    with pytest.raises(DalleEvalError, match=r"grid=16 \(made by the vqgan image tokenizer\) but transformer.grid=8 "
                                             r".*--set transformer.grid=16"):
        check_manifest(manifest, cfg, tmp_path)
    with pytest.raises(DalleEvalError, match=r"image_vocab=16384 \(made by the vqgan image tokenizer\) but "
                                             r"transformer.image_vocab=128"):
        check_manifest({**manifest, "grid": 8}, cfg, tmp_path)


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def _fast_sets(*extra: str) -> list[str]:
    return [a for s in (*FAST, *extra) for a in ("--set", s)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "vqgan"])
def test_build_train_sample_with_each_tokenizer(tmp_path, kind, openai_files, vqgan_files):
    spec = openai_files[2] if kind == "openai" else vqgan_files[1]
    grid, vocab = (8, 64) if kind == "openai" else (4, 48)
    data, run, samples = tmp_path / "data", tmp_path / "run", tmp_path / "samples"
    _cli("build-dataset", "--source", "shapes", "--n", 48, "--out", data, "--dvae", spec, "--config", "tiny",
         *_fast_sets("data.shard_size=24"))  # two shards: one for validation
    manifest = json.loads((data / "tokens" / "manifest.json").read_text())
    sources = [Path(f) for f in spec.split(":", 1)[1].split(",")]
    assert manifest["image_tokenizer"]["kind"] == kind and (manifest["grid"], manifest["image_vocab"]) == (grid, vocab)
    from dalle_eval.artifacts import sha256_file

    assert manifest["image_tokenizer"]["sha256"] == {p.name: sha256_file(p) for p in sources}
    # the transformer must be told the tokenizer's grid and vocab; else it is refused naming both
    bad = CliRunner().invoke(main, ["train", "--stage", "transformer", "--data", str(data), "--out", str(tmp_path / "x"),
                                    "--config", "tiny", *_fast_sets()])
    assert bad.exit_code != 0 and f"made by the {kind} image tokenizer" in bad.output
    _cli("train", "--stage", "transformer", "--data", data, "--out", run, "--config", "tiny",
         *_fast_sets(f"transformer.grid={grid}", f"transformer.image_vocab={vocab}", "train.transformer.steps=3"))
    assert json.loads((run / "dvae" / INFO).read_text())["kind"] == kind  # the run decodes with the same one
    _cli("sample", "--ckpt", run, "--caption", "a small red circle", "--n", 2, "--out", samples, "--config", "tiny")
    pngs = sorted(samples.glob("0_*.png"))
    assert len(pngs) == 2 and all(Image.open(p).size == (SIZE, SIZE) for p in pngs)
    # probes encode oracle images and decode codes with the run's own tokenizer (likelihood and dVAE ceiling)
    _cli("probes", "run", "--suite", "attributes", "--scorer", "likelihood", "--ckpt", run, "--out", tmp_path / "p",
         "--config", "tiny", *_fast_sets())
    scorers = {r["scorer"] for r in json.loads((tmp_path / "p" / "report.json").read_text())["table"]}
    assert {"likelihood", "dvae_ceiling"} <= scorers


def test_our_dvae_is_the_dalle_eval_kind_with_the_record_it_had(token_data):
    from dalle_eval.artifacts import sha256_file

    manifest = json.loads((token_data / "tokens" / "manifest.json").read_text())
    record = manifest["image_tokenizer"]
    assert record["kind"] == "dalle_eval" and (record["grid"], record["vocab"]) == (manifest["grid"], manifest["image_vocab"])
    assert record["sha256"] == {"model.safetensors": manifest["dvae_sha256"]}
    assert manifest["dvae_sha256"] == sha256_file(token_data / "tokens" / "dvae" / "model.safetensors")
    fingerprint = json.loads((token_data / "tokens" / "fingerprint.json").read_text())
    assert "dvae_sha256" in json.dumps(fingerprint) and "image_tokenizer" not in json.dumps(fingerprint)
