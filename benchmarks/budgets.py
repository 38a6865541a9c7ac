"""Time the README's commands against issue 2's budgets and print the figures.

    .venv/bin/python benchmarks/budgets.py            # cold run, warm run, test suite
    .venv/bin/python benchmarks/budgets.py --skip-tests

The cold run uses an empty temporary cache (the sandbox zoo and data are built from
scratch); the warm run reuses that cache. Budgets (2-core CPU): cold < 15 min,
warm < 3 min, tests < 10 min.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"cold default run": 15 * 60, "warm default run": 3 * 60, "test suite": 10 * 60}


def timed(name: str, cmd: list[str], env: dict[str, str]) -> float:
    print(f"--- {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{name} failed with exit code {result.returncode}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache and outputs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mergelab-budgets-"))
    env = {**os.environ, "MERGELAB_CACHE_DIR": str(work / "cache")}
    run = [sys.executable, "-m", "experiments.run", "progress=false"]
    figures = {
        "cold default run": timed("cold", [*run, f"hydra.run.dir={work}/cold"], env),
        "warm default run": timed("warm", [*run, f"hydra.run.dir={work}/warm"], env),
    }
    if not args.skip_tests:
        figures["test suite"] = timed("tests", [sys.executable, "-m", "pytest", "-q"], env)
    print(f"\n{'step':<18} {'seconds':>8} {'budget':>8}  ok  (cpus: {os.cpu_count()})")
    for name, seconds in figures.items():
        budget = BUDGETS[name]
        print(f"{name:<18} {seconds:8.1f} {budget:8d}  {'yes' if seconds < budget else 'NO'}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
