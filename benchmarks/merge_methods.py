"""Wall time and peak anonymous memory of every merge method on ViT-B/32-sized task vectors.

For each task count, random task vectors shaped like the open_clip ViT-B/32 image encoder
(random init, nothing downloaded) are written as safetensors files under /tmp and read
lazily (:class:`evaluation.checkpoints.LazySafetensors`). Every registered data-free method
runs in a fresh subprocess, next to the read floor (reading every task vector once and
summing it, key by key) and flatten-everything task arithmetic and TIES written here (a
(tasks x parameters) matrix, ``kthvalue`` per row). Each row prints its time over the read
floor. Peak memory is the largest RssAnon (/proc/self/status, sampled every 5 ms):
memory-mapped file pages are page cache, not the method's. Task-specific methods return
lazy task vectors; each one's every key is read once inside the timed region. Threads are
pinned in every worker: ``torch.set_num_threads(--threads)`` and OMP / OpenBLAS / MKL
(scipy's LAPACK) through their environment variables.

    python benchmarks/merge_methods.py [--tasks 8 20] [--methods ties tall_masks ...] \
        --out results/merge_benchmark.md   # issue 3's table; without --out it prints only
    python benchmarks/merge_methods.py --tasks 4 --methods ties tsv --no-flat   # quick
    python benchmarks/merge_methods.py --tasks 20 --methods ties --no-flat --rounds 3  # best of 3
    python benchmarks/merge_methods.py --tasks 20 --methods ties --no-flat --rounds 3 --warm
    python benchmarks/merge_methods.py --tasks 20 --methods ties --no-flat --experts  # pipelines

``--spectral-before-after`` instead times TSV-M, Iso-C and Iso-CTS against their previous
full-SVD implementations (kept below, only here), interleaved in one process on the same
in-memory task vectors (one 768 x 768, one 3072 x 768 and one 768 x 3072 matrix per task,
the shapes of a ViT-B/32 block), and prints the ratios and the largest output difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import experiments  # noqa: E402, F401  (mergelab's OpenBLAS settings, before numpy loads)

FLAT = {
    "flat_ta": "TA (flattened)",
    "flat_ties": "TIES (flattened)",
    "read": "read floor: read and sum every task vector once",
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
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


def read_floor(tvs: list, experts: bool = False) -> dict:
    """The least any merge does: read every task's every entry once, key by key, and sum.
    With ``experts`` (``TaskVector`` mappings) through ``read_into`` and one reused buffer:
    each difference ``theta_ft - theta_0`` computed in place, as the merges read them."""
    import torch

    sizes = (math.prod(shape) * dtype.itemsize for shape, dtype in map(tvs[0].meta, tvs[0]))
    buffer = torch.empty(max(sizes) if experts else 0, dtype=torch.uint8)
    out = {}
    for key in tvs[0]:
        out[key] = tvs[0][key].float()
        for tv in tvs[1:]:
            out[key] += tv.read_into(key, buffer) if experts else tv[key]
    return out


def run_one(name: str, files: list[str], warm: bool = False, experts: bool = False) -> None:
    """Time ``name`` once; with ``warm``, after one untimed run in the same process (the heap
    has grown to its peak: the steady state of a process that merges repeatedly); with
    ``experts``, each file is a fine-tuned model and the task vector
    ``TaskVector(file, pretrained)`` with a zero pretrained state dict, as the pipelines
    merge (every read subtracts ``theta_0``, the read floor's too)."""
    import torch

    from evaluation.checkpoints import LazySafetensors
    from merging import TaskVector, merge

    tvs = [LazySafetensors(f) for f in files]
    if experts:
        metas = {k: tvs[0].meta(k) for k in tvs[0]}
        pretrained = {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in metas.items()}
        tvs = [TaskVector(x, pretrained) for x in tvs]

    def run() -> None:
        if name == "read":
            read_floor(tvs, experts)
        elif name in FLAT:
            {"flat_ta": flat_ta, "flat_ties": flat_ties}[name](tvs)
        else:
            out = merge(name, tvs)
            read_all(out if isinstance(out, list) else [])

    if warm:
        run()
    peak, base, done, sampler_cpu = [0], rss_anon(), threading.Event(), [0.0]

    def sample() -> None:
        start = time.thread_time()
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.005)
        sampler_cpu[0] = time.thread_time() - start

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_anon())
    faults, system = after.ru_minflt - usage.ru_minflt, after.ru_stime - usage.ru_stime
    # every thread of the process (torch's, the merge's block workers) but the sampler
    cpu = after.ru_utime + system - usage.ru_utime - sampler_cpu[0]
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak": peak[0], "base": base,
                      "faults": faults, "system_s": system}))  # fmt: skip


