"""One training loop for both stages, single-process or under `torchrun` (DDP / FSDP2).

The stage-specific parts live in stage1.py and stage2.py; data streaming in stream.py; process groups
and wrapping in distributed.py. Exact resume: the sample order is a pure function of the seed and the
stream positions saved in each checkpoint; the random noise of step s (Gumbel, dropout) is seeded by
(seed, s, rank) alone; model, optimizer and schedule state are checkpointed. A resumed run computes the
same losses as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from dalle_eval.model import distributed
from dalle_eval.model.checkpoint import (
    init_weights,
    latest_state,
    load_state,
    reload_init_weights,
    resume_config,
    save_state,
)
from dalle_eval.model.devices import check_devices
from dalle_eval.model.stream import BadShard, ShardStream, StreamLoader, mix_seed, read_held_out, read_shard
from tqdm import tqdm

from dalle_eval.artifacts import append_jsonl, atomic_path, read_json, write_json
from dalle_eval.config import Config, config_to_dict
from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import data_location, read_location_manifest

STAGES = ("dvae", "transformer", "clip")
# (stage, config, data folder, the model being trained) -> a pass: () -> metrics records (split "probe")
ProbeFactory = Callable[[str, Config, Path, torch.nn.Module], Callable[[], list[dict]]]


class _StopOnSignal:
    """SIGTERM/SIGINT (cluster preemption, Ctrl-C) ask the loop to checkpoint and return cleanly."""

    def __init__(self):
        self.signal: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_data_dir(data: Path, kind: str) -> Path:
    """Accept the dataset root (OUT of build-dataset) or the shard folder itself, local or a URL prefix."""
    data = data_location(data)
    for folder in (data / kind, data):
        if (folder / "manifest.json").exists():
            return folder
    raise DalleEvalError(f"--data {data}: no {kind}/manifest.json — build it with `dalle-eval build-dataset` first")


def make_task(stage: str, cfg: Config, folder: Path, manifest: dict, out: Path, main: bool):
    if stage == "dvae":
        from dalle_eval.model.stage1 import DVAETask

        return DVAETask(cfg)
    if stage == "transformer":
        from dalle_eval.model.stage2 import TransformerTask

        return TransformerTask(cfg, folder, manifest, out, copy_assets=main)
    if stage == "clip":
        from dalle_eval.model.stage_clip import ClipTask

        return ClipTask(cfg, out, write_config=main)
    raise DalleEvalError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")


def split_shards(folder: Path, manifest: dict, n_val: int) -> tuple[list[str], list[str]]:
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not shards:
        raise DalleEvalError(f"{folder}/manifest.json: no shards listed; rebuild it with `dalle-eval build-dataset`")
    if n_val < 0 or len(shards) - n_val < 1:
        raise DalleEvalError(f"{folder}: {len(shards)} shard(s) cannot hold out train.val_shards={n_val} for "
                             "validation and still train; write smaller shards (data.shard_size) or lower it")
    return shards[: len(shards) - n_val], shards[len(shards) - n_val :]


def load_val(folder: Path, names: list[str], decode, limit: int, on_bad_shard: str = "skip") -> tuple[list[tuple], list[str]]:
    """-> up to `limit` held-out samples and the bad validation shards skipped (--on-bad-shard, as in training)."""
    return read_held_out(folder, names, decode, limit, on_bad_shard)


def _first_sample(folder: Path, names: list[str], decode) -> tuple:
    for name in names:
        with contextlib.suppress(BadShard):
            samples = read_shard(folder / name, decode, None)
            if samples:
                return samples[0]
    raise DalleEvalError(f"{folder}: no readable sample in any training shard")


def batch_sizes(batch: int, micro: int, world: int) -> tuple[int, int]:
    """-> (micro-batch per rank, accumulation steps) reaching the global `batch` per update."""
    micro = micro or batch // world
    if micro <= 0 or batch % (micro * world):
        raise DalleEvalError(f"the global batch_size={batch} must be a multiple of micro_batch={micro} x {world} rank(s)")
    return micro, batch // (micro * world)


def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a large square matmul on `device`: the denominator of MFU when train.peak_tflops is 0."""
    n = 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def train(
    stage: str, data: Path, cfg: Config, out: Path, resume: bool = False, progress: bool = True,
    stop_at: int | None = None, overrides: Sequence[str] = (), use_saved_config: bool = False,
    probes: ProbeFactory | None = None, init_from: Path | None = None,
) -> dict:
    """Train one stage; returns the run summary (also written to OUT/summary.json by rank 0).

    stop_at: checkpoint and return after this step (a time-boxed job; `resume` continues it).
    resume: continue OUT's latest checkpoint. Its saved config + `overrides` (e.g. more steps) is the config:
    `cfg` must equal it (another is refused, OUT untouched), or with use_saved_config (`train --resume`)
    `cfg` is only used while OUT has no config yet.
    probes: builds the probe pass of train.probe_every (dalle_eval.probes.in_training.make_probe; the
    evaluation layer wires it in: dalle_eval.probes.in_training.train is this function with it).
    init_from: start from the weights of this checkpoint of the same stage (a run dir or RUN/state/step-N) with
    a fresh optimizer, schedule and data position; OUT's config.json and summary.json record its fingerprint.
    """
    if init_from is not None and resume:
        raise DalleEvalError(f"--init-from {init_from} starts a new run from another run's weights; --resume continues "
                             f"{out}'s own checkpoint: give one of them")
    if resume:
        cfg = resume_config(out, cfg, overrides, use_saved_config, verbose=os.environ.get("RANK", "0") == "0")
        check_devices(cfg, ("train",))
    if cfg.train.probe_every and probes is None:
        raise DalleEvalError(f"train.probe_every={cfg.train.probe_every} needs the probe suites: call "
                             "dalle_eval.probes.in_training.train (what `dalle-eval train` runs) or set it to 0")
    d = distributed.setup(cfg.train.device)
    try:
        return _loop(_setup(stage, data_location(data), cfg, Path(out), resume, d, probes, init_from), progress, stop_at)
    finally:
        distributed.teardown(d)


