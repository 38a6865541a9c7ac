"""The IDX reader and writer: MNIST's layout, plain and gzipped, and errors that name the
file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from evaluation.real.idx import IdxError, read_idx, read_idx_split, write_idx


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzipped(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and np.array_equal(back, array)
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")


def test_mnist_headers(tmp_path):
    write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "labels", np.arange(3, dtype=np.uint8))
    images, labels = (tmp_path / "images").read_bytes(), (tmp_path / "labels").read_bytes()
    assert images[:16] == bytes.fromhex("00000803000000030000001c0000001c")
    assert len(images) == 16 + 3 * 784 and labels[:8] == bytes.fromhex("0000080100000003")


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(IdxError, match=r"bad: not an IDX file \(magic bytes 01020801\)"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(IdxError, match="unknown IDX type code 0x07"):
        read_idx(bad)
    write_idx(tmp_path / "short", np.zeros((4, 2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(
        IdxError, match=r"short: its header \(4, 2, 2\) needs 16 data bytes, the file holds 13"
    ):
        read_idx(tmp_path / "short")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05abcde")[:-6])
    with pytest.raises(IdxError, match="cut.gz: a truncated or corrupt gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_split_reader_finds_mnist_names(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.arange(5, dtype=np.uint8))
    x, y = read_idx_split(tmp_path, "train")
    assert np.array_equal(x, images) and y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(FileNotFoundError, match="no t10k-images-idx3-ubyte"):
        read_idx_split(tmp_path, "test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    with pytest.raises(IdxError, match=r"holds \(5, 4, 4\) .* holds \(4,\)"):
        read_idx_split(tmp_path, "test")
