"""Training data streamed from webdataset shards: split across ranks and workers, shuffled, endless,
deterministic under a seed, and exactly resumable.

The shards are dealt to `n_streams` fixed streams (shard j -> stream j mod n_streams). A stream walks its
shards epoch after epoch in a seeded order, in windows of `window` shards whose samples are shuffled
together (the shuffle buffer: window x shard_size samples). Rank r owns streams r, r + world, ...; its
DataLoader workers split those further. Every micro-batch takes the same number of samples from each of
the rank's streams, so the global batch of a step is the same set of samples for any number of ranks
(with n_streams fixed), and a stream's position (epoch, window, offset) is a few integers: checkpoints
store it, and resume continues at the next sample, replaying and skipping nothing, loading one window.

Unlike webdataset's own `shuffle(n)` buffer, whose content cannot be checkpointed, a window is a pure
function of (seed, stream, epoch, window index).

The shard folder is a local path or a URL prefix (s3://, https://, ...; dalle_eval.shards.data_location): a
remote shard is streamed into memory like a local one, so positions, resume and bad shards work the same.
"""

from __future__ import annotations

import hashlib
import math
import signal
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dalle_eval.errors import DalleEvalError
from dalle_eval.shards import RemoteLocation, data_location, decode_sample, iter_raw_samples

Where = Path | RemoteLocation  # a shard folder or shard: local, or behind an fsspec URL

Pos = tuple[int, int, int]  # (epoch, window, offset of the next sample in the shuffled window)


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


def _perm(n: int, *seed_parts) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(*seed_parts))).tolist()


class BadShard(DalleEvalError):
    """A shard that cannot be read whole (truncated, corrupt, wrong sample count, undecodable, ids out of range)."""

    def __init__(self, path: Where, reason: str):
        super().__init__(f"{path}: unreadable shard ({reason})")
        self.path, self.reason = data_location(path), reason


def read_shard(path: Where, decode: Callable[[dict], tuple], expected: int | None, epoch: int | None = None) -> list[tuple]:
    """Every sample of one shard (local or a URL), decoded as webdataset's decode("pil") would, or BadShard:
    a shard is used whole or not at all.

    epoch: handed to `decode` as sample["__epoch__"] (training-time augmentation seeded by key and epoch)."""
    extra = {} if epoch is None else {"__epoch__": epoch}
    try:
        raw = list(iter_raw_samples(path))  # read whole first: a cut-off shard is named for the cut, not its last sample
        samples = [decode({**decode_sample(key, files), **extra}) for key, files in raw]
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise BadShard(path, f"{type(e).__name__}: {e}") from None
    if expected is not None and len(samples) != expected:
        raise BadShard(path, f"holds {len(samples)} samples, the manifest says {expected}")
    return samples


def _bad_shard(e: BadShard, policy: str, what: str = "") -> None:
    """--on-bad-shard: fail with one line naming the shard, or warn and let the caller skip it."""
    if policy == "fail":
        raise DalleEvalError(f"{e.path}: unreadable {what}shard ({e.reason}); "
                             "--on-bad-shard skip would skip it and go on") from None
    warnings.warn(f"skipping unreadable {what}shard {e.path}: {e.reason}", stacklevel=3)


def read_held_out(folder: Where, names: list[str], decode: Callable[[dict], tuple], limit: int,
                  on_bad_shard: str = "skip") -> tuple[list[tuple], list[str]]:
    """Up to `limit` samples of the validation shards, in order, and the bad ones skipped; a bad shard is
    skipped by name or fatal as --on-bad-shard says, as in training."""
    samples: list[tuple] = []
    bad: list[str] = []
    for name in names:
        if len(samples) >= limit:
            break
        try:
            samples += read_shard(data_location(folder) / name, decode, None)
        except BadShard as e:
            _bad_shard(e, on_bad_shard, "validation ")
            bad.append(name)
    return samples[:limit], bad


