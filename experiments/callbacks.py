"""Hydra callbacks of the entry points (``hydra.callbacks`` in ``conf/config.yaml``,
``conf/finetune.yaml``, ``conf/finetune_t5.yaml``); light: no torch.

:class:`ClaimRunDir`: a run directory is never shared (:mod:`experiments.rundirs`). Hydra
calls ``on_run_start`` before ``run_job`` creates ``hydra.run.dir`` and writes ``.hydra/``
and the log there, and ``on_multirun_start`` before the sweeper creates ``hydra.sweep.dir``
(whose job subdirectories are then new); both resolve the directory from the same config
object as Hydra does, so ``${now:...}`` and ``${run_token:}`` (cached resolvers) give the
same path.

:class:`CheckSweep`: a basic-sweeper multirun (``-m a=1,2``) checks every job's config as
its run would (:func:`experiments.run.check_run`), and that no two jobs share a
``hydra.sweep.subdir``, before the first job starts. Only explicit
lists can be enumerated: with the Optuna sweeper (``hydra/sweeper=val_search``, ranges),
each trial is checked when it starts.

Hydra turns an exception raised in a callback into a warning, so a refusal is
:class:`Refused`, a ``SystemExit``: the command prints its message and exits with status 1.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.rundirs import Refused, claim

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class ClaimRunDir(Callback):
    """Claims ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (``-m``) with :func:`claim`
    before Hydra writes anything there; ``hint`` ends the refusal (what a new directory
    keeps, e.g. the results store)."""

    def __init__(self, hint: str = "") -> None:
        self.hint = f" {hint}" if hint else ""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # as run_job does next: ${hydra:...} works
        try:
            directory = OmegaConf.select(config, "hydra.run.dir")
        finally:
            HydraConfig.instance().cfg = saved
        claim(directory, "hydra.run.dir", self.hint)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim(OmegaConf.select(config, "hydra.sweep.dir"), "hydra.sweep.dir", self.hint)


class CheckSweep(Callback):
    """Checks every job of a basic-sweeper multirun before the first one starts (see the
    module docstring); :class:`Refused` names the job's swept overrides and the error."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
            return  # Optuna & co: each trial is checked when it starts
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        from experiments.run import check_run  # here: a run would import it twice (__main__)

        loader = GlobalHydra.instance().config_loader()
        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        saved = HydraConfig.instance().cfg
        subdirs: dict[str, int] = {}
        try:
            for num, job in enumerate(jobs):
                try:  # as the basic launcher and run_job set up a job
                    job_cfg = loader.load_sweep_config(config, list(job))
                    with read_write(job_cfg.hydra), open_dict(job_cfg.hydra):
                        job_cfg.hydra.job.num = job_cfg.hydra.job.id = num
                    HydraConfig.instance().set_config(job_cfg)
                    subdir = os.path.normpath(str(OmegaConf.select(job_cfg, "hydra.sweep.subdir")))
                    if subdirs.setdefault(subdir, num) != num:
                        raise Refused(
                            f"hydra.sweep.subdir={subdir!r} is the directory of sweep jobs "
                            f"{subdirs[subdir]} and {num}: a run never shares its directory "
                            "(the second would replace the first's files). Leave "
                            "hydra.sweep.subdir unset (the job number) or make it differ per job."
                        )
                    task_cfg = copy.deepcopy(job_cfg)
                    with read_write(task_cfg), open_dict(task_cfg):
                        del task_cfg["hydra"]
                    check_run(task_cfg, "", check_device=False)  # jobs may run on other nodes
                except Exception as e:  # any error refuses the sweep, naming the job
                    named = " ".join(o for o in job if o.split("=", 1)[0] in swept)
                    why = f"{type(e).__name__}: {e}\nNo job was started."
                    raise Refused(f"sweep job {num} of {len(jobs)} ({named or 'no swept key'}): "
                                  f"{why}") from e  # fmt: skip
        finally:
            HydraConfig.instance().cfg = saved
