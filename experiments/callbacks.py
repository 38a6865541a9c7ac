"""Hydra callbacks of the entry points (``hydra.callbacks`` in ``conf/config.yaml``,
``conf/finetune.yaml``, ``conf/finetune_t5.yaml``); light: no torch.

:class:`ClaimRunDir`: a run directory is never shared. Hydra calls ``on_run_start`` before
``run_job`` creates ``hydra.run.dir`` and writes ``.hydra/`` and the log there, and
``on_multirun_start`` before the sweeper creates ``hydra.sweep.dir`` (whose job
subdirectories are then new); both resolve the directory from the same config object as
Hydra does, so ``${now:...}`` and ``${run_token:}`` (cached resolvers) give the same path.

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
import json
import os
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

CLAIM = ".mergelab_claim.json"  # in a claimed run directory: pid, host, time, command
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class Refused(SystemExit):
    """A run or sweep refused before it starts; the message names the key at fault."""


def claim(directory: str | os.PathLike, key: str, hint: str = "") -> Path:
    """Create ``directory`` if needed and claim it for this process: its claim file
    (:data:`CLAIM`: pid, host, time, command) is created atomically (``O_EXCL``), so of
    two runs started together one wins. Returns the claim file. :class:`Refused`, naming
    ``key``, the directory and ``hint``, if the directory is claimed already, holds
    anything (a run's from before claims: ``results.csv`` without a claim file) or cannot
    be created."""
    path = Path(directory).absolute()
    why = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not any(path.iterdir()):  # new or empty; a run claiming it now makes O_EXCL fail
            fd = os.open(path / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            now = datetime.now().astimezone().isoformat(timespec="seconds")
            record = {"pid": os.getpid(), "host": socket.gethostname(), "time": now,
                      "command": sys.argv}  # fmt: skip
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            return path / CLAIM
    except FileExistsError:
        if not path.is_dir():
            why = "it is not a directory"
    except OSError as e:
        why = f"it cannot be created or written ({e})"
    raise Refused(
        f"{key}={path}: {why or _owner(path)}. A run never shares its directory (the second "
        f"would mix or replace the first's files): pass a new directory, or leave {key} "
        f"unset (the default is unique per process).{hint}"
    )


def release(directory: str | os.PathLike) -> bool:
    """Undo :func:`claim` for a run that failed before writing anything of its own: remove
    ``directory`` if this process claimed it and it holds only the claim file and what
    Hydra writes first (``.hydra/``, the job's ``.log``), so that the corrected command
    can use it. Returns whether it was removed."""
    path = Path(directory)
    try:
        record = json.loads((path / CLAIM).read_text())
        ours = record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        names = {p.name for p in path.iterdir()}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not ours or not names <= {CLAIM, ".hydra"} | {n for n in names if n.endswith(".log")}:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def _owner(path: Path) -> str:
    """Who holds the directory ``path``, in words."""
    try:
        record = json.loads((path / CLAIM).read_text())
        return (f"it is the run directory of pid {record['pid']} on {record['host']}, "
                f"started {record['time']} ({' '.join(record['command'])})")  # fmt: skip
    except FileNotFoundError:
        names = sorted(p.name for p in path.iterdir())
        return f"it holds files of an earlier run or others ({', '.join(names[:4])}" + (
            ", ...)" if len(names) > 4 else ")"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return f"another run claimed it ({CLAIM} unreadable or being written)"


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

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A run that failed before writing anything of its own (bad input) gives its
        directory back (:func:`release`): the corrected command may use it."""
        if job_return.status == JobStatus.FAILED:
            release(config.hydra.runtime.output_dir)


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
                    subdir = str(OmegaConf.select(job_cfg, "hydra.sweep.subdir"))
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
                    check_run(task_cfg, "")
                except Exception as e:  # any error refuses the sweep, naming the job
                    named = " ".join(o for o in job if o.split("=", 1)[0] in swept)
                    why = f"{type(e).__name__}: {e}\nNo job was started."
                    raise Refused(f"sweep job {num} of {len(jobs)} ({named or 'no swept key'}): "
                                  f"{why}") from e  # fmt: skip
        finally:
            HydraConfig.instance().cfg = saved
