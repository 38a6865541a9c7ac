"""The computation of the task-vector pipeline (:class:`experiments.pipelines.task_vectors.
TaskVectorPipeline`, whose docstring describes the regime): the checks before any long
computation (:func:`validate`) and the methods' rows (:func:`run`). Imported when a run
computes, not when it only reuses stored rows (this module imports torch, the zoos and the
merge methods).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evaluation.benchmark import Benchmark, Task
from evaluation.protocol import Method, Scorer, check_labels, evaluate_method, scaling_grid
from evaluation.results import AVERAGE, Row, hparams_key
from evaluation.zoo import TaskVectorZoo, check_regime
from experiments.config import input_cache_bytes
from experiments.context import RunContext
from experiments.pipelines.late_options import (
    FROM_TALL_MASKS,
    FROM_ZOO,
    LATE_OPTIONS,
    TALL_GRID,
    own_selection,
)
from merging import TaskVector, merge, method_spec
from merging.methods.consensus import TALL_MASKS_OPTIONS
from merging.storage import STORAGE_RULES, storage_bits
from merging.task_data import TaskData

Tensor = torch.Tensor

DATA, TEST_INPUTS = "data", "test_inputs"  # what data-based methods declare in ``needs``


def methods_of(cfg: DictConfig) -> list[Method]:
    """The configured methods, checked (names, options, distinct labels)."""
    configs = OmegaConf.to_container(cfg.method, resolve=True) or {}
    if not configs:
        raise ValueError("no method selected: pass method=<name> or method=[a,b,...]")
    methods = [Method.from_config(key, value) for key, value in configs.items()]
    return check_labels(methods)


def _tall_base(method: Method) -> dict[str, Any]:
    """The ``tall_masks`` options that build Consensus' TALL masks (its base, the masks'
    comparison, and with ``base="ties"`` the TIES options)."""
    spec = method_spec(method.fn).hparams
    out = {t: method.hparams.get(c, spec[c]) for c, t in TALL_MASKS_OPTIONS.items()}
    if out["base"] != "ties":
        out = {k: out[k] for k in ("base", "comparison")}
    return out


def _merged_shapes(pretrained: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Shapes of the merged (float) parameters, for storage rules that depend on them."""
    return {k: tuple(v.shape) for k, v in pretrained.items() if torch.is_floating_point(v)}


def _with_zoo_entries(method: Method, count: int) -> Method:
    """``method`` with ``extra_entries: from_zoo`` replaced by the zoo's count."""
    if method.hparams.get("extra_entries") != FROM_ZOO:
        return method
    return replace(method, hparams={**method.hparams, "extra_entries": count})


def data_request(method: Method) -> tuple[str, int | None]:
    """(split, examples per task) that data-based ``method`` reads: ``test`` for test-time
    adaptation (``needs`` holds ``test_inputs``), else ``train``; the most examples any of
    its search points asks in its ``examples`` option (``None``: the whole split)."""
    spec = method_spec(method.fn)
    split = "test" if TEST_INPUTS in spec.needs else "train"
    default = spec.hparams.get("examples")
    counts = [{**method.hparams, **point}.get("examples", default) for point in method.grid()]
    return split, None if any(c is None for c in counts) else max(int(c) for c in counts)


def _tall_method_for(consensus: Method, methods: Sequence[Method]) -> tuple[Method, bool]:
    """The TALL-masks selection whose lambdas Consensus uses, and whether it is the one
    Consensus makes on its own (:func:`own_selection`). Among the run's TALL-masks methods
    with Consensus' base options: the first by key of those that select otherwise (each is
    in the unit's key, :meth:`TaskVectorPipeline.depends_on`, and key order does not depend
    on the config's order); else one that selects as Consensus would (its scores are then
    reused); else one built for it."""
    base = _tall_base(consensus)
    tall_defaults = method_spec("tall_masks").hparams
    matching = [
        m for m in methods
        if m.fn == "tall_masks" and "lam" in m.search
        and {k: m.hparams.get(k, tall_defaults[k]) for k in base} == base
    ]  # fmt: skip
    own = [m for m in matching if own_selection(_config(m), consensus.hparams)]
    other = sorted((m for m in matching if m not in own), key=lambda m: m.key)
    if other or own:
        return (other or own)[0], not other
    built = Method(
        key=f"{consensus.key}.tall_masks",
        label=f"TALL mask ({consensus.label})",
        fn="tall_masks",
        hparams=base,
        search={"lam": TALL_GRID},
        select="per_task",
    )
    return built, True


