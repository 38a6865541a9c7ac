"""Run a merging experiment: ``python -m experiments.run model=... benchmark=... method=...``.

The ``pipeline`` config group (``task_vectors`` or ``different_init``) is built with
``hydra.utils.instantiate``, and so is the logger. Writes to the run's own directory
(never shared: its name carries a per-process token): ``config_resolved.yaml``,
``results.csv`` (long format, rewritten atomically as each method finishes),
``table.md`` (the paper-style table) and, with ``logger=wandb``, an (offline) W&B run,
marked failed if the run fails or is interrupted.

Results store and resume: each finished method (a *unit*) is appended to the results store
(``store_dir``, default ``outputs/store``; :mod:`experiments.store`), keyed by a digest
of the resolved config that determines its rows (:func:`unit_key`) and of the code that
computes rows. A re-run of the same command, or of a sweep (``-m``, any launcher), reuses
stored units instead of computing them again (``resume=false`` recomputes); a job whose
every method is stored is skipped: its directory gets ``results.csv`` and ``table.md``
from the store, with no computation and no new W&B run.

Sweeps: ``main`` returns the run's *val objective* (:func:`val_objective`) for Hydra's
Optuna sweeper (``hydra/sweeper=val_search``): the average normalised val accuracy of
method ``objective`` (default: the first selected method) at the point(s) the protocol
selects on val. Test numbers never reach the sweeper.

Several devices: the run's methods are sharded across ``shards`` processes (default: one
per visible GPU with ``device=auto`` or ``cuda``), each on its own device, a method and the
methods it depends on (Consensus with ``lam: from_tall_masks`` and the TALL-masks methods
whose lambdas it uses) in the same process; rows are gathered in config order, so the
results equal a one-device run's.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import secrets
import traceback
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation.cache import atomic_write_text, cache_root, json_digest
from evaluation.results import AVERAGE, Row, rows_frame, write_rows
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.context import RunContext
from experiments.loggers import NullLogger
from experiments.pipelines import Pipeline
from experiments.pipelines.task_vectors import FROM_TALL_MASKS
from experiments.store import ResultStore
from experiments.tables import console, markdown

RUN_TOKEN = f"{os.getpid()}{secrets.token_hex(2)}"  # one per process: run dirs never collide
ROOT = Path(__file__).resolve().parents[1]
CODE_VERSION = json_digest(
    {str(p.relative_to(ROOT)): p.read_text()
     for d in ("merging", "evaluation", "experiments/pipelines")
     for p in sorted((ROOT / d).rglob("*.py"))}
)  # fmt: skip  # stored rows are reused only with the code that computes rows
NOT_IN_UNIT_KEY = (
    "method", "run_name", "progress", "logger", "resume", "cache_dir", "store_dir",
    "objective", "shards", "device",
)  # fmt: skip  # keys that change no number of a unit (device: keyed by its type)
register_schemas()
if not OmegaConf.has_resolver("run_token"):
    OmegaConf.register_new_resolver("run_token", lambda: RUN_TOKEN, use_cache=True)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; a CUDA device without CUDA raises."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use device=cpu")
    return device


def shard_devices(device: str, shards: int | None) -> list[str]:
    """One device per shard process. ``device=auto`` or ``cuda`` with several visible GPUs
    (``CUDA_VISIBLE_DEVICES``) spreads over all of them, ``cuda:N`` pins one; ``shards``
    (default: one per device) cycles through them."""
    resolved = resolve_device(device)
    if resolved == "cuda" and torch.cuda.device_count() > 1:
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        devices = [resolved]
    count = len(devices) if shards is None else int(shards)
    if count < 1:
        raise ValueError(f"shards must be >= 1 (or null: one per device), got {shards}")
    return [devices[i % len(devices)] for i in range(count)]


def unit_inputs(methods: Mapping[str, Any], unit: str) -> dict[str, Any]:
    """The method configs that determine unit ``unit``'s rows: its own and, for a method
    with an option ``from_tall_masks`` (Consensus' ``lam``), the run's TALL-masks methods,
    whose per-task lambdas it uses."""
    own = methods[unit]
    inputs = {unit: own}
    if FROM_TALL_MASKS in (own.get("hparams") or {}).values():
        inputs.update({k: m for k, m in methods.items() if m.get("fn") == "tall_masks"})
    return inputs


def unit_config(config: Mapping[str, Any], unit: str, device: str) -> dict[str, Any]:
    """What determines unit ``unit``'s rows: the resolved config without other methods,
    without keys that change no number, with the device's type (``cuda:1`` -> ``cuda``)."""
    kept = {k: v for k, v in config.items() if k not in NOT_IN_UNIT_KEY}
    device_type = torch.device(device).type
    return {**kept, "device": device_type, "method": unit_inputs(config["method"], unit)}


def unit_key(config: Mapping[str, Any], unit: str, device: str) -> str:
    """Digest of :func:`unit_config` and of the code that computes rows (:data:`CODE_VERSION`:
    every ``.py`` file of ``merging/``, ``evaluation/`` and ``experiments/pipelines/``)."""
    return json_digest({**unit_config(config, unit, device), "code": CODE_VERSION})


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


class ForwardingLogger(NullLogger):
    """A shard process's logger: sends what it logs to the run's logger in the main process."""

    def __init__(self, channel: Any, shard: int) -> None:
        self.channel, self.shard = channel, shard

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.channel.put((self.shard, "log_metrics", (dict(metrics), step)))

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self.channel.put((self.shard, "log_table", (name, frame)))


def shard_plan(
    methods: Mapping[str, Any], finished: Collection[str], shards: int
) -> list[list[str]]:
    """Split the unfinished methods over at most ``shards`` processes: a method and those it
    depends on (:func:`unit_inputs`) go together; groups are placed largest first on the
    least loaded shard (cost: search points x alphas). Each shard lists units in config
    order, including finished ones that an unfinished one of its group depends on."""
    group = {unit: {unit} for unit in methods}
    for unit in methods:
        for other in unit_inputs(methods, unit):
            merged = group[unit] | group[other]
            for member in merged:
                group[member] = merged
    groups = {frozenset(g) for g in group.values() if not g <= set(finished)}

    def cost(unit: str) -> int:
        m = methods[unit]
        points = math.prod(len(v) for v in (m.get("search") or {}).values())
        return 0 if unit in finished else points * len(m.get("alphas") or [1])

    loads = [(0, i, []) for i in range(shards)]
    for g in sorted(groups, key=lambda g: (-sum(map(cost, g)), sorted(g))):
        load, i, members = min(loads)
        loads[i] = (load + sum(map(cost, g)), i, members + list(g))
    order = list(methods)
    return [sorted(m, key=order.index) for _, _, m in loads if m]


def _shard_main(
    shard: int, config: dict[str, Any], units: list[str], finished: dict[str, list[Row]],
    device: str, threads: int | None, name: str, run_dir: str, channel: Any,
) -> None:  # fmt: skip
    """A shard process: the pipeline on ``units`` on ``device``; sends each finished unit's
    rows, then ``done`` (or the error's traceback) through ``channel``."""
    try:
        if threads:
            torch.set_num_threads(threads)
        cfg = OmegaConf.create({**config, "method": {u: config["method"][u] for u in units}})
        env = Env(cache_root(cfg.cache_dir), device, bool(cfg.progress))
        ctx = RunContext(name=name, run_dir=Path(run_dir), env=env, finished=finished,
                         logger=ForwardingLogger(channel, shard))  # fmt: skip
        for unit, rows in instantiate(cfg.pipeline).run(cfg, ctx):
            channel.put((shard, "unit", (unit, rows)))
        channel.put((shard, "done", None))
    except BaseException:
        channel.put((shard, "error", traceback.format_exc()))


def run_sharded(
    config: dict[str, Any], devices: Sequence[str], finished: Mapping[str, list[Row]],
    ctx: RunContext,
) -> Iterator[tuple[str, list[Row]]]:  # fmt: skip
    """Yield ``(unit, rows)`` as each unit finishes in one of the shard processes (finished
    units that no shard needs first); forwards the shards' logging to ``ctx.logger``."""
    plan = shard_plan(config["method"], finished, len(devices))
    needed = {u for units in plan for u in units}
    yield from ((u, rows) for u, rows in finished.items() if u not in needed)
    cpu_shards = sum(torch.device(d).type == "cpu" for d in devices[: len(plan)])
    threads = max(1, torch.get_num_threads() // cpu_shards) if cpu_shards > 1 else None
    spawn = multiprocessing.get_context("spawn")
    channel = spawn.Queue()
    procs = [
        spawn.Process(target=_shard_main, daemon=True, args=(
            i, config, units, {u: finished[u] for u in units if u in finished}, devices[i],
            threads if torch.device(devices[i]).type == "cpu" else None, ctx.name,
            str(ctx.run_dir), channel))
        for i, units in enumerate(plan)
    ]  # fmt: skip
    for p in procs:
        p.start()
    running = set(range(len(procs)))
    try:
        while running:
            try:
                shard, kind, payload = channel.get(timeout=5)
            except queue.Empty:
                dead = [i for i in running if procs[i].exitcode is not None]
                if dead:
                    raise RuntimeError(
                        f"shard {dead[0]} on {devices[dead[0]]} died (exit code "
                        f"{procs[dead[0]].exitcode}) before finishing {plan[dead[0]]}"
                    ) from None
                continue
            if kind == "unit":
                unit, rows = payload
                if unit not in finished:
                    yield unit, rows
            elif kind == "log_metrics":
                ctx.logger.log_metrics(*payload)
            elif kind == "log_table":
                ctx.logger.log_table(*payload)
            elif kind == "done":
                running.discard(shard)
            else:
                raise RuntimeError(f"shard {shard} on {devices[shard]} failed:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    objective = check_objective(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    name = cfg.get("run_name") or f"{cfg.model.name}-{cfg.benchmark.name}-{run_dir.name}"
    config = OmegaConf.to_container(cfg, resolve=True)
    devices = shard_devices(str(cfg.device), cfg.shards)
    store = ResultStore(Path(HydraConfig.get().runtime.cwd, cfg.store_dir))
    units = list(config["method"])
    keys = {unit: unit_key(config, unit, devices[0]) for unit in units}
    finished = stored_units(store, keys, name) if cfg.resume else {}
    pipeline: Pipeline = instantiate(cfg.pipeline)
    complete = bool(units) and len(finished) == len(units)
    if not complete:  # a complete job was validated by the same code when it was computed
        pipeline.validate(cfg)  # bad names and options fail here, before any long computation
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(config))
    done: dict[str, list[Row]] = {}

    def keep(unit: str, rows: list[Row]) -> None:
        """Store the unit (first: what a resumed run finds), then write the run's rows so
        far (config order) and its record in the store."""
        if unit not in finished:
            store.put(keys[unit], unit, rows, unit_config(config, unit, devices[0]),
                      CODE_VERSION)  # fmt: skip
        done[unit] = rows
        write_rows([r for u in units if u in done for r in done[u]], run_dir / "results.csv")
        store.record_run(name, run_dir, {u: keys[u] for u in units if u in done}, finished)

    if complete:  # nothing to compute: no logger, no W&B run
        logger = NullLogger()
        done.update(finished)
        store.record_run(name, run_dir, keys, finished)
    else:
        env = Env(cache_root(cfg.cache_dir), devices[0], bool(cfg.progress))
        logger = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, name=name,
                                                         config=config)  # fmt: skip
        ctx = RunContext(name=name, run_dir=run_dir, logger=logger, env=env, finished=finished)
    failed = True
    try:
        if not complete:
            sharded = len(devices) > 1 and len(units) > 1
            results = (
                run_sharded(config, devices, finished, ctx) if sharded else pipeline.run(cfg, ctx)
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
    value = None
    if objective is not None:
        select = str(config["method"][objective].get("select", "joint"))
        value = val_objective(done[objective], select)
        print(f"\nval objective (method.{objective}, avg normalised val accuracy): {value}")
    print(f"\nresults: {run_dir}")
    return value


if __name__ == "__main__":
    main()
