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


# --------------------------------------------------------------------------- enum-like options (Literal types)

ENUMS = [  # (option, a bad value, the allowed values as the message lists them)
    ("data.download_distributor", "spark", "multiprocessing, pyspark, ray"),
    ("transformer.attention", "sprase", "full, sparse"),
    ("transformer.attention_backend", "cudnn", "auto, flex, sdpa"),
    ("train.dvae.recon_loss", "l1", "logit_laplace, mse"),
    ("train.transformer.schedule", "linear", "cosine, halving, plateau"),
    ("train.precision", "fp16", "bf16, fp32"),
    ("train.parallel", "zero", "ddp, fsdp"),
    ("train.on_bad_shard", "ignore", "fail, skip"),
    ("eval.clip_score", "yes", "auto, off, on"),
]


def _nested(key: str, value) -> dict:
    *tables, leaf = key.split(".")
    out: dict = {leaf: value}
    for t in reversed(tables):
        out = {t: out}
    return out


@pytest.mark.parametrize("key, bad, allowed", ENUMS)
def test_enum_options_are_checked_at_load(tmp_path, key, bad, allowed):
    """A value outside an option's Literal is refused wherever it is set: a TOML file, --set, a saved config."""
    message = f"{key}: '{bad}' is not one of {allowed}"
    with pytest.raises(DalleEvalError, match=f"^--set {message}$"):
        load_config(["tiny"], [f"{key}={bad}"])
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(_nested(key, bad)))
    with pytest.raises(DalleEvalError, match=f"^{path}:{message}$"):
        load_config(["tiny", path])
    saved = config_to_dict(load_config(["tiny"]))
    *tables, leaf = key.split(".")
    node = saved
    for t in tables:
        node = node[t]
    node[leaf] = bad
    with pytest.raises(DalleEvalError, match=f"^config.json:{message}$"):
        config_from_dict(saved, where="config.json:")
    for good in allowed.split(", "):  # every listed value loads
        assert load_config(["tiny"], [f"{key}={good}"]) is not None


