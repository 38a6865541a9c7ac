"""Per-parameter access to a set of task vectors, so no method holds them all at once.

A merge reads one parameter name ("key") of every task at a time: memory is bounded by
T copies of the largest tensor, never T copies of the model. Keys, shapes, dtypes and
finiteness are checked as tensors are read, with errors naming the key and the task.

Tied parameters (several keys holding one tensor, e.g. T5's input embedding and LM head)
are one parameter: only the first key of each group is merged (so a global top-k counts
it once and it gets one mask); the merge output maps every other key of the group to the
same tensor (:func:`with_aliases`).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

Tensor = torch.Tensor
TiedGroups = Sequence[Sequence[str]]


def tied_groups(state: Mapping[str, Tensor]) -> list[list[str]]:
    """Groups of keys of ``state`` whose tensors are the same view of one storage (same data
    pointer, offset, shape, strides and dtype), in key order; only groups of two or more.
    Lazy mappings that create tensors on read have none (their zoo must declare its ties)."""
    groups: dict[tuple, list[str]] = {}
    for key, x in state.items():
        if isinstance(x, Tensor) and x.numel():
            ident = (x.untyped_storage().data_ptr(), x.storage_offset(), x.shape, x.stride(),
                     x.dtype)  # fmt: skip
            groups.setdefault(ident, []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


class Aliased(Mapping[str, Tensor]):
    """``mapping`` plus alias keys that read their primary key's tensor (tied parameters)."""

    def __init__(self, mapping: Mapping[str, Tensor], aliases: Mapping[str, str]) -> None:
        self.mapping, self.aliases = mapping, dict(aliases)

    def __getitem__(self, key: str) -> Tensor:
        return self.mapping[self.aliases.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        yield from self.mapping
        yield from self.aliases

    def __len__(self) -> int:
        return len(self.mapping) + len(self.aliases)


def with_aliases(out: Mapping[str, Tensor], aliases: Mapping[str, str]) -> Mapping[str, Tensor]:
    """A merge output with every alias key mapped to its primary's tensor (one object, so
    tied parameters stay tied); ``out`` itself when there are no aliases."""
    if not aliases:
        return out
    if isinstance(out, dict):
        return {**out, **{alias: out[primary] for alias, primary in aliases.items()}}
    return Aliased(out, aliases)


def entry_meta(mapping: Mapping[str, Tensor], key: str) -> tuple[torch.Size, torch.dtype]:
    """Shape and dtype of ``mapping[key]``: the mapping's own ``meta(key)`` where it has one
    (:class:`evaluation.checkpoints.LazySafetensors`: its header, nothing read), else read."""
    header = getattr(mapping, "meta", None)
    if callable(header):
        return header(key)
    x = mapping[key]
    return x.shape, x.dtype


def entry_sample(mapping: Mapping[str, Tensor], key: str, stride: int) -> Tensor:
    """``mapping[key].flatten()[::stride]``: the mapping's own ``strided(key, stride)`` where
    it has one (:class:`evaluation.checkpoints.LazySafetensors` reads only those entries),
    else sliced from the whole tensor."""
    reader = getattr(mapping, "strided", None)
    return reader(key, stride) if callable(reader) else mapping[key].reshape(-1)[::stride]


class TaskVectors:
    """The task vectors ``tau_1 .. tau_T`` of one merge, read key by key.

    Float entries are merged; non-float entries (integer buffers, BatchNorm counters)
    are carried from the first task vector unchanged (they come from the pretrained
    model), never merged, and the other task vectors' values of them are not read or
    compared. Which keys are float is decided by the first task vector. Math runs on
    ``device`` in float32; results return to the CPU in the input dtype.
    """

    def __init__(
        self,
        task_vectors: Sequence[Mapping[str, Tensor]],
        device: str | torch.device | None = None,
        tied: TiedGroups | None = None,
    ) -> None:
        self._tvs = list(task_vectors)
        if not self._tvs:
            raise ValueError("no task vectors given")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.names = [
            getattr(tv, "name", None) or f"task vector {t}" for t, tv in enumerate(self._tvs)
        ]
        all_keys = list(self._tvs[0].keys())
        key_set = set(all_keys)
        for t, tv in enumerate(self._tvs[1:], start=1):
            other = set(tv.keys())
            if other != key_set:
                missing = sorted(key_set - other)
                if missing:
                    raise KeyError(
                        f"{self.names[t]} lacks key {missing[0]!r} ({self.names[0]} has it)"
                    )
                extra = sorted(other - key_set)
                raise KeyError(f"{self.names[t]} has key {extra[0]!r} that {self.names[0]} lacks")
        if tied is None:
            tied = getattr(self._tvs[0], "tied", None)
        if tied is None and isinstance(self._tvs[0], dict):
            tied = tied_groups(self._tvs[0])
        self.aliases: dict[str, str] = {}
        for group in tied or ():
            unknown = [k for k in group if k not in key_set]
            if unknown:
                raise KeyError(f"tied key {unknown[0]!r} is not a key of the task vectors")
            self.aliases.update({alias: group[0] for alias in group[1:]})
        self.keys: list[str] = [k for k in all_keys if k not in self.aliases]
        self._meta: dict[str, tuple[torch.Size, torch.dtype]] = {}
        self._finite: set[tuple[int, str]] = set()  # (task, key) checked finite
        self._buffers: dict[int, Tensor] = {}  # task -> its read buffer (uint8), see tensors()

    def __len__(self) -> int:
        return len(self._tvs)

    def raw(self, t: int, key: str) -> Tensor:
        """Task ``t``'s tensor at ``key`` as stored (no cast, no move)."""
        return self._tvs[t][key]

    def meta(self, key: str) -> tuple[torch.Size, torch.dtype]:
        """Shape and dtype of task 0's tensor at ``key`` (:func:`entry_meta`; remembered)."""
        if key not in self._meta:
            self._meta[key] = entry_meta(self._tvs[0], key)
        return self._meta[key]

    def is_float(self, key: str) -> bool:
        """Whether ``key`` holds floating-point values (and is therefore merged)."""
        return self.meta(key)[1].is_floating_point

    @property
    def float_keys(self) -> list[str]:
        return [k for k in self.keys if self.is_float(k)]

    def task(self, t: int, key: str, *, reuse: bool = False) -> Tensor:
        """Task ``t``'s tensor at ``key``: float32 on ``device``, checked against task 0.

        ``reuse``: where the mapping can read into a buffer (``read_into(key, buffer)``: the
        entry, in the 1-D uint8 ``buffer`` where it fits, else fresh;
        :class:`evaluation.checkpoints.LazySafetensors`, and
        :class:`merging.task_vectors.TaskVector` over one), read into task ``t``'s own
        buffer, which the next ``reuse`` read of task ``t`` overwrites: for loops that are
        done with a task's tensor before reading its next key."""
        x = self._read(t, key) if reuse else self.raw(t, key)
        shape, dtype = self.meta(key)
        if x.shape != shape:
            raise ValueError(
                f"key {key!r}: {self.names[t]} has shape {tuple(x.shape)}, "
                f"{self.names[0]} has {tuple(shape)}"
            )
        if x.dtype != dtype:
            raise TypeError(
                f"key {key!r}: {self.names[t]} is {x.dtype}, {self.names[0]} is {dtype}"
            )
        x = x.to(self.device, torch.float32)
        # once per (task, key), for methods that read several times; one reduction first,
        # the exact elementwise check only if the sum is not finite
        if (t, key) not in self._finite:
            if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
                raise ValueError(f"key {key!r}: {self.names[t]} contains NaN or Inf")
            self._finite.add((t, key))
        return x

    def strided(self, t: int, key: str, stride: int) -> Tensor:
        """Every ``stride``-th entry of task ``t``'s flat tensor at ``key``, float32 on
        ``device``, unchecked (a sample to rank by, never merged: the full reads check);
        :func:`entry_sample`."""
        return entry_sample(self._tvs[t], key, stride).to(self.device, torch.float32)

    def _read(self, t: int, key: str) -> Tensor:
        """Task ``t``'s tensor at ``key`` as stored, in task ``t``'s read buffer where the
        mapping can read into one. The buffer holds the largest float entry of task 0 (by
        the keys' shapes and dtypes); an entry larger than that (a shape or dtype that
        :meth:`task` then rejects) comes back fresh from ``read_into``."""
        mapping = self._tvs[t]
        read_into = getattr(mapping, "read_into", None)
        if not callable(read_into):
            return mapping[key]
        if t not in self._buffers:
            self._buffers[t] = torch.empty(self._largest_entry(), dtype=torch.uint8)
        return read_into(key, self._buffers[t])

    def _largest_entry(self) -> int:
        """Bytes of the largest float entry (shapes and dtypes of :meth:`meta`)."""
        metas = map(self.meta, self.float_keys)
        return max((math.prod(shape) * dtype.itemsize for shape, dtype in metas), default=0)

    def _is_buffered(self, x: Tensor) -> bool:
        """Whether ``x`` lives in one of the read buffers."""
        return x.device.type == "cpu" and any(
            x.untyped_storage().data_ptr() == b.data_ptr() for b in self._buffers.values()
        )

    def tensors(self, key: str) -> list[Tensor]:
        """Every task's tensor at ``key`` (float32, on ``device``).

        Read into one buffer per task where the mapping allows (see :meth:`task`'s
        ``reuse``): valid until the next ``tensors`` call or ``reuse`` read, so a method
        streams keys without allocating (and page-faulting) a fresh tensor per task and
        key. Whatever outlives the key goes through :meth:`finish`, which copies a tensor
        still in a buffer."""
        return [self.task(t, key, reuse=True) for t in range(len(self))]

    def release(self) -> None:
        """Free the read buffers (:func:`merging.registry.merge` does when the method
        returns; later reads allocate them again)."""
        self._buffers.clear()

    def iter_task(self, t: int) -> Iterator[tuple[str, Tensor]]:
        """Task ``t``'s float entries, key by key."""
        for key in self.float_keys:
            yield key, self.task(t, key)

    def finish(self, key: str, x: Tensor) -> Tensor:
        """A merged tensor back on the CPU in the dtype of ``key``; a copy if it is (a view
        of) a read buffer of :meth:`tensors`, which the next key overwrites."""
        x = x.to("cpu", self.meta(key)[1])
        return x.clone() if self._is_buffered(x) else x

    def map(self, fn: Callable[[str, list[Tensor]], Tensor]) -> dict[str, Tensor]:
        """One merged task vector: ``out[key] = fn(key, [tau_1[key], ..., tau_T[key]])``."""
        out: dict[str, Tensor] = {}
        for key in self.keys:
            if self.is_float(key):
                out[key] = self.finish(key, fn(key, self.tensors(key)))
            else:
                out[key] = self.raw(0, key)
        return out

    def map_each(self, fn: Callable[[str, list[Tensor]], list[Tensor]]) -> list[dict[str, Tensor]]:
        """One task vector per task: ``out[t][key] = fn(key, taus)[t]``."""
        outs: list[dict[str, Tensor]] = [{} for _ in self._tvs]
        for key in self.keys:
            if self.is_float(key):
                for out, x in zip(outs, fn(key, self.tensors(key)), strict=True):
                    out[key] = self.finish(key, x)
            else:
                for out in outs:
                    out[key] = self.raw(0, key)
        return outs


BLOCK = 1 << 18
"""Elements per block of the blocked elementwise passes (1 MiB of float32). A chain of
eager torch ops over a whole key streams every operand from memory once per op (keys and
their temporaries reach tens of MB per task); over one block at a time, the operands of
the whole chain stay in the CPU's cache, and the per-op dispatch (microseconds) is still
small next to a block's work. Elementwise results do not depend on the blocking. (TALL
masks' rule, 20 tasks, one thread, here: 0.7-0.8 ns per value with this block, 0.9 with
4x larger, 1.3 with 4x smaller.)"""


def blocks(n: int, size: int = BLOCK) -> Iterator[slice]:
    """Consecutive slices of ``range(n)``, ``size`` elements each (the last one shorter)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def parallel_blocks(
    n: int, work: Callable[[slice, int], None], threads: int | None = None, size: int = BLOCK
) -> None:
    """``work(b, w)`` for every block ``b`` of ``range(n)`` (:func:`blocks` of ``size``), on
    ``threads`` threads (default ``torch.get_num_threads()``; at most one per block): worker
    ``w`` takes one contiguous run of the blocks. ``work`` must write only block ``b`` of its
    outputs, with worker ``w``'s own buffers; then the results do not depend on the split.
    numpy's ufuncs release the GIL, so numpy work runs on as many cores (torch's CPU kernels
    already use its threads within each op). Called from one of its own workers ``w``, it
    runs there, block by block, as worker ``w``. Once every worker has stopped, the error of
    the lowest-numbered worker that failed, if any, is raised."""
    spans = list(blocks(n, size))
    workers = min(threads or torch.get_num_threads(), len(spans))
    inside = getattr(_worker, "index", None)
    if workers <= 1 or inside is not None:
        for b in spans:
            work(b, 0 if inside is None else inside)
        return

    def run(w: int) -> None:
        _worker.index = w
        try:
            for b in spans[w * len(spans) // workers : (w + 1) * len(spans) // workers]:
                work(b, w)
        finally:
            _worker.index = None

    futures = [_pool(workers, os.getpid()).submit(run, w) for w in range(workers)]
    wait(futures)
    for future in futures:
        future.result()


_worker = threading.local()  # .index: the parallel_blocks worker this thread is running


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One thread pool per size and process (a forked child has none of its parent's
    threads, so it starts its own), kept for the process."""
    return ThreadPoolExecutor(workers, thread_name_prefix="mergelab-blocks")


