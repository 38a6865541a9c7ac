"""What bounds the merge targets of issue 15 that are not met (``results/performance.md``).

Two measurements, in one process, threads pinned (``--threads``):

1. **Read floors.** Every key of every task vector file read and summed key by key
   (``merge_methods.py``'s read floor), against the same bytes read in cache-sized chunks
   (``os.preadv``, ``--chunk-kib`` per task, so the T chunks stay in the last-level cache)
   and summed (its ``read_chunked``).
2. **The TALL-masks rule with Consensus' vote count**, ``v = sum_t 1{|tau_t| >= lam_t
   |tau_MTL - tau_t|}``, on one block of ``2**18`` values per task: eager (the library's
   :func:`~merging.methods.tall_masks.tall_masks_rule`, numpy ufuncs, then a uint8 vote
   per task, as :func:`~merging.methods.consensus.consensus` does) against one kernel
   fused by ``torch.compile`` (Inductor, C++), the votes accumulated in float32, and the
   boolean masks from a compiled kernel; each compiled kernel's first call (tracing and
   compiling, or loading Inductor's on-disk cache) is timed apart.

    python benchmarks/limits.py --tasks 20 --threads 1 [--files DIR] [--no-compile]

Without ``--files`` the task vectors are written under the temporary directory first
(ViT-B/32 shapes, as ``merge_methods.py`` writes them; 6.6 GB at 20 tasks) and deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    load,
    read_chunked,
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


def read_floors(files: list[str], chunk: int, repeats: int) -> tuple[float, float]:
    """Seconds to read and sum every key of every file: whole keys (``read_floor``), and in
    chunks (``read_chunked``), both of ``merge_methods.py``."""
    from evaluation.checkpoints import LazySafetensors

    tvs = [LazySafetensors(f) for f in files]
    return best(lambda: read_floor(tvs), repeats), best(lambda: read_chunked(tvs, chunk), repeats)


def rule_kernels(tasks: int, repeats: int, compiled: bool) -> list[tuple[str, float, str]]:
    """(variant, ns per value, note) of the TALL rule with the vote count, on one block."""
    import torch

    from merging.methods.tall_masks import tall_masks_rule

    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(BLOCK, generator=g) * 1e-3 for _ in range(tasks)]
    mtl = torch.stack(taus).sum(0)
    lams = torch.full((tasks,), 0.4)
    rule = tall_masks_rule([0.4] * tasks)

    def eager() -> torch.Tensor:
        votes = torch.zeros(BLOCK, dtype=torch.uint8)
        for mask in rule("block", taus, mtl):
            votes += mask
        return votes

    def votes_f32(mtl, lams, *taus):
        votes = torch.zeros_like(mtl)
        for t, x in enumerate(taus):
            votes = votes + (x.abs() >= lams[t] * (mtl - x).abs()).float()
        return votes

    def masks(mtl, lams, *taus):
        return [x.abs() >= lams[t] * (mtl - x).abs() for t, x in enumerate(taus)]

    per_value = 1e9 / (tasks * BLOCK)
    rows = [("eager: tall_masks_rule (numpy) + uint8 votes", best(eager, repeats) * per_value, "")]
    if not compiled:
        return rows
    expected = eager()
    for name, fn in (("compiled: votes in float32", votes_f32), ("compiled: boolean masks", masks)):
        kernel = torch.compile(fn, dynamic=False)
        start = time.perf_counter()
        out = kernel(mtl, lams, *taus)
        first = time.perf_counter() - start
        votes = out if isinstance(out, torch.Tensor) else sum(m.to(torch.uint8) for m in out)
        same = torch.equal(votes.to(torch.uint8), expected)
        seconds = best(lambda k=kernel: k(mtl, lams, *taus), repeats)
        rows.append((name, seconds * per_value, f"first call {first:.1f} s; votes equal: {same}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is shown")
    parser.add_argument("--chunk-kib", type=int, default=256, help="chunk per task (KiB)")
    parser.add_argument("--files", type=Path, help="directory of task*.safetensors to read")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    print(f"{args.tasks} tasks; torch.set_num_threads({args.threads}); load {load()} at start\n")
    made = None
    if args.files is None:
        made = Path(tempfile.mkdtemp(prefix="mergelab-limits-"))
        files = write_task_vectors(made, args.tasks, vit_b32_shapes())
    else:
        files = sorted(str(p) for p in args.files.glob("task*.safetensors"))[: args.tasks]
        if len(files) < args.tasks:
            raise SystemExit(
                f"--files {args.files}: {len(files)} task*.safetensors files, not {args.tasks}"
            )
    try:
        whole, chunked = read_floors(files, args.chunk_kib * 1024, args.repeats)
    finally:
        if made is not None:
            shutil.rmtree(made)
    print("| read floor (read and sum every key of every task) | s (best) |\n|---|---|")
    print(f"| whole keys (the read floor of merge_methods.py) | {whole:.3f} |")
    print(f"| chunks of {args.chunk_kib} KiB per task (os.preadv) | {chunked:.3f} |\n")
    print("| TALL rule + vote count, one block | ns per value (best) | note |\n|---|---|---|")
    for name, ns, note in rule_kernels(args.tasks, args.repeats, not args.no_compile):
        print(f"| {name} | {ns:.3f} | {note} |")
    print(f"\nload {load()} at the end")


if __name__ == "__main__":
    main()
