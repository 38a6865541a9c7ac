"""Time a sweep against issue 14's budgets and print the figures.

    .venv/bin/python benchmarks/sweeps.py            # sandbox8, 3 methods x 3 zoo seeds
    .venv/bin/python benchmarks/sweeps.py --tiny     # the tests' 2-task miniature (a check)
    .venv/bin/python benchmarks/sweeps.py --zoos-only --work DIR   # build the zoos, then
    .venv/bin/python benchmarks/sweeps.py --work DIR               # time on them, later

The 3 x 3 sweep (``method=task_arithmetic,ties,tall_masks`` x ``model.recipe.seed=0,1,2``:
three sandbox zoos, one per seed) runs warm: the zoos are built first (not timed; a full
sandbox zoo takes about 9 minutes on 2 cores). Then, each with a fresh results store so
that nothing is reused:

* every job alone, one process each, one after another (the sum is the reference);
* the sweep with the joblib launcher and 2 jobs (``hydra/launcher=joblib
  hydra.launcher.n_jobs=2``); budget: at most 1.2 x the sum of the jobs alone;
* the same sweep again, every job complete in the store (resumed): budget under 10 s;
  also with Hydra's basic (sequential, in-process) launcher.

Each step prints its seconds, the load average when it ended and the torch threads of the
processes that computed (each job prints them; joblib's workers get ``OMP_NUM_THREADS`` =
cores // jobs unless it is set); the end repeats them in one table. Figures depend on the
machine's load: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "benchmark.num_tasks=2", "benchmark.n_train=200", "benchmark.n_test=100",
    "model.recipe.pretrain.samples_per_task=64", "model.recipe.pretrain.steps=4",
    "model.recipe.pretrain.warmup=1", "model.recipe.finetune.steps=4",
    "model.recipe.finetune.warmup=1", "protocol.alphas=[0.5,1.0]",
]  # fmt: skip  # as tests/experiments/test_run.py


def timed(name: str, cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Wall seconds of ``cmd`` and what it ran with (the load average at its end, the torch
    threads of each process that computed); exits naming the step if it fails (output in
    ``log``)."""
    print(f"--- {name}", flush=True)
    offset = log.stat().st_size if log.exists() else 0
    start = time.perf_counter()
    with log.open("a") as out:
        result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{name} failed with exit code {result.returncode}: see {log}")
    with log.open() as text:
        text.seek(offset)
        threads = re.findall(r"\((\d+) torch threads\)", text.read())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    used = f"threads {'/'.join(sorted(set(threads)))}" if threads else "nothing computed"
    conditions = f"load {load}; {used}"
    print(f"    {seconds:.1f} s ({conditions})", flush=True)
    return seconds, conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the 2-task miniature zoo")
    parser.add_argument("--methods", nargs="+", default=["task_arithmetic", "ties", "tall_masks"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--work",
        type=Path,
        help="a work directory kept from an earlier run (--keep, --zoos-only): its zoo cache "
        "is reused, its stores and outputs replaced",
    )
    parser.add_argument(
        "--zoos-only", action="store_true", help="build the zoos (un-timed) and stop; keeps --work"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mergelab-sweeps-"))
    for old in ("warmup", "alone", "store", "sweep", "resumed", "resumed_basic"):
        shutil.rmtree(work / old, ignore_errors=True)  # fresh stores: nothing is reused
    log = work / "log.txt"
    log.unlink(missing_ok=True)
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "experiments.run"]
    base = [*run, "benchmark=sandbox8", "logger=none", "progress=false",
            f"cache_dir={work / 'cache'}", *(TINY if args.tiny else [])]  # fmt: skip
    print(f"work directory: {work}; log: {log}")
    for seed in args.seeds:  # warm: build each seed's zoo (not timed)
        warm = [*base, "method=zeroshot", f"model.recipe.seed={seed}",
                f"store_dir={work / 'warmup'}",
                f"hydra.run.dir={work / 'warmup' / seed}"]  # fmt: skip
        timed(f"warm-up: zoo of seed {seed} (not timed)", warm, env, log)
    if args.zoos_only:
        print(f"zoos built; time the sweeps with: {' '.join(sys.argv[:1])} --work {work}"
              f"{' --tiny' if args.tiny else ''}")  # fmt: skip
        return
    alone, alone_conditions = 0.0, []
    for method, seed in itertools.product(args.methods, args.seeds):
        seconds, conditions = timed(f"alone: {method}, seed {seed}", [
            *base, f"method={method}", f"model.recipe.seed={seed}",
            f"store_dir={work / 'alone'}", f"hydra.run.dir={work / 'alone' / f'{method}-{seed}'}",
        ], env, log)  # fmt: skip
        alone += seconds
        alone_conditions.append(conditions)
    sweep = [*run, "-m", *base[len(run) :], f"method={','.join(args.methods)}",
             f"model.recipe.seed={','.join(args.seeds)}",
             f"store_dir={work / 'store'}"]  # fmt: skip
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    sweep_name = f"joblib sweep, {args.jobs} jobs"
    figures = {
        sweep_name: timed("sweep (joblib)", [
            *sweep, *joblib, f"hydra.sweep.dir={work / 'sweep'}"], env, log),
        "resumed sweep (joblib)": timed("resumed sweep (joblib)", [
            *sweep, *joblib, f"hydra.sweep.dir={work / 'resumed'}"], env, log),
        "resumed sweep (basic launcher)": timed("resumed sweep (basic)", [
            *sweep, f"hydra.sweep.dir={work / 'resumed_basic'}"], env, log),
    }  # fmt: skip
    count = len(args.methods) * len(args.seeds)
    skipped = log.read_text().count("nothing left to compute")
    if skipped != 2 * count:
        sys.exit(f"expected {2 * count} skipped jobs in the resumed sweeps, saw {skipped}")
    budgets = {sweep_name: 1.2 * alone, "resumed sweep (joblib)": 10.0,
               "resumed sweep (basic launcher)": 10.0}  # fmt: skip
    print(f"\n{count} jobs ({', '.join(args.methods)} x seeds {', '.join(args.seeds)}) on "
          f"sandbox8{' (tiny)' if args.tiny else ''}; cpus: {os.cpu_count()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
    print(f"{'step':<32} {'seconds':>8} {'budget':>8}  ok   conditions (load 1/5/15 min at end)")
    loads = sorted(c.split(";")[0] for c in alone_conditions)
    threads = sorted({c.split("; ")[1] for c in alone_conditions})
    print(f"{'sum of the jobs alone':<32} {alone:8.1f} {'':>8}       "
          f"{loads[0]} .. {loads[-1].removeprefix('load ')}; {', '.join(threads)}")  # fmt: skip
    for name, (seconds, conditions) in figures.items():
        ok = "yes" if seconds <= budgets[name] else "NO "
        print(f"{name:<32} {seconds:8.1f} {budgets[name]:8.1f}  {ok}  {conditions}")
    ratio = figures[sweep_name][0] / alone
    ok = "yes" if ratio <= 1.2 else "NO"
    print(f"{'sweep / sum of jobs alone':<32} {ratio:8.2f} {1.2:8.2f}  {ok}")
    per_job = re.findall(r"threads ([\d/]+)", figures[sweep_name][1])
    pinned = per_job and all(int(t) * args.jobs <= (os.cpu_count() or 1)
                             for t in per_job[0].split("/"))  # fmt: skip
    print(f"joblib jobs: {per_job[0] if per_job else '?'} torch thread(s) each x {args.jobs} "
          f"jobs on {os.cpu_count()} cores: "
          f"{'no oversubscription' if pinned else 'OVERSUBSCRIBED'}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
