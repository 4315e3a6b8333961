import json
import math

import pytest
from PIL import Image

from dalle_eval.errors import DalleEvalError
from dalle_eval.plots import load_metrics, plot_metrics


def _train(step: int, stage: int = 2) -> dict:
    loss = 3.0 * math.exp(-step / 200) + 0.5
    parts = {"text_loss": loss * 1.5, "image_loss": loss * 0.9} if stage == 2 else {"recon": loss, "kl": 4.5}
    return {
        "split": "train",
        "step": step,
        "loss": loss,
        **parts,
        "lr": 1e-3 * min(1.0, step / 100),
        "grad_norm": 2.0 / (1 + step / 100),
        "tokens_per_s": 5e4,
        "samples_per_s": 120.0,
    }


def _val(step: int) -> dict:
    loss = 3.2 * math.exp(-step / 200) + 0.6
    return {
        "split": "val",
        "step": step,
        "val_loss": loss,
        "val_text_loss": loss * 1.5,
        "val_image_loss": loss,
    }


def _write(run_dir, records, config=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def _assert_real_png(path, min_colours=50):
    assert path.exists() and path.stat().st_size > 10_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert 600 <= w <= 3000 and 400 <= h <= 3000
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > min_colours  # not a blank canvas


def test_plot_realistic_run(tmp_path):
    run = tmp_path / "run"
    records = [_train(s) for s in range(10, 510, 10)]
    records[10:10] = [_val(100)]
    records += [_val(s) for s in (200, 300, 400, 500)]
    _write(run, records, {"stage": "transformer", "config": {}})
    out = plot_metrics(run)
    assert out == run / "loss_curves.png"
    _assert_real_png(out)
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "loss_curves.png",
        "metrics.jsonl",
    ]  # no temp left


def test_legacy_records_without_split_and_custom_out(tmp_path):
    run = _write(
        tmp_path / "dvae",
        [{k: v for k, v in _train(s, stage=1).items() if k != "split"} for s in range(1, 30)],
    )
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 29, "val_loss": 1.0, "val_recon": 0.9, "val_kl": 4.0}) + "\n")
    series = load_metrics(run / "metrics.jsonl")
    assert set(series["train"]) >= {"loss", "recon", "kl", "lr", "grad_norm"}
    assert series["val"] == {"loss": {29: 1.0}, "recon": {29: 0.9}, "kl": {29: 4.0}}
    out = plot_metrics(run, tmp_path / "plots" / "curves.png")
    _assert_real_png(out)


