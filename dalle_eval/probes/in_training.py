"""Probes inside training: watch capabilities emerge, step by step, in RUN/metrics.jsonl.

Every train.probe_every steps (and at step 0 and the last step) the loop scores a fixed, seeded subset of
each probe suite (train.probe_prompts per suite) and logs one record per check:

    {"split": "probe", "step": S, "suite", "scorer", "check", "accuracy", "ci95", "chance", "n", "seconds"}

- transformer runs: the likelihood scorer (the prompts' oracle images encoded once with the run's dVAE,
  ranked under the true caption and its foils; Raven candidates by the answer region; translation bottoms
  under the top panel's codes) — deterministic, no
  sampling; with train.probe_samples > 0 also the parser on that many sampled images per shapes prompt
  (fixed seeds);
- dVAE runs: the dVAE ceiling (ceiling.py) of the model being trained.

A pass reads the weights and changes nothing the training uses (no optimizer, no shared random state:
the loop reseeds every step), so a run's losses are the same with probes on or off (tested).
`train` here is the training entry of the CLI and the demo: model.train.train with these probes wired in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from dalle_eval.config import Config
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER
from dalle_eval.model.dvae import pixels_to_pil
from dalle_eval.model.image_tokenizer import load_image_tokenizer_dir
from dalle_eval.model.sampling import sample_codes
from dalle_eval.model.tokenizer import load_tokenizer
from dalle_eval.model.train import train as train_stage
from dalle_eval.probes.ceiling import DVAECeiling
from dalle_eval.probes.checks import result
from dalle_eval.probes.likelihood import ProbeModel, RavenLikelihood, ShapesLikelihood, TranslationLikelihood
from dalle_eval.probes.scoring import score_scene_image
from dalle_eval.probes.suites import SUITES, make_prompts
from dalle_eval.probes.tables import summarise
from dalle_eval.shapes import Scene

Probe = Callable[[], list[dict]]


def probe_subset(cfg: Config) -> list[dict]:
    """At most train.probe_prompts prompts of each suite (0 = all), drawn once with eval.seed: the same
    prompts at every step of a run and in every run of that seed."""
    k, out = cfg.train.probe_prompts, []
    for suite in SUITES:
        prompts = make_prompts(suite, cfg.eval.seed)
        if k and len(prompts) > k:
            keep = set(random.Random(f"train-probes-{suite}-{cfg.eval.seed}").sample(range(len(prompts)), k))
            prompts = [p for i, p in enumerate(prompts) if i in keep]
        out += prompts
    return out


def records(results: list[dict]) -> list[dict]:
    """Scored checks -> one metrics record per (suite, scorer, check) over the whole subset."""
    return [{"suite": r["suite"], "scorer": r["scorer"], "check": r["check"], "accuracy": r["accuracy"],
             "ci95": r["ci95"], "chance": r["chance"], "n": r["n"]}
            for r in summarise(results) if r["category"] == "all" and r["split"] == "all"]


class TransformerProbe:
    """Likelihood (and optionally sampled-image parser) scores of the transformer being trained."""

    def __init__(self, cfg: Config, folder: Path, model: torch.nn.Module, prompts: list[dict] | None = None):
        device = next(model.parameters()).device
        self.pm = ProbeModel(model, load_image_tokenizer_dir(Path(folder) / DVAE_DIR).to(device), load_tokenizer(Path(folder) / TOKENIZER),
                             device)
        prompts = probe_subset(cfg) if prompts is None else prompts
        self.shapes, self.raven = ShapesLikelihood(prompts, self.pm), RavenLikelihood(prompts, self.pm)
        self.translation = TranslationLikelihood(prompts, self.pm)
        self.n_samples, self.sample_cfg = cfg.train.probe_samples, cfg.sample

    @torch.no_grad()
    def sampled(self) -> list[dict]:
        """probe_samples images per shapes prompt (seeds 0..n-1 of each prompt), decoded and parser-scored."""
        prompts = [p for p in self.shapes.prompts for _ in range(self.n_samples)]
        seeds = [i % self.n_samples for i in range(len(prompts))]
        s, out = self.sample_cfg, []
        for i in range(0, len(prompts), s.batch_size):
            chunk = prompts[i : i + s.batch_size]
            codes = sample_codes(self.pm.model, self.pm.text([p["caption"] for p in chunk]), seeds[i : i + s.batch_size],
                                 s.temperature, s.top_k, top_p=s.top_p)
            for p, image in zip(chunk, pixels_to_pil(self.pm.dvae.decode(codes))):
                checks = score_scene_image(Scene.from_json(p["spec"]), image)
                out += [result(p, c, ok, ch, "parser") for c, (ok, ch) in checks.items()]
        return out

    def __call__(self) -> list[dict]:
        results = self.shapes() + self.raven() + self.translation()
        if self.n_samples:
            results += self.sampled()
        return records(results)


class DVAEProbe:
    """The dVAE ceiling of the dVAE being trained."""

    def __init__(self, cfg: Config, model: torch.nn.Module, prompts: list[dict] | None = None):
        self.model = model
        self.ceiling = DVAECeiling(probe_subset(cfg) if prompts is None else prompts, cfg.dvae.image_size)

    def __call__(self) -> list[dict]:
        return records(self.ceiling(self.model))


def make_probe(stage: str, cfg: Config, folder: Path, model: torch.nn.Module) -> Probe:
    """The probe pass of a run (model.train calls it once, after building the model)."""
    return DVAEProbe(cfg, model) if stage == "dvae" else TransformerProbe(cfg, folder, model)


def train(stage: str, data: Path, cfg: Config, out: Path, resume: bool = False, progress: bool = True,
          stop_at: int | None = None, overrides: Sequence[str] = (), use_saved_config: bool = False,
          init_from: Path | None = None) -> dict:
    """model.train.train with the probe suites wired in when train.probe_every > 0 (what `dalle-eval train`
    and the demo run)."""
    return train_stage(stage, data, cfg, out, resume=resume, progress=progress, stop_at=stop_at, overrides=overrides,
                       use_saved_config=use_saved_config, probes=make_probe, init_from=init_from)