@dataclasses.dataclass
class _Run:
    """What the loop needs, built by _setup: the task, model, optimizer, schedule, data and where it resumes."""

    stage: str
    cfg: Config
    out: Path
    d: distributed.Dist
    task: Any
    val: list
    wrapped: torch.nn.Module
    forward_model: Any
    opt: torch.optim.Optimizer
    sched: Any
    loader: StreamLoader
    n_streams: int
    micro: int
    accum: int
    data_info: dict
    start: int = 0
    bad_run: int = 0
    probe: Callable[[], list[dict]] | None = None
    init_from: dict | None = None  # the weights it started from (checkpoint.init_weights), None: random init
    probe_seconds: list[float] = dataclasses.field(default_factory=list)
    mfu_peak: dict | None = None  # the MFU denominator and where it came from (summary.json)

    def checkpoint(self, at: int) -> None:
        d, tc = self.d, self.cfg.train
        gathered = distributed.gather_objects(dict(self.loader.positions), d)
        positions_all = {v: list(p) for part in gathered for v, p in part.items()}
        bad = sorted(set().union(*distributed.gather_objects(sorted(self.loader.bad_shards), d)))
        train_state = {"step": at, "schedule": self.sched.state_dict(), "extra": self.task.extra_state(),
                       "bad_run": self.bad_run,
                       "data": {"n_streams": self.n_streams, "positions": positions_all, "bad_shards": bad},
                       "data_info": {"fingerprints": self.task.fingerprints}}
        save_state(self.out, at, self.task, self.opt, train_state, tc.keep_last, d, tc.parallel,
                   keep_every=tc.keep_every)


