"""Several devices: a run's methods sharded across processes, one device each.

The run's methods are split over ``shards`` processes (one device each, from
:func:`experiments.run.shard_devices`), a method and the methods it depends on
(:meth:`experiments.pipelines.Pipeline.depends_on`) in the same process (:func:`shard_plan`);
:func:`run_sharded` yields each unit's rows as a shard finishes it, and the entry point
gathers them in config order, so the results equal a one-device run's.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import traceback
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evaluation.cache import cache_root
from evaluation.results import Row
from evaluation.zoo import Env
from experiments.config import input_cache_bytes
from experiments.context import RunContext
from experiments.loggers import NullLogger


class ForwardingLogger(NullLogger):
    """A shard process's logger: sends what it logs to the run's logger in the main process."""

    def __init__(self, channel: Any, shard: int) -> None:
        self.channel, self.shard = channel, shard

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.channel.put((self.shard, "log_metrics", (dict(metrics), step)))

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self.channel.put((self.shard, "log_table", (name, frame)))


def shard_plan(
    methods: Mapping[str, Any], finished: Collection[str], shards: int,
    depends_on: Mapping[str, Collection[str]],
) -> list[list[str]]:  # fmt: skip
    """Split the unfinished methods over at most ``shards`` processes: a method and those it
    depends on (``depends_on``: unit -> units) go together; groups are placed largest first on the
    least loaded shard (cost: search points x alphas). Each shard lists units in config
    order, including finished ones that an unfinished one of its group depends on."""
    group = {unit: {unit} for unit in methods}
    for unit in methods:
        for other in depends_on.get(unit, ()):
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
        env = Env(cache_root(cfg.cache_dir), device, bool(cfg.progress), input_cache_bytes(cfg))
        ctx = RunContext(name=name, run_dir=Path(run_dir), env=env, finished=finished,
                         logger=ForwardingLogger(channel, shard))  # fmt: skip
        for unit, rows in instantiate(cfg.pipeline).run(cfg, ctx):
            channel.put((shard, "unit", (unit, rows)))
        channel.put((shard, "done", None))
    except BaseException:
        channel.put((shard, "error", traceback.format_exc()))


def run_sharded(
    config: dict[str, Any], devices: Sequence[str], finished: Mapping[str, list[Row]],
    ctx: RunContext, depends_on: Mapping[str, Collection[str]],
) -> Iterator[tuple[str, list[Row]]]:  # fmt: skip
    """Yield ``(unit, rows)`` as each unit finishes in one of the shard processes (finished
    units that no shard needs first); forwards the shards' logging to ``ctx.logger``."""
    plan = shard_plan(config["method"], finished, len(devices), depends_on)
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