def test_enum_option_through_the_cli_is_one_line():
    from click.testing import CliRunner

    from dalle_eval.cli import main

    r = CliRunner().invoke(main, ["info", "--set", "transformer.attention=sprase"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == ["Error: --set transformer.attention: 'sprase' is not one of full, sparse"]


# --------------------------------------------------------------------------- values that must agree

AGREE = [  # (one option, the other): the same number, derived from whichever a layer states
    ("data.resolution", "dvae.image_size"),
    ("data.bpe_vocab", "transformer.text_vocab"),
    ("dvae.vocab_size", "transformer.image_vocab"),
]


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", ["tiny", "dalle-1.3b", "dalle-12b", None])
def test_defaults_and_named_configs_agree(name):
    cfg = load_config([name] if name else [])
    for a, b in AGREE:
        assert _get(cfg, a) == _get(cfg, b), (a, b)
    assert cfg.transformer.grid == cfg.dvae.grid


@pytest.mark.parametrize("name", ["tiny", "dalle-1.3b", "dalle-12b"])
def test_named_configs_state_each_shared_value_once(name):
    """dalle_eval/configs/*.toml state one option of each agreeing pair; the other is derived at load."""
    import tomllib

    from dalle_eval.config import named_config_dir

    values = tomllib.loads((named_config_dir() / f"{name}.toml").read_text())

    def stated(key):
        node = values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for group in [*AGREE, ("data.resolution", "dvae.image_size", "transformer.grid")]:
        assert sum(stated(k) for k in group) <= 1, (name, group)


@pytest.mark.parametrize("key, value, derived", [
    ("data.resolution", 128, {"dvae.image_size": 128, "transformer.grid": 16, "data.resolution": 128}),
    ("dvae.image_size", 32, {"data.resolution": 32, "transformer.grid": 4}),
    ("transformer.grid", 3, {"dvae.image_size": 24, "data.resolution": 24}),
    ("dvae.group_count", 3, {"transformer.grid": 16, "dvae.image_size": 64}),
    ("data.bpe_vocab", 1000, {"transformer.text_vocab": 1000}),
    ("transformer.text_vocab", 5, {"data.bpe_vocab": 5}),
    ("dvae.vocab_size", 64, {"transformer.image_vocab": 64}),
    ("transformer.image_vocab", 6, {"dvae.vocab_size": 6}),
])
def test_one_value_sets_the_values_that_must_agree(key, value, derived):
    cfg = load_config(["tiny"], [f"{key}={value}"])
    assert {k: _get(cfg, k) for k in derived} == derived
    assert cfg.eval.resolution == 64  # the FID resolution is a protocol choice of its own (tiny: 64)


@pytest.mark.parametrize("sets, message", [
    (["data.resolution=64", "dvae.image_size=128"], "data.resolution=64 but dvae.image_size=128: they must agree"),
    (["data.bpe_vocab=512", "transformer.text_vocab=600"],
     "data.bpe_vocab=512 but transformer.text_vocab=600: they must agree"),
    (["dvae.vocab_size=128", "transformer.image_vocab=256"],
     "dvae.vocab_size=128 but transformer.image_vocab=256: they must agree"),
    (["data.resolution=64", "transformer.grid=16"],
     "data.resolution=64 and dvae.group_count=4 make a code grid of 8x8 but transformer.grid=16: they must agree"),
])
def test_values_that_disagree_are_refused_naming_both(tmp_path, sets, message):
    import re

    with pytest.raises(DalleEvalError, match="^--set " + re.escape(message) + "$"):
        load_config(["tiny"], sets)
    path = tmp_path / "clash.toml"
    tables: dict = {}
    for item in sets:
        key, value = item.split("=")
        table, leaf = key.split(".")
        tables.setdefault(table, {})[leaf] = int(value)
    path.write_text(to_toml(tables))
    with pytest.raises(DalleEvalError, match="^" + re.escape(f"{path}:{message}") + "$"):
        load_config(["tiny", path])
    saved = config_to_dict(load_config(["tiny"]))
    for table, leaves in tables.items():
        saved[table].update(leaves)
    with pytest.raises(DalleEvalError, match="^" + re.escape(f"config.json:{message}") + "$"):
        config_from_dict(saved, where="config.json:")


def test_image_size_must_halve_to_the_grid():
    """The dVAE halves the image dvae.group_count - 1 times: another size is refused at load, naming both values."""
    import re

    with pytest.raises(DalleEvalError, match="^" + re.escape(
            "--set data.resolution=100 and dvae.group_count=4: the image size must be a multiple of "
            "2**(dvae.group_count - 1) = 8") + r" \("):
        load_config(["tiny"], ["data.resolution=100"])
    with pytest.raises(DalleEvalError, match=re.escape("dvae.image_size=64 and dvae.group_count=10")):
        load_config(["tiny"], ["dvae.group_count=10"])


def test_values_that_disagree_through_the_cli_are_one_line():
    from click.testing import CliRunner

    from dalle_eval.cli import main

    r = CliRunner().invoke(main, ["info", "--set", "data.resolution=64", "--set", "dvae.image_size=128"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == ["Error: --set data.resolution=64 but dvae.image_size=128: they must agree"]


# --------------------------------------------------------------------------- defaults live in the dataclasses


def test_post_filter_defaults_are_the_config_fields():
    """pipelines/dedup.py and clip_filter.py default to FilterConfig's fields (one reference), no second literal."""
    import inspect

    from dalle_eval.pipelines import clip_filter, dedup

    from dalle_eval.config import FilterConfig

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert not hasattr(clip_filter, "DEFAULT_CLIP_THRESHOLD")
    for fn in (clip_filter.clip_filter, clip_filter.clip_filter_shards):
        assert default(fn, "threshold") is FilterConfig.clip_threshold
    for fn in (dedup.near_pairs, dedup.near_duplicates):
        assert default(fn, "threshold") is FilterConfig.dedup_threshold
    assert default(dedup.eval_overlap, "threshold") is FilterConfig.eval_threshold


def test_a_config_may_name_its_base(tmp_path):
    child = tmp_path / "child.toml"
    child.write_text('base = "tiny"\n[train.transformer]\nsteps = 5\n')
    cfg = load_config([child])
    assert cfg.transformer.n_layer == load_config(["tiny"]).transformer.n_layer and cfg.train.transformer.steps == 5
    loop = tmp_path / "loop.toml"
    loop.write_text(f'base = "{loop}"\n')
    with pytest.raises(DalleEvalError, match="loop"):
        load_config([loop])
    bad = tmp_path / "bad.toml"
    bad.write_text("base = 3\n")
    with pytest.raises(DalleEvalError, match="expected the name or path"):
        load_config([bad])
