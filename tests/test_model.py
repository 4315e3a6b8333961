import dataclasses
import json
import math

import pytest
import torch
from dalle_eval.model.masks import MASK_KINDS, dense_mask, layer_kinds
from dalle_eval.model.sampling import sample_codes
from dalle_eval.model.train import train
from dalle_eval.model.transformer import DalleTransformer, count_parameters, train_flops

from dalle_eval.config import load_config


def _losses(path):
    """Training losses of the logged, not skipped, steps in a metrics.jsonl."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train" and "skipped" not in r]


def test_layer_pattern_is_the_papers():
    """Paper B.1 numbers layers from 1: column attention where (i - 2) mod 4 == 0, row elsewhere, the last conv."""
    assert layer_kinds(8, "sparse") == ["row", "column", "row", "row", "row", "column", "row", "conv"]
    kinds = layer_kinds(load_config(["dalle-12b"]).transformer.n_layer, "sparse")
    assert len(kinds) == 64 and kinds[:4] == ["row", "column", "row", "row"]
    assert kinds[-4:] == ["row", "column", "row", "conv"]  # layers 61-64: (62 - 2) mod 4 == 0, layer 64 conv
    assert [i + 1 for i, k in enumerate(kinds) if k == "column"] == list(range(2, 63, 4))  # layers 2, 6, ..., 62
    assert layer_kinds(4, "full") == ["full"] * 4


def test_checkpoint_of_the_old_layer_order_is_refused(fast_cfg):
    """Weights trained with the pre-fix order (row, row, column, ...) would get other masks: refused, clearly."""
    from dalle_eval.errors import DalleEvalError

    cfg = dataclasses.replace(fast_cfg.transformer, n_layer=4)
    state = DalleTransformer(cfg).state_dict()
    assert state["layer_pattern"].tolist() == [MASK_KINDS.index(k) for k in ("row", "column", "row", "conv")]
    DalleTransformer(cfg).load_state_dict(state)
    legacy = {k: v for k, v in state.items() if k != "layer_pattern"}  # a checkpoint from before the fix
    with pytest.raises(DalleEvalError, match=r"old layer order .*row, row, column, conv.* retrain"):
        DalleTransformer(cfg).load_state_dict(legacy)
    for same in (dataclasses.replace(cfg, n_layer=2), dataclasses.replace(cfg, attention="full")):  # order unchanged
        old = {k: v for k, v in DalleTransformer(same).state_dict().items() if k != "layer_pattern"}
        DalleTransformer(same).load_state_dict(old)


def test_padding_token_is_learned_per_position(fast_cfg):
    """Paper 2.2: a special padding token learned for each of the text positions: id text_vocab + p at position p."""
    torch.manual_seed(0)
    t = fast_cfg.transformer
    model = DalleTransformer(t)
    ids = model.pad_text(torch.tensor([[5, 6] + [-1] * (t.text_len - 2), [7] + [-1] * (t.text_len - 1)]))
    assert ids[0].tolist() == [5, 6] + [t.text_vocab + p for p in range(2, t.text_len)]
    assert ids[1, 1:].tolist() == [t.text_vocab + p for p in range(1, t.text_len)]
    assert model.text_emb.num_embeddings == t.text_vocab + t.text_len
    codes = torch.randint(0, t.image_vocab, (2, t.image_len))
    model.loss(ids, codes)["loss"].backward()
    grad = model.text_emb.weight.grad  # (V + L, d)
    pad_rows = grad[t.text_vocab :]  # (L, d): row p is the padding token of position p
    assert pad_rows[0].abs().sum() == 0 and pad_rows[1:].abs().sum(1).gt(0).all()  # position 0 is never padding here
    assert not torch.allclose(pad_rows[2], pad_rows[3])  # two positions, two tokens learned apart
    emb = model.text_emb(ids)  # (2, L, d)
    assert not torch.allclose(emb[0, 2], emb[0, 3]) and torch.equal(emb[0, 5], emb[1, 5])


def test_loss_weights_text_one_eighth_image_seven_eighths(fast_cfg):
    """Paper 2.2: cross-entropy of text and image tokens weighted 1/8 and 7/8, recomputed here from the logits."""
    for name in ("tiny", "dalle-12b"):
        t = load_config([name]).transformer
        assert (t.text_loss_weight, t.image_loss_weight) == (1 / 8, 7 / 8)
    torch.manual_seed(0)
    t = fast_cfg.transformer
    model = DalleTransformer(t).eval()
    L, Vt = t.text_len, t.text_vocab + t.text_len
    text = model.pad_text(torch.tensor([[5, 6, 7] + [-1] * (L - 3), [8] + [-1] * (L - 1)]))
    codes = torch.randint(0, t.image_vocab, (2, t.image_len))
    with torch.no_grad():
        logits = model(text, codes[:, :-1])  # (2, L + n - 1, Vt + Vi): position j predicts token j + 1
        text_lp = logits[:, : L - 1, :Vt].log_softmax(-1).gather(-1, text[:, 1:, None])  # (2, L - 1, 1)
        image_lp = logits[:, L - 1 :, Vt:].log_softmax(-1).gather(-1, codes[:, :, None])  # (2, n, 1)
        want_text, want_image = -text_lp.mean(), -image_lp.mean()
        got = model.loss(text, codes)
    assert float(got["text_loss"]) == pytest.approx(float(want_text), rel=1e-5)
    assert float(got["image_loss"]) == pytest.approx(float(want_image), rel=1e-5)
    assert float(got["loss"]) == pytest.approx(float(want_text / 8 + 7 * want_image / 8), rel=1e-5)


def test_train_flops_hand_count():
    """One formula for `info`, the training MFU and the benchmarks, checked by hand on a 3-layer toy."""
    from dalle_eval.config import TransformerConfig

    cfg = TransformerConfig(text_len=2, text_vocab=5, image_vocab=6, grid=3, n_layer=3, n_head=2, d_head=4,
                            d_model=8, mlp_ratio=4, conv_kernel=3)
    # parameters with a matmul (no embedding lookups), d = 8, d_attn = 2 * 4 = 8, mlp 32:
    #   block: ln_1 2*8 + qkv 8*24+24 + proj 8*8+8 + ln_2 2*8 + mlp 8*32+32 + 32*8+8 = 16+216+72+16+288+264 = 872
    #   3 blocks 2616 + ln_f 16 + head 8 * (5 text + 2 padding + 6 image) = 104  ->  N = 2736
    # positions fed: 2 text + 9 image - 1 (the last image token predicts nothing) = 10  ->  6 N T = 164,160
    # attention pairs allowed in the 10 x 10 masks, layers row, column, conv (the paper's order for 3 layers):
    #   text rows 1 + 2 = 3; each of the 8 image rows sees the 2 text tokens: 16
    #   row (previous 3 image positions + itself): 1+2+3+4+4+4+4+4 = 26       -> 45
    #   column (same column, earlier rows):        1+1+1+2+2+2+3+3 = 15       -> 34
    #   conv 3x3 causal neighbourhood:             1+2+2+3+5+4+3+5 = 25       -> 44
    #   12 FLOPs per pair and d_attn (q.k and p.v: 2 + 2 forward, x3 with backward): 12 * 8 * (45+34+44) = 11,808
    f = train_flops(cfg)
    assert f["positions"] == 10
    assert f["per_sample"] == 164_160 + 11_808
    assert f["per_position"] == pytest.approx((164_160 + 11_808) / 10)
    dense = train_flops(dataclasses.replace(cfg, attention="full"))["per_sample"]  # causal: 55 pairs per layer
    assert dense == 164_160 + 12 * 8 * 3 * 55


def test_info_reports_the_same_flops():
    from click.testing import CliRunner

    from dalle_eval.cli import main

    sets = ["text_len=2", "text_vocab=5", "image_vocab=6", "grid=3", "n_layer=3", "n_head=2", "d_head=4",
            "d_model=8", "mlp_ratio=4", "conv_kernel=3"]
    r = CliRunner().invoke(main, ["info", *[x for s in sets for x in ("--set", f"transformer.{s}")]])
    assert r.exit_code == 0, r.output
    assert "175,968" in r.output and "17,597" in r.output  # per sample and per position, as hand-counted above


def test_masks_text_causal_image_sees_all_text():
    L, g = 3, 4
    for kind in ("row", "column", "conv", "full"):
        m = dense_mask(kind, L, g, conv_kernel=3)
        T = L + g * g
        assert m.shape == (T, T)
        assert not m.triu(1).any(), f"{kind} mask lets a position see the future"
        assert m[:L, :L].equal(torch.ones(L, L, dtype=torch.bool).tril())
        assert m[L:, :L].all(), "every image token attends to all text"
        assert m.diagonal().all()
    row, col, conv = (dense_mask(k, L, g, 3)[L:, L:] for k in ("row", "column", "conv"))
    q = 2 * g + 1  # image position (row 2, col 1)
    assert row[q].nonzero().flatten().tolist() == list(range(q - g, q + 1))  # previous `grid` positions
    assert col[q].nonzero().flatten().tolist() == [1, g + 1, q]
    assert conv[q].nonzero().flatten().tolist() == [4, 5, 6, 8, 9]  # causal 3x3 neighbourhood


def test_parameter_counts_on_meta_device():
    n = count_parameters(load_config(["dalle-12b"]).transformer)["total"]
    assert abs(n - 12e9) / 12e9 < 0.03
    assert 1.2e9 < count_parameters(load_config(["dalle-1.3b"]).transformer)["total"] < 1.4e9


@pytest.mark.slow  # 200 dVAE steps: ~8 s
def test_dvae_learns(tmp_path, shapes_data):
    """Held-out reconstruction error after 200 steps is well below the untrained model's."""
    base = ["dvae.n_hid=8", "train.dvae.batch_size=8", "train.log_every=10", "train.ckpt_every=100", "train.probe_every=0"]
    untrained = train("dvae", shapes_data, load_config(["tiny"], base + ["train.dvae.steps=0"]), tmp_path / "d0", progress=False)
    cfg = load_config(["tiny"], base + ["train.dvae.steps=200", "train.dvae.lr=2e-3"])
    summary = train("dvae", shapes_data, cfg, tmp_path / "dvae", progress=False)
    assert summary["eval"]["val_mse"] < 0.8 * untrained["eval"]["val_mse"]
    assert 0 < summary["eval"]["codebook_used_share"] <= 1 and summary["eval"]["val_psnr_db"] > 10
    assert len(_losses(tmp_path / "dvae" / "metrics.jsonl")) == 20
    rows = [json.loads(line) for line in (tmp_path / "dvae" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]  # the pixel MSE is logged next to the objective:
    assert all(0 < r["mse"] < 1 for r in train_rows)  # what plot-metrics compares with the held-out val_mse


def test_transformer_loss_goes_down(tmp_path, token_data, fast_cfg):
    cfg = dataclasses.replace(fast_cfg, train=dataclasses.replace(
        fast_cfg.train, transformer=dataclasses.replace(fast_cfg.train.transformer, steps=30, lr=3e-3), log_every=10))
    train("transformer", token_data, cfg, tmp_path / "tf", progress=False)
    losses = _losses(tmp_path / "tf" / "metrics.jsonl")
    assert losses[-1] < losses[0] - 0.5
    rec = [r for r in map(json.loads, (tmp_path / "tf" / "metrics.jsonl").read_text().splitlines()) if "mfu" in r][-1]
    flops = rec["mfu"] * cfg.train.peak_tflops * 1e12 / rec["samples_per_s"]  # the MFU's FLOPs per sample
    assert flops == pytest.approx(train_flops(cfg.transformer)["per_sample"], rel=1e-9)
    peak = json.loads((tmp_path / "tf" / "summary.json").read_text())["mfu_peak"]  # the MFU's denominator, named
    assert peak == {"flops_per_s": round(cfg.train.peak_tflops * 1e12), "source": "train.peak_tflops"}
    assert (tmp_path / "tf" / "tokenizer.json").exists() and (tmp_path / "tf" / "dvae" / "model.safetensors").exists()


@pytest.mark.parametrize("stage", ["dvae", "transformer"])
def test_resume_gives_the_same_losses(tmp_path, token_data, fast_cfg, stage):
    """Stop after step 3, resume to 6: the losses equal an uninterrupted 6-step run (logged every 2)."""
    full, part = tmp_path / "full", tmp_path / "part"
    train(stage, token_data, fast_cfg, full, progress=False)
    train(stage, token_data, fast_cfg, part, progress=False, stop_at=3)
    assert (part / "latest").read_text().strip() == "step-00000003"
    train(stage, token_data, fast_cfg, part, resume=True, progress=False)
    a, b = _losses(full / "metrics.jsonl"), _losses(part / "metrics.jsonl")
    assert len(a) == 3 and a == pytest.approx(b, abs=1e-6)


def test_refuses_to_overwrite_without_resume(tmp_path, token_data, fast_cfg):
    from dalle_eval.errors import DalleEvalError

    train("dvae", token_data, fast_cfg, tmp_path / "d", progress=False)
    with pytest.raises(DalleEvalError, match="pass --resume"):
        train("dvae", token_data, fast_cfg, tmp_path / "d", progress=False)


def test_mismatched_manifest_is_refused(tmp_path, token_data, fast_cfg):
    from dalle_eval.errors import DalleEvalError

    cfg = dataclasses.replace(fast_cfg, transformer=dataclasses.replace(fast_cfg.transformer, grid=16))
    with pytest.raises(DalleEvalError, match=r"grid=8 \(made by the dalle_eval image tokenizer\) but transformer.grid=16"):
        train("transformer", token_data, cfg, tmp_path / "tf", progress=False)


def test_sampling_shapes_and_seed_determinism(fast_cfg):
    torch.manual_seed(0)
    model = DalleTransformer(fast_cfg.transformer)
    text = model.pad_text(torch.tensor([[5, 6, 7] + [-1] * 21, [8, 9, -1] + [-1] * 21]))
    a = sample_codes(model, text, seeds=[1, 2], top_k=16)
    b = sample_codes(model, text, seeds=[1, 2], top_k=16)
    c = sample_codes(model, text, seeds=[3, 4], top_k=16)
    assert a.shape == (2, 8, 8) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < fast_cfg.transformer.image_vocab
    assert torch.equal(a, b) and not torch.equal(a, c)
    single = sample_codes(model, text[:1], seeds=[1], top_k=16)  # a seed's image does not depend on its batch
    assert torch.equal(single[0], a[0])


def test_cli_train_then_resume_with_more_steps(tmp_path, token_data):
    from click.testing import CliRunner

    from dalle_eval.cli import main
    from tests.conftest import FAST

    sets = [x for item in FAST for x in ("--set", item)]
    out = tmp_path / "tf"
    args = ["train", "--stage", "transformer", "--data", str(token_data), "--out", str(out)]
    r = CliRunner().invoke(main, args + sets)
    assert r.exit_code == 0, r.output
    assert "== train transformer ==" in r.output and "val_image_loss" in r.output
    r = CliRunner().invoke(main, args + sets)
    assert r.exit_code == 1 and "pass --resume" in r.output
    r = CliRunner().invoke(main, args + ["--resume", "--set", "train.transformer.steps=8"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
    assert (out / "latest").read_text().strip() == "step-00000008"
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["transformer"]["d_model"] == 64  # the checkpoint's config, not the default `tiny`


@pytest.mark.parametrize("attention, n_layer", [("sparse", 4), ("full", 2)])  # sparse 4 layers: row, column, row, conv
def test_kv_cache_logits_equal_full_recompute(fast_cfg, attention, n_layer):
    from dalle_eval.model.sampling import _draw

    cfg = dataclasses.replace(fast_cfg.transformer, attention=attention, n_layer=n_layer)
    torch.manual_seed(0)
    model = DalleTransformer(cfg).eval()
    assert set(model.kinds) == ({"row", "column", "conv"} if attention == "sparse" else {"full"})
    text = model.pad_text(torch.tensor([[5, 6, 7] + [-1] * 21, [8, 9, 10] + [-1] * 21]))
    codes = torch.zeros(2, cfg.image_len, dtype=torch.long)
    cache = model.new_cache(2)
    with torch.no_grad():
        cached = model.image_logits(text, codes[:, :0], cache)
        for t in range(cfg.image_len):
            full = model.image_logits(text, codes[:, :t])
            assert (cached - full).abs().max() <= 1e-4, f"step {t}"
            codes[:, t] = _draw(full, torch.rand(2), 1.0, 0)
            if t + 1 < cfg.image_len:
                cached = model.image_logits(None, codes[:, t : t + 1], cache)
    u = [1, 2]
    assert torch.equal(sample_codes(model, text, u, use_cache=True), sample_codes(model, text, u, use_cache=False))


def test_completion_keeps_known_tokens(fast_cfg):
    from dalle_eval.model.sampling import completion_keep

    torch.manual_seed(0)
    model = DalleTransformer(fast_cfg.transformer)
    g = fast_cfg.transformer.grid
    text = model.pad_text(torch.tensor([[5, 6] + [-1] * 22]))
    known = torch.randint(0, fast_cfg.transformer.image_vocab, (1, g, g))
    rows = completion_keep(g, keep_rows=3)
    assert rows.sum() == 3 * g and rows[: 3 * g].all()
    out = sample_codes(model, text, [0], known=known, keep=rows)
    assert torch.equal(out[0, :3], known[0, :3]) and not torch.equal(out[0, 3:], known[0, 3:])
    region = completion_keep(g, region=(5, 6))  # the Raven-style bottom-right rectangle
    assert (~region).sum() == (g - 5) * (g - 6)
    out = sample_codes(model, text, [0], known=known, keep=region)
    keep2d = region.view(g, g)
    assert torch.equal(out[0][keep2d], known[0][keep2d]) and not torch.equal(out[0][~keep2d], known[0][~keep2d])
    assert torch.equal(out, sample_codes(model, text, [0], known=known, keep=region, use_cache=False))
    with pytest.raises(ValueError, match="outside"):
        completion_keep(g, region=(g, 0))


def test_image_log_probs_rank_the_training_caption(fast_cfg):
    """Per-token log-probabilities sum to the model's own image loss; batched scoring is per row."""
    from dalle_eval.model.sampling import image_log_probs

    torch.manual_seed(0)
    model = DalleTransformer(fast_cfg.transformer).eval()
    g = fast_cfg.transformer.grid
    text = model.pad_text(torch.tensor([[5, 6] + [-1] * 22, [7, 8] + [-1] * 22]))
    codes = torch.randint(0, fast_cfg.transformer.image_vocab, (2, g, g))
    with torch.no_grad():
        lp = image_log_probs(model, text, codes)
        assert lp.shape == (2, g * g) and (lp <= 0).all()
        assert -lp.mean() == pytest.approx(float(model.loss(text, codes.view(2, -1))["image_loss"]), rel=1e-5)
        assert torch.allclose(image_log_probs(model, text[1:], codes[1:]), lp[1:], atol=1e-5)


def test_flex_attention_backend_matches_sdpa(fast_cfg):
    """One mask definition, two backends: FlexAttention (eager on CPU here) equals dense-mask SDPA."""
    pytest.importorskip("torch.nn.attention.flex_attention", reason="FlexAttention needs torch >= 2.5")
    import warnings

    cfg = dataclasses.replace(fast_cfg.transformer, n_layer=4)  # row, column, row, conv
    torch.manual_seed(0)
    sdpa = DalleTransformer(dataclasses.replace(cfg, attention_backend="sdpa")).eval()
    flex = DalleTransformer(dataclasses.replace(cfg, attention_backend="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    text = sdpa.pad_text(torch.tensor([[5, 6, 7] + [-1] * 21]))
    codes = torch.randint(0, cfg.image_vocab, (1, cfg.image_len - 1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()" on CPU
        assert (sdpa(text, codes) - flex(text, codes)).abs().max() < 1e-5


def test_activation_checkpointing_same_gradients(fast_cfg):
    torch.manual_seed(0)
    plain = DalleTransformer(fast_cfg.transformer)
    ckpt = DalleTransformer(dataclasses.replace(fast_cfg.transformer, checkpoint_activations=True))
    ckpt.load_state_dict(plain.state_dict())
    text = plain.pad_text(torch.tensor([[5, 6, 7] + [-1] * 21] * 2))
    codes = torch.randint(0, fast_cfg.transformer.image_vocab, (2, fast_cfg.transformer.image_len))
    for m in (plain, ckpt):
        m.loss(text, codes)["loss"].backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_bf16_autocast_trains(tmp_path, token_data, fast_cfg):
    """train.precision=bf16 runs the training step's matmuls in bfloat16 and trains to fp32's losses.

    Every nn.Linear output of a training forward is recorded: all bfloat16 under bf16, all float32 under fp32,
    so a precision switch that autocasts nothing, or everything, fails. The logged losses (steps 2, 4, 6, ~4.8
    to ~4.0) and the final validation loss agree with fp32's to 1e-3 relative: bf16 rounds each matmul input
    to 8 significant bits (2^-9 relative), but the errors average out over the 64-wide dot products and the
    mean over a batch's ~700 token losses; measured 1e-5 to 1e-4 after 6 AdamW steps, so 1e-3 is a 10x margin,
    while a loss or weights kept in bf16 (4.8 rounded to a multiple of 2^-5: up to 0.3%) fail it. fp32's
    losses exactly would mean no bf16 arithmetic ran: refused too.
    """
    outputs: dict[str, set] = {"fp32": set(), "bf16": set()}
    summaries, logged = {}, {}
    for precision, seen in outputs.items():
        def record(module, args, output, seen=seen):
            if isinstance(module, torch.nn.Linear) and module.training:
                seen.add(output.dtype)

        cfg = dataclasses.replace(fast_cfg, train=dataclasses.replace(fast_cfg.train, precision=precision))
        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            summaries[precision] = train("transformer", token_data, cfg, tmp_path / precision, progress=False)
        finally:
            handle.remove()
        logged[precision] = _losses(tmp_path / precision / "metrics.jsonl")
    assert outputs == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert len(logged["bf16"]) == 3 and all(math.isfinite(v) for v in logged["bf16"])
    assert logged["bf16"] == pytest.approx(logged["fp32"], rel=1e-3)
    assert logged["bf16"] != logged["fp32"]  # bf16 arithmetic really ran: fp32's losses exactly would mean it did not
    val = {k: s["eval"]["val_loss"] for k, s in summaries.items()}  # the weights bf16 trained, evaluated in fp32
    assert val["bf16"] == pytest.approx(val["fp32"], rel=1e-3)


def test_a_stage_precision_overrides_train_precision(tmp_path, token_data, fast_cfg):
    """train.transformer.precision (or train.dvae.precision) wins over train.precision; "" inherits it."""
    from dalle_eval.config import apply_overrides

    for sets, want in ((["train.precision=fp32", "train.transformer.precision=bf16"], torch.bfloat16),
                       (["train.precision=bf16", "train.transformer.precision=fp32"], torch.float32),
                       (["train.precision=bf16", "train.dvae.precision=fp32"], torch.bfloat16)):
        seen = set()

        def record(module, args, output, seen=seen):
            if isinstance(module, torch.nn.Linear) and module.training:
                seen.add(output.dtype)

        cfg = apply_overrides(fast_cfg, [*sets, "train.transformer.steps=1"])
        handle = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            train("transformer", token_data, cfg, tmp_path / "-".join(sets), progress=False)
        finally:
            handle.remove()
        assert seen == {want}, sets


def test_dvae_ema_is_exported_and_resumed(tmp_path, shapes_data, fast_cfg):
    from safetensors.torch import load_file

    cfg = dataclasses.replace(fast_cfg, train=dataclasses.replace(
        fast_cfg.train, dvae=dataclasses.replace(fast_cfg.train.dvae, ema=0.9)))
    full, part = tmp_path / "full", tmp_path / "part"
    train("dvae", shapes_data, cfg, full, progress=False)
    train("dvae", shapes_data, cfg, part, progress=False, stop_at=3)
    train("dvae", shapes_data, cfg, part, resume=True, progress=False)
    exported, raw = load_file(full / "model.safetensors"), load_file(full / "state" / "step-00000006" / "model.safetensors")
    assert any(not torch.equal(exported[k], raw[k]) for k in raw)  # users get the average, not the last step
    resumed = load_file(part / "model.safetensors")
    assert all(torch.allclose(exported[k], resumed[k], atol=1e-6) for k in exported)


@pytest.mark.slow  # SIGTERM to a training subprocess, then a resume subprocess
def test_sigterm_checkpoints_exits_zero_and_resumes(tmp_path, token_data):
    """Preemption: SIGTERM to the process group mid-run saves a checkpoint and exits 0; --resume continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import FAST

    out = tmp_path / "tf"
    extra = ["train.transformer.steps=100000", "train.ckpt_every=100000", "train.num_workers=1"]
    sets = [x for item in FAST + extra for x in ("--set", item)]
    cmd = [sys.executable, "-m", "dalle_eval.cli", "train", "--stage", "transformer", "--data", str(token_data),
           "--out", str(out), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # as schedulers do: the whole process group, data workers included
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "stopped by SIGTERM" in output
    step = int((out / "latest").read_text().strip().split("-")[1])
    assert step >= 2
    r = subprocess.run(cmd[:-len(sets)] + ["--resume", "--set", f"train.transformer.steps={step + 2}"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {out} from step {step}" in r.stdout
    assert (out / "latest").read_text().strip() == f"step-{step + 2:08d}"


def test_top_k_top_p_filtering():
    from dalle_eval.model.sampling import filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()
    assert kept(filter_logits(logits, 1.0, 2)) == [True, True, False, False]
    assert kept(filter_logits(logits, 1.0, 0, top_p=0.75)) == [True, True, False, False]  # 0.5 + 0.3 >= 0.75
    assert kept(filter_logits(logits, 1.0, 0, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, 1.0, 0, top_p=1.0)) == [True] * 4
    shuffled = logits[:, [2, 0, 3, 1]]
    assert kept(filter_logits(shuffled, 1.0, 0, top_p=0.75)) == [False, True, False, True]


def test_score_sums_over_a_region(fast_cfg):
    from dalle_eval.model.sampling import completion_keep, score

    torch.manual_seed(0)
    model = DalleTransformer(fast_cfg.transformer).eval()
    g = fast_cfg.transformer.grid
    text = model.pad_text(torch.tensor([[5, 6] + [-1] * 22]))
    codes = torch.randint(0, fast_cfg.transformer.image_vocab, (1, g, g))
    per_token, total = score(model, text, codes)
    region = ~completion_keep(g, region=(4, 4))
    _, part = score(model, text, codes, region)
    assert total.item() == pytest.approx(per_token.sum().item(), rel=1e-6)
    assert part.item() == pytest.approx(per_token[0, region].sum().item(), rel=1e-6) and part > total


def test_dvae_losses_and_paper_schedules(shapes_data):
    import math as m

    from dalle_eval.model.dvae import (
        code_usage_loss,
        kl_to_uniform,
        logit_laplace_nll,
        map_pixels,
        unmap_pixels,
    )
    from dalle_eval.model.stage1 import DVAETask

    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(unmap_pixels(map_pixels(x)), x, atol=1e-6) and map_pixels(x).min() >= 0.1
    mu, ln_b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 0.1
    y = map_pixels(x)
    density = torch.exp(-(torch.logit(y) - mu).abs() / ln_b.exp()) / (2 * ln_b.exp() * y * (1 - y))  # paper eq. A.3
    assert logit_laplace_nll(torch.cat([mu, ln_b], 1), x).item() == pytest.approx(-density.log().mean().item(), rel=1e-5)
    assert kl_to_uniform(torch.zeros(2, 16, 3, 3)).item() == pytest.approx(0, abs=1e-6)
    assert kl_to_uniform(torch.eye(16)[0].view(1, 16, 1, 1) * 1e4).item() == pytest.approx(m.log(16), rel=1e-4)
    one_hot = torch.eye(16).view(16, 16, 1, 1) * 1e4  # 16 positions, each sure of its own code
    assert code_usage_loss(one_hot).item() == pytest.approx(0, abs=1e-5)  # every code used equally
    assert code_usage_loss(one_hot[:1].expand(16, -1, -1, -1)).item() == pytest.approx(15 / 16, abs=1e-5)  # one code
    assert code_usage_loss(one_hot[:4]).item() == pytest.approx(12 / 16, abs=1e-5)  # perplexity 4 of 16
    cfg = load_config([])  # paper defaults: beta 0 -> 6.6 over 5k (cosine), tau 1 -> 1/16 over 150k (exponential)
    cfg = dataclasses.replace(cfg, dvae=dataclasses.replace(cfg.dvae, image_size=64, n_hid=8, vocab_size=64))
    task = DVAETask(cfg)
    assert task.beta(0) == 0 and task.beta(2500) == pytest.approx(3.3) and task.beta(10_000) == pytest.approx(6.6)
    assert task.tau(0) == 1 and task.tau(75_000) == pytest.approx(0.25) and task.tau(200_000) == pytest.approx(1 / 16)
    lr = task.schedule().lr
    assert lr(0) == pytest.approx(1e-4) and lr(cfg.train.dvae.steps) == pytest.approx(1.25e-6)


@pytest.mark.parametrize("keys", [88, 600])
def test_bf16_attention_on_cpu_runs_in_fp32_up_to_the_threshold(keys):
    """Under bf16 autocast, attention over <= FP32_ATTENTION_UP_TO keys is fp32 SDPA of the bf16 inputs (faster
    on the CPU, and more exact), returned in bf16 with gradients; over more keys it is the bf16 kernel."""
    from dalle_eval.model.transformer import FP32_ATTENTION_UP_TO, attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, keys, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(keys, keys, dtype=torch.bool).tril()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q, k, v, mask)
    assert y.dtype == torch.bfloat16
    fp32 = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    bf16 = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(y, (fp32 if keys <= FP32_ATTENTION_UP_TO else bf16).to(torch.bfloat16))
    assert not torch.equal(fp32.to(torch.bfloat16), bf16)  # the two paths differ: the check above can tell them
    y.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (q, k, v))
