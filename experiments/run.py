"""Run a merging experiment: ``python -m experiments.run model=... benchmark=... method=...``.

Writes to the Hydra run directory: ``config_resolved.yaml``, ``results.csv`` (long format),
``table.md`` (the paper-style table) and, with ``logger=wandb``, an (offline) W&B run.
"""

from __future__ import annotations

import random
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evaluation.files import atomic_write_text, cache_root
from evaluation.results import write_rows
from experiments.context import RunContext
from experiments.loggers import make_logger
from experiments.pipelines import pipeline_for
from experiments.tables import console, markdown


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use device=cpu")
    return device


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    pipeline = pipeline_for(cfg.model.get("family"))
    pipeline.validate(cfg)  # bad names and options fail here, before any long computation
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    name = cfg.get("run_name") or f"{cfg.model.name}-{cfg.benchmark.name}-{run_dir.name}"
    config = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(config))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    logger = make_logger(cfg.logger, run_dir, name, config)
    ctx = RunContext(
        name=name,
        run_dir=run_dir,
        logger=logger,
        cache_dir=cache_root(cfg.get("cache_dir")),
        device=resolve_device(str(cfg.device)),
        progress=bool(cfg.progress),
    )
    try:
        rows = pipeline.run(cfg, ctx)
        frame = write_rows(rows, run_dir / "results.csv")
        table = pipeline.table(frame)
        atomic_write_text(run_dir / "table.md", markdown(table))
        logger.log_table("results_table", table.reset_index())
    finally:
        logger.finish()
    print(f"\n{cfg.model.name} on {cfg.benchmark.name}: test accuracy (%)\n{console(table)}")
    print(f"\nresults: {run_dir}")


if __name__ == "__main__":
    main()