def worker(
    name: str, files: list[str], limit_gib: float, threads: int, warm: bool, experts: bool
) -> None:
    """Run with an address-space limit, so a method that does not fit fails cleanly."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"torch runs {torch.get_num_threads()} threads, not {threads}")
    soft = int((limit_gib + 4) * GIB)  # + the ~3 GiB of address space torch reserves at import
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    try:
        run_one(name, files, warm, experts)
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
    cmd += ["--threads", str(args.threads), *(["--warm"] if args.warm else [])]
    cmd += [*(["--experts"] if args.experts else []), "--files"]
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(args.threads))}
    try:
        proc = subprocess.run(
            cmd + files, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {args.timeout_s:g} s (--timeout-s)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:120]}"}
    return json.loads(lines[-1])


def best_row(runs: list[dict]) -> dict:
    """One row from the fresh-process runs of one method: the best (least) wall and CPU
    seconds, as a shared machine only ever slows a run down (fresh processes of one method
    differ by up to 2x here, the read floor most: heap growth and page faults of a new
    process), the largest peak, and the median and range in the note; the first error if
    any run failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    row = {k: min(r[k] for r in runs) for k in ("wall_s", "cpu_s")}
    row.update(peak=max(r["peak"] for r in runs), base=min(r["base"] for r in runs))
    if len(runs) > 1:
        walls = sorted(r["wall_s"] for r in runs)
        row["note"] = (
            f"best of {len(runs)} runs; wall median {statistics.median(walls):.1f} s, "
            f"{walls[0]:.1f}-{walls[-1]:.1f} s; page faults (median) "
            f"{statistics.median(r.get('faults', 0) for r in runs) / 1e6:.2f} M"
        )
    return row


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return 0.0


def fmt(row: dict, floor: dict) -> str:
    if "error" in row:
        return f"| {row['tasks']} | {row['label']} | - | - | - | - | - | - | {row['error']} |"
    over = f"{row['wall_s'] / floor['wall_s']:.1f}" if "wall_s" in floor else "n/a"
    cpu = f"{row['cpu_s'] / floor['cpu_s']:.1f}" if "cpu_s" in floor else "n/a"
    return (
        f"| {row['tasks']} | {row['label']} | {row['wall_s']:.1f} | {over} "
        f"| {row['cpu_s']:.1f} | {cpu} "
        f"| {row['peak'] / GIB:.2f} | {(row['peak'] - row['base']) / GIB:.2f} "
        f"| {row.get('note', '')} |"
    )


def ratio(rows: dict, a: str, b: str, key: str) -> str:
    if "error" in rows.get(a, {"error": 1}) or "error" in rows.get(b, {"error": 1}):
        return "n/a"
    return f"{rows[a][key] / rows[b][key]:.2f}"


# issue 15's targets: (time over the read floor, peak RssAnon GiB); None: no target
TARGETS = {
    "ties": (3.0, 1.5),
    "tall_masks": (3.0, 1.5),
    "consensus": (3.0, 1.5),
    "emr": (None, 1.5),
    "task_arithmetic": (None, None),
}


