"""Cross-check against OpenAI's own `dall_e` package (random weights, saved the way OpenAI did)."""

import pytest
import torch

dall_e = pytest.importorskip("dall_e", reason="install the dev extras: pip install --no-deps dall-e==0.1 attrs")

from dalle_eval.model.dvae import map_pixels
from dalle_eval.model.openai_dvae import load_openai_dvae

from dalle_eval.errors import DalleEvalError


@pytest.fixture(scope="module")
def openai_pickles(tmp_path_factory):
    torch.manual_seed(0)
    enc = dall_e.Encoder(n_hid=32, vocab_size=256, n_blk_per_group=1, requires_grad=False)
    dec = dall_e.Decoder(n_hid=32, n_init=32, vocab_size=256, n_blk_per_group=1, requires_grad=False)
    for m in (enc, dec):  # re-draw biases too, so a parameter copied to the wrong place shows
        for p in m.parameters():
            p.data.normal_(0, 0.05) if p.ndim == 1 else None
    folder = tmp_path_factory.mktemp("openai")
    torch.save(enc, folder / "encoder.pkl")  # whole pickled modules, like the release
    torch.save(dec, folder / "decoder.pkl")
    return enc, dec, folder


def test_codes_and_decoder_match_openai(openai_pickles):
    enc, dec, folder = openai_pickles
    ours = load_openai_dvae(folder / "encoder.pkl", folder / "decoder.pkl")
    assert ours.cfg.vocab_size == 256 and ours.cfg.n_hid == 32 and ours.cfg.n_blk_per_group == 1
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        theirs = enc(dall_e.map_pixels(x)).argmax(1)
        assert torch.equal(ours.encode(x), theirs)  # every position
        z = torch.nn.functional.one_hot(theirs, 256).permute(0, 3, 1, 2).float()
        assert (ours.decoder(z) - dec(z)).abs().max() <= 1e-5
        assert torch.equal(map_pixels(x), dall_e.map_pixels(x))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pkl")
    with pytest.raises(DalleEvalError, match="refusing to load global"):
        load_openai_dvae(tmp_path / "evil.pkl", tmp_path / "evil.pkl")


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DalleEvalError, match="encoder.pkl: not found"):
        load_openai_dvae(tmp_path / "encoder.pkl", tmp_path / "decoder.pkl")