def _config(method: Method) -> dict[str, Any]:
    """The selection-relevant part of ``method`` as a method config."""
    return {"hparams": method.hparams, "search": method.search, "select": method.select,
            "alphas": list(method.alphas)}  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Check zoo, benchmark, the protocol's scaling grids, methods and options before any
    long computation."""
    zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
    check_regime(zoo, "task_vectors", f"model {cfg.model.get('name')!r}")
    if not isinstance(benchmark, Benchmark):
        raise ValueError(f"benchmark {cfg.benchmark.get('name')!r} is not a benchmark")
    if int(cfg.eval.batch_size) < 1:
        raise ValueError(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    input_cache_bytes(cfg)
    for name, values in (cfg.get("protocol") or {}).items():
        scaling_grid(values, f"protocol.{name}")  # before the methods that interpolate it
    num_tasks = len(benchmark.tasks())
    for method in methods_of(cfg):
        late = {
            k: stand_in
            for k, (sentinel, stand_in) in LATE_OPTIONS.items()
            if method.hparams.get(k) == sentinel
        }
        method.check_options(num_tasks, **late)


def run(cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]:
    """Yield ``(method key, rows)`` as each method finishes (those in ``ctx.finished`` as
    they are)."""
    methods = methods_of(cfg)
    if all(m.key in ctx.finished for m in methods):
        yield from ((m.key, ctx.finished[m.key]) for m in methods)
        return
    zoo: TaskVectorZoo = instantiate(cfg.model)
    benchmark: Benchmark = instantiate(cfg.benchmark)
    tasks: list[Task] = benchmark.tasks()
    names = [t.name for t in tasks]
    experts = zoo.load(benchmark, tasks, ctx.env)
    check_distinct_experts(experts.pretrained, experts.experts, names)
    methods = [_with_zoo_entries(m, experts.unmerged_entries) for m in methods]
    data_based = [m for m in methods if DATA in method_spec(m.fn).needs]
    if data_based and experts.task_data is None:
        raise ValueError(
            f"method.{data_based[0].key} ({data_based[0].label}) needs task data, which "
            f"model {cfg.model.name!r} cannot provide (its zoo sets no "
            "Experts.task_data); choose a data-free method or a zoo that serves data "
            "(the CLIP zoos do)"
        )
    evaluator = experts.evaluator(tasks, int(cfg.eval.batch_size), ctx.env)
    taus = [TaskVector(experts.experts[n], experts.pretrained, name=f"task {n!r}") for n in names]
    scorer = Scorer(evaluator, names)
    expert = {
        split: scorer.scores("finetuned", {}, lambda: merge("finetuned", taus), 1.0, split)
        for split in ("val", "test")
    }
    make_row = functools.partial(Row, ctx.name, benchmark.name, cfg.model.name)
    evaluate = functools.partial(
        evaluate_method, task_vectors=taus, scorer=scorer, expert=expert,
        make_row=make_row, device=ctx.device,
    )  # fmt: skip
    total = sum(len(m.grid()) * len(m.alphas) for m in methods)
    with tqdm(total=total, desc="methods x grid", disable=not ctx.progress) as bar:
        for method in methods:
            bar.set_postfix_str(method.label)
            if method.key in ctx.finished:
                bar.update(len(method.grid()) * len(method.alphas))
                yield method.key, ctx.finished[method.key]
                continue
            if method.hparams.get("lam") == FROM_TALL_MASKS:
                method = _with_tall_lambdas(method, methods, evaluate, names)
            spec = method_spec(method.fn)
            context = None
            if DATA in spec.needs:
                context = experts.task_data(tasks, *data_request(method), ctx.env)
            own = {"expert": None} if method.fn == "finetuned" else {}  # 100 by definition
            rows, _ = evaluate(method, on_point=bar.update, context=context, **own)
            if context is not None:
                rows += _data_rows(make_row, method, context)
            shapes = (
                _merged_shapes(experts.pretrained) if STORAGE_RULES[spec.storage].shaped else None
            )
            bits = storage_bits(spec.storage, len(names), *experts.param_counts, shapes=shapes)
            rows.append(make_row(method.label, hparams_key(method.hparams), AVERAGE,
                                 "test", "storage_gbit", bits / 1e9))  # fmt: skip
            _log(ctx, method, rows)
            yield method.key, rows


def _with_tall_lambdas(
    method: Method, methods: Sequence[Method], evaluate: Any, names: Sequence[str]
) -> Method:
    """``method`` with ``lam`` = the per-task lambdas TALL masks chose on val."""
    tall, own = _tall_method_for(method, methods)
    _, settings = evaluate(tall, test=False)  # memoised: free if TALL ran already
    lams = [float(settings[name]["lam"]) for name in names]
    if own:  # what any run makes of these options: the same rows, wherever it ran
        source = f"TALL masks' per-task selection on val, lam in {TALL_GRID}, alpha 1"
    else:  # a selection of the run's, in the unit's key by its method key
        source = f"{tall.label} (method.{tall.key}), selected on val"
    return replace(method, hparams={**method.hparams, "lam": lams},
                   provenance={"lam_source": source})  # fmt: skip


def _data_rows(make_row: Any, method: Method, context: TaskData) -> list[Row]:
    """The examples of each task ``method`` consumed (split: where they came from) and
    whether it saw test inputs (``test_time_adaptation``, on the average)."""
    key = hparams_key(method.hparams)
    used = context.examples_used()
    rows = [
        make_row(method.label, key, task, context.split, "examples_used", float(n))
        for task, n in used.items()
    ]
    tta = float(context.split == "test")
    return [*rows, make_row(method.label, key, AVERAGE, "test", "test_time_adaptation", tta)]


def _fingerprint(state: Mapping[str, Tensor], keys: Sequence[str]) -> tuple[float, ...]:
    """Sum and absolute sum of each tensor at ``keys`` (float64)."""
    return tuple(float(t.sum()) + float(t.abs().sum()) for t in (state[k].double() for k in keys))


def check_distinct_experts(
    pretrained: Mapping[str, Tensor], experts: Mapping[str, Mapping[str, Tensor]],
    names: Sequence[str],
) -> None:  # fmt: skip
    """Raise ``ValueError`` naming both tasks when two tasks' experts hold the same weights
    (e.g. an expert path template that ignores the task), and when an expert equals the
    pretrained model. Compares a fingerprint of a few float tensors first (cheap with lazy
    checkpoints), then every tensor of the suspects."""
    float_keys = [k for k in pretrained if torch.is_floating_point(pretrained[k])]
    probe = float_keys[:: max(1, len(float_keys) // 4)][:4]
    prints = {"the pretrained model": _fingerprint(pretrained, probe)}
    states = {"the pretrained model": pretrained}
    for name in names:
        states[f"task {name!r}"] = experts[name]
        prints[f"task {name!r}"] = _fingerprint(experts[name], probe)
    seen: dict[tuple[float, ...], str] = {}
    for who, fp in prints.items():
        other = seen.setdefault(fp, who)
        if other != who and all(torch.equal(states[who][k], states[other][k]) for k in float_keys):
            raise ValueError(
                f"the expert of {who} has the same weights as {other}: check the zoo's "
                "expert paths (model.*) -- each task needs its own fine-tuned checkpoint"
            )


def _log(ctx: RunContext, method: Method, rows: list[Row]) -> None:
    frame = pd.DataFrame([r.__dict__ for r in rows])
    test = frame[frame.split == "test"]
    ctx.logger.log_metrics(
        {f"{method.label}/{r.task}/test_{r.metric}": r.value for r in test.itertuples()}
    )
    val = frame[(frame.split == "val") & (frame.task == AVERAGE)]
    curve = val.pivot_table(index="hyperparameters", columns="metric", values="value", sort=False)
    ctx.logger.log_table(f"selection/{method.key}", curve.reset_index())