def _setup(stage: str, data: Path, cfg: Config, out: Path, resume: bool, d: distributed.Dist,
           probes: ProbeFactory | None = None, init_from: Path | None = None) -> _Run:
    """Data, task, model (wrapped), optimizer and schedule, restored from OUT's latest checkpoint on resume
    (or the model from --init-from's weights)."""
    tc = cfg.train
    state = latest_state(out)
    if state is not None and not resume:
        raise DalleEvalError(f"{out} already holds a checkpoint ({state.name}); pass --resume to continue it or pick a new --out")
    kind = "tokens" if stage == "transformer" else "images"
    folder = resolve_data_dir(data, kind)
    manifest = read_location_manifest(folder, f"{kind} shards")
    torch.manual_seed(tc.seed)  # same initial weights on every rank
    task = make_task(stage, cfg, folder, manifest, out, d.is_main)
    train_shards, val_shards = split_shards(folder, manifest, tc.val_shards)
    val, bad_val = load_val(folder, val_shards, task.decode, tc.val_samples, tc.on_bad_shard)
    task.check_sample(val[0] if val else _first_sample(folder, train_shards, task.decode), folder)
    init = _initial_weights(stage, cfg, out, init_from, resume, state, task, d.is_main)
    model = task.model.to(d.device)
    wrapped = distributed.wrap(model, d, tc.parallel, task.shard_units() if tc.parallel == "fsdp" else None)
    forward_model = torch.compile(wrapped) if tc.compile else wrapped
    opt = task.optimizer()
    sched = task.schedule()
    resumed = _resume(state, task, opt, sched, folder, out, d, tc.parallel, resume)
    data_state = resumed.get("data", {})
    loader, n_streams, micro, accum = _loader(cfg, folder, manifest, train_shards, task, d, data_state)
    loader.bad_shards.update(data_state.get("bad_shards", []) + bad_val)
    data_info = {"folder": str(folder), "train_shards": len(train_shards), "val_shards": len(val_shards),
                 "n_val": len(val), "n_streams": n_streams, "micro_batch": micro, "accumulation": accum,
                 "world_size": d.world, "parallel": tc.parallel if d.active else "none",
                 "fingerprints": task.fingerprints}
    start = resumed.get("step", 0)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"stage": stage, "config": config_to_dict(cfg), "data": data_info,
                                         **({"init_from": init} if init else {})})
        drop_records_after(out / "metrics.jsonl", start)
    assets = getattr(task, "assets", folder)  # the transformer's tokenizer and dvae/, local even from a URL
    probe = probes(stage, cfg, assets, task.model) if probes is not None and tc.probe_every else None
    return _Run(stage, cfg, out, d, task, val, wrapped, forward_model, opt, sched, loader, n_streams, micro, accum,
                data_info, start, resumed.get("bad_run", 0), probe, init)


def _initial_weights(stage: str, cfg: Config, out: Path, init_from: Path | None, resume: bool, state: Path | None,
                     task, main: bool) -> dict | None:
    """--init-from's weights loaded into task.model -> its record. On resume, the record OUT's config.json keeps;
    its weights are loaded again only while OUT has no checkpoint (a run stopped before its first one)."""
    if init_from is not None:
        record = init_weights(task.model, init_from, stage, cfg)
    elif resume and (out / "config.json").exists():
        record = read_json(out / "config.json", "checkpoint config").get("init_from")
        if record is not None and state is None:
            reload_init_weights(task.model, record)
    else:
        return None
    if record is not None and state is None and main:
        print(f"initialised from {record['weights']} (step {record['step']}): weights only, a fresh optimizer")
        source_data = record.get("data_fingerprints")
        if source_data and source_data != task.fingerprints:
            print(f"warning: --init-from's run was trained on data made with {source_data}; this --data was made "
                  f"with {task.fingerprints} (another tokenizer or dVAE gives the ids other meanings)")
    return record


def _resume(state: Path | None, task, opt, sched, folder: Path, out: Path, d: distributed.Dist, parallel: str,
            resume: bool) -> dict:
    """The latest checkpoint's train state loaded into task, optimizer and schedule; {} when there is none."""
    resumed = load_state(state, task, opt, d, parallel) if state is not None else None
    if resumed is None:
        if resume and d.is_main:
            print(f"{out}: no checkpoint yet; starting from step 0")
        return {}
    sched.load_state_dict(resumed["schedule"])
    saved = resumed.get("data_info", {}).get("fingerprints")
    if saved != task.fingerprints:
        raise DalleEvalError(f"--data {folder} was made with {task.fingerprints} but {out} was trained on "
                             f"{saved}; resume with the same data or start a new --out")
    if d.is_main:
        print(f"resuming {out} from step {resumed['step']}")
    return resumed


