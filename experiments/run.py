"""Run a merging experiment: ``python -m experiments.run model=... benchmark=... method=...``.

The ``pipeline`` config group (``task_vectors`` or ``different_init``) is built with
``hydra.utils.instantiate``, and so is the logger. Writes to the run's own directory
(never shared: its name carries a per-process token, and one set by hand is claimed,
:mod:`experiments.callbacks`): ``config_resolved.yaml``,
``results.csv`` (long format, rewritten atomically as each method finishes),
``table.md`` (the paper-style table) and, with ``logger=wandb``, an (offline) W&B run,
marked failed if the run fails or is interrupted.

Results store and resume: each finished method (a *unit*) is appended to the results store
(``store_dir``, default ``outputs/store``; :mod:`experiments.store`), keyed by a digest
of the resolved config that determines its rows (:func:`unit_key`) and of the code that
computes rows. A re-run of the same command, or of a sweep (``-m``, any launcher), reuses
stored units instead of computing them again (``resume=false`` recomputes); a job whose
every method is stored is skipped: its directory gets ``results.csv`` and ``table.md``
from the store, with no computation and no new W&B run. Such a job decides completeness
from the config alone and imports no torch, zoo or merge method (the pipeline's module is
light, :mod:`experiments.pipelines`), so a resumed sweep costs Hydra's composition and a
Parquet read per job.

Sweeps: ``main`` returns the run's *val objective* (:func:`val_objective`) for Hydra's
Optuna sweeper (``hydra/sweeper=val_search``): the average normalised val accuracy of
method ``objective`` (default: the first selected method) at the point(s) the protocol
selects on val. Test numbers never reach the sweeper.

Several devices: the run's methods are sharded across ``shards`` processes
(:mod:`experiments.shards`; default: one per visible GPU with ``device=auto`` or ``cuda``),
each on its own device, a method and the methods it depends on (the pipeline's
``depends_on``: Consensus with ``lam: from_tall_masks`` and the TALL-masks methods whose
lambdas it uses) in the same process; rows are gathered in config order, so the results
equal a one-device run's.
"""

from __future__ import annotations

import glob
import os
import secrets
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation.cache import atomic_write_text, cache_root, json_digest
from evaluation.results import AVERAGE, Row, rows_frame, write_rows
from experiments.config import input_cache_bytes, register_schemas
from experiments.loggers import NullLogger
from experiments.pipelines import Pipeline
from experiments.rundirs import release
from experiments.store import ResultStore
from experiments.tables import console, edge_notes, markdown