class ShardStream:
    """The deterministic sample order of every stream (see the module docstring)."""

    def __init__(self, folder: Where, shards: list[str], sizes: list[int] | None, decode: Callable[[dict], tuple],
                 n_streams: int, window: int, seed: int, on_bad_shard: str = "skip"):
        if len(shards) < n_streams:
            raise DalleEvalError(
                f"{folder}: {len(shards)} training shard(s) cannot feed {n_streams} data streams "
                "(one per rank x worker unless train.data_streams is set); write smaller shards "
                "(data.shard_size) or use fewer ranks/workers (train.num_workers)"
            )
        self.folder, self.decode, self.window, self.seed = data_location(folder), decode, max(1, window), seed
        self.on_bad_shard, self.n_streams = on_bad_shard, n_streams
        self.size = dict(zip(shards, sizes)) if sizes else {}
        self.shards = [shards[j::n_streams] for j in range(n_streams)]

    def windows(self, v: int) -> int:
        return math.ceil(len(self.shards[v]) / self.window)

    def load_window(self, v: int, epoch: int, w: int) -> tuple[list[tuple], list[str]]:
        """The shuffled samples of window w of stream v in `epoch`, and the bad shards it skipped."""
        order = [self.shards[v][i] for i in _perm(len(self.shards[v]), self.seed, "shards", v, epoch)]
        samples, bad = [], []
        for name in order[w * self.window : (w + 1) * self.window]:
            try:
                samples.extend(read_shard(self.folder / name, self.decode, self.size.get(name), epoch))
            except BadShard as e:
                _bad_shard(e, self.on_bad_shard)
                bad.append(name)
        return [samples[i] for i in _perm(len(samples), self.seed, "samples", v, epoch, w)], bad

    def iterate(self, v: int, pos: Pos) -> Iterator[tuple[tuple, Pos, list[str]]]:
        """(sample, position after it, bad shards met on the way) from `pos` on, forever."""
        epoch, w, offset = pos
        seen_in_epoch, pending = offset, []
        while True:
            samples, bad = self.load_window(v, epoch, w)
            pending += bad
            for i in range(offset, len(samples)):
                yield samples[i], (epoch, w, i + 1), pending
                pending = []
            seen_in_epoch += len(samples) - offset
            offset, w = 0, w + 1
            if w == self.windows(v):
                if seen_in_epoch == 0:
                    raise DalleEvalError(f"{self.folder}: every shard of data stream {v} is unreadable "
                                         f"({', '.join(self.shards[v])})")
                epoch, w, seen_in_epoch = epoch + 1, 0, 0


def collate(samples: list[tuple]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(parts) for parts in zip(*samples))


class _Chunks(IterableDataset):
    """Endless chunks (stream id, batch of `take` samples, position after it, bad shards)."""

    def __init__(self, stream: ShardStream, ids: list[int], take: int, positions: dict[int, Pos]):
        super().__init__()
        self.stream, self.ids, self.take, self.positions = stream, ids, take, positions

    def __iter__(self):
        info = get_worker_info()
        ids = self.ids[info.id :: info.num_workers] if info else self.ids
        its = {v: self.stream.iterate(v, self.positions[v]) for v in ids}
        while True:
            for v in ids:
                items = [next(its[v]) for _ in range(self.take)]
                yield v, collate([x[0] for x in items]), items[-1][1], [b for x in items for b in x[2]]


def _ignore_signals(worker_id: int) -> None:
    """Ctrl-C and schedulers signal the whole process group: workers keep serving while the main process
    checkpoints (train.py), then it shuts them down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class StreamLoader:
    """One rank's samples of each step: batch / len(streams) from each stream it owns, positions tracked
    as batches are consumed (not as workers prefetch them)."""

    def __init__(self, stream: ShardStream, rank: int, world: int, batch: int, workers: int,
                 positions: dict[int, Pos] | None = None):
        self.ids = list(range(rank, stream.n_streams, world))
        if stream.n_streams % world:
            raise DalleEvalError(f"train.data_streams={stream.n_streams} must be a multiple of the {world} ranks")
        if batch % len(self.ids):
            raise DalleEvalError(f"each rank's {batch} samples per step must split evenly over its "
                                 f"{len(self.ids)} data streams (train.data_streams={stream.n_streams})")
        workers = min(workers, len(self.ids))
        if workers and len(self.ids) % workers:
            raise DalleEvalError(f"train.num_workers={workers} must divide the {len(self.ids)} streams of each rank")
        self.positions = {v: tuple((positions or {}).get(v, (0, 0, 0))) for v in self.ids}
        self.bad_shards: set[str] = set()
        chunks = _Chunks(stream, self.ids, batch // len(self.ids), dict(self.positions))
        # batch_size=None: each worker item is already a chunk; workers are served round-robin, in order.
        self._it = iter(DataLoader(chunks, batch_size=None, num_workers=workers, worker_init_fn=_ignore_signals,
                                   prefetch_factor=4 if workers else None, persistent_workers=bool(workers)))

    def next(self) -> tuple[torch.Tensor, ...]:
        got = {}
        for _ in self.ids:
            v, batch, pos, bad = next(self._it)
            got[v] = batch
            self.positions[v] = tuple(pos)
            self.bad_shards.update(bad)
        return tuple(torch.cat(parts) for parts in zip(*(got[v] for v in self.ids)))
