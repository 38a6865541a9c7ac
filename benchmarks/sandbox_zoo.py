"""Build the sandbox CLIP zoo into a fresh cache and report timings and accuracies.

    .venv/bin/python benchmarks/sandbox_zoo.py --tasks 8 [--threads 2] \\
        [--set model.recipe.finetune.steps=400 benchmark.n_train=2000]

The zoo and benchmark are composed from conf/ (``model=sandbox_clip``,
``benchmark=sandbox<tasks>``, plus the ``--set`` overrides) and built with
``hydra.utils.instantiate``. Stages, timed separately: data generation (every split of
every task), pretraining, one expert at a time, a warm reload; then zero-shot vs expert
top-1 per task (val and test) and task arithmetic of all experts (alpha in
{0.1, ..., 1.0} chosen on the average normalised val accuracy, Ilharco et al., 2023),
scored by the zoo's own evaluator.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.zoo import Env  # noqa: E402
from experiments.config import register_schemas  # noqa: E402
from merging import TaskVector, merge  # noqa: E402

SIZES = (8, 14, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, choices=SIZES, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", help="cache dir (default: a fresh temporary one)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, a.b=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_schemas()
    overrides = ["model=sandbox_clip", f"benchmark=sandbox{args.tasks}", *args.set]
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
    tasks = benchmark.tasks()
    env = Env(Path(args.cache or tempfile.mkdtemp(prefix="sandbox_zoo_")))
    load = os.getloadavg()
    print(f"{benchmark.name}, {args.threads} threads, cache {env.cache_dir}, load {load[0]:.2f}")

    timings = {}

    def timed(stage, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[stage] = time.perf_counter() - t0
        print(f"  {stage:28s} {timings[stage]:7.1f} s", flush=True)
        return out

    timed("data", lambda: [benchmark.load_split(t, s, env.cache_dir)
                           for t in tasks for s in ("train", "test")])  # fmt: skip
    timed("pretrain", lambda: zoo.load(benchmark, [], env))
    for k, task in enumerate(tasks):
        timed(f"expert {task.name}", lambda k=k: zoo.load(benchmark, tasks[: k + 1], env))
    experts = timed("warm load", lambda: zoo.load(benchmark, tasks, env))
    build = sum(v for k, v in timings.items() if k != "warm load")
    print(f"  {'cold build total':28s} {build:7.1f} s")

    t0 = time.perf_counter()
    evaluator = experts.evaluator(tasks, 500, env)
    taus = {t.name: TaskVector(experts.experts[t.name], experts.pretrained) for t in tasks}
    merged = merge("task_arithmetic", list(taus.values()))
    alphas = [a / 10 for a in range(1, 11)]
    rows = {t.name: {} for t in tasks}
    for who, tau, alpha in [("zero-shot", None, 1.0), *[(f"ta{a:.1f}", merged, a) for a in alphas]]:
        evaluator.load(tau, alpha)
        for t in tasks:
            rows[t.name].update({(who, s): evaluator.accuracy(t.name, s) for s in ("val", "test")})
    for t in tasks:
        evaluator.load(taus[t.name])
        rows[t.name].update({("expert", s): evaluator.accuracy(t.name, s) for s in ("val", "test")})
    evaluator.load(None)

    def norm(key, split):  # 0 where the expert scores 0, as the protocol does
        ratios = [r[(key, split)] / r[("expert", split)] if r[("expert", split)] else 0.0
                  for r in rows.values()]  # fmt: skip
        return sum(ratios) / len(ratios)

    best = max((f"ta{a:.1f}" for a in alphas), key=lambda k: norm(k, "val"))
    print(f"  {'evaluation':28s} {time.perf_counter() - t0:7.1f} s")
    print(f"\n{'task':14s} {'zs val':>7s} {'zs test':>7s} {'ft val':>7s} {'ft test':>7s} "
          f"{'TA test':>7s}")  # fmt: skip
    for name, r in rows.items():
        cells = [r[(w, s)] for w in ("zero-shot", "expert") for s in ("val", "test")]
        print(f"{name:14s} " + " ".join(f"{c:7.1f}" for c in cells + [r[(best, "test")]]))
    avg = {k: sum(r[k] for r in rows.values()) / len(rows) for k in next(iter(rows.values()))}
    cells = [avg[(w, s)] for w in ("zero-shot", "expert") for s in ("val", "test")]
    print(f"{'average':14s} " + " ".join(f"{c:7.1f}" for c in cells + [avg[(best, "test")]]))
    print(
        f"\ntask arithmetic: alpha {best[2:]} (best average normalised val accuracy), test "
        f"{avg[(best, 'test')]:.1f}% absolute, {100 * norm(best, 'test'):.1f}% normalised"
    )


if __name__ == "__main__":
    main()