RUN_TOKEN = f"{os.getpid()}{secrets.token_hex(2)}"  # one per process: run dirs never collide
ROOT = Path(__file__).resolve().parents[1]
CODE_FILES = tuple(
    p for d in ("merging", "evaluation", "experiments/pipelines")
    for p in sorted((ROOT / d).rglob("*"))
    if p.suffix == ".py" or (p.suffix == ".json" and p.parent.name == "data")
)  # fmt: skip  # the code that computes rows and its package data (class names, templates, ...)
CODE_VERSION = json_digest({str(p.relative_to(ROOT)): p.read_text() for p in CODE_FILES})
"""Once per process: stored rows are reused only with the code and data that computed them."""
NOT_IN_UNIT_KEY = (
    "method", "run_name", "progress", "logger", "resume", "cache_dir", "store_dir",
    "objective", "shards", "device",
)  # fmt: skip  # keys that change no number of a unit (device: keyed by its type)
EVAL_NOT_IN_UNIT_KEY = ("input_cache_gb",)  # how much input an evaluator keeps: same scores
GPU_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL (Linux)
register_schemas()
if not OmegaConf.has_resolver("run_token"):
    OmegaConf.register_new_resolver("run_token", lambda: RUN_TOKEN, use_cache=True)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; a CUDA device without CUDA raises."""
    import torch  # here: a run that only reuses stored rows imports no torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a torch device (auto, cpu, cuda, cuda:N, "
                         f"...): {e}") from None  # fmt: skip
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use device=cpu")
    return device


def shard_devices(device: str, shards: int | None) -> list[str]:
    """One device per shard process. ``device=auto`` or ``cuda`` with several visible GPUs
    (``CUDA_VISIBLE_DEVICES``) spreads over all of them, ``cuda:N`` pins one; ``shards``
    (default: one per device) cycles through them."""
    import torch

    resolved = resolve_device(device)
    if resolved == "cuda" and torch.cuda.device_count() > 1:
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        devices = [resolved]
    count = len(devices) if shards is None else int(shards)
    if count < 1:
        raise ValueError(f"shards must be >= 1 (or null: one per device), got {shards}")
    return [devices[i % len(devices)] for i in range(count)]


def device_type(device: str) -> str:
    """The type of the device a run computes on, which keys its units (``cuda:1`` ->
    ``cuda``); ``auto``: ``cuda`` where torch sees a GPU, else ``cpu``. On Linux without a
    GPU device file (:data:`GPU_NODES`) torch cannot see one, so the answer is ``cpu``
    without importing torch (a run that only reuses stored rows stays light). An unknown
    device, or ``cuda`` without one, fails when the run computes
    (:func:`resolve_device`)."""
    if device != "auto":
        return device.split(":")[0]
    if sys.platform == "linux" and not any(glob.glob(pattern) for pattern in GPU_NODES):
        return "cpu"
    return resolve_device(device).split(":")[0]


def dependencies(pipeline: Pipeline, methods: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each selected method -> the other selected methods its rows depend on, directly or
    through another (:meth:`experiments.pipelines.Pipeline.depends_on`), in config order;
    ``ValueError`` if the pipeline names one that is not selected."""
    direct = {}
    for unit in methods:
        named = list(pipeline.depends_on(unit, methods))
        wrong = [d for d in named if d not in methods or d == unit]
        if wrong:
            raise ValueError(
                f"{type(pipeline).__name__}.depends_on({unit!r}) names {wrong[0]!r}, which is "
                f"not another selected method (method.{', method.'.join(methods)})"
            )
        direct[unit] = named
    out = {}
    for unit in methods:
        seen, todo = set(), list(direct[unit])
        while todo:
            other = todo.pop()
            if other != unit and other not in seen:
                seen.add(other)
                todo += direct[other]
        out[unit] = [m for m in methods if m in seen]
    return out


def unit_config(
    config: Mapping[str, Any], unit: str, device: str, depends_on: Collection[str] = ()
) -> dict[str, Any]:
    """What determines unit ``unit``'s rows: the resolved config without other methods than
    ``unit`` and those it depends on, without keys that change no number, with the device's
    type (:func:`device_type`)."""
    kept = {k: v for k, v in config.items() if k not in NOT_IN_UNIT_KEY}
    if isinstance(kept.get("eval"), Mapping):
        kept["eval"] = {k: v for k, v in kept["eval"].items() if k not in EVAL_NOT_IN_UNIT_KEY}
    methods = {m: config["method"][m] for m in (unit, *depends_on)}
    return {**kept, "device": device_type(device), "method": methods}


def unit_key(
    config: Mapping[str, Any], unit: str, device: str, depends_on: Collection[str] = ()
) -> str:
    """Digest of :func:`unit_config` and of the code that computes rows (:data:`CODE_VERSION`:
    every ``.py`` file of ``merging/``, ``evaluation/`` and ``experiments/pipelines/`` and
    their package data, ``data/*.json``: class names, templates, ...); a
    section's copy of ``cache_dir`` (the benchmark's) is left out of the digest, as the
    top-level one is (it changes no number), and kept in the stored config."""
    kept = {  # the stored unit_config keeps it: the compare tool rebuilds benchmarks from it
        k: {kk: vv for kk, vv in v.items() if kk != "cache_dir"} if isinstance(v, dict) else v
        for k, v in unit_config(config, unit, device, depends_on).items()
    }
    return json_digest({**kept, "code": CODE_VERSION})


