"""Raven candidates scored through a shared KV-cached prefix equal the full forward of every candidate.

The reference is `sampling.score` (one full forward per caption and candidate). Every layer type the configs
use runs: sparse = row, column, row, conv (tiny's 5x5 and the paper's 11x11 window) and full.
"""

import dataclasses

import pytest
import torch
from dalle_eval.model.dvae import DVAE
from dalle_eval.model.sampling import completion_keep, score, score_candidates
from dalle_eval.model.tokenizer import train_bpe
from dalle_eval.model.transformer import DalleTransformer

from dalle_eval.config import load_config
from dalle_eval.probes import make_prompts
from dalle_eval.probes.checks import ranked_first
from dalle_eval.probes.likelihood import ProbeModel, RavenLikelihood, answer_region

C = 8  # candidates per item


def _model(grid: int, attention: str = "sparse", conv_kernel: int = 5) -> DalleTransformer:
    tiny = load_config(["tiny"]).transformer
    cfg = dataclasses.replace(tiny, grid=grid, attention=attention, conv_kernel=conv_kernel)
    torch.manual_seed(0)
    return DalleTransformer(cfg).eval()


def _reference(model: DalleTransformer, text: torch.Tensor, codes: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, C): one full forward per (caption, candidate), the path the prefix cache replaces."""
    texts = text.repeat_interleave(codes.shape[1], 0)
    return score(model, texts, codes.flatten(0, 1), region)[1].view(codes.shape[:2])


def _assert_same_scores(new: torch.Tensor, ref: torch.Tensor, region: torch.Tensor) -> None:
    assert (new - ref).abs().max() <= 1e-5 * int(region.sum())  # within 1e-5 per scored token's log-prob
    assert torch.equal(new.argsort(-1), ref.argsort(-1))  # the same ranking of the 8 candidates


CASES = [(8, "sparse", 5, where) for where in ("above", "at", "inside")] + [
    (16, "sparse", 5, "above"), (16, "sparse", 5, "inside"), (16, "sparse", 11, "above"), (16, "full", 5, "above"),
    (8, "full", 5, "inside")]


@pytest.mark.parametrize("grid, attention, conv_kernel, first_diff", CASES)
def test_shared_prefix_scores_equal_full_forward(grid, attention, conv_kernel, first_diff):
    model = _model(grid, attention, conv_kernel)
    assert set(model.kinds) == ({"row", "column", "conv"} if attention == "sparse" else {"full"})
    cfg, B, g = model.cfg, 3, grid
    x0 = y0 = g * 2 // 3
    region = ~completion_keep(g, region=(x0, y0))
    # the candidates' first different token: a dVAE's receptive field reaches above the cell, a blank corner
    # starts inside it
    start = {"above": (y0 - 1) * g + x0 - 1, "at": y0 * g + x0, "inside": (y0 + 1) * g + x0}[first_diff]
    torch.manual_seed(1)
    codes = torch.randint(0, cfg.image_vocab, (B, 1, g * g)).repeat(1, C, 1)
    codes[:, :, start:] = torch.randint(0, cfg.image_vocab, (B, C, g * g - start))
    codes = codes.view(B, C, g, g)
    L = cfg.text_len
    text = model.pad_text(torch.tensor([[5, 6, 7] + [-1] * (L - 3), [8] * L, [9, 10] + [-1] * (L - 2)]))

    fed = []  # positions of each forward call: the shared prefix once per caption, the rest once per candidate
    hook = model.register_forward_pre_hook(lambda m, a: fed.append(sum(x.numel() for x in a[:2] if x is not None)))
    new = score_candidates(model, text, codes, region)
    hook.remove()
    assert fed == [B * (L + start), B * C * (g * g - 1 - start)]
    _assert_same_scores(new, _reference(model, text, codes, region), region)


def test_identical_candidates_tie():
    model = _model(8)
    region = ~completion_keep(8, region=(5, 5))
    codes = torch.randint(0, model.cfg.image_vocab, (1, 1, 8, 8)).repeat(1, C, 1, 1)
    new = score_candidates(model, model.pad_text(torch.full((1, model.cfg.text_len), -1)), codes, region)
    assert (new == new[0, 0]).all()


@pytest.mark.parametrize("group_count", [4, 3])  # tiny's 8x8 grid, shapes-long's 16x16
def test_raven_likelihood_equals_full_forward(tmp_path, group_count):
    """The probe end to end (render, dVAE-encode, score) on random-init models against the full forward."""
    cfg = load_config(["tiny"], [f"dvae.group_count={group_count}"])
    prompts = make_prompts("raven", raven_items=4)
    tok = train_bpe([p["caption"] for p in prompts] * 4, cfg.transformer.text_vocab, tmp_path / "tokenizer.json")
    torch.manual_seed(3)  # a random-init dVAE whose codes of the 8 candidates differ at both grids
    dvae = DVAE(cfg.dvae).eval()
    pm = ProbeModel(DalleTransformer(cfg.transformer).eval(), dvae, tok)
    probe = RavenLikelihood(prompts, pm, batch=16)  # 2 items per call
    assert all((c != c[:1]).any() for c in probe.codes)
    results = probe()
    region = ~completion_keep(pm.grid, region=answer_region(pm.image_size, pm.grid))
    ref = _reference(pm.model, probe.text, probe.codes, region)
    new = torch.tensor([r["logp"] for r in results])
    _assert_same_scores(new, ref, region)
    chosen = torch.tensor([r["chosen"] for r in results])  # the top candidate (a seeded draw among tied ones)
    assert ((ref.max(-1).values - ref.gather(1, chosen[:, None])[:, 0]) <= 1e-5 * int(region.sum())).all()


def test_ties_at_the_top_score_chance_not_zero():
    """A candidate set the scorer cannot tell apart earns 1/k on average (a seeded draw), the same every time."""
    draws = [ranked_first([0.0] * 8, i % 8, f"item-{i}") for i in range(8000)]
    assert abs(sum(passed for passed, _, _ in draws) / len(draws) - 1 / 8) < 0.012
    assert {tied for _, _, tied in draws} == {8} and draws[5] == ranked_first([0.0] * 8, 5, "item-5")
    assert ranked_first([-3.0, -1.0, -1.0, -2.0], 1, "k")[2] == 2  # only the top ties count
    for key in ("a", "b", "c"):
        assert ranked_first([-2.0, -1.0, -5.0], 1, key) == (True, 1, 1)  # strictly highest: always passed
        assert not ranked_first([-1.0, -1.0, -0.5], 0, key)[0]  # below the top: never


def test_raven_likelihood_breaks_ties_between_candidates_with_the_same_codes(tmp_path):
    """The tiny dVAE gives many Raven candidates the same codes: those items are scored at chance, not as failures."""
    cfg = load_config(["tiny"])
    prompts = make_prompts("raven", raven_items=24)
    tok = train_bpe([p["caption"] for p in prompts] * 4, cfg.transformer.text_vocab, tmp_path / "tokenizer.json")
    torch.manual_seed(3)
    pm = ProbeModel(DalleTransformer(cfg.transformer).eval(), DVAE(cfg.dvae).eval(), tok)
    probe = RavenLikelihood(prompts, pm, batch=16)
    probe.codes[:] = probe.codes[:, :1].clone()  # every candidate of an item encodes the same
    results = probe()
    assert [r["tied"] for r in results] == [8] * len(prompts)
    want = [ranked_first([0.0] * 8, p["spec"]["answer"], f"{p['prompt_id']}/likelihood/answer")[0] for p in prompts]
    assert [r["passed"] for r in results] == want and 0 < sum(want) < len(want)
