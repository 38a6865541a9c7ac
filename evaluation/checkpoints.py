"""Checkpoints read lazily: a safetensors file as a mapping that loads one tensor per key read."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

# safetensors dtype names (https://github.com/huggingface/safetensors, format description)
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class LazySafetensors(Mapping[str, torch.Tensor]):
    """The tensors of a ``.safetensors`` file, each read from disk when its key is read.

    Only the header (an 8-byte little-endian length, then JSON giving each tensor's
    dtype, shape and byte range) is parsed up front; ``m[key]`` reads that tensor's bytes
    into a fresh CPU tensor with one ``readinto`` (several times faster than copying out
    of a memory map), so holding the mapping costs no memory and a merge that reads key
    by key never has the whole checkpoint in memory. Keys keep the file's order.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint {self.path} does not exist")
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > size - 8:
                    raise ValueError(f"its header length {length} exceeds the file ({size} bytes)")
                header = json.loads(f.read(length))
            self._start = 8 + length
            self._entries = {k: v for k, v in header.items() if k != "__metadata__"}
            for key, v in self._entries.items():
                v["dtype"] = _DTYPES[v["dtype"]]
                begin, end = v["data_offsets"]
                if end - begin != v["dtype"].itemsize * _numel(v["shape"]):
                    raise ValueError(f"byte range {begin}..{end} of key {key!r} does not fit "
                                     f"shape {v['shape']}")  # fmt: skip
            end = max((v["data_offsets"][1] for v in self._entries.values()), default=0)
            if self._start + end > size:
                raise ValueError(f"its tensors end at byte {self._start + end}, the file at {size}")
        except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"checkpoint {self.path} is truncated or corrupt, not a readable safetensors "
                f"file ({e}); delete it so that it is built or downloaded again"
            ) from e

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._entries:
            raise KeyError(f"key {key!r} is not in checkpoint {self.path}")
        entry = self._entries[key]
        begin, end = entry["data_offsets"]
        data = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            if f.readinto(data.numpy()) != end - begin:
                raise ValueError(
                    f"checkpoint {self.path} is truncated or corrupt at key {key!r} (it changed "
                    "after it was opened?)"
                )
        return data.view(entry["dtype"]).reshape(entry["shape"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"LazySafetensors({str(self.path)!r}, {len(self)} tensors)"


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