def _loader(cfg: Config, folder: Path, manifest: dict, train_shards: list[str], task, d: distributed.Dist,
            data_state: dict) -> tuple[StreamLoader, int, int, int]:
    """-> this rank's stream of training batches (at the saved positions), n_streams, micro-batch, accumulation."""
    tc = cfg.train
    n_streams = data_state.get("n_streams") or tc.data_streams or d.world * max(1, tc.num_workers)
    micro, accum = batch_sizes(task.tc.batch_size, task.tc.micro_batch, d.world)
    sizes = manifest.get("shard_sizes") or [None] * len(manifest["shards"])
    stream = ShardStream(folder, train_shards, sizes[: len(train_shards)], task.decode, n_streams,
                         tc.shuffle_shards, tc.seed, tc.on_bad_shard)
    positions = {int(v): tuple(p) for v, p in data_state.get("positions", {}).items()}
    loader = StreamLoader(stream, d.rank, d.world, micro * accum, tc.num_workers, positions)
    return loader, n_streams, micro, accum


class _Log:
    """metrics.jsonl and TensorBoard on rank 0; throughput over the steps since the last train record."""

    def __init__(self, run: _Run, peak: float):
        self.run, self.peak = run, peak
        self.path = run.out / "metrics.jsonl"
        self.tb = _tensorboard(run.out, run.cfg.train.tensorboard) if run.d.is_main else None
        self.window_t, self.window_n = 0.0, 0

    def write(self, rec: dict, tb: bool = True) -> None:
        if self.run.d.is_main:
            append_jsonl(self.path, rec)
            if tb:
                _tb_write(self.tb, rec)

    def train(self, step: int, lr: float, grad_norm: float, last: dict) -> dict:
        """The train record of `step` (losses averaged over ranks) -> those averaged losses."""
        run = self.run
        last = distributed.mean(last, run.d)
        now = time.time()
        sps = self.window_n / (now - self.window_t)
        self.write({"split": "train", "step": step + 1, **last, "lr": lr, "grad_norm": grad_norm,
                    "samples_per_s": sps, "tokens_per_s": sps * run.task.tokens_per_sample,
                    "mfu": sps * run.task.flops_per_sample / (self.peak * run.d.world),
                    **run.task.extra_metrics(step), "bad_shards": len(run.loader.bad_shards)})
        self.window_t, self.window_n = now, 0
        return last

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _loop(run: _Run, progress: bool, stop_at: int | None) -> dict:
    """Steps run.start .. steps: update, log, validate, checkpoint; a signal checkpoints and returns early."""
    tc, d, task, out = run.cfg.train, run.d, run.task, run.out
    t0 = time.time()
    precision = task.tc.precision or tc.precision  # the stage's own, else train.precision
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    peak = tc.peak_tflops * 1e12 or measure_peak_flops(d.device, torch.bfloat16 if precision == "bf16" else torch.float32)
    log = _Log(run, peak)
    run.mfu_peak = {"flops_per_s": round(peak), "source": "train.peak_tflops" if tc.peak_tflops else
                    f"measured at start: a 1024x1024 {precision or 'fp32'} matmul for 0.5 s (benchmarks/peak.py "
                    "measures the models' own shapes, single- and multi-threaded)"}
    stop = _StopOnSignal()
    steps = task.tc.steps
    bar = tqdm(range(run.start, steps), desc=f"train {run.stage}", unit="step", disable=not (progress and d.is_main),
               initial=run.start, total=steps)
    if run.start == 0:
        _probe(run, log, 0, bar)
    log.window_t, last, step, stopping = time.time(), {}, run.start - 1, False
    for step in bar:
        lr, parts, grad_norm, finite = _step(run, step, autocast, log)
        log.window_n += task.tc.batch_size
        if finite:
            last = parts
        if (step + 1) % tc.log_every == 0 or step + 1 == steps:
            last = log.train(step, lr, grad_norm, last)
            bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}")
        _validate(run, log, step, steps)
        if tc.sample_every and (step + 1) % tc.sample_every == 0:
            task.sample_grid(run.val, out / "samples" / f"step-{step + 1:08d}.png", d.device, d.is_main)
        if tc.probe_every and ((step + 1) % tc.probe_every == 0 or step + 1 == steps):
            _probe(run, log, step + 1, bar)
        stopping = distributed.any_rank(stop.signal is not None, d)
        if (step + 1) % tc.ckpt_every == 0 or step + 1 in (steps, stop_at) or stopping:
            run.checkpoint(step + 1)
        if step + 1 == stop_at or stopping:
            break
    bar.close()
    stop.restore()
    log.close()
    if stopping:  # preempted: the checkpoint is saved, `--resume` continues exactly
        return _preempted(run, stop.signal or "a signal on another rank", step, last)
    return _finish(run, log, step, last, time.time() - t0)


