"""What bounds the merge targets of issue 15 that are not met (``results/performance.md``).

Three measurements, in one process, threads pinned (``--threads``):

1. **Read floors.** Every float32 key of every task-vector file read and summed into a
   kept output (every merge writes one), key by key as ``merge_methods.py``'s read floor
   does, against the same bytes read in cache-sized chunks (``os.preadv``, ``--chunk-kib``
   per task, so the T chunks stay in the last-level cache) and summed into the output
   chunk by chunk.
2. **The TALL-masks rule with Consensus' vote count**, ``v = sum_t 1{|tau_t| >= lam_t
   |tau_MTL - tau_t|}``, on one block of ``2**18`` values per task: eager (the library's
   :meth:`~merging.methods.tall_masks.TallMaskRule.votes`, numpy ufuncs, each task's mask
   added to a uint8 count, as :func:`~merging.methods.consensus.consensus` does) against one kernel
   fused by ``torch.compile`` (Inductor, C++), the votes accumulated in float32, and the
   boolean masks from a compiled kernel; each compiled kernel's first call (tracing and
   compiling, or loading Inductor's on-disk cache) is timed apart. Times are per (task,
   value) pair.
3. **Memory bandwidth against TIES' arithmetic.** A 1 GiB float32 array summed (read),
   copied and filled (GB/s of data); one task-vector file read from the page cache with
   ``readinto`` into a 16 MiB buffer (out of cache, as a merge reads a key) and a 256 KiB
   one; TIES' two steps on one ViT-B/32 MLP key per task (9 MiB each, the same tensors
   timed again, so partly in the last-level cache): the exact pass
   (``merging.selection._above_and_between``, one task, its band as ``_band`` makes it
   from a whole ViT-B/32 task's sample) in ns per value, and the trim with the disjoint
   merge (``ties``' per-block work, ``--tasks`` tasks, its output written) in ns per (task,
   value); and
   single eager passes over a block in cache, of which both steps are made. Each next to
   the ns a value's 4 bytes take at the measured read bandwidth.

    python benchmarks/limits.py --tasks 20 --threads 1 [--files DIR] [--no-compile]

Without ``--files`` the task vectors are first written under the temporary directory
(ViT-B/32 shapes, as ``merge_methods.py`` writes them: 0.35 GB per task, 7.0 GB at 20)
and deleted at the end. The tables are printed when everything has run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
# merge_methods imports experiments (mergelab's OpenBLAS settings) before numpy loads
from merge_methods import (  # noqa: E402
    THREAD_VARIABLES,
    load,
    read_floor,
    vit_b32_shapes,
    write_task_vectors,
)

BLOCK = 1 << 18


def best(fn: Callable[[], object], repeats: int) -> float:
    """Least wall time of ``repeats`` calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_chunked(tvs: list, chunk: int) -> dict:
    """``read_floor`` with the bytes read ``chunk`` bytes per task at a time (``os.preadv``
    at each file's own :meth:`~evaluation.checkpoints.LazySafetensors.byte_range`) and
    summed into each key's output chunk by chunk; float32 keys. Raises ``ValueError`` for
    fewer than 2 task vectors or a ``chunk`` that is not a positive multiple of 4 bytes."""
    import numpy as np
    import torch

    if len(tvs) < 2 or chunk <= 0 or chunk % 4:
        raise ValueError(f"read_chunked: needs 2+ task vectors and a chunk of 4k bytes, got "
                         f"{len(tvs)} and {chunk}")  # fmt: skip
    keys = [k for k in tvs[0] if tvs[0].meta(k)[1] == torch.float32]
    parts = [np.empty(chunk, dtype=np.uint8) for _ in tvs]
    out, descriptors = {}, []
    try:
        for tv in tvs:
            descriptors.append(os.open(tv.path, os.O_RDONLY))
        for key in keys:
            ranges = [tv.byte_range(key) for tv in tvs]
            for tv, (start, stop) in zip(tvs, ranges, strict=True):
                if stop - start != ranges[0][1] - ranges[0][0]:
                    raise ValueError(f"key {key!r} differs in size in {tv.path} and {tvs[0].path}")
            total = torch.empty(tvs[0].meta(key)[0], dtype=torch.float32)
            flat = total.view(-1).numpy()
            for first in range(0, ranges[0][1] - ranges[0][0], chunk):
                n = min(chunk, ranges[0][1] - ranges[0][0] - first)
                for fd, part, (start, _) in zip(descriptors, parts, ranges, strict=True):
                    if os.preadv(fd, [memoryview(part)[:n]], start + first) != n:
                        raise OSError(f"short read at byte {start + first} of key {key!r}")
                acc = flat[first // 4 : (first + n) // 4]
                np.add(parts[0][:n].view(np.float32), parts[1][:n].view(np.float32), out=acc)
                for part in parts[2:]:
                    np.add(acc, part[:n].view(np.float32), out=acc)
            out[key] = total
    finally:
        for fd in descriptors:
            os.close(fd)
    return out


def read_floors(files: list[str], chunk: int, repeats: int) -> tuple[float, float]:
    """Seconds to read and sum every key of every file into a kept output: whole keys
    (``merge_methods.read_floor``), and in chunks (:func:`read_chunked`)."""
    from evaluation.checkpoints import LazySafetensors

    tvs = [LazySafetensors(f) for f in files]
    return best(lambda: read_floor(tvs), repeats), best(lambda: read_chunked(tvs, chunk), repeats)


def rule_kernels(tasks: int, repeats: int, compiled: bool) -> list[tuple[str, float, str]]:
    """(variant, ns per (task, value) pair, note) of the TALL rule with the vote count."""
    import torch

    from merging.methods.tall_masks import TallMaskRule

    Tensor = torch.Tensor
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(BLOCK, generator=g) * 1e-3 for _ in range(tasks)]
    mtl = torch.stack(taus).sum(0)
    lams = torch.full((tasks,), 0.4)
    rule = TallMaskRule([0.4] * tasks)

    def eager() -> Tensor:
        return rule.votes(taus, mtl)

    def votes_f32(mtl: Tensor, lams: Tensor, *taus: Tensor) -> Tensor:
        votes = torch.zeros_like(mtl)
        for t, x in enumerate(taus):
            votes = votes + (x.abs() >= lams[t] * (mtl - x).abs()).float()
        return votes

    def masks(mtl: Tensor, lams: Tensor, *taus: Tensor) -> list[Tensor]:
        return [x.abs() >= lams[t] * (mtl - x).abs() for t, x in enumerate(taus)]

    per_value = 1e9 / (tasks * BLOCK)
    rows = [("eager: TallMaskRule.votes (numpy, uint8)", best(eager, repeats) * per_value, "")]
    if not compiled:
        return rows
    expected = eager()
    for name, fn in (("compiled: votes in float32", votes_f32), ("compiled: boolean masks", masks)):
        kernel = torch.compile(fn, dynamic=False)
        start = time.perf_counter()
        out = kernel(mtl, lams, *taus)
        first = time.perf_counter() - start
        votes = out if isinstance(out, Tensor) else sum(m.to(torch.uint8) for m in out)
        same = torch.equal(votes.to(torch.uint8), expected)
        seconds = best(lambda k=kernel: k(mtl, lams, *taus), repeats)
        rows.append((name, seconds * per_value, f"first call {first:.1f} s; votes equal: {same}"))
    return rows


