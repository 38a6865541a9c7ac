"""Wall time and peak anonymous memory of every merge method on ViT-B/32-sized task vectors.

For each task count, random task vectors shaped like the open_clip ViT-B/32 image encoder
(random init, nothing downloaded) are written as safetensors files under /tmp and read
lazily (:class:`evaluation.checkpoints.LazySafetensors`). Every registered data-free method
runs in a fresh subprocess, next to flatten-everything task arithmetic and TIES written
here (a (tasks x parameters) matrix, ``kthvalue`` per row) and the time to read every
tensor once. Peak memory is the largest RssAnon (/proc/self/status, sampled every 5 ms):
memory-mapped file pages are page cache, not the method's. Task-specific methods return
lazy task vectors; each one's every key is read once inside the timed region.

    python benchmarks/merge_methods.py [--tasks 8 20] [--methods ties tall_masks ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLAT = {
    "flat_ta": "TA (flattened)",
    "flat_ties": "TIES (flattened)",
    "read": "read every tensor once",
}
GIB = 1024**3


# ---- worker: runs one method in this process and prints {"wall_s", "peak", "base"} -------


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def flat_matrix(tvs: list, keys: list[str]):
    """Every task's float entries, concatenated: a (T, P) float32 matrix."""
    import torch

    x = torch.empty(len(tvs), sum(tvs[0][k].numel() for k in keys))
    for t, tv in enumerate(tvs):
        x[t] = torch.cat([tv[k].flatten() for k in keys])
    return x


def unflat(vec, tv: dict, keys: list[str]) -> dict:
    out, offset = {}, 0
    for k in keys:
        n = tv[k].numel()
        out[k] = vec[offset : offset + n].view(tv[k].shape)
        offset += n
    return out


def flat_ta(tvs: list) -> dict:
    keys = list(tvs[0])
    return unflat(flat_matrix(tvs, keys).sum(0), tvs[0], keys)


def flat_ties(tvs: list, k: float = 0.2) -> dict:
    """TIES on the flattened (T, P) matrix: keep |x| >= each row's kth value (as the authors'
    ``topk_values_mask``, but one row at a time and in place, so the matrix is the only
    (T, P) allocation), elect signs, disjoint mean."""
    keys = list(tvs[0])
    x = flat_matrix(tvs, keys)
    for row in x:
        magnitude = row.abs()
        row.mul_(magnitude >= magnitude.kthvalue(len(row) - int(len(row) * k)).values)
        del magnitude
    sign = x.sum(0).sign_()
    x.mul_(sign).clamp_(min=0)  # |x_t| where task t agrees with the elected sign, else 0
    merged = x.sum(0).mul_(sign).div_(x.sign_().sum(0).clamp_(min=1))
    return unflat(merged, tvs[0], keys)


def read_all(tvs: list) -> None:
    """Read (materialise) every entry of every mapping once."""
    for tv in tvs:
        for key in tv:
            tv[key].numel()


def run_one(name: str, files: list[str]) -> None:
    from evaluation.checkpoints import LazySafetensors
    from merging import merge

    tvs = [LazySafetensors(f) for f in files]
    peak, base, done = [0], rss_anon(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if name == "read":
        read_all(tvs)
    elif name in FLAT:
        {"flat_ta": flat_ta, "flat_ties": flat_ties}[name](tvs)
    else:
        out = merge(name, tvs)
        read_all(out if isinstance(out, list) else [])
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_anon())
    print(json.dumps({"wall_s": wall, "peak": peak[0], "base": base}))


def worker(name: str, files: list[str], limit_gib: float, threads: int) -> None:
    """Run with an address-space limit, so a method that does not fit fails cleanly."""
    import torch

    torch.set_num_threads(threads)
    soft = int((limit_gib + 4) * GIB)  # + the ~3 GiB of address space torch reserves at import
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    try:
        run_one(name, files)
    except (MemoryError, RuntimeError) as e:
        if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        print(json.dumps({"error": f"out of memory (limit {limit_gib:g} GiB): {str(e)[:80]}"}))


# ---- driver ------------------------------------------------------------------------------


def vit_b32_shapes() -> dict[str, tuple[int, ...]]:
    import open_clip

    model = open_clip.create_model("ViT-B-32")  # random init, no download
    return {k: tuple(v.shape) for k, v in model.visual.state_dict().items()}


def write_task_vectors(directory: Path, num_tasks: int, shapes: dict) -> list[str]:
    import torch
    from safetensors.torch import save_file

    paths = []
    for t in range(num_tasks):
        g = torch.Generator().manual_seed(t)
        tv = {k: torch.randn(s, generator=g) * 1e-3 for k, s in shapes.items()}
        path = directory / f"task{t:02d}.safetensors"
        save_file(tv, str(path))
        paths.append(str(path))
        del tv
    return paths


def run_subprocess(name: str, files: list[str], limit_gib: float, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--limit-gib", str(limit_gib)]
    cmd += ["--threads", str(args.threads), "--files"]
    try:
        proc = subprocess.run(
            cmd + files, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {args.timeout_s:g} s (--timeout-s)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:120]}"}
    return json.loads(lines[-1])


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return 0.0


