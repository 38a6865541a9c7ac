"""Task-vector statistics of a zoo: the relative norm ``||tau_t|| / ||theta_0||`` of each
expert and the pairwise cosine ``<tau_s, tau_t> / (||tau_s|| ||tau_t||)``, over every float
parameter of the merged part (``tau_t = theta_t - theta_0``, Ilharco et al., ICLR 2023).

    python -m experiments.task_vector_stats model=minilm benchmark=text_real8
    python -m experiments.task_vector_stats model=sandbox_clip benchmark=sandbox8

Takes the run's config overrides (``model``, ``benchmark``, ``cache_dir``); builds the zoo's
experts if they are not cached. Prints Markdown: one row per task, then the cosine matrix and
the ranges. Read key by key (lazy checkpoints), so memory stays at one parameter of every
expert.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluation.benchmark import Benchmark
from evaluation.cache import cache_root
from evaluation.zoo import Env, check_regime
from experiments.config import register_schemas

Tensor = torch.Tensor
CONF = Path(__file__).resolve().parents[1] / "conf"
CHUNK = 1 << 22  # entries per float64 block of the Gram matrix
SUPPORTED = (
    "task_vector_stats reads task-vector zoos and benchmarks (pipeline=task_vectors, e.g. "
    "model=sandbox_clip benchmark=sandbox8), not different-initialisation ones"
)


@dataclass(frozen=True)
class TaskVectorStats:
    """``relative_norms[t] = ||tau_t|| / ||theta_0||``; ``cosines[s][t]`` the cosine of
    ``tau_s`` and ``tau_t`` (1 on the diagonal); ``theta_norm = ||theta_0||``."""

    tasks: tuple[str, ...]
    relative_norms: tuple[float, ...]
    cosines: tuple[tuple[float, ...], ...]
    theta_norm: float

    def off_diagonal(self) -> list[float]:
        n = len(self.tasks)
        return [self.cosines[s][t] for s in range(n) for t in range(n) if s < t]


def task_vector_stats(
    pretrained: Mapping[str, Tensor], experts: Mapping[str, Mapping[str, Tensor]]
) -> TaskVectorStats:
    """:class:`TaskVectorStats` of ``experts`` (task -> state) against ``pretrained``, over
    the float entries of ``pretrained`` (accumulated in float64, one key at a time)."""
    names = list(experts)
    if not names:
        raise ValueError("no experts to compare")
    gram = torch.zeros(len(names), len(names), dtype=torch.float64)
    theta = 0.0
    for key, base in pretrained.items():
        if not torch.is_floating_point(base):
            continue
        flat = base.detach().flatten().float()
        theta += float(flat.double().square().sum())
        taus = torch.stack([experts[n][key].detach().flatten().float() - flat for n in names])
        for block in taus.split(CHUNK, dim=1):
            block = block.double()
            gram += block @ block.T
    norms = gram.diagonal().sqrt()
    cos = gram / torch.outer(norms, norms).clamp_min(1e-300)
    return TaskVectorStats(
        tasks=tuple(names),
        relative_norms=tuple((norms / math.sqrt(theta)).tolist()),
        cosines=tuple(tuple(row) for row in cos.tolist()),
        theta_norm=math.sqrt(theta),
    )


def markdown(stats: TaskVectorStats, title: str) -> str:
    """The statistics as Markdown: per-task relative norms, the cosine matrix, the ranges."""
    rel, off = stats.relative_norms, stats.off_diagonal()
    lines = [
        f"### Task vectors of {title}",
        "",
        f"||theta_0|| = {stats.theta_norm:.2f}",
        "",
        "| task | \\|\\|tau_t\\|\\| / \\|\\|theta_0\\|\\| |",
        "|---|---:|",
    ]
    lines += [f"| {t} | {r:.5f} |" for t, r in zip(stats.tasks, rel, strict=True)]
    numbers = [str(i) for i in range(1, len(stats.tasks) + 1)]
    lines += ["", "| cosine | " + " | ".join(numbers) + " |", "|---|" + "---:|" * len(numbers)]
    for i, (t, row) in enumerate(zip(stats.tasks, stats.cosines, strict=True), 1):
        lines.append(f"| {i}. {t} | " + " | ".join(f"{c:.3f}" for c in row) + " |")
    lines += [
        "",
        f"relative norm: {min(rel):.5f} .. {max(rel):.5f} (mean {sum(rel) / len(rel):.5f})",
    ]
    if off:
        mean = sum(off) / len(off)
        lines.append(f"pairwise cosine: {min(off):.3f} .. {max(off):.3f} (mean {mean:.3f})")
    return "\n".join(lines)


def main(overrides: Sequence[str]) -> str:
    """Compose the run config with ``overrides``, load the zoo's experts, print and return
    the statistics. Raises ``ValueError`` naming the pipeline, model or benchmark, before
    anything is loaded, unless the pipeline is ``task_vectors``, the model builds a
    task-vector zoo and the benchmark has tasks."""
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    if not str(cfg.pipeline.get("_target_")).endswith(".TaskVectorPipeline"):
        raise ValueError(f"pipeline {cfg.pipeline.get('_target_')!r}: {SUPPORTED}")
    zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
    check_regime(zoo, "task_vectors", f"model {cfg.model.get('name')!r}", SUPPORTED)
    if not isinstance(benchmark, Benchmark):
        name = cfg.benchmark.get("name")
        raise ValueError(f"benchmark {name!r} is not a task benchmark: {SUPPORTED}")
    env = Env(cache_root(cfg.cache_dir), "cpu", bool(cfg.progress))
    experts = zoo.load(benchmark, benchmark.tasks(), env)
    text = markdown(
        task_vector_stats(experts.pretrained, experts.experts),
        f"{cfg.model.name} on {benchmark.name}",
    )
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
