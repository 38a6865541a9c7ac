"""Config schema of the real-text benchmark (registered by
``experiments.config.register_schemas``; ``conf/base/benchmark/text_real.yaml``, composed by
``conf/benchmark/text_real8.yaml``). The built object subclasses it, so a config key is a
constructor argument of the same name. Dataclasses only: every run imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class RealTextBenchmarkConfig:
    """Text classification tasks built from WordNet and fortune files
    (``evaluation.real.benchmark.RealTextBenchmark``; tasks: ``evaluation/real/data/
    text_tasks.json``): the first ``num_tasks`` of its order, or ``task_names``; per task
    ``n_train`` class-balanced training texts (val = 10% of them) and ``n_test`` test texts,
    drawn with ``seed``."""

    name: str = MISSING
    num_tasks: int | None = None
    task_names: list[str] | None = None
    n_train: int = 512
    n_test: int = 256
    seed: int = 0
    _target_: str = "evaluation.real.benchmark.RealTextBenchmark"


SCHEMAS = {"benchmark/text_real": RealTextBenchmarkConfig}
