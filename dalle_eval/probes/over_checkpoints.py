"""Capability curves after the fact: score the kept checkpoints of a finished transformer run.

A run trained without probes (e.g. on a cluster, train.probe_every=0) still keeps milestone checkpoints
(train.keep_every: every RUN/state/step-N with N % keep_every == 0, plus the newest train.keep_last).
`score_checkpoints` scores each of them with exactly the probe pass training runs (in_training.py:
TransformerProbe on probe_subset, the same fixed seeded prompts), and writes

    OUT/capabilities.jsonl   one record per check per checkpoint, as training logs them in metrics.jsonl:
                             {"split": "probe", "step": N, "suite", "scorer", "check", "accuracy", "ci95",
                              "chance", "n", "seconds"}
    OUT/capability_curves.png   plots.plot_capabilities of those records
    OUT/fingerprint.json     the run's config and the probe settings the records were made with

Same subset and same weights give the same accuracies as the run would have logged with train.probe_every
(tested). Step 0, the untrained model, is no kept checkpoint, so these curves start at the first kept step;
only train.probe_every while training scores step 0.

The probe state (tokenizer, dVAE, the oracle images encoded once) is built once; per checkpoint only the
transformer's weights are swapped. The run's own tokenizer.json and dvae/ are used (a run copied from a
cluster carries them); the data folder named in its config.json only when they are missing. The same
command into the same OUT resumes: steps already in capabilities.jsonl are skipped.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import torch

from dalle_eval.artifacts import atomic_path, fingerprint, iter_jsonl, read_json, write_json
from dalle_eval.config import Config, apply_overrides, config_from_dict, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.model.checkpoint import DVAE_DIR, TOKENIZER, kept_checkpoints, load_weights
from dalle_eval.model.transformer import DalleTransformer
from dalle_eval.probes.in_training import TransformerProbe

RECORDS = "capabilities.jsonl"
PLOT = "capability_curves.png"
FINGERPRINT = "fingerprint.json"
CHECKPOINTS_HELP = "'all' or 'every-N' (N a whole number >= 1: kept checkpoints whose step is a multiple of N, plus the final one)"


def _run_meta(run: Path) -> dict:
    """RUN/config.json of a transformer run; a dVAE run or another folder is refused by name."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise DalleEvalError(f"--ckpt {run}: no config.json; expected a transformer run dir written by `dalle-eval train`")
    meta = read_json(run / "config.json", "checkpoint config")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise DalleEvalError(f"{run / 'config.json'}: not a checkpoint config (no 'config' table); "
                             "expected a transformer run dir written by `dalle-eval train`")
    if meta.get("stage") != "transformer":
        raise DalleEvalError(f"--ckpt {run}: a '{meta.get('stage')}' run; capability curves score a transformer run's "
                             "checkpoints (a dVAE run's probe is its dVAE ceiling: `dalle-eval probes run --ckpt` on a "
                             "transformer over it reports it)")
    return meta


def run_config(run: Path, overrides=()) -> Config:
    """The config a run's checkpoints are scored with: its saved config.json (so the probe subset is the one its
    training would have drawn: train.probe_prompts, eval.seed) plus `overrides` (e.g. train.probe_samples=2)."""
    meta = _run_meta(run)
    return apply_overrides(config_from_dict(meta["config"], where=f"{Path(run) / 'config.json'}:"), overrides)


def select_steps(kept: list[tuple[int, Path]], which: str) -> list[tuple[int, Path]]:
    """`which`: "all" kept checkpoints, or "every-N": those whose step is a multiple of N, plus the final one."""
    if which == "all":
        return list(kept)
    m = re.fullmatch(r"every-(\d+)", which or "")
    if not m or int(m.group(1)) < 1:
        raise DalleEvalError(f"--checkpoints {which!r}: expected {CHECKPOINTS_HELP}, e.g. every-1000")
    n = int(m.group(1))
    return [(s, p) for s, p in kept if s % n == 0 or (s, p) == kept[-1]]


def _assets(run: Path, meta: dict) -> Path:
    """The folder holding the run's tokenizer.json and dvae/: the run dir itself (copied there by training),
    else the data folder its config.json names."""
    def has(folder: Path) -> bool:
        return (folder / TOKENIZER).is_file() and (folder / DVAE_DIR / "model.safetensors").is_file()

    if has(run):
        return run
    data = (meta.get("data") or {}).get("folder") if isinstance(meta.get("data"), dict) else None
    if data and has(Path(data)):
        return Path(data)
    raise DalleEvalError(f"{run}: no {TOKENIZER} and {DVAE_DIR}/ (training copies them into the run dir)"
                         + (f", nor in its data folder {data}" if data else "")
                         + "; copy them from the token folder the run trained on")