def _step(run: _Run, step: int, autocast, log: _Log) -> tuple[float, dict, float, bool]:
    """One update (skipped when the loss or gradient is not finite) -> lr, loss parts, grad norm, finite."""
    tc, d, task, opt = run.cfg.train, run.d, run.task, run.opt
    lr = run.sched.lr(step)
    for group in opt.param_groups:
        group["lr"] = lr
    torch.manual_seed(mix_seed(tc.seed, "noise", step, d.rank))  # noise of step s: exact resume
    run.wrapped.train()
    parts = _backward(run, run.loader.next(), step, autocast)
    grad_norm = task.clip_gradients()
    finite = math.isfinite(grad_norm) and not distributed.any_rank(not math.isfinite(parts["loss"]), d)
    if finite:
        opt.step()
        task.after_step()
        run.bad_run = 0
    else:  # a non-finite loss or gradient: skip the update, keep the last good weights
        run.bad_run += 1
        log.write({"split": "train", "step": step + 1, "skipped": "non-finite loss or gradient",
                   "loss": parts["loss"], "grad_norm": grad_norm, "bad_run": run.bad_run}, tb=False)
    opt.zero_grad(set_to_none=True)
    if run.bad_run > tc.max_bad_steps:  # skipped steps left the weights as the last good step made them
        run.checkpoint(step + 1)
        raise DalleEvalError(
            f"{run.bad_run} training steps in a row had a non-finite loss or gradient (train.max_bad_steps="
            f"{tc.max_bad_steps}); stopped at step {step + 1}. The weights of the last good step are saved in "
            f"{run.out}; lower the learning rate or try precision=fp32, then --resume")
    return lr, parts, grad_norm, finite


def _backward(run: _Run, rank_batch: tuple, step: int, autocast) -> dict[str, float]:
    """Forward and backward over this rank's samples of the step, cut into micro-batches -> mean loss parts."""
    micro, accum = run.micro, run.accum
    sums: dict[str, torch.Tensor] = {}
    for i in range(accum):
        batch = run.task.prepare(tuple(t[i * micro : (i + 1) * micro] for t in rank_batch), run.d.device)
        with distributed.no_sync(run.wrapped, run.d, run.cfg.train.parallel, sync=i == accum - 1), autocast:
            losses = run.task.loss(run.forward_model, batch, step)
            (losses["loss"] / accum).backward()
        for k, v in losses.items():  # summed on the device: one host sync per step, not per micro-step
            sums[k] = sums[k] + v.detach() if k in sums else v.detach()
    return {k: float(v) / accum for k, v in sums.items()}


def _validate(run: _Run, log: _Log, step: int, steps: int) -> None:
    """Every train.val_every steps (not the last: _finish evaluates it): held-out loss; a plateau halves the lr."""
    tc, d = run.cfg.train, run.d
    if not (run.val and tc.val_every and (step + 1) % tc.val_every == 0 and step + 1 < steps):
        return
    rec = run.task.evaluate(run.val, d.device)
    if run.sched.observe_val(rec["val_loss"]) and d.is_main:
        print(f"step {step + 1}: validation loss plateaued; learning rate halved")
    log.write({"split": "val", "step": step + 1, **rec}, tb=False)
    if d.is_main:
        _tb_write(log.tb, {"step": step + 1, **rec})