def stored_units(store: ResultStore, keys: Mapping[str, str], run: str) -> dict[str, list[Row]]:
    """Rows of the units found in ``store`` (``keys``: unit -> key), relabelled with ``run``."""
    found = {}
    for unit, key in keys.items():
        frame = store.get(key)
        if frame is not None:
            records = frame[list(Row.__dataclass_fields__)].assign(run=run).to_dict("records")
            found[unit] = [Row(**r) for r in records]
    return found


def val_objective(rows: Sequence[Row], select: str = "joint") -> float | None:
    """The val objective of one method's rows, what the protocol maximises on val: the
    average normalised val accuracy at the selected point (``joint``: the best average
    over the grid of search points x alphas), or, with ``per_task`` selection, the mean
    over tasks of each task's normalised val accuracy at the point with its best val
    accuracy. Without normalised rows (the different-initialisation regime) accuracy is
    used; ``None`` if the rows have no val split."""
    frame = rows_frame(rows)
    val = frame[frame.split == "val"]
    if val.empty:
        return None
    metric = "normalized_accuracy" if (val.metric == "normalized_accuracy").any() else "accuracy"
    per_task = val[val.task != AVERAGE]
    if select == "per_task":
        acc = per_task[per_task.metric == "accuracy"].reset_index(drop=True)
        best = acc.loc[acc.groupby("task", sort=False).value.idxmax()]  # first on ties
        chosen = per_task[per_task.metric == metric].merge(
            best[["task", "hyperparameters"]], on=["task", "hyperparameters"]
        )
        return float(chosen.groupby("task").value.first().mean())
    average = val[(val.task == AVERAGE) & (val.metric == metric)]
    if average.empty:  # no average rows: the mean over tasks per point
        average = per_task[per_task.metric == metric].groupby("hyperparameters").value.mean()
        return float(average.max())
    return float(average.value.max())


def check_objective(cfg: DictConfig) -> str:
    """The method whose val objective ``main`` returns; with the Optuna sweeper, the sweep
    must maximise it (``ValueError`` otherwise, before any computation)."""
    units = list(cfg.method)
    unit = cfg.objective or (units[0] if units else None)
    if unit is not None and unit not in units:
        raise ValueError(
            f"objective={unit!r} is not a selected method (method.{', method.'.join(units)})"
        )
    sweeper = HydraConfig.get().sweeper
    if "optuna" in str(sweeper.get("_target_", "")).lower() and "max" not in str(
        sweeper.get("direction", "")
    ):
        raise ValueError(
            "the Optuna sweeper minimises by default, but a run returns its val accuracy "
            "(to maximise): use hydra/sweeper=val_search or hydra.sweeper.direction=maximize"
        )
    return unit


class Checked(NamedTuple):
    """What :func:`check_run` found: ``devices`` is ``None`` when every unit is stored."""

    objective: str | None
    config: dict[str, Any]
    store: ResultStore
    pipeline: Pipeline
    depends_on: dict[str, list[str]]
    keys: dict[str, str]
    finished: dict[str, list[Row]]
    devices: list[str] | None