def fmt(row: dict) -> str:
    if "error" in row:
        return f"| {row['tasks']} | {row['label']} | - | - | - | {row['error']} |"
    return (
        f"| {row['tasks']} | {row['label']} | {row['wall_s']:.1f} | {row['peak'] / GIB:.2f} "
        f"| {(row['peak'] - row['base']) / GIB:.2f} | {row.get('note', '')} |"
    )


def ratio(rows: dict, a: str, b: str, key: str) -> str:
    if "error" in rows.get(a, {"error": 1}) or "error" in rows.get(b, {"error": 1}):
        return "n/a"
    return f"{rows[a][key] / rows[b][key]:.2f}"


def targets(by_tasks: dict[int, dict[str, dict]]) -> list[str]:
    lines = [
        "",
        "Targets (issue 3): peak memory <= 0.20 and time <= 1.5 of flattened TIES; "
        "task arithmetic time <= 2.0 of reading once. 'bound': flattened TIES not run, "
        "its (T, P) matrix alone is the denominator.",
        "",
    ]
    lines.append(
        "| tasks | method | peak / flattened TIES | time / flattened TIES | time / read once |"
    )
    lines.append("|---|---|---|---|---|")
    for tasks, rows in by_tasks.items():
        for name in ["ties", "tall_masks", "consensus", "task_arithmetic"]:
            if name not in rows:
                continue
            mem = ratio(rows, name, "flat_ties", "peak")
            if mem == "n/a" and "peak" in rows[name] and rows.get("flat_ties", {}).get("bound"):
                mem = f"<= {rows[name]['peak'] / rows['flat_ties']['bound']:.2f} (bound)"
            time_flat = ratio(rows, name, "flat_ties", "wall_s")
            time_read = ratio(rows, name, "read", "wall_s")
            lines.append(f"| {tasks} | {rows[name]['label']} | {mem} | {time_flat} | {time_read} |")
    return lines


def estimate(by_tasks: dict[int, dict[str, dict]], name: str, tasks: int, row: int) -> int:
    """the largest measured run with fewer tasks plus one (P,) float32 row per extra task;
    else 3 (T, P) float32 matrices"""
    if name not in ("flat_ta", "flat_ties"):
        return 0
    done = [t for t, rows in by_tasks.items() if t < tasks and "peak" in rows.get(name, {})]
    if not done:
        return 3 * tasks * row
    return by_tasks[max(done)][name]["peak"] + (tasks - max(done)) * row


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the files
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, nargs="+", default=[8, 20])
    p.add_argument("--methods", nargs="+", help="registered names (default: all data-free)")
    p.add_argument(
        "--limit-gib", type=float, help="memory limit per method (default: 60%% of what is free)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per method (default 1)")
    p.add_argument("--timeout-s", type=float, default=900, help="per method (default 900)")
    p.add_argument("--out", default=str(ROOT / "results" / "merge_benchmark.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.files, args.limit_gib, args.threads)

    from merging import METHODS, method_spec

    method_spec("task_arithmetic")  # imports every method module
    skip = {"finetuned"}  # not a merge: T full models, T copies in memory
    names = args.methods or [n for n, s in METHODS.items() if not s.needs_data and n not in skip]
    for n in names:
        method_spec(n)  # unknown names fail here, before any work
    shapes = vit_b32_shapes()
    numel = sum(math.prod(s) for s in shapes.values())
    directory = Path(tempfile.mkdtemp(prefix="mergelab-bench-", dir="/tmp"))
    by_tasks: dict[int, dict[str, dict]] = {}
    header = [
        f"Merge methods on random ViT-B/32 image-encoder task vectors ({numel / 1e6:.1f}M float32 "
        "parameters each), read lazily from safetensors files; one fresh process per method.",
        f"Machine: {os.cpu_count()} cores, shared with other jobs while this ran (timings are "
        f"noisy); {args.threads} torch thread(s) per method. Flattened TIES thresholds one row "
        "at a time in place (issue 3 quotes about 19 GB for 8 tasks for a widely used version "
        "that runs kthvalue over the whole (T, P) matrix at once).",
        "",
        "| tasks | method | wall s | peak RssAnon GiB | above process baseline GiB | note |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    table = list(header)
    try:
        files = write_task_vectors(directory, max(args.tasks), shapes)
        for tasks in sorted(args.tasks):
            rows = by_tasks.setdefault(tasks, {})
            limit = args.limit_gib or 0.6 * mem_available_gib()
            for name in ["read", "flat_ta", "flat_ties", *names]:
                label = FLAT.get(name) or name
                matrix = tasks * numel * 4  # bytes of the flattened (T, P) float32 matrix
                need = estimate(by_tasks, name, tasks, numel * 4)
                if need > limit * GIB:
                    row = {
                        "error": f"not run: needs about {need / GIB:.1f} GiB ({estimate.__doc__}), "
                        f"over the {limit:.1f} GiB limit"
                    }
                else:
                    row = run_subprocess(name, files[:tasks], limit, args)
                if name in FLAT and "error" in row:
                    row["bound"] = matrix
                row.update(tasks=tasks, label=label)
                rows[name] = row
                table.append(fmt(row))
                print(table[-1], flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    extra = targets(by_tasks)
    print("\n".join(extra))
    from evaluation.cache import atomic_write_text

    atomic_write_text(args.out, "\n".join(table + extra) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
