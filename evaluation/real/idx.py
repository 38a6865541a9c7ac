"""IDX files, the format of MNIST and Fashion-MNIST (LeCun et al., "The MNIST database",
format description), plain or gzipped.

Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian uint32 sizes
and the data in C order, big-endian. An image file of N 28x28 images has the 16-byte
header ``00 00 08 03 | N | 28 | 28``; a label file the 8-byte header ``00 00 08 01 | N``.
Errors name the file and what is wrong (magic bytes, type code, truncated data).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CODES = {np.dtype(v).newbyteorder("="): k for k, v in TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
SPLIT_FILES = {"train": "train", "test": "t10k"}  # MNIST's file name prefixes


class IdxError(ValueError):
    """A file that is not a well-formed IDX file (the message names it)."""


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, decompressed if it is gzipped (by its magic bytes, not its name)."""
    raw = Path(path).read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IdxError(f"{path}: a truncated or corrupt gzip file ({err})") from None
    return raw


def parse_idx(data: bytes, where: str = "IDX data") -> np.ndarray:
    """The array held by IDX bytes (native byte order, a copy)."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise IdxError(f"{where}: not an IDX file (magic bytes {data[:4].hex() or 'none'})")
    code, ndim = data[2], data[3]
    if code not in TYPES:
        raise IdxError(f"{where}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{where}: truncated header ({len(data)} bytes, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(TYPES[code])
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != need:
        raise IdxError(
            f"{where}: its header {shape} needs {need} data bytes, the file holds "
            f"{len(data) - header} (truncated or not this format)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array of an IDX file, plain or gzipped (e.g. MNIST's
    ``train-images-idx3-ubyte.gz`` -> uint8 (60000, 28, 28))."""
    return parse_idx(read_bytes(path), str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends with ``.gz``)."""
    array = np.ascontiguousarray(array)
    code = CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IdxError(f"{path}: IDX cannot hold dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.dtype(TYPES[code]), copy=False).tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def find_idx(directory: str | os.PathLike, split: str, kind: str) -> Path:
    """The MNIST-layout file of ``split`` (train, test) and ``kind`` (images, labels) in
    ``directory``: ``train-images-idx3-ubyte`` or ``t10k-labels-idx1-ubyte``, gzipped or not
    (``-`` or ``.`` before ``idx``, as both spellings circulate)."""
    prefix = SPLIT_FILES[split]
    rank = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}{sep}idx{rank}-ubyte{gz}" for sep in "-." for gz in ("", ".gz")]
    for name in names:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    raise FileNotFoundError(f"no {names[0]} (or {names[1]}) in {directory}")


def read_idx_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W), labels int64 (N,)) of ``split`` from a directory in MNIST's
    layout (your own MNIST-format files work too); mismatched counts raise ``IdxError``."""
    images_path, labels_path = (find_idx(directory, split, k) for k in ("images", "labels"))
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {images.shape} and {labels_path} holds {labels.shape}: "
            "expected N images (N, H, W) and N labels"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)