def targets(by_tasks: dict[int, dict[str, dict]]) -> list[str]:
    lines = [
        "",
        "Targets (issue 15): TIES, TALL masks and Consensus at most 3x the read floor with "
        "peak memory under 1.5 GiB; EMR under 1.5 GiB. Issue 3's ratios to flattened TIES "
        "are kept ('bound': flattened TIES not run as it would not fit, its (T, P) matrix "
        "alone is the denominator; n/a: not run, --no-flat).",
        "",
        "| tasks | method | time / read floor | CPU / read floor CPU | peak GiB | target | met "
        "(wall) | peak / flattened TIES | time / flattened TIES |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tasks, rows in by_tasks.items():
        for name, (max_time, max_peak) in TARGETS.items():
            row = rows.get(name)
            if row is None or "error" in row:
                continue
            mem = ratio(rows, name, "flat_ties", "peak")
            if mem == "n/a" and rows.get("flat_ties", {}).get("bound"):
                mem = f"<= {row['peak'] / rows['flat_ties']['bound']:.2f} (bound)"
            over = row["wall_s"] / rows["read"]["wall_s"] if "wall_s" in rows["read"] else None
            wanted = [f"time <= {max_time:g}x"] if max_time else []
            wanted += [f"peak < {max_peak:g} GiB"] if max_peak else []
            fits = max_peak is None or row["peak"] / GIB < max_peak
            if not wanted:
                verdict = "-"
            elif max_time is not None and over is None:  # the floor failed: time unknown
                verdict = "n/a (no read floor)" if fits else "no"
            else:
                verdict = "yes" if fits and (max_time is None or over <= max_time) else "no"
            lines.append(
                f"| {tasks} | {row['label']} | {'n/a' if over is None else f'{over:.1f}'} "
                f"| {ratio(rows, name, 'read', 'cpu_s')} | {row['peak'] / GIB:.2f} "
                f"| {', '.join(wanted) or '-'} "
                f"| {verdict} | {mem} "
                f"| {ratio(rows, name, 'flat_ties', 'wall_s')} |"
            )
    return lines


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def load_reading(threads: int) -> str:
    """What the one-minute load average says next to the benchmark's own ``threads``."""
    if os.getloadavg()[0] > threads + 0.5:
        return "above the benchmark's own threads: other jobs share the cores, timings are noisy"
    return "about the benchmark's own threads: nothing else was running"


# ---- --spectral-before-after: the full-SVD implementations the spectral methods replaced ----


def svd_polar(x: object) -> object:
    """``P Q^T`` by a full SVD; where float32 ``gesdd`` fails to converge (the previous Iso-CTS
    raised there: its concatenated factors can be nearly singular), retried in float64 and
    counted in ``FAILED`` so the table can say so."""
    import torch

    try:
        p, _, qh = torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        FAILED.append(tuple(x.shape))
        p, _, qh = torch.linalg.svd(x.double(), full_matrices=False)
    return (p @ qh).to(x.dtype)


FAILED: list[tuple[int, ...]] = []


def full_svd_tsv(taus: list) -> object:
    """TSV-M per matrix before issue 15: a full float32 SVD per task and per polar factor."""
    import torch

    k = max(1, min(taus[0].shape) // len(taus))
    us, ss, vhs = [], [], []
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k])
        vhs.append(vh[:k])
    return (svd_polar(torch.cat(us, 1)) * torch.cat(ss)) @ svd_polar(torch.cat(vhs, 0))


def full_svd_iso_c(taus: list) -> object:
    import torch

    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * (u @ vh)


def full_svd_iso_cts(taus: list, common_fraction: float = 0.8) -> object:
    import torch

    from merging.methods.iso_cts import _split_rank

    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    common, per_task = _split_rank(len(s), len(taus), common_fraction)
    us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
    if per_task:
        for tau in taus:
            outside = tau - us[0] @ (us[0].T @ tau)
            u_t, s_t, vh_t = torch.linalg.svd(outside, full_matrices=False)
            us.append(u_t[:, :per_task])
            ss.append(s_t[:per_task])
            vhs.append(vh_t[:per_task])
    return torch.cat(ss).mean() * (svd_polar(torch.cat(us, 1)) @ svd_polar(torch.cat(vhs, 0)))


FULL_SVD = {"tsv": full_svd_tsv, "iso_c": full_svd_iso_c, "iso_cts": full_svd_iso_cts}
BLOCK = {"attn.out_proj.weight": (768, 768), "mlp.c_fc.weight": (3072, 768)}
BLOCK["mlp.c_proj.weight"] = (768, 3072)