@contextlib.contextmanager
def _exported_weights(task, final: bool):
    """At the last step the probes score the weights the run exports (the dVAE's parameter EMA, if any) rather
    than the trained ones, which are put back afterwards (the checkpoint and a resumed run keep them)."""
    weights = task.export_weights() if final else None
    if weights is None:
        yield
        return
    trained = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
    task.model.load_state_dict(weights)
    try:
        yield
    finally:
        task.model.load_state_dict(trained)


def _probe(run: _Run, log: _Log, at: int, bar) -> None:
    """One probe pass on the weights after `at` steps -> metrics records (split "probe"), timed. Every rank
    runs it (a sharded model's forward needs them all); rank 0 writes."""
    if run.probe is None:
        return
    t = time.time()
    with torch.no_grad(), _exported_weights(run.task, at == run.task.tc.steps):
        recs = run.probe()
    seconds = time.time() - t
    run.probe_seconds.append(seconds)
    log.window_t += seconds  # throughput counts training time only
    for rec in recs:
        log.write({"split": "probe", "step": at, **rec, "seconds": round(seconds, 3)}, tb=False)
        if run.d.is_main and log.tb is not None:
            log.tb.add_scalar(f"probe/{rec['suite']}/{rec['scorer']}/{rec['check']}", rec["accuracy"], at)
    if run.d.is_main:
        shown = ", ".join(f"{r['suite'][:4]} {r['check']} {r['accuracy']:.0%}" for r in recs[:6])
        bar.write(f"probes at step {at} ({seconds:.1f} s): {shown}{', ...' if len(recs) > 6 else ''}")


def _probe_cost(run: _Run, wall: float) -> dict:
    """Seconds per probe pass and their share of the run's wall time (goal: a small fraction)."""
    if not run.probe_seconds:
        return {}
    total = sum(run.probe_seconds)
    return {"probe_passes": len(run.probe_seconds), "probe_seconds_per_pass": round(total / len(run.probe_seconds), 2),
            "probe_share_of_time": round(total / wall, 3) if wall > 0 else None}


def _preempted(run: _Run, signame: str, step: int, last: dict) -> dict:
    if run.d.is_main:
        print(f"received {signame}: saved {run.out} at step {step + 1}; continue with --resume")
    return {"stage": run.stage, "steps": run.task.tc.steps, "stopped_at": step + 1, "preempted": signame,
            "final_train": last, "eval": {}, "ckpt": str(run.out), "bad_shards": sorted(run.loader.bad_shards)}


def _finish(run: _Run, log: _Log, step: int, last: dict, wall: float) -> dict:
    """The final evaluation and the run summary (OUT/summary.json)."""
    evaluation = run.task.evaluate(run.val, run.d.device, final=True) if run.val else {}
    summary = {"stage": run.stage, "steps": run.task.tc.steps, "final_train": last, "eval": evaluation,
               "ckpt": str(run.out), "data": run.data_info, "bad_shards": sorted(run.loader.bad_shards),
               "mfu_peak": run.mfu_peak, **({"init_from": run.init_from} if run.init_from else {})}
    cost = _probe_cost(run, wall)
    if cost:
        summary["probes"] = cost
    if run.d.is_main:
        if cost:
            print(f"probes: {cost['probe_passes']} passes, {cost['probe_seconds_per_pass']} s each, "
                  f"{cost['probe_share_of_time']:.1%} of this run's {wall:.0f} s")
        write_json(run.out / "summary.json", summary)
        if run.val:
            log.write({"split": "val", "step": step + 1, **{k: v for k, v in evaluation.items()
                                                           if k.startswith("val_")}}, tb=False)
    return summary


def drop_records_after(path: Path, step: int) -> None:
    """metrics.jsonl as of the checkpoint at `step`: a run killed after it logged steps that the resumed run
    logs again (and maybe a torn last line); drop them, atomically, so every step has one record."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError, AttributeError, TypeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
    if len(keep) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))


def _tensorboard(out: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DalleEvalError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out / "tb"))


def _tb_write(tb, rec: dict) -> None:
    if tb is None:
        return
    for k, v in rec.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
            tb.add_scalar(k, v, rec["step"])


def read_summary(ckpt: Path) -> dict:
    return read_json(Path(ckpt) / "summary.json", "training summary")
