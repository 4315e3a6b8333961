"""This machine's matmul peak, fp32 and bf16, single- and multi-threaded: the denominator of every MFU figure.

    python benchmarks/peak.py [--out benchmarks/peak.json] [--threads 1 2] [--squares 1024 2048 4096] [--repeats 3]

Shapes: the tiny and shapes-long transformers' training matmuls, (batch * positions, d_model) x (d_model,
3 * d_model) for q/k/v and x (d_model, 4 * d_model) / (4 * d_model, d_model) for the MLP (batch = the
config's train.transformer.batch_size, positions = text_len + image_len - 1), the decode step of batch-16
KV-cached sampling (16, d_model) x (d_model, 3 * d_model), and squares. Each figure is the best of --repeats
timings after a warm-up, each timing a loop of back-to-back matmuls lasting >= 0.2 s; GFLOP/s = 2 m k n / t.
The peak of a (dtype, threads) pair is the best figure over the shapes. The JSON (--out, default
benchmarks/peak.json or $PEAK_JSON) records every figure, the peaks, the machine and torch version;
sampling.py, train_step.py and peer_dalle_pytorch.py read it through `peak_gflops` (or measure a quick
fp32 peak in-process when it is missing or from another machine) and name the peak in each MFU figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

DEFAULT_PATH = Path(os.environ.get("PEAK_JSON", Path(__file__).with_name("peak.json")))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MIN_SECONDS = 0.2  # per timing: enough back-to-back matmuls that timer and dispatch noise do not count


def machine() -> dict:
    """What a peak belongs to: a JSON from another CPU (or torch) is not this machine's peak."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    return {"cpu": cpu, "cpus": os.cpu_count(), "arch": platform.machine(), "torch": torch.__version__}


def model_shapes() -> list[tuple[str, int, int, int]]:
    """(name, m, k, n) of the matmuls the tiny and shapes-long transformers train and sample with."""
    from dalle_eval.config import load_config

    shapes = []
    for name in ("tiny", "shapes-long"):
        cfg = load_config([name])
        t = cfg.transformer
        rows = cfg.train.transformer.batch_size * (t.text_len + t.image_len - 1)  # positions fed per step
        d, inner, hidden = t.d_model, t.n_head * t.d_head, t.mlp_ratio * t.d_model
        shapes += [(f"{name} qkv", rows, d, 3 * inner), (f"{name} mlp up", rows, d, hidden),
                   (f"{name} mlp down", rows, hidden, d), (f"{name} decode qkv, batch 16", 16, d, 3 * inner)]
    return shapes


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best of `repeats` timings after a warm-up; each timing runs enough matmuls to last MIN_SECONDS."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up: allocation, thread pool, kernel selection (oneDNN for bf16)
    t0 = time.perf_counter()
    a @ b
    calls = max(1, int(MIN_SECONDS / max(time.perf_counter() - t0, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, (time.perf_counter() - t0) / calls)
    return 2 * m * k * n / best / 1e9


def measure(shapes: list[tuple[str, int, int, int]], dtypes: list[str], threads: list[int], repeats: int) -> dict:
    """Every (dtype, threads, shape) figure and the peak of each (dtype, threads) -> the JSON's content."""
    before, results = torch.get_num_threads(), []
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for dtype in dtypes:
                for name, m, k, n in shapes:
                    rate = matmul_gflops(m, k, n, DTYPES[dtype], repeats)
                    results.append({"dtype": dtype, "threads": n_threads, "shape": name, "m": m, "k": k, "n": n,
                                    "gflops": round(rate, 1)})
                    print(f"  {dtype} {n_threads} thread(s) {name:<32} ({m} x {k}) x ({k} x {n}): {rate:8.1f} GFLOP/s",
                          flush=True)
    finally:
        torch.set_num_threads(before)
    peak: dict = {}
    for r in results:
        best = peak.setdefault(r["dtype"], {}).get(str(r["threads"]))
        if best is None or r["gflops"] > best["gflops"]:
            peak[r["dtype"]][str(r["threads"])] = {"gflops": r["gflops"], "shape": r["shape"]}
    return {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "method": f"best of {repeats} after a warm-up, each timing >= {MIN_SECONDS} s of back-to-back matmuls; "
                      "GFLOP/s = 2 m k n / t; peak = best over the shapes", "peak": peak, "results": results}


def peak_gflops(dtype: str = "fp32", path: Path = DEFAULT_PATH) -> tuple[float, str]:
    """The `dtype` matmul peak at torch's current thread count -> (GFLOP/s, a short label for MFU figures).

    From `path` (written by this script) when it holds that dtype and thread count for this machine; otherwise
    measured now, quickly (a 2048 square, best of 3). Prints which.
    """
    threads = torch.get_num_threads()
    saved = json.loads(path.read_text()) if path.is_file() else {}
    entry = saved.get("peak", {}).get(dtype, {}).get(str(threads))
    if entry and saved.get("machine") == machine():
        gflops, source = entry["gflops"], path.name
        detail = f"{path} of {saved['date']}, best shape {entry['shape']}"
    else:
        other = saved.get("machine") != machine()
        why = ("no such file" if not saved else "measured on another machine or torch" if other
               else f"no {dtype} figure at {threads} thread(s)")
        gflops, source = matmul_gflops(2048, 2048, 2048, DTYPES[dtype]), "measured now"
        detail = f"a 2048 square, best of 3 after a warm-up; {path}: {why}; benchmarks/peak.py measures it properly"
    label = f"{dtype} peak {gflops:.0f} GFLOP/s at {threads} thread(s), {source}"
    print(f"MFU figures are relative to the {label} ({detail})", flush=True)
    return gflops, label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, torch.get_num_threads()}))
    ap.add_argument("--squares", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shapes = model_shapes() + [(f"square {s}", s, s, s) for s in args.squares]
    print(f"matmul GFLOP/s on {machine()['cpu']} ({os.cpu_count()} CPUs), torch {torch.__version__}")
    result = measure(shapes, args.dtypes, args.threads, args.repeats)
    for dtype, by_threads in result["peak"].items():
        for n, best in by_threads.items():
            print(f"peak {dtype} at {n} thread(s): {best['gflops']:.1f} GFLOP/s ({best['shape']})")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
