"""Our tar reader (dalle_eval.tar_reader.iter_tar_files) against the standard library's, format by format."""

import io
import tarfile

import pytest

from dalle_eval.shards import count_samples, iter_raw_samples
from dalle_eval.tar_reader import iter_tar_files

MEMBERS = [
    ("a" * 90 + "/" + "b" * 60 + ".jpg", b"x" * 1000),  # > 100 chars: pax path / GNU long name / ustar prefix
    ("k1.txt", b"hello"),
    ("dir/k2.\u00fcn\u00ef.json", b"{}" * 300),  # non-ASCII name: a pax record in PAX format
    ("k3.bin", b""),
    ("k3.txt", b"y" * 512),  # exactly one block: no padding
]


def _write(path, fmt, comp=""):
    with tarfile.open(path, "w:" + comp, format=fmt) as tf:
        for name, data in MEMBERS:
            if fmt == tarfile.USTAR_FORMAT:
                name = name.encode("ascii", "replace").decode().replace("?", "_")
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    return path


def _reference(path):
    with tarfile.open(path, "r|*") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]


@pytest.mark.parametrize("comp", ["", "gz"])
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_same_members_as_tarfile(tmp_path, fmt, comp):
    path = _write(tmp_path / "t.tar", fmt, comp)
    got = [(name, data) for name, data, _ in iter_tar_files(path)]
    assert got == _reference(path)
    assert [(n, s) for n, d, s in iter_tar_files(path, read=False) if d is None] == [(n, len(d)) for n, d in got]
    assert count_samples(path) == 4  # a…b, k1, dir/k2, k3


def test_truncated_and_corrupt_tars_raise_after_the_good_members(tmp_path):
    data = _write(tmp_path / "t.tar", tarfile.PAX_FORMAT).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: data.index(b"{}{}") + 100])  # inside the third file's data
    seen = []
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        for key, _ in iter_raw_samples(cut):
            seen.append(key)
    assert seen[:2] == ["a" * 90 + "/" + "b" * 60, "k1"]
    flipped = bytearray(data)
    flipped[1024 + 3] ^= 0xFF  # inside the second header block
    (tmp_path / "bad.tar").write_bytes(bytes(flipped))
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(iter_tar_files(tmp_path / "bad.tar"))