class Scratch:
    """Named flat buffers reused from key to key: ``scratch(name, n, dtype, device)`` is the
    first ``n`` entries of the buffer ``name`` (grown when too small; contents undefined).
    A fresh tensor of several MB per key costs its page faults on every key; a reused one
    does not."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def __call__(self, name: str, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < n or buffer.dtype != dtype or buffer.device != device:
            buffer = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
        return buffer[:n]


def masked(x: Tensor, mask: Tensor, out: Tensor | None = None) -> Tensor:
    """``x * mask`` for a boolean ``mask`` of ``x``'s shape (entries masked out become +-0.0,
    as in the product), written into ``out`` (``x``'s shape and dtype, not ``x`` itself;
    fresh if None). Block by block (:func:`blocks`), the mask's bytes (0 or 1) are copied
    into ``out`` as floats and then multiplied: the same bits as ``x * mask``, but torch's
    CPU kernels promote a boolean operand element by element (``x * mask`` about 0.8 ns
    per element, a bool-to-float copy 0.6 ns, a uint8 one 0.08 ns; one thread, here)."""
    if out is None:
        out = torch.empty_like(x)
    elif out.numel() and out.data_ptr() == x.data_ptr():  # empty tensors share pointer 0
        raise ValueError("masked: out must not be x")
    if not (x.is_contiguous() and mask.is_contiguous() and out.is_contiguous()):
        return out.copy_(mask.to(torch.uint8)).mul_(x)
    flat_x, flat_mask, flat_out = x.view(-1), mask.view(torch.uint8).view(-1), out.view(-1)
    for b in blocks(x.numel()):
        flat_out[b].copy_(flat_mask[b]).mul_(flat_x[b])
    return out


def compare(a: Tensor, b: Tensor | float, strict: bool, out: Tensor) -> Tensor:
    """``a > b`` (``strict``) or ``a >= b`` into the boolean ``out``. On the CPU through
    numpy, whose comparisons write booleans about 5x faster than torch's (0.1 vs 0.5 ns
    per element, one thread, here); the same results, NaN comparing false. Through torch
    off the CPU and for bfloat16, which numpy lacks."""
    if a.device.type != "cpu" or a.dtype == torch.bfloat16:
        return (torch.gt if strict else torch.ge)(a, b, out=out)
    b = b.numpy() if isinstance(b, Tensor) else b
    (np.greater if strict else np.greater_equal)(a.numpy(), b, out=out.numpy())
    return out


def summed(taus: list[Tensor]) -> Tensor:
    """``sum_t tau_t``, accumulated in place (no (T, ...) stack), from ``tau_1 + tau_2``
    (the same bits as a copy of ``tau_1`` plus ``tau_2``, one pass fewer)."""
    if len(taus) == 1:
        return taus[0].clone()
    out = torch.add(taus[0], taus[1])
    for x in taus[2:]:
        out += x
    return out
