import pytest

from dalle_eval.config import Config, config_from_dict, config_to_dict, load_config, to_toml
from dalle_eval.errors import DalleEvalError


def test_defaults_are_the_paper():
    cfg = Config()
    assert cfg.transformer.n_layer == 64 and cfg.transformer.d_model == 3968
    assert cfg.transformer.text_loss_weight == pytest.approx(1 / 8)
    assert cfg.train.transformer.betas == (0.9, 0.96)


def test_named_configs_layer_and_set_overrides(tmp_path):
    extra = tmp_path / "extra.toml"
    extra.write_text("[transformer]\nn_layer = 3\n")
    cfg = load_config(["tiny", extra], ["train.seed=7", "train.dvae.betas=[0.5, 0.6]", "sample.top_k=0"])
    assert cfg.data.resolution == 64  # from tiny.toml
    assert cfg.transformer.n_layer == 3  # from the second file
    assert cfg.train.seed == 7 and cfg.train.dvae.betas == (0.5, 0.6) and cfg.sample.top_k == 0
    assert config_from_dict(config_to_dict(cfg)) == cfg  # the saved form rebuilds the same config


def test_twelve_billion_config():
    cfg = load_config(["dalle-12b"])
    t = cfg.transformer
    assert (t.n_layer, t.n_head, t.d_head, t.d_model) == (64, 62, 64, 3968)
    assert (t.text_len, t.text_vocab, t.image_len, t.image_vocab) == (256, 16384, 1024, 8192)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["transformer.n_layers=3"], "unknown option(s) n_layers"),
        (["transformer.n_layer=three"], "expected int"),
        (["nokey"], "expected key=value"),
    ],
)
def test_bad_overrides_name_the_option(overrides, message):
    with pytest.raises(DalleEvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config([], overrides)


def test_unknown_named_config():
    with pytest.raises(DalleEvalError, match="neither a file nor a named config"):
        load_config(["huge"])


def test_toml_round_trip(tmp_path):
    import tomllib

    cfg = load_config(["tiny"])
    again = config_from_dict(tomllib.loads(to_toml(config_to_dict(cfg))))
    assert again == cfg
