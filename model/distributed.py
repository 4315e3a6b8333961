"""One process or many under `torchrun`: process group, model wrapping (DDP / FSDP2), collectives.

Single-process runs never touch torch.distributed. Under torchrun (WORLD_SIZE > 1) the backend is NCCL
on CUDA and gloo on CPU (how the tests run two processes on a laptop).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # this process created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (one process: [obj])."""
        return gather_objects(obj, self)


def setup(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device(device), "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_worker(code: int = 0) -> None:
    """End a torchrun worker without interpreter shutdown: gloo's threads can abort the process there
    (SIGABRT after destroy_process_group, ~1 launch in 10 on CPU), which torchrun reports as a failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wrap(model: torch.nn.Module, d: Dist, parallel: str, blocks: list[torch.nn.Module] | None = None):
    """DDP, or FSDP2 `fully_shard` on each block then the root; a no-op in a single process."""
    if not d.active:
        return model
    if parallel == "ddp":
        ids = [d.device.index] if d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for block in blocks or []:
        fully_shard(block)
    fully_shard(model)
    return model


def no_sync(wrapped: torch.nn.Module, d: Dist, parallel: str, sync: bool):
    """Skip the gradient all-reduce on accumulation micro-steps that are not the last."""
    if not d.active or sync:
        return contextlib.nullcontext()
    if parallel == "ddp":
        return wrapped.no_sync()
    wrapped.set_requires_gradient_sync(False)
    return _ResyncOnExit(wrapped)


class _ResyncOnExit(contextlib.AbstractContextManager):
    def __init__(self, module):
        self.module = module

    def __exit__(self, *exc):
        self.module.set_requires_gradient_sync(True)
        return False


def mean(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average scalars over ranks (logging)."""
    if not d.active or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / d.world).tolist()))


def any_rank(flag: bool, d: Dist) -> bool:
    if not d.active:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj, d: Dist) -> list:
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
