"""Build the sandbox CLIP zoo into a fresh cache and report timings and accuracies.

    .venv/bin/python benchmarks/sandbox_zoo.py --tasks 8 [--threads 2] [--set finetune.steps=400]

Stages, timed separately: data generation (every split of every task), pretraining, one
expert at a time, a warm reload; then zero-shot vs expert top-1 per task (val and test)
and task arithmetic of all experts (alpha in {0.1, ..., 1.0} chosen on the average
normalised val accuracy, Ilharco et al., 2023).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.heads import zeroshot_head  # noqa: E402
from evaluation.sandbox.data import load_split  # noqa: E402
from evaluation.sandbox.tasks import SIZES, benchmark_tasks, get_task  # noqa: E402
from evaluation.sandbox.zoo import load_sandbox_clip, preprocess  # noqa: E402
from merging.registry import merge  # noqa: E402
from merging.task_vectors import TaskVector, apply_task_vector  # noqa: E402

SOURCES = ("train", "test")  # val is carved out of train
CONFIG = Path(__file__).resolve().parents[1] / "conf" / "model" / "sandbox_clip.yaml"


@torch.no_grad()
def accuracy(model, state, head, images, labels) -> float:
    """Top-1 accuracy (%) of ``model.visual`` loaded with ``state``, through ``head``."""
    model.visual.load_state_dict(state)
    hits = sum(
        (head(model.visual(preprocess(x))).argmax(1) == y).sum().item()
        for x, y in zip(images.split(500), labels.split(500), strict=True)
    )
    return 100.0 * hits / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, choices=SIZES, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", help="cache dir (default: a fresh temporary one)")
    parser.add_argument("--set", nargs="*", default=[], help="recipe overrides, a.b=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = OmegaConf.merge(OmegaConf.load(CONFIG).recipe, OmegaConf.from_dotlist(args.set))
    recipe = OmegaConf.to_container(recipe)
    names = list(benchmark_tasks(args.tasks))
    cache = args.cache or tempfile.mkdtemp(prefix="sandbox_zoo_")
    load = os.getloadavg()
    print(f"sandbox{args.tasks}, {args.threads} threads, cache {cache}, load {load[0]:.2f}")

    sizes = recipe["data"]
    timings = {}

    def timed(stage, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[stage] = time.perf_counter() - t0
        print(f"  {stage:28s} {timings[stage]:7.1f} s", flush=True)
        return out

    timed("data", lambda: [load_split(n, s, cache, **sizes) for n in names for s in SOURCES])
    timed("pretrain", lambda: load_sandbox_clip([], cache, recipe, progress=False))
    for k, name in enumerate(names):
        timed(f"expert {name}", lambda k=k: load_sandbox_clip(names[: k + 1], cache, recipe, False))
    zoo = timed("warm load", lambda: load_sandbox_clip(names, cache, recipe, progress=False))
    build = sum(v for k, v in timings.items() if k != "warm load")
    print(f"  {'cold build total':28s} {build:7.1f} s")

    t0 = time.perf_counter()
    model = zoo.model
    taus = [TaskVector(zoo.experts[n], zoo.pretrained) for n in names]
    merged_tau = merge("task_arithmetic", taus)
    rows = {}
    for name in names:
        task = get_task(name)
        head = zeroshot_head(model, zoo.tokenizer, task.classnames, task.templates)
        data = {s: load_split(name, s, cache, **sizes) for s in ("val", "test")}
        expert = dict(zoo.experts[name].items())
        rows[name] = {
            (who, s): accuracy(model, state, head, *data[s])
            for who, state in (("zero-shot", zoo.pretrained), ("expert", expert))
            for s in ("val", "test")
        }
        for alpha in [a / 10 for a in range(1, 11)]:
            merged = apply_task_vector(zoo.pretrained, merged_tau, alpha)
            for s in ("val", "test"):
                rows[name][(f"ta{alpha:.1f}", s)] = accuracy(model, merged, head, *data[s])
    model.visual.load_state_dict(zoo.pretrained)

    def norm(key, split):
        return sum(r[(key, split)] / r[("expert", split)] for r in rows.values()) / len(rows)

    best = max((f"ta{a / 10:.1f}" for a in range(1, 11)), key=lambda k: norm(k, "val"))
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
