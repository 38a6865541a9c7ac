"""Config schemas, registered in Hydra's ConfigStore, so that a misspelt or missing key or a
wrong type fails at composition, naming its key path, before any computation.

* ``config_schema``: the top-level run config (``conf/config.yaml`` starts from it); every
  entry of ``method`` is a :class:`MethodConfig`.
* ``schema/<group>/<name>``: the schema of one config-group option, used by that option's
  YAML as ``defaults: [/schema/<group>/<name>@_here_, _self_]``. Family packages declare
  theirs in ``evaluation/<family>/config.py`` as ``SCHEMAS = {"<group>/<name>": dataclass}``;
  :func:`register_schemas` finds them, so a new family touches no core file.

Range checks stay with the code that uses the values.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SELECTIONS = ("joint", "per_task")


@dataclass
class MethodConfig:
    """One method as configured (``conf/method/<name>.yaml``, package ``method.<name>``).

    ``fn``: the registered merge method; ``label``: the table row (default: the registry's);
    ``hparams``: its options; ``search``: ``{option: [values]}`` merged once per value and
    chosen on val; ``select``: ``joint`` (average normalised val accuracy) or ``per_task``;
    ``alphas``: the scaling grid (task-vector regime); ``models``: how many base models to
    merge, each entry an integer or ``all`` (different-initialisation regime).
    """

    fn: str = MISSING
    label: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    select: str = "joint"
    alphas: list[float] = field(default_factory=lambda: [1.0])
    models: list[Any] = field(default_factory=lambda: [2])


@dataclass
class ProtocolConfig:
    """The scaling grids of the task-vector protocol: {0.1, ..., 1.0} (Wang et al., ICML
    2024) and {0.1, ..., 3.0} (the TSV-M and Iso-C/CTS authors'); values in conf/config.yaml."""

    alphas: list[float] = MISSING
    alphas_to_3: list[float] = MISSING


@dataclass
class EvalConfig:
    batch_size: int = 256
    input_cache_gb: float | None = None


@dataclass
class RunConfig:
    """The top-level config of ``python -m experiments.run``."""

    model: Any = MISSING
    benchmark: Any = MISSING
    pipeline: Any = MISSING
    logger: Any = MISSING
    method: dict[str, MethodConfig] = field(default_factory=dict)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    progress: bool = True
    cache_dir: str | None = None
    run_name: str | None = None
    resume: bool = True
    store_dir: str = "outputs/store"
    objective: str | None = None
    shards: int | None = None


@dataclass
class PipelineConfig:
    _target_: str = MISSING


@dataclass
class NoLoggerConfig:
    _target_: str = "experiments.loggers.NullLogger"


@dataclass
class WandbConfig:
    _target_: str = "experiments.loggers.WandbLogger"
    mode: str | None = None
    project: str = "mergelab"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


CORE_SCHEMAS: dict[str, type] = {
    "pipeline/task_vectors": PipelineConfig,
    "pipeline/different_init": PipelineConfig,
    "logger/none": NoLoggerConfig,
    "logger/wandb": WandbConfig,
}


def family_schemas() -> dict[str, type]:
    """``SCHEMAS`` of every ``evaluation/<family>/config.py``."""
    import evaluation

    found: dict[str, type] = {}
    for module in pkgutil.iter_modules(evaluation.__path__):
        if module.ispkg:
            try:
                config = importlib.import_module(f"evaluation.{module.name}.config")
            except ModuleNotFoundError as err:
                if err.name != f"evaluation.{module.name}.config":
                    raise
                continue
            found.update(getattr(config, "SCHEMAS", {}))
    return found


def register_schemas() -> None:
    """Register every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=RunConfig)
    for key, node in {**CORE_SCHEMAS, **family_schemas()}.items():
        group, name = key.rsplit("/", 1)
        cs.store(group=f"schema/{group}", name=name, node=node)


def input_cache_bytes(cfg: Any) -> int | None:
    """``eval.input_cache_gb`` (GB, 1e9 bytes) in bytes: how much input each image evaluator
    keeps on its device (``None``, unset: its default,
    :func:`evaluation.clip.evaluator.default_input_cache_bytes`). ``ValueError`` naming the
    key unless it is a finite number >= 0."""
    gb = (cfg.get("eval") or {}).get("input_cache_gb")
    if gb is None:
        return None
    if isinstance(gb, bool) or not isinstance(gb, int | float) or not math.isfinite(gb) or gb < 0:
        raise ValueError(
            f"eval.input_cache_gb must be a number of GB >= 0 (0: nothing kept) or null (the "
            f"evaluator's default), got {gb!r}"
        )
    return int(gb * 1e9)