def check_run(cfg: DictConfig, name: str, check_device: bool = True) -> Checked:
    """Check the config of a run (or of a sweep's job, under its ``HydraConfig``) before
    anything is computed: objective and sweeper, results store, the methods' dependencies
    and, unless every unit is stored (``resume``; a complete job was validated by the same
    code when it was computed), device and shards (``check_device``: a sweep's jobs may run
    on other machines, which check their own) and the pipeline's ``validate`` (names,
    options; imports torch). Raises ``ValueError`` naming the key at fault. The stored
    rows found are labelled ``name``."""
    objective = check_objective(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    store = ResultStore(Path(HydraConfig.get().runtime.cwd, cfg.store_dir))
    store.check_writable("store_dir")  # before anything is computed, not after the first unit
    pipeline: Pipeline = instantiate(cfg.pipeline)
    depends_on = dependencies(pipeline, config["method"])
    keys = {u: unit_key(config, u, str(cfg.device), depends_on[u]) for u in config["method"]}
    finished = stored_units(store, keys, name) if cfg.resume else {}
    devices = None
    if not (keys and len(finished) == len(keys)):
        devices = shard_devices(str(cfg.device), cfg.shards) if check_device else []
        pipeline.validate(cfg)  # bad names and options fail here, before any long computation
    return Checked(objective, config, store, pipeline, depends_on, keys, finished, devices)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    name = cfg.get("run_name") or f"{cfg.model.name}-{cfg.benchmark.name}-{run_dir.name}"
    try:
        checked = check_run(cfg, name)
    except Exception:
        release(run_dir)  # refused by its checks, nothing written: the fixed command may use it
        raise
    objective, config, store, pipeline, depends_on, keys, finished, devices = checked
    units = list(config["method"])
    complete = devices is None
    if not complete:
        from experiments.shards import run_sharded  # torch: only to compute

    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(config))
    done: dict[str, list[Row]] = {}

    def keep(unit: str, rows: list[Row]) -> None:
        """Store the unit (first: what a resumed run finds), then write the run's rows so
        far (config order) and its record in the store."""
        if unit not in finished:
            config_of_unit = unit_config(config, unit, str(cfg.device), depends_on[unit])
            store.put(keys[unit], unit, rows, config_of_unit, CODE_VERSION)
        done[unit] = rows
        write_rows([r for u in units if u in done for r in done[u]], run_dir / "results.csv")
        store.record_run(name, run_dir, {u: keys[u] for u in units if u in done}, finished)

    if complete:  # nothing to compute: no logger, no W&B run, no torch
        logger = NullLogger()
        done.update(finished)
        store.record_run(name, run_dir, keys, finished)
    else:
        import torch

        from evaluation.zoo import Env
        from experiments.context import RunContext

        env = Env(cache_root(cfg.cache_dir), devices[0], bool(cfg.progress), input_cache_bytes(cfg))
        logger = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, name=name,
                                                         config=config)  # fmt: skip
        ctx = RunContext(name=name, run_dir=run_dir, logger=logger, env=env, finished=finished)
        print(f"computing on {', '.join(devices)} ({torch.get_num_threads()} torch threads)",
              flush=True)  # fmt: skip
    failed = True
    try:
        if not complete:
            sharded = len(devices) > 1 and len(units) > 1
            results = (
                run_sharded(config, devices, finished, ctx, depends_on)
                if sharded
                else pipeline.run(cfg, ctx)
            )
            for unit, rows in results:
                keep(unit, rows)
        frame = write_rows([r for u in units for r in done[u]], run_dir / "results.csv")
        table = pipeline.table(frame)
        atomic_write_text(run_dir / "table.md", markdown(table))
        logger.log_table("results_table", table.reset_index())
        failed = False
    finally:
        logger.finish(failed=failed)
    if finished:
        left = "nothing left to compute" if complete else "computed the rest"
        print(f"resumed: reused the finished rows of {', '.join(finished)}; {left}")
    print(f"\n{cfg.model.name} on {cfg.benchmark.name}: test accuracy (%)\n{console(table)}")
    for note in edge_notes(frame):
        print(f"note: {note}")
    value = None
    if objective is not None:
        select = str(config["method"][objective].get("select", "joint"))
        value = val_objective(done[objective], select)
        print(f"\nval objective (method.{objective}, avg normalised val accuracy): {value}")
    print(f"\nresults: {run_dir}")
    return value


if __name__ == "__main__":
    main()