def _weights_dir(state: Path) -> Path:
    """A kept state dir whose model.safetensors holds the full weights; an FSDP state without it is refused."""
    if not (state / "model.safetensors").exists() and (state / "dcp").exists():
        raise DalleEvalError(f"{state}: an FSDP sharded checkpoint (dcp/) without the full model.safetensors, which "
                             "scoring needs; save the run with a dalle-eval that writes it (save_state gathers it) or "
                             "convert the dcp/ folder to model.safetensors")
    return state


def _fingerprint(meta: dict, cfg: Config) -> dict:
    d = config_to_dict(cfg)
    return {"run_config": fingerprint(meta["config"]), "probe_prompts": cfg.train.probe_prompts,
            "probe_samples": cfg.train.probe_samples, "seed": cfg.eval.seed,
            "sample": {k: v for k, v in d["sample"].items() if k != "device"} if cfg.train.probe_samples else None}


def _claim(out: Path, fp: dict, overwrite: bool) -> list[dict]:
    """The records already in OUT made from the same run and probe settings ([] for a new OUT); another
    run's or other settings' OUT is refused, naming what differs, unless `overwrite`."""
    path = out / FINGERPRINT
    if path.exists() and not overwrite:
        have = read_json(path, "capability curves fingerprint")
        differ = [k for k in sorted(set(fp) | set(have if isinstance(have, dict) else {}))
                  if not isinstance(have, dict) or have.get(k) != fp.get(k)]
        if differ:
            raise DalleEvalError(f"{out} holds capability records of another run or other probe settings "
                                 f"({', '.join(differ)} differ, see {path}); use another --out or --overwrite")
    if overwrite:
        (out / RECORDS).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, fp)
    return [rec for _, rec in iter_jsonl(out / RECORDS)] if (out / RECORDS).exists() else []


def _write(path: Path, records: list[dict]) -> None:
    import json

    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["step"])))


def score_checkpoints(run: Path, out: Path, cfg: Config, which: str = "all", device="cpu", progress: bool = True,
                      overwrite: bool = False) -> dict:
    """Score the kept checkpoints of transformer run RUN with the training probes -> OUT/capabilities.jsonl and
    OUT/capability_curves.png; returns a summary (steps scored and skipped, seconds, paths).

    `which`: "all" or "every-N" (kept checkpoints whose step is a multiple of N, plus the final one). `cfg`
    gives the probe settings (train.probe_prompts, train.probe_samples, eval.seed, sample.*; run_config(RUN)
    is the run's own); the model is the one RUN/config.json describes. Step 0 (the untrained model) is not a
    kept checkpoint: only train.probe_every while training scores it. Records are written after each checkpoint
    (atomically): a re-run skips the steps already there; a checkpoint that fails to load is named.
    """
    run, out = Path(run), Path(out)
    meta = _run_meta(run)
    kept = kept_checkpoints(run)
    if not kept:
        raise DalleEvalError(f"--ckpt {run}: no kept checkpoints (state/step-N/ dirs); expected a transformer run dir "
                             "that has saved at least one checkpoint (train.keep_every keeps milestones)")
    chosen = select_steps(kept, which)
    records = _claim(out, _fingerprint(meta, cfg), overwrite)
    done = {r.get("step") for r in records if r.get("split") == "probe"}
    todo = [(s, p) for s, p in chosen if s not in done]
    t0, scored = time.time(), []
    if todo:
        run_cfg = config_from_dict(meta["config"], where=f"{run / 'config.json'}:")
        model = DalleTransformer(run_cfg.transformer).to(device).eval()
        probe = TransformerProbe(cfg, _assets(run, meta), model)  # oracle codes encoded once
        for step, state in todo:
            try:
                load_weights(model, _weights_dir(state))  # in place: the probe holds this module
            except DalleEvalError as e:
                raise DalleEvalError(f"checkpoint step {step} ({state}) does not load: {e}"
                                     + (f"; steps {', '.join(map(str, scored))} are saved in {out / RECORDS} "
                                        "(the same command resumes)" if scored else "")) from None
            model.to(device)
            t = time.time()
            with torch.no_grad():
                recs = probe()
            seconds = time.time() - t
            records += [{"split": "probe", "step": step, **rec, "seconds": round(seconds, 3)} for rec in recs]
            _write(out / RECORDS, records)
            scored.append(step)
            if progress:
                shown = ", ".join(f"{r['suite'][:4]} {r['check']} {r['accuracy']:.0%}" for r in recs[:6])
                print(f"probes at step {step} ({seconds:.1f} s): {shown}{', ...' if len(recs) > 6 else ''}",
                      file=sys.stderr)
    from dalle_eval.plots import plot_capabilities

    plot = plot_capabilities(out / RECORDS, out / PLOT)
    return {"run": str(run), "checkpoints": which, "steps": [s for s, _ in chosen], "scored": scored,
            "skipped": [s for s, _ in chosen if s in done], "seconds": round(time.time() - t0, 2),
            "records": str(out / RECORDS), "plot": str(plot)}