def bandwidth(file: str, repeats: int) -> list[tuple[str, float]]:
    """(what, GB/s of data) for the memory and page-cache reads of part 3."""
    import numpy as np
    import torch

    n = 1 << 28
    a, c = torch.ones(n), torch.empty(n)
    gigabytes = 4 * n / 1e9
    rows = [
        ("sum of a 1 GiB float32 array (read)", gigabytes / best(a.sum, repeats)),
        (
            "copy_ of it (read and write, counted once)",
            gigabytes / best(lambda: c.copy_(a), repeats),
        ),
        ("fill_ (write)", gigabytes / best(lambda: c.fill_(1.0), repeats)),
    ]
    size = os.path.getsize(file) / 1e9
    for kib in (16384, 256):
        buffer = np.empty(kib * 1024, dtype=np.uint8)

        def read(buffer: np.ndarray = buffer) -> None:
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass

        rows.append(
            (
                f"one task-vector file from the page cache, readinto {kib} KiB",
                size / best(read, repeats),
            )
        )
    return rows


def ties_steps(tasks: int, repeats: int) -> list[tuple[str, float]]:
    """(step, ns per value or per (task, value)) of TIES' exact pass and its trim + disjoint
    merge (part 3), and of single eager passes over a block in cache (what each step is
    made of)."""
    import numpy as np
    import torch

    from merging.methods.ties import _MERGE_BLOCK, disjoint_merge
    from merging.selection import (
        _SAMPLE_SIZE,
        _SAMPLE_STRIDE,
        _above_and_between,
        _band,
        kept_count,
        magnitude_bits,
    )
    from merging.streaming import Scratch, blocks

    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(3072 * 768, generator=g) * 1e-3 for _ in range(tasks)]
    bits = magnitude_bits(taus[0]).sort().values
    n = taus[0].numel()
    # the band around the top 20% as topk_masks makes it for a whole ViT-B/32 task vector:
    # selection._band on a sample of the size its stride rule gives (drawn from this key)
    total = sum(math.prod(shape) for shape in vit_b32_shapes().values())
    stride = _SAMPLE_STRIDE
    while total // stride > _SAMPLE_SIZE:
        stride *= 2
    sample = magnitude_bits(taus[0])[torch.linspace(0, n - 1, total // stride).long()]
    lo, hi, _ = _band(sample, kept_count(0.2, total), total)
    scratch, cutoff = Scratch(), float(bits[int(0.8 * n)].view(torch.float32))
    length = 1 << max((_MERGE_BLOCK // tasks).bit_length() - 1, 10)  # as ties_merger's
    trimmed, out, mask = torch.empty(tasks, length), torch.empty(n), np.empty(length, dtype=bool)

    def merge() -> None:
        for block in blocks(n, length):
            rows = trimmed[:, : block.stop - block.start]
            for x, row in zip(taus, rows, strict=True):
                torch.ops.aten.hardshrink.out(x[block], cutoff, out=row)
            out[block] = disjoint_merge(rows, "mean")

    def passes(op: Callable[[], object]) -> float:  # 20 calls, per value of the buffer
        return best(lambda: [op() for _ in range(20)], repeats) / (20 * trimmed.numel()) * 1e9

    exact = best(lambda: _above_and_between(taus[0], lo, hi, scratch), repeats) / n
    one = trimmed[0]
    return [
        ("exact pass (one task's count above and collection of the band), per value", exact * 1e9),
        (
            f"trim and disjoint merge ({tasks} tasks), per (task, value)",
            best(merge, repeats) / (tasks * n) * 1e9,
        ),
        (
            "one eager pass in cache: hardshrink of a (tasks x block) buffer",
            passes(lambda: torch.ops.aten.hardshrink.out(trimmed, cutoff, out=trimmed)),
        ),
        ("one eager pass in cache: its sum(0)", passes(lambda: trimmed.sum(0))),
        (
            "one eager pass in cache: numpy's greater of one row, into booleans",
            passes(lambda: np.greater(one.numpy(), 0.5, out=mask)) * tasks,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="task vectors (at least 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch, OpenMP and BLAS threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is shown")
    parser.add_argument("--chunk-kib", type=int, default=256, help="chunk per task (KiB)")
    parser.add_argument(
        "--files", type=Path, help="directory of task*.safetensors to read (else written to /tmp)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    if args.tasks < 2 or args.chunk_kib < 1:
        parser.error("--tasks must be at least 2 and --chunk-kib at least 1")
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))  # before numpy loads
    import torch

    torch.set_num_threads(args.threads)
    started = load()
    made = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally: the files are deleted
    try:
        if args.files is None:
            made = Path(tempfile.mkdtemp(prefix="mergelab-limits-"))
            print(f"writing {args.tasks} task vectors under {made} ...", file=sys.stderr)
            files = write_task_vectors(made, args.tasks, vit_b32_shapes())
        else:
            files = sorted(str(p) for p in args.files.glob("task*.safetensors"))[: args.tasks]
            if len(files) < args.tasks:
                raise SystemExit(
                    f"--files {args.files}: {len(files)} task*.safetensors files, not {args.tasks}"
                )
        whole, chunked = read_floors(files, args.chunk_kib * 1024, args.repeats)
        memory = bandwidth(files[0], args.repeats)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    steps = ties_steps(args.tasks, args.repeats)
    kernels = rule_kernels(args.tasks, args.repeats, not args.no_compile)
    print(f"\n{args.tasks} tasks; torch.set_num_threads({args.threads}), "
          + ", ".join(f"{v}={args.threads}" for v in THREAD_VARIABLES)
          + f"; best of {args.repeats}; load {started} at start\n")  # fmt: skip
    print("| read floor: read and sum every key into a kept output | s (best) |\n|---|---|")
    print(f"| whole keys (the read floor of merge_methods.py) | {whole:.3f} |")
    print(f"| chunks of {args.chunk_kib} KiB per task (os.preadv) | {chunked:.3f} |\n")
    print("| TALL rule + vote count, one block | ns per (task, value) | note |\n|---|---|---|")
    for name, ns, note in kernels:
        print(f"| {name} | {ns:.3f} | {note} |")
    print("\n| memory and page cache | GB/s of data (best) |\n|---|---|")
    for name, rate in memory:
        print(f"| {name} | {rate:.1f} |")
    per_value = 4 / memory[0][1]  # ns per float32 at the read bandwidth
    print(
        f"\n| TIES step, one ViT-B/32 MLP key per task | ns | / {per_value:.2f} ns "
        "(4 bytes at the read bandwidth) |\n|---|---|---|"
    )
    for name, ns in steps:
        print(f"| {name} | {ns:.3f} | {ns / per_value:.1f}x |")
    print(f"\nload {load()} at the end")


if __name__ == "__main__":
    main()
