"""Run a merging experiment: ``python -m experiments.run model=... benchmark=... method=...``.

The ``pipeline`` config group (``task_vectors`` or ``different_init``) is built with
``hydra.utils.instantiate``, and so is the logger. Writes to the run's own directory
(never shared: its name carries a per-process token): ``config_resolved.yaml``,
``results.csv`` (long format, rewritten atomically as each method finishes),
``table.md`` (the paper-style table) and, with ``logger=wandb``, an (offline) W&B run,
marked failed if the run fails or is interrupted.

Resume: each finished method's rows are also kept in ``completed_dir`` (default
``outputs/completed/``), keyed by
a digest of the resolved config that determines them (zoo, benchmark, protocol, eval,
device and that method's config) and of mergelab's source code; a re-run of the same
command (or a sweep job) reuses them instead of computing them again (``resume=false``
recomputes).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation.cache import atomic_write_text, cache_root, json_digest
from evaluation.results import Row, read_rows, write_rows
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.context import RunContext
from experiments.pipelines import Pipeline
from experiments.tables import console, markdown

RUN_TOKEN = f"{os.getpid()}{secrets.token_hex(2)}"  # one per process: run dirs never collide
ROOT = Path(__file__).resolve().parents[1]
CODE_VERSION = json_digest(
    {str(p.relative_to(ROOT)): p.read_text() for d in ("merging", "evaluation", "experiments")
     for p in sorted((ROOT / d).rglob("*.py"))}
)  # fmt: skip  # finished rows are reused only with the code that computed them
NOT_IN_UNIT_KEY = (
    "method", "run_name", "progress", "logger", "resume", "cache_dir", "completed_dir"
)
register_schemas()
if not OmegaConf.has_resolver("run_token"):
    OmegaConf.register_new_resolver("run_token", lambda: RUN_TOKEN)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; a CUDA device without CUDA raises."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use device=cpu")
    return device


def unit_key(config: dict[str, Any], unit: str, device: str) -> str:
    """Digest of what determines unit ``unit``'s rows: the resolved config without other
    methods and without keys that change no number."""
    kept = {k: v for k, v in config.items() if k not in NOT_IN_UNIT_KEY}
    method = {unit: config["method"][unit]}
    return json_digest({**kept, "device": device, "method": method, "code": CODE_VERSION})


def finished_units(
    config: dict[str, Any], device: str, run: str, store: Path
) -> dict[str, list[Row]]:
    """Rows of the units already finished with this config (in ``store``), relabelled with
    run ``run``."""
    found = {}
    for unit in config["method"]:
        path = store / f"{unit_key(config, unit, device)}.csv"
        if path.exists():
            frame = read_rows(path).assign(run=run)
            found[unit] = [Row(**r) for r in frame.to_dict("records")]
    return found


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    pipeline: Pipeline = instantiate(cfg.pipeline)
    pipeline.validate(cfg)  # bad names and options fail here, before any long computation
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    name = cfg.get("run_name") or f"{cfg.model.name}-{cfg.benchmark.name}-{run_dir.name}"
    config = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(config))
    env = Env(cache_root(cfg.cache_dir), resolve_device(str(cfg.device)), bool(cfg.progress))
    store = Path(HydraConfig.get().runtime.cwd, cfg.completed_dir)
    finished = finished_units(config, env.device, name, store) if cfg.resume else {}
    logger = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, name=name, config=config)
    ctx = RunContext(name=name, run_dir=run_dir, logger=logger, env=env, finished=finished)
    failed = True
    try:
        rows: list[Row] = []
        for unit, unit_rows in pipeline.run(cfg, ctx):
            rows += unit_rows
            write_rows(rows, run_dir / "results.csv")  # on disk as each method finishes
            if unit not in finished:
                write_rows(unit_rows, store / f"{unit_key(config, unit, env.device)}.csv")
        if finished:
            print(f"resumed: reused the finished rows of {', '.join(finished)}")
        frame = write_rows(rows, run_dir / "results.csv")
        table = pipeline.table(frame)
        atomic_write_text(run_dir / "table.md", markdown(table))
        logger.log_table("results_table", table.reset_index())
        failed = False
    finally:
        logger.finish(failed=failed)
    print(f"\n{cfg.model.name} on {cfg.benchmark.name}: test accuracy (%)\n{console(table)}")
    print(f"\nresults: {run_dir}")


if __name__ == "__main__":
    main()
