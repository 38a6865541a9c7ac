"""Reading checkpoints safely: a safetensors file as a lazy mapping that loads one tensor per
key read (:class:`LazySafetensors`), and any checkpoint file as a state dict
(:func:`read_state_dict`) with errors that name the file and the remedy.

Safety: ``.safetensors`` files are read with safetensors; anything else with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers. A file
that can only be unpickled (a pickled ``nn.Module``, as the Task Arithmetic and TALL masks
code can write) runs code from the file when loaded, so it is refused unless the caller
opts in (``allow_pickle``, config ``model.allow_pickle=true``); classes that are not
importable here (the authors' ``src.*`` package, older open_clip versions) are then rebuilt
as plain modules, which is enough to read their ``state_dict()``. A truncated or corrupt
file raises :class:`CheckpointError` naming the file and what to do; the ``module.`` prefix
of a DistributedDataParallel state (open_clip's trainer) is dropped.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor
StateDict = dict[str, Tensor]
_NO_BUFFER = torch.empty(0, dtype=torch.uint8)  # LazySafetensors.read_into: a fresh tensor

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
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
    "C64": torch.complex64,
}


class UnsupportedDtype(ValueError):
    """A safetensors entry of a dtype :class:`LazySafetensors` cannot read (the file itself
    may be intact)."""


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
            unknown = {k: v["dtype"] for k, v in self._entries.items() if v["dtype"] not in _DTYPES}
            if unknown:
                key, name = next(iter(unknown.items()))
                raise UnsupportedDtype(
                    f"checkpoint {self.path}: key {key!r} has dtype {name!r}, which this reader "
                    f"does not know (it reads {', '.join(_DTYPES)})"
                )
            for key, v in self._entries.items():
                v["dtype"] = _DTYPES[v["dtype"]]
                begin, end = v["data_offsets"]
                if end - begin != v["dtype"].itemsize * _numel(v["shape"]):
                    raise ValueError(f"byte range {begin}..{end} of key {key!r} does not fit "
                                     f"shape {v['shape']}")  # fmt: skip
            end = max((v["data_offsets"][1] for v in self._entries.values()), default=0)
            if self._start + end > size:
                raise ValueError(f"its tensors end at byte {self._start + end}, the file at {size}")
        except UnsupportedDtype:
            raise
        except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"checkpoint {self.path} is truncated or corrupt, not a readable safetensors "
                f"file ({e}); delete it so that it is built or downloaded again"
            ) from e

    def _entry(self, key: str) -> dict:
        """The header entry of ``key`` (dtype, shape, byte range); ``KeyError`` naming the file."""
        if key not in self._entries:
            raise KeyError(f"key {key!r} is not in checkpoint {self.path}")
        return self._entries[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.read_into(key, _NO_BUFFER)

    def meta(self, key: str) -> tuple[torch.Size, torch.dtype]:
        """Shape and dtype of ``key``, from the header (nothing is read). ``KeyError`` for an
        unknown key."""
        entry = self._entry(key)
        return torch.Size(entry["shape"]), entry["dtype"]

    def byte_range(self, key: str) -> tuple[int, int]:
        """``[start, stop)``: where ``key``'s bytes lie in the file (absolute offsets).
        ``KeyError`` for an unknown key."""
        begin, end = self._entry(key)["data_offsets"]
        return self._start + begin, self._start + end

    def read_into(self, key: str, buffer: torch.Tensor) -> torch.Tensor:
        """``self[key]``, read into the front of ``buffer`` (a 1-D contiguous uint8 CPU
        tensor) and returned as a view of it when the key's bytes fit, else into a fresh
        tensor. A loop that reads key after key into one buffer touches no new memory (a
        fresh tensor per read costs page faults whenever the allocator hands back fresh
        pages: up to a fifth of a 20-task TIES merge here, ``results/performance.md``).
        Raises ``ValueError`` for another kind of buffer, or a file that changed after it
        was opened."""
        entry = self._entry(key)
        begin, end = entry["data_offsets"]
        if (buffer.dtype != torch.uint8 or buffer.device.type != "cpu" or buffer.ndim != 1
                or not buffer.is_contiguous()):  # fmt: skip
            raise ValueError(
                f"read_into needs a 1-D contiguous uint8 CPU buffer, got {buffer.dtype} "
                f"{tuple(buffer.shape)} on {buffer.device}"
            )
        fits = buffer.numel() >= end - begin
        data = buffer[: end - begin] if fits else torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            if f.readinto(data.numpy()) != end - begin:
                raise ValueError(
                    f"checkpoint {self.path} is truncated or corrupt at key {key!r} (it changed "
                    "after it was opened?)"
                )
        return data.view(entry["dtype"]).reshape(entry["shape"])

    def strided(self, key: str, stride: int) -> torch.Tensor:
        """``self[key].flatten()[::stride]`` (a fresh tensor) without reading the rest:
        through a read-only memory map of the tensor's bytes, only the sampled entries are
        copied. The first pass of :func:`merging.selection.topk_masks` samples every
        127th magnitude: for 20 ViT-B/32-sized task vectors this takes 0.54-0.65 s here,
        where reading them whole took 1.6 s (one thread, page cache warm).
        Raises ``KeyError`` for an unknown key, ``ValueError`` for ``stride < 1`` or a file
        shorter than its header says."""
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        entry = self._entry(key)
        begin, end = entry["data_offsets"]
        dtype: torch.dtype = entry["dtype"]
        count = (end - begin) // dtype.itemsize
        if count == 0:
            return torch.empty(0, dtype=dtype)
        bits = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[dtype.itemsize]
        try:
            data = np.memmap(self.path, bits, mode="r", offset=self._start + begin, shape=count)
        except ValueError as e:  # the file shrank after it was opened
            raise ValueError(
                f"checkpoint {self.path} is truncated or corrupt at key {key!r} ({e})"
            ) from e
        sample = np.array(data[::stride])  # copies the sampled entries only
        del data  # unmaps
        return torch.from_numpy(sample).view(dtype)

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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable or of another architecture."""


