"""A streaming tar reader of our own (core; benchmarks/README.md: 3.4x faster than tarfile on img2dataset's pax
headers): POSIX ustar/pax, GNU long names and base-256 sizes, gzip, checksum-verified headers.

And a writer of webdataset samples (`write_samples`) whose bytes are those of webdataset's TarWriter (tarfile
in pax format, a pax `mtime` record per member) for the same clock, ~10x faster: the re-shard stage of a web
build writes every kept sample through it (tests/test_build_overhead.py compares the two byte for byte)."""

from __future__ import annotations

import functools
import gzip
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax(data: bytes) -> dict[str, str]:
    """POSIX pax records "<len> <key>=<value>\n" (only path and size matter here)."""
    out, i = {}, 0
    while i < len(data) and data[i:i + 1] != b"\0":
        space = data.index(b" ", i)
        end = i + int(data[i:space])
        k, _, v = data[space + 1:end - 1].partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        i = end
    return out


def _exact(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise tarfile.ReadError(f"unexpected end of data in {what}")
    return data


def iter_tar_files(source: str | Path | BinaryIO, read: bool = True) -> Iterator[tuple[str, bytes | None, int]]:
    """(name, data or None, size) of each regular file of a tar, in order (POSIX ustar/pax, GNU long names).

    source: a local path, or a binary stream read front to back (a shard from an object store, shards.py),
    which must have peek() and return whole reads (io.BufferedReader does both); the caller closes it.
    A reader of our own because tarfile spends ~0.3 ms per member on pax headers, which is most of
    the time of hashing or re-sharding small downloaded images. Headers are checksum-verified; a
    truncated or corrupt tar raises tarfile.ReadError after the members before the break.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as raw:
            yield from _members(raw, read, seekable=True)
    else:
        yield from _members(source, read, seekable=False)


def _members(raw: BinaryIO, read: bool, seekable: bool) -> Iterator[tuple[str, bytes | None, int]]:
    f = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
    pending: dict[str, str] = {}
    while True:
        header = f.read(512)
        if not header.strip(b"\0"):  # end-of-archive blocks (or a tar with no end marker)
            if pending:  # a pax/long-name header describes a member that is not there: cut off
                raise tarfile.ReadError("unexpected end of data after a pax/long-name header")
            return
        if len(header) < 512:
            raise tarfile.ReadError("truncated header")
        stored = _octal(header[148:156])
        if stored != sum(header[:148]) + 256 + sum(header[156:]):  # checksum field counted as spaces
            raise tarfile.ReadError("bad header checksum")
        kind, size = header[156:157], _octal(header[124:136])
        size = int(pending.get("size", size))
        padded = (size + 511) // 512 * 512
        if kind in (b"x", b"L", b"g"):  # metadata for the next member (pax, GNU long name, global)
            data = _exact(f, padded, "a pax/long-name header")[:size]
            if kind == b"x":
                pending.update(_pax(data))
            elif kind == b"L":
                pending["path"] = data.rstrip(b"\0").decode("utf-8", "replace")
            continue
        name = pending.get("path") or (
            (header[345:500].rstrip(b"\0") + b"/" if header[257:262] == b"ustar" and header[345] else b"")
            + header[:100].rstrip(b"\0")
        ).decode("utf-8", "replace")
        pending = {}
        if kind in (b"0", b"\0", b"7"):  # regular file
            if read:
                data = _exact(f, padded, name)[:size]
                yield name, data, size
                continue
            yield name, None, size
        if f is raw and seekable:
            f.seek(padded, 1)
        else:
            _exact(f, padded, name)


# --------------------------------------------------------------------------- writing

_BLOCK, _RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
_WDS_MODE, _WDS_USER = 0o444, "bigdata"  # webdataset TarWriter's defaults


def _field(text: bytes, length: int) -> bytes:
    return text[:length] + b"\0" * (length - len(text))


def _octal_field(n: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, n)


def _ustar(name: bytes, mode: int, size: int, mtime: int, kind: bytes, uname: bytes) -> bytes:
    """A ustar header block as tarfile's TarInfo._create_header builds it (uid/gid 0, no link, no device)."""
    head = b"".join((_field(name, 100), _octal_field(mode & 0o7777, 8), b"0000000\0", b"0000000\0",
                     _octal_field(size, 12), _octal_field(mtime, 12)))
    tail = b"".join((kind, b"\0" * 100, tarfile.POSIX_MAGIC, _field(uname, 32), _field(uname, 32), b"\0" * 16,
                     b"\0" * 155, b"\0" * 12))
    chksum = 256 + sum(head) + sum(tail)
    return head + b"%06o\0 " % chksum + tail


def _pax_record(keyword: str, value: str) -> bytes:
    """One "<len> <keyword>=<value>\\n" record, len counting itself (tarfile's loop)."""
    body = f" {keyword}={value}\n".encode()
    n = p = 0
    while True:
        n = len(body) + len(str(p))
        if n == p:
            break
        p = n
    return str(p).encode() + body


_HEAD = b"%07o\0" % _WDS_MODE + b"0000000\0" * 2  # mode, uid, gid of a member
_TAIL = b"".join((tarfile.REGTYPE, b"\0" * 100, tarfile.POSIX_MAGIC, _field(_WDS_USER.encode(), 32) * 2, b"\0" * 183))
_SUM = 256 + sum(_HEAD) + sum(_TAIL)  # the checksum of the fixed fields (its own field counted as 8 spaces)


@functools.lru_cache(maxsize=64)
def _pax_block(n: int) -> bytes:
    """The ustar block of a pax header of n record bytes (all such headers differ only in their size)."""
    return _ustar(b"././@PaxHeader", 0, n, 0, tarfile.XHDTYPE, b"")


def member_header(name: str, size: int, mtime: float, mode: int = _WDS_MODE, user: str = _WDS_USER) -> bytes:
    """The header blocks of a regular file member: those of tarfile.TarInfo(name) with this size, float mtime,
    mode and uname = gname = user, .tobuf(PAX_FORMAT): a pax header with the mtime record, then ustar.
    Names tarfile puts in a pax `path` record (non-ASCII or > 100 bytes), other modes or users, sizes of
    8 GiB and more, or an int mtime go through tarfile itself."""
    seconds = round(mtime) if isinstance(mtime, float) else -1
    if not (name.isascii() and len(name) <= 100 and mode == _WDS_MODE and user == _WDS_USER
            and 0 <= size < 8 ** 11 and 0 <= seconds < 8 ** 11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, mtime, mode, user, user
        return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    records = _pax_record("mtime", str(mtime))
    raw = name.encode("ascii")
    sizes, times = b"%011o\0" % size, b"%011o\0" % seconds
    chksum = _SUM + sum(raw) + sum(sizes) + sum(times)
    return b"".join((_pax_block(len(records)), records, b"\0" * (-len(records) % _BLOCK),
                     raw, b"\0" * (100 - len(raw)), _HEAD, sizes, times, b"%06o\0 " % chksum, _TAIL))


class NotPlainSample(ValueError):
    """A sample webdataset's TarWriter would encode (str values, .gz names, metadata keys): write it with it."""


def _plain_bytes(sample: dict) -> bool:
    """Whether webdataset's TarWriter would write every file of `sample` as is: bytes values, no metadata
    keys (other than __key__) and no .gz names (it would compress those)."""
    return isinstance(sample.get("__key__"), str) and all(
        k == "__key__" or (k[:1] != "_" and not k.endswith(".gz") and isinstance(v, bytes)) for k, v in sample.items())


def write_samples(f: BinaryIO, samples: Iterable[dict], clock: Callable[[], float] | None = None) -> int:
    """Write webdataset samples ({"__key__": str, ext: bytes, ...}) to the open binary file `f`: the bytes
    webdataset.TarWriter(f) writes for them when its clock gives the same times (one clock() per file, files in
    sorted extension order; end-of-archive blocks padded to a 10 KiB record; clock: time.time). -> samples written. A sample with
    other values (str, arrays, .gz names, metadata keys) is refused (NotPlainSample): write it with webdataset."""
    clock = clock or time.time
    offset = n = 0
    for sample in samples:
        if not _plain_bytes(sample):
            raise NotPlainSample(f"write_samples: sample {sample.get('__key__')!r} is not all bytes; use webdataset")
        key = sample["__key__"]
        for ext in sorted(sample):
            if ext == "__key__":
                continue
            data = sample[ext]
            header = member_header(f"{key}.{ext}", len(data), clock())
            pad = -len(data) % _BLOCK
            f.write(header)
            f.write(data)
            if pad:
                f.write(b"\0" * pad)
            offset += len(header) + len(data) + pad
        n += 1
    end = 2 * _BLOCK
    f.write(b"\0" * (end + -(offset + end) % _RECORD))
    return n