def test_relogged_step_after_resume_keeps_last_value(tmp_path):
    run = _write(
        tmp_path / "r", [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    )
    assert load_metrics(run / "metrics.jsonl")["train"]["loss"] == {1: 3.0, 2: 1.5}


@pytest.mark.parametrize("bad", ["{not json", '{"loss": 1.0}', "[1, 2]", '{"step": "ten"}'])
def test_malformed_line_names_file_and_line(tmp_path, bad):
    run = _write(tmp_path / "r", [_train(1), _train(2)])
    with (run / "metrics.jsonl").open("a") as f:
        f.write("\n" + bad + "\n")  # a blank line 3, the bad record on line 4
    with pytest.raises(DalleEvalError, match=r"metrics\.jsonl:4: "):
        plot_metrics(run)
    assert not (run / "loss_curves.png").exists()


def test_missing_metrics_names_the_path(tmp_path):
    with pytest.raises(DalleEvalError, match="metrics not found: .*r/metrics.jsonl"):
        plot_metrics(tmp_path / "r")


def test_empty_metrics(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n\n")
    with pytest.raises(DalleEvalError, match="metrics.jsonl: empty"):
        plot_metrics(run)


def test_non_finite_values_are_dropped(tmp_path):
    records = [_train(s) for s in range(10, 210, 10)] + [_val(100), _val(200)]
    records[3]["loss"] = float("nan")
    records[4]["grad_norm"] = float("inf")
    records[-1]["val_loss"] = float("-inf")
    run = _write(tmp_path / "r", records)  # json.dumps writes NaN/Infinity, which json.loads reads back
    series = load_metrics(run / "metrics.jsonl")
    assert 40 not in series["train"]["loss"] and 50 not in series["train"]["grad_norm"]
    assert series["val"]["loss"].keys() == {100}
    _assert_real_png(plot_metrics(run))


def test_panels_without_data_still_plot(tmp_path):
    run = _write(tmp_path / "r", [{"step": s, "loss": 1.0 / s} for s in range(1, 20)])
    _assert_real_png(plot_metrics(run), min_colours=20)


# --- captions under grid images (dalle_eval.report) ---

LONG = "a large yellow triangle and a small green square"


def test_wrap_caption_keeps_words_in_order():
    from dalle_eval.report import wrap_caption

    fits = lambda s: len(s) <= 20  # 20 characters per line
    lines = wrap_caption(LONG, fits)
    assert lines == ["a large yellow", "triangle and a small", "green square"]
    assert " ".join(lines) == LONG and all(fits(line) for line in lines)
    many = " ".join(f"word{i}" for i in range(40))
    lines = wrap_caption(many, fits)
    assert " ".join(lines) == many and len(lines) > 2 and all(fits(line) for line in lines)
    assert wrap_caption("  a   red\tcircle ", fits) == ["a red circle"]  # runs of whitespace are one space


def test_wrap_caption_cuts_a_word_wider_than_the_cell():
    from dalle_eval.report import wrap_caption

    fits = lambda s: len(s) <= 8
    word = "supercalifragilistic"  # 20 characters
    assert wrap_caption(word, fits) == ["supercal", "ifragili", "stic"]
    caption = f"a {word} red circle"
    lines = wrap_caption(caption, fits)
    assert lines == ["a", "supercal", "ifragili", "stic red", "circle"]  # the cut word starts its own line
    assert "".join(lines).replace(" ", "") == caption.replace(" ", "")  # every character, in order
    assert wrap_caption("W", lambda s: False) == ["W"]  # one character always makes progress


def test_wrap_caption_empty():
    from dalle_eval.report import wrap_caption

    assert wrap_caption("", lambda s: True) == [] and wrap_caption("   ", lambda s: True) == []


def test_image_grid_draws_every_caption_in_order(tmp_path, monkeypatch):
    from PIL import ImageDraw

    from dalle_eval.report import image_grid

    drawn: list[tuple[tuple[float, float], str]] = []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        drawn.append((tuple(xy), text))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    very_long = " ".join([LONG] * 4) + " to the left of a blue circle"
    captions = [LONG, very_long, "", "x" * 60]
    items = [(Image.new("RGB", (16, 16), (200, 0, 0)), c) for c in captions]
    out = image_grid(items, tmp_path / "grid.png", cols=2, cell=128)
    with Image.open(out) as im:
        width, height = im.size
    assert width == 2 * 128 and height > 2 * (128 + 28)  # the caption strip grew for the long caption
    cells: dict[int, list[tuple[float, str]]] = {}
    for (x, y), text in drawn:
        assert 0 <= x < width and 0 <= y < height
        for line in text.split("\n"):
            row = int(y) // (height // 2)  # 2 rows of equal height
            cells.setdefault(2 * row + int(x) // 128, []).append((y, line))
    joined = {i: " ".join(line for _, line in sorted(lines)) for i, lines in cells.items()}
    assert joined[0] == LONG and joined[1] == very_long
    assert joined.get(2, "") == ""
    assert joined[3].replace(" ", "") == "x" * 60


# --- like with like: what each panel of plot-metrics puts side by side ---


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures plot_metrics saves, to read their panels back."""
    from matplotlib.figure import Figure

    figures, original = [], Figure.savefig

    def capture(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return figures


def _panels(fig) -> list[tuple[str, dict[str, list[float]]]]:
    """(y-axis label, {line label: y values}) of every panel with data."""
    panels = []
    for ax in fig.axes:
        lines = {line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.get_lines()}
        if lines:
            panels.append((ax.get_ylabel(), lines))
    return panels


def _dvae_train(step: int, mse_logged: bool = True) -> dict:
    recon = -2.0 - step / 100  # logit-Laplace NLL: negative, not a pixel error
    kl, beta = 4.5 - step / 200, 6.6 * min(1.0, step / 100)
    rec = {"split": "train", "step": step, "loss": recon + beta * kl / 192, "recon": recon, "kl": kl,
           "beta": beta, "tau": 1.0, "lr": 1e-4, "grad_norm": 1.0, "mfu": 0.1}
    return rec | ({"mse": 0.05 / (1 + step / 50)} if mse_logged else {})


def _dvae_val(step: int) -> dict:  # what model/stage1.py logs: the val "loss" is the pixel MSE
    mse = 0.06 / (1 + step / 50)
    return {"split": "val", "step": step, "val_loss": mse, "val_mse": mse, "val_psnr_db": -10 * math.log10(mse),
            "codebook_perplexity": 90.0, "codebook_used_share": 0.8, "n_val_images": 200}


def _dvae_run(tmp_path, recon_loss: str = "logit_laplace", mse_logged: bool = True):
    records = [_dvae_train(s, mse_logged) for s in range(10, 310, 10)] + [_dvae_val(s) for s in (100, 200, 300)]
    config = {"stage": "dvae", "config": {"train": {"dvae": {"recon_loss": recon_loss}}}}
    return _write(tmp_path / "dvae", records, config)


def test_dvae_plot_compares_like_with_like(tmp_path, saved_figures):
    """Train recon + beta KL never shares a panel with the held-out MSE; MSE is plotted against MSE."""
    run = _dvae_run(tmp_path)
    _assert_real_png(plot_metrics(run))
    train_loss = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    val_mse, train_mse = [_dvae_val(s)["val_mse"] for s in (100, 200, 300)], [_dvae_train(s)["mse"] for s in range(10, 310, 10)]
    panels = _panels(saved_figures[-1])
    for ylabel, lines in panels:
        assert ylabel, f"unlabelled y axis: {sorted(lines)}"
        assert not (train_loss in lines.values() and val_mse in lines.values()), f"train objective vs val MSE: {ylabel}"
    mse_panels = [(y, lines) for y, lines in panels if val_mse in lines.values()]
    assert len(mse_panels) == 1
    ylabel, lines = mse_panels[0]
    assert "MSE" in ylabel and sorted(map(tuple, lines.values())) == sorted([tuple(train_mse), tuple(val_mse)])


def test_dvae_plot_of_an_older_run(tmp_path, saved_figures):
    """Runs without a train "mse": with recon_loss=mse the train recon is that MSE; otherwise val MSE stands alone."""
    plot_metrics(_dvae_run(tmp_path / "a", recon_loss="mse", mse_logged=False))
    train_recon = [_dvae_train(s)["recon"] for s in range(10, 310, 10)]
    val_mse = [_dvae_val(s)["val_mse"] for s in (100, 200, 300)]
    (_, lines), = [(y, lines) for y, lines in _panels(saved_figures[-1]) if val_mse in lines.values()]
    assert train_recon in lines.values()
    plot_metrics(_dvae_run(tmp_path / "b", mse_logged=False))
    (_, lines), = [(y, lines) for y, lines in _panels(saved_figures[-1]) if val_mse in lines.values()]
    assert list(lines.values()) == [val_mse]


def test_transformer_panels_are_labelled(tmp_path, saved_figures):
    records = [_train(s) for s in range(10, 210, 10)] + [_val(100), _val(200)]
    plot_metrics(_write(tmp_path / "r", records, {"stage": "transformer", "config": {}}))
    panels = _panels(saved_figures[-1])
    assert len(panels) == 4 and all(ylabel for ylabel, _ in panels)
    (_, lines), = [(y, lines) for y, lines in panels if "val" in lines and "train" in lines]
    assert lines["train"] == [_train(s)["loss"] for s in range(10, 210, 10)]  # cross-entropy vs cross-entropy


def test_image_grid_names_a_missing_or_broken_image(tmp_path):
    from dalle_eval.errors import DalleEvalError
    from dalle_eval.report import image_grid

    with pytest.raises(DalleEvalError, match="gone.png: image file not found"):
        image_grid([(tmp_path / "gone.png", "a caption")], tmp_path / "grid.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DalleEvalError, match="bad.png: unreadable image"):
        image_grid([(tmp_path / "bad.png", "a caption")], tmp_path / "grid.png")


# --- capability curves: probe records written while training (split "probe") ---

PROBE_CHECKS = {  # suite -> (scorer, check, chance)
    "attributes": [("likelihood", "vs_colour", 0.5), ("likelihood", "ranked_first", 0.2), ("parser", "colour", 1 / 6)],
    "binding": [("likelihood", "vs_swap_colour", 0.5)],
    "raven": [("likelihood", "answer", 0.125)],
}


def _probe(step: int, suite: str, scorer: str, check: str, chance: float, acc: float | None = None) -> dict:
    acc = chance + (0.9 - chance) * (1 - math.exp(-step / 300)) if acc is None else acc
    return {"split": "probe", "step": step, "suite": suite, "scorer": scorer, "check": check, "accuracy": acc,
            "ci95": [max(0.0, acc - 0.1), min(1.0, acc + 0.1)], "chance": chance, "n": 60, "seconds": 1.9}


def _probe_pass(step: int) -> list[dict]:
    return [_probe(step, suite, *c) for suite, checks in PROBE_CHECKS.items() for c in checks]


def _probe_run(tmp_path, steps=(0, 250, 500, 750)):
    records = []
    for s in steps:
        records += [_train(max(s, 1)), *_probe_pass(s)]
    return _write(tmp_path / "run", records + [_val(500)], {"stage": "transformer", "config": {}})


def _curves(ax) -> dict[str, list[float]]:
    return {line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_capability_curves_one_panel_per_suite(tmp_path, saved_figures):
    from dalle_eval.plots import plot_capabilities

    run = _probe_run(tmp_path)
    out = plot_capabilities(run)
    assert out == run / "capability_curves.png"
    _assert_real_png(out)
    fig = saved_figures[-1]
    assert len(fig.axes) == 3  # attributes, binding, raven (legends are not axes)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["attributes — likelihood, parser probes", "binding — likelihood probes",
                      "raven — likelihood probes"]
    for ax, (suite, checks) in zip(fig.axes, PROBE_CHECKS.items()):
        assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "accuracy"
        lo, hi = ax.get_ylim()
        assert -0.05 <= lo <= 0 and 1 <= hi <= 1.05
        assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == len(checks)
        curves = _curves(ax)
        assert len(curves) == len(checks)
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(dashed) == len(checks)  # a chance line per check ...
        for (scorer, check, chance), chance_line in zip(checks, dashed):
            (label,) = [k for k in curves if k.startswith(f"{scorer} · {check}")]
            assert curves[label] == pytest.approx([_probe(s, suite, scorer, check, chance)["accuracy"]
                                                   for s in (0, 250, 500, 750)])
            assert list(chance_line.get_ydata()) == pytest.approx([chance, chance])  # ... at its chance, in its colour
            (curve,) = [line for line in ax.get_lines() if line.get_label() == label]
            assert chance_line.get_color() == curve.get_color()
        assert len(ax.collections) == len(checks)  # a ci95 band per check


def test_capability_curves_of_a_metrics_path_and_one_step(tmp_path, saved_figures):
    """The metrics file itself can be given; a single step (the untrained model) still draws its points."""
    from dalle_eval.plots import plot_capabilities

    run = _write(tmp_path / "r", [_probe(0, "raven", "dvae_ceiling", "answer", 0.125, acc=0.9)])
    out = plot_capabilities(run / "metrics.jsonl", tmp_path / "plots" / "caps.png")
    _assert_real_png(out, min_colours=20)
    (ax,) = saved_figures[-1].axes
    assert _curves(ax) == {"dvae_ceiling · answer (chance 12.5%)": [0.9]}


def test_probe_records_do_not_change_the_loss_plot(tmp_path, saved_figures):
    run = _probe_run(tmp_path)
    with_probes = load_metrics(run / "metrics.jsonl")
    plain = tmp_path / "plain"
    _write(plain, [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if r["split"] != "probe"], {"stage": "transformer", "config": {}})
    assert with_probes == load_metrics(plain / "metrics.jsonl")
    _assert_real_png(plot_metrics(run))
    labels = {label for _, lines in _panels(saved_figures[-1]) for label in lines}
    assert not any(w in label for label in labels for w in ("accuracy", "probe", "vs_colour", "ci95", "chance"))


def test_resumed_probe_steps_keep_the_last_value(tmp_path, saved_figures):
    from dalle_eval.plots import load_probes, plot_capabilities

    records = [*_probe_pass(0), *_probe_pass(250), _probe(250, "raven", "likelihood", "answer", 0.125, acc=0.3),
               *_probe_pass(500), _probe(250, "raven", "likelihood", "answer", 0.125, acc=0.4)]  # resumed twice
    run = _write(tmp_path / "r", records)
    probes = load_probes(run / "metrics.jsonl")
    points = probes["raven"][("likelihood", "answer")]
    assert sorted(points) == [0, 250, 500] and points[250].accuracy == 0.4
    assert points[250].lo == pytest.approx(0.3) and points[250].chance == 0.125
    plot_capabilities(run)
    ax = saved_figures[-1].axes[2]
    assert _curves(ax)["likelihood · answer (chance 12.5%)"][1] == 0.4


def test_no_probe_records(tmp_path):
    from dalle_eval.plots import load_probes, plot_capabilities

    run = _write(tmp_path / "r", [_train(s) for s in (1, 2)])
    assert load_probes(run / "metrics.jsonl") == {}
    with pytest.raises(DalleEvalError, match="no probe records"):
        plot_capabilities(run)


@pytest.mark.parametrize(("change", "message"), [
    ({"accuracy": None}, "'accuracy' is None"),
    ({"accuracy": "high"}, "'accuracy' is 'high'"),
    ({"accuracy": 1.5}, "'accuracy' is 1.5, expected a number in"),
    ({"accuracy": float("nan")}, "'accuracy' is nan"),
    ({"ci95": [0.1]}, "'ci95' is \\[0.1\\]"),
    ({"ci95": [0.9, 1.0]}, "does not hold its accuracy"),
    ({"chance": "half"}, "'chance' is 'half'"),
    ({"check": 3}, "'check' is 3"),
    ({"step": None}, "no numeric 'step'"),
])
def test_malformed_probe_record_names_file_and_line(tmp_path, change, message):
    from click.testing import CliRunner

    from dalle_eval.cli import main
    from dalle_eval.plots import plot_capabilities

    bad = _probe(250, "attributes", "likelihood", "vs_colour", 0.5, acc=0.6) | change
    run = _write(tmp_path / "r", [_train(1), *_probe_pass(0), bad])
    line = 2 + len(_probe_pass(0))
    with pytest.raises(DalleEvalError, match=rf"metrics\.jsonl:{line}: .*{message}"):
        plot_capabilities(run)
    r = CliRunner().invoke(main, ["plot-metrics", str(run)])
    assert r.exit_code == 1 and f"metrics.jsonl:{line}: " in r.output
    assert not (run / "loss_curves.png").exists() and not (run / "capability_curves.png").exists()


def test_missing_accuracy_is_named(tmp_path):
    from dalle_eval.plots import load_probes

    rec = _probe(0, "binding", "likelihood", "vs_relation", 0.5)
    del rec["accuracy"]
    run = _write(tmp_path / "r", [rec])
    with pytest.raises(DalleEvalError, match=r"metrics\.jsonl:1: probe record's 'accuracy' is missing"):
        load_probes(run / "metrics.jsonl")


def test_plot_metrics_cli_writes_capability_curves_when_probed(tmp_path):
    from click.testing import CliRunner

    from dalle_eval.cli import main

    plain = _write(tmp_path / "plain", [_train(s) for s in range(10, 110, 10)])
    r = CliRunner().invoke(main, ["plot-metrics", str(plain)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in plain.iterdir()) == ["loss_curves.png", "metrics.jsonl"]
    assert "capability" not in r.output

    run = _probe_run(tmp_path)
    r = CliRunner().invoke(main, ["plot-metrics", str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "loss_curves.png").exists() and (run / "capability_curves.png").exists()
    assert f"wrote {run / 'capability_curves.png'}: capability curves of 5 probe checks" in r.output
    r = CliRunner().invoke(main, ["plot-metrics", str(run), "--out", str(tmp_path / "plots" / "loss.png")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["capability_curves.png", "loss.png"]