# --- reading -------------------------------------------------------------------------------
class _AnyModule(nn.Module):
    """Stand-in for a pickled class that is not importable here (the authors'
    ``src.models.modeling.ImageEncoder``, classes of older open_clip versions): unpickling
    restores its attributes, parameters and children, enough for ``state_dict()``."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _AnyModule


_pickle_module = type(sys)("_mergelab_pickle")
_pickle_module.__dict__.update(vars(pickle))
_pickle_module.Unpickler = _Unpickler


def _to_state(obj: object, path: Path, where: str) -> StateDict:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{where}: {path} holds a {type(obj).__name__}, not a state dict of tensors"
        )
    return {str(k): v for k, v in obj.items()}


def _unreadable(path: Path, where: str, err: BaseException) -> CheckpointError:
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return CheckpointError(
        f"{where}: {path} is truncated or corrupt ({reason}). Delete it and download or copy "
        "it again (a hub file: huggingface-cli download <repo> <file> --force-download), or "
        "point the config at an intact copy."
    )


def strip_module_prefix(state: Mapping[str, Tensor]) -> StateDict:
    """``state`` without the ``module.`` prefix that a model wrapped in DistributedDataParallel
    (open_clip's trainer) puts on every key; open_clip's ``load_checkpoint`` strips it too."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(
    path: str | Path, allow_pickle: bool = False, where: str = "checkpoint"
) -> StateDict:
    """The tensors of a checkpoint file (see the module docstring for what is safe), without
    a DistributedDataParallel ``module.`` prefix. Errors name ``where`` (e.g. the task's
    expert) and the file; a truncated or corrupt file says so."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: {path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return strip_module_prefix(load_file(str(path)))
        except Exception as err:  # SafetensorError: a bad header or a short file
            raise _unreadable(path, where, err) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            reason = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"{where}: {path}: this checkpoint can only be loaded by unpickling arbitrary "
                f"Python objects, which runs code stored in the file ({reason}). It was "
                "refused. If you trust its source, set model.allow_pickle=true (or "
                "allow_pickle=True)."
            ) from None
        try:
            obj = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_pickle_module
            )
        except Exception as err:
            raise _unreadable(path, where, err) from err
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # a short or damaged archive
        raise _unreadable(path, where, err) from err
    return strip_module_prefix(_to_state(obj, path, where))


# --- locating files: a local directory stands in for any hub repo ----------------------------
def resolve_file(
    repo: str, filenames: Sequence[str], revision: str | None = None, what: str = "checkpoint"
) -> Path:
    """The first of ``filenames`` found in ``repo``: a local directory, or a Hugging Face hub
    model repo (downloaded through the hub cache). Errors list what was tried."""
    local = Path(repo).expanduser()
    if local.is_dir():
        for name in filenames:
            if (local / name).is_file():
                return local / name
        raise CheckpointError(f"{what}: none of {list(filenames)} in the local directory {local}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    unreachable = None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, revision=revision))
        except RemoteEntryNotFoundError:
            continue
        except LocalEntryNotFoundError as err:  # offline and not in the hub cache
            unreachable = unreachable or err
        except RepositoryNotFoundError as err:
            raise CheckpointError(
                f"{what}: {repo!r} is neither a local directory nor a Hugging Face hub repo "
                f"you can access ({type(err).__name__})"
            ) from err
        except Exception as err:  # network and server errors
            unreachable = err
            break
    if unreachable is not None:
        raise CheckpointError(
            f"{what}: cannot fetch {list(filenames)} from hub repo {repo!r} "
            f"({type(unreachable).__name__}: {str(unreachable).splitlines()[0]}). Without "
            f"network access, download the repo elsewhere (huggingface-cli download {repo}) and "
            "point the config at that local directory, or set HF_HUB_OFFLINE=1 if it is "
            "already in the hub cache."
        ) from unreachable
    raise CheckpointError(f"{what}: none of {list(filenames)} in hub repo {repo!r}")


# --- key spaces ------------------------------------------------------------------------------
def check_matches(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], where: str) -> None:
    """Raise naming the missing, unexpected and wrongly shaped keys of ``state``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("wrong shapes", shapes))
        if keys
    ]  # fmt: skip
    if problems:
        raise CheckpointError(f"{where} does not match the architecture: " + "; ".join(problems))