def spectral_before_after(args: argparse.Namespace) -> None:
    """Old (full SVD) and new TSV-M / Iso-C / Iso-CTS, alternating, on the same tensors."""
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))  # before scipy loads
    import statistics

    import torch

    from merging import merge

    torch.set_num_threads(args.threads)
    names = args.methods or list(FULL_SVD)
    unknown = sorted(set(names) - set(FULL_SVD))
    if unknown:
        raise SystemExit(f"--spectral-before-after: no full-SVD version of {unknown}")
    tasks = max(args.tasks)
    g = torch.Generator().manual_seed(0)
    tvs = [{k: torch.randn(s, generator=g) * 1e-3 for k, s in BLOCK.items()} for _ in range(tasks)]
    shapes = ", ".join(f"{m}x{n}" for m, n in BLOCK.values())
    print(
        f"TSV-M / Iso-C / Iso-CTS, full SVD (before) vs leading triplets (after): {tasks} tasks "
        f"x ({shapes}) float32; torch.set_num_threads({torch.get_num_threads()}), "
        + ", ".join(f"{v}={args.threads}" for v in THREAD_VARIABLES)
        + f", OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}"
        + f"; {args.repeats} alternating rounds; load average {load()} at start.\n"
    )
    print("| method | before s (median) | after s (median) | speed-up | max abs diff / max abs |")
    print("|---|---|---|---|---|")
    for name in names:
        before, after, diff, failed = [], [], 0.0, ""
        for _ in range(args.repeats):
            FAILED.clear()
            start = time.perf_counter()
            old = {k: FULL_SVD[name]([tv[k] for tv in tvs]) for k in BLOCK}
            before.append(time.perf_counter() - start)
            if FAILED:
                failed = f"before: float32 SVD of {FAILED[0]} failed, redone in float64; "
            start = time.perf_counter()
            new = merge(name, tvs)
            after.append(time.perf_counter() - start)
            for k in BLOCK:
                diff = max(diff, float((new[k] - old[k]).abs().max() / old[k].abs().max()))
        b, a = statistics.median(before), statistics.median(after)
        print(f"| {name} | {b:.2f} | {a:.2f} | {b / a:.1f}x | {failed}{diff:.1e} |", flush=True)
    print(f"\nload average {load()} at the end")


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
    p.add_argument(
        "--tasks", type=int, nargs="+", default=[8, 20], help="task counts (default 8 20)"
    )
    p.add_argument("--methods", nargs="+", help="registered names (default: all data-free)")
    p.add_argument(
        "--limit-gib", type=float, help="memory limit per method (default: 60%% of what is free)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per method (default 1)")
    p.add_argument("--timeout-s", type=float, default=900, help="per method (default 900)")
    p.add_argument("--no-flat", action="store_true", help="skip the flattened TA / TIES rows")
    p.add_argument(
        "--spectral-before-after",
        action="store_true",
        help="time TSV-M / Iso-C / Iso-CTS against their full-SVD versions instead",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="with --spectral-before-after: old and new code alternated this many times in one "
        "process, as --repeats in the other benchmarks (default 2)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="fresh processes per method, interleaved; rows give the best (default 1; "
        "not used by --spectral-before-after)",
    )
    p.add_argument(
        "--warm",
        action="store_true",
        help="time each method's second run in its process (steady state: the heap has grown)",
    )
    p.add_argument(
        "--experts",
        action="store_true",
        help="read each file as a fine-tuned model minus a zero pretrained state "
        "(TaskVector, as the pipelines merge)",
    )
    p.add_argument(
        "--out",
        help="also write the table to this file (issue 3's table: results/merge_benchmark.md; "
        "default: print only). --spectral-before-after prints only",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(
            args.worker, args.files, args.limit_gib, args.threads, args.warm, args.experts
        )
    if args.spectral_before_after:
        return spectral_before_after(args)

    from merging import METHODS, method_spec

    method_spec("task_arithmetic")  # imports every method module
    skip = {"finetuned"}  # not a merge: T full models, T copies in memory
    data_free = [n for n, s in METHODS.items() if "data" not in s.needs and n not in skip]
    names = args.methods or data_free
    for n in names:
        method_spec(n)  # unknown names fail here, before any work
    shapes = vit_b32_shapes()
    numel = sum(math.prod(s) for s in shapes.values())
    directory = Path(tempfile.mkdtemp(prefix="mergelab-bench-", dir="/tmp"))
    by_tasks: dict[int, dict[str, dict]] = {}
    header = [
        f"Merge methods on random ViT-B/32 image-encoder task vectors ({numel / 1e6:.1f}M float32 "
        "parameters each), read lazily from safetensors files; "
        + (
            "one fresh process per method."
            if args.rounds == 1
            else f"{args.rounds} fresh processes per method, in interleaved rounds: the best "
            "wall and CPU time (median and range in the note), the largest peak."
        )
        + (
            " Experts: each file is read as a fine-tuned model, the task vector "
            "TaskVector(file, zero pretrained state dict) as the pipelines merge (every read "
            "subtracts theta_0; the read floor reads each into one reused buffer and "
            "subtracts there)."
            if args.experts
            else ""
        )
        + (
            " Warm: each process runs its method once untimed, then the timed run (the "
            "steady state of a process that merges repeatedly; the baseline column then "
            "includes the heap kept from the first run)."
            if args.warm
            else ""
        ),
        f"Machine: {os.cpu_count()} cores, load average {load()} when this started "
        f"({load_reading(args.threads)}). Threads pinned per method: "
        f"torch.set_num_threads({args.threads}), "
        + ", ".join(f"{v}={args.threads}" for v in THREAD_VARIABLES)
        + (
            "."
            if args.no_flat
            else ". Flattened TIES thresholds one row at a time in place (issue 3 quotes about "
            "19 GB for 8 tasks for a widely used version that runs kthvalue over the whole "
            "(T, P) matrix at once)."
        ),
        "",
        "| tasks | method | wall s | time / read floor | CPU s | CPU / read floor CPU "
        "| peak RssAnon GiB | above process baseline GiB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    table = list(header)
    try:
        files = write_task_vectors(directory, max(args.tasks), shapes)
        os.sync()  # written back: the timed reads do not share the disk with the writeback
        run_subprocess("read", files, 0.6 * mem_available_gib(), args)  # page cache warm
        for tasks in sorted(args.tasks):
            rows = by_tasks.setdefault(tasks, {})
            limit = args.limit_gib or 0.6 * mem_available_gib()
            flat = [] if args.no_flat else ["flat_ta", "flat_ties"]
            order = ["read", *flat, *names]
            runs: dict[str, list[dict]] = {name: [] for name in order}
            for name in order:
                need = estimate(by_tasks, name, tasks, numel * 4)
                if need > limit * GIB:
                    runs[name].append({
                        "error": f"not run: needs about {need / GIB:.1f} GiB ({estimate.__doc__}), "
                        f"over the {limit:.1f} GiB limit"
                    })  # fmt: skip
            for r in range(args.rounds):  # rounds interleaved: a slow spell hits every method
                for name in order:
                    if not runs[name] or "error" not in runs[name][0]:
                        runs[name].append(run_subprocess(name, files[:tasks], limit, args))
                        wall = runs[name][-1].get("wall_s")
                        took = "failed" if wall is None else f"{wall:.1f} s"
                        print(f"  round {r + 1}: {name} {took}", file=sys.stderr, flush=True)
            for name in order:
                row = best_row(runs[name])
                if name in FLAT and "error" in row:
                    row["bound"] = tasks * numel * 4  # the flattened (T, P) float32 matrix
                row.update(tasks=tasks, label=FLAT.get(name) or name)
                rows[name] = row
                table.append(fmt(row, rows["read"]))
                print(table[-1], flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    extra = targets(by_tasks)
    print("\n".join(extra))
    from evaluation.cache import atomic_write_text

    if args.out:
        atomic_write_text(args.out, "\n".join(table + extra) + "\n")
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
