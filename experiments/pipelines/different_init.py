"""The different-initialisation pipeline: base models trained from scratch with different
seeds, merged by the registered ``models`` methods (direct and aligned averaging, ZipIt!,
CCA Merge, NP Merge, the ensemble, the base models themselves).

The zoo (``cfg.model``, an :class:`evaluation.zoo.InitZoo`) and the benchmark
(``cfg.benchmark``) are built with ``hydra.utils.instantiate``. Per data setting of the
benchmark (``same`` / ``cross``) the zoo's ``num_models`` base models are built or loaded
and their BatchNorm statistics recomputed with the benchmark's reset (one epoch over the
training images with the training augmentation, as the authors do before merging,
shoroi/align-n-merge ``evaluation/align_merge_main.py``); that reset also follows every
merge (:class:`merging.context.ModelContext` ``reset_batchnorm``). Then every selected
method (one unit of work; a unit the run has already finished is reused) merges the first
``k`` of them for each ``k`` in its ``models`` list, through :func:`merging.merge_models`.

Selection (the authors pick CCA's gamma and ZipIt!'s (alpha, beta) per setting by a search,
``evaluation/{cca,zipit}_hparam_search.py``; they score it on the test set, mergelab on the
benchmark's val split, held out of train): a method's ``search`` grid is merged once per
point for each setting and ``k``, every point scored on val (``split="val"`` rows), and the
point with the best val accuracy (ties: the first in grid order) scored on test
(``split="test"`` rows). Without a search there is one point. With a val split every method
gets val rows; without one (``benchmark.val.samples=0``) only test rows, and a search may
list one value per option only. Outputs are scored as a state dict on the architecture's
network, a module (the ensemble) by its own logits, a list of states one row per model
(``model: i``); the rows' hyperparameters are ``{"models": k, **hparams, **point}``.

What the pipeline uses of the built objects: ``zoo.load(benchmark, setting, env)`` returns
base models with ``states``, ``network(state)``, ``spec`` and ``activation_points``; the
benchmark has ``name``, ``num_models``, ``settings``, ``merge_data.seed``, ``has_val``,
``setting_name(s)``, ``merge_batches()``, ``reset_batches()``, ``train_batches(samples,
batch_size, seed, shuffle=)``, ``train_size`` and ``accuracy(module, device, split)``
(e.g. :class:`evaluation.cnn.benchmark.DifferentInitBenchmark`).
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from evaluation.protocol import check_labels, configured_spec
from evaluation.results import Row, hparams_key
from evaluation.zoo import InitZoo, check_regime
from experiments.context import RunContext
from merging import merge_models
from merging.batchnorm import recompute_batchnorm_state
from merging.context import ModelContext, standin_context

BENCHMARK_NEEDS = (
    "num_models", "settings", "merge_data", "merge_batches", "reset_batches", "has_val",
    "accuracy",
)  # fmt: skip


@dataclass(frozen=True)
class ModelsMethod:
    """One method config (``method.<key>``): ``fn`` on the first ``k`` base models for each
    ``k`` in ``models``, at every point of its ``search`` grid (chosen on val)."""

    key: str
    label: str
    fn: str
    models: tuple[int, ...]
    hparams: dict[str, Any]
    search: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, key: str, cfg: Mapping[str, Any], num_models: int, has_val: bool = True
    ) -> ModelsMethod:
        """From a ``method.<key>`` config (schema ``experiments.config.MethodConfig``); errors
        name the key path at fault. A search needs a val split (``has_val``)."""
        where = f"method.{key}"
        spec = configured_spec(key, cfg, "models")
        hparams = dict(cfg.get("hparams") or {})
        search = dict(cfg.get("search") or {})
        searched = [name for name, values in search.items() if len(values) > 1]
        if searched and not has_val:
            raise ValueError(
                f"{where}.search.{searched[0]} selects on the val split, but the benchmark has "
                "none (benchmark.val.samples=0): give benchmark.val.samples > 0, or one value "
                f"(e.g. {where}.search.{searched[0]}=[{search[searched[0]][0]}])"
            )
        given = cfg.get("models")
        if given is not None and not given:  # an explicit [] ran the default k = 2
            raise ValueError(f"{where}.models must list at least one number of models")
        models = tuple(dict.fromkeys(num_models if k == "all" else k for k in given or [2]))
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in models):
            raise ValueError(f"{where}.models must list integers or 'all', got {list(models)}")
        for k in models:
            if not spec.min_inputs <= k <= num_models:
                raise ValueError(
                    f"{where}.models: cannot combine {k} models (from {spec.min_inputs} to "
                    f"num_models={num_models})"
                )
        label = str(cfg.get("label") or spec.label)
        search = {name: list(values) for name, values in search.items()}
        return cls(key, label, spec.name, models, hparams, search)

    def grid(self) -> list[dict[str, Any]]:
        """The search points in grid order (the last option varies fastest); one empty point
        without a search."""
        names = list(self.search)
        return [dict(zip(names, v, strict=True)) for v in itertools.product(*self.search.values())]

    def check_options(self) -> None:
        """Merge a tiny stand-in context (:func:`merging.context.standin_context`) of ``k``
        models for each ``k`` at every search point, so that an out-of-range option fails,
        naming the option, before any long computation."""
        for k in self.models:
            context = standin_context(k)
            for point in self.grid():
                try:
                    merge_models(self.fn, context, **self.hparams, **point)
                except (ValueError, TypeError, KeyError) as err:
                    message = err.args[0] if isinstance(err, KeyError) and err.args else err
                    raise ValueError(f"method.{self.key}: {message}") from None
                except Exception as err:  # a method's own failure: keep it, say where it arose
                    err.add_note(f"raised by method.{self.key} on {k} stand-in models at {point}")
                    raise


def methods_of(cfg: DictConfig, num_models: int, has_val: bool = True) -> list[ModelsMethod]:
    """The selected methods, checked against the benchmark's number of models and val split,
    with distinct labels (the rows and the table tell methods apart by label: two with one
    label were averaged into one table row)."""
    configs = OmegaConf.to_container(cfg.method, resolve=True) or {}
    if not configs:
        raise ValueError("no method selected: pass method=<name> or method=[a,b,...]")
    methods = [ModelsMethod.from_config(key, m, num_models, has_val) for key, m in configs.items()]
    return check_labels(methods)


def build(cfg: DictConfig) -> tuple[InitZoo, Any]:
    """The zoo and the benchmark of ``cfg``; an out-of-range value raises ``ValueError``
    naming its key."""
    built = []
    for group in ("model", "benchmark"):
        try:
            built.append(instantiate(cfg[group]))
        except InstantiationException as err:
            cause = err.__cause__
            if isinstance(cause, ValueError | KeyError | TypeError):
                raise ValueError(cause.args[0] if cause.args else str(cause)) from None
            raise
    zoo, benchmark = built
    check_regime(zoo, "different_init", f"model {cfg.model.get('name')!r}")
    missing = [name for name in BENCHMARK_NEEDS if not hasattr(benchmark, name)]
    if missing:
        raise ValueError(
            f"benchmark {cfg.benchmark.get('name')!r} is not a different-initialisation "
            f"benchmark (it has no {missing[0]!r}): choose e.g. benchmark=different_init_sandbox"
        )
    return zoo, benchmark


class DifferentInitPipeline:
    """The different-initialisation regime (:class:`experiments.pipelines.Pipeline`)."""

    def depends_on(self, unit: str, methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """No method here uses another's results."""
        return []

    def validate(self, cfg: DictConfig) -> None:
        """Check zoo, benchmark, methods and options before any data is loaded or trained."""
        _, benchmark = build(cfg)
        for method in methods_of(cfg, benchmark.num_models, benchmark.has_val):
            method.check_options()

    def run(self, cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]:
        """Build or load the base models of every setting and reset their BatchNorm
        statistics, then run each method on them; yields ``(method key, rows)`` as each
        method finishes (the rows of a method in ``ctx.finished`` as they are)."""
        zoo, benchmark = build(cfg)
        methods = methods_of(cfg, benchmark.num_models, benchmark.has_val)
        contexts = {}
        if any(m.key not in ctx.finished for m in methods):
            for setting in benchmark.settings:
                models = zoo.load(benchmark, setting, ctx.env)
                contexts[benchmark.setting_name(setting)] = models, _context(
                    models, benchmark, torch.device(ctx.device)
                )
        for method in methods:
            if method.key in ctx.finished:
                yield method.key, ctx.finished[method.key]
                continue
            rows = []
            for name, (models, context) in contexts.items():
                for k in method.models:
                    sub = context.with_states(context.states[:k])
                    rows += _evaluate(method, sub, models, benchmark, k, name, cfg, ctx)
            yield method.key, rows

    def table(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The paper-style table: one row per method and number of models merged, one column
        per setting, test accuracy (%). Base models appear one per row (``<label> <index>``)."""
        test = frame[(frame.split == "test") & (frame.metric == "accuracy")].copy()
        hparams = test.hyperparameters.map(json.loads)
        test["row"] = [_row_label(m, h) for m, h in zip(test.method, hparams, strict=True)]
        test["models"] = [int(h.get("models", 1)) for h in hparams]
        several = test.model.nunique() > 1
        test["column"] = test.model + " " + test.benchmark if several else test.benchmark
        out = test.pivot_table(
            index=["row", "models"], columns="column", values="value", aggfunc="mean", sort=False
        )
        out = out.reindex(columns=list(dict.fromkeys(test.column))).reset_index(level="models")
        out["models"] = out["models"].astype(object)  # stays an integer when rendered row-wise
        out.index.name = "method"
        out.columns.name = None
        return out


def _context(models: Any, benchmark: Any, device: torch.device) -> ModelContext:
    """The merge context of one setting's base models, their BatchNorm statistics reset with
    the benchmark's reset, the reset that also follows every merge."""
    network = models.network().to(device)
    seed = benchmark.merge_data.seed
    reset = functools.partial(
        recompute_batchnorm_state, network, batches=benchmark.reset_batches()
    )
    return ModelContext(
        [reset(state) for state in models.states], network, models.spec,
        benchmark.merge_batches(), models.activation_points,
        train_batches=lambda n, b: benchmark.train_batches(n, b, seed, shuffle=True),
        train_size=benchmark.train_size, reset_batchnorm=reset, device=device, seed=seed,
    )  # fmt: skip


def _evaluate(
    method: ModelsMethod,
    context: ModelContext,
    models: Any,
    benchmark: Any,
    k: int,
    setting: str,
    cfg: DictConfig,
    ctx: RunContext,
) -> list[Row]:
    """Rows of ``method`` on ``context`` (``k`` models of ``setting``): val at every search
    point, test at the point with the best val accuracy (ties: the first); test only when
    the benchmark has no val split (one point)."""
    rows: list[Row] = []

    def row(hparams: Mapping[str, Any], split: str, value: float) -> Row:
        return Row(ctx.name, setting, cfg.model.name, method.label, hparams_key(hparams),
                   benchmark.data.name, split, "accuracy", value)  # fmt: skip

    best = None  # (val accuracy, point, output, seconds)
    for point in method.grid():
        start = time.perf_counter()
        output = merge_models(method.fn, context, **method.hparams, **point)
        seconds = time.perf_counter() - start
        if not benchmark.has_val:
            best = (0.0, point, output, seconds)
            break
        scores = _scores(output, models, benchmark, context.device, "val")
        for extra, value in scores:
            rows.append(row({"models": k, **method.hparams, **point, **extra}, "val", value))
        score = sum(value for _, value in scores) / len(scores)
        if best is None or score > best[0]:
            best = (score, point, output, seconds)
    val, point, output, seconds = best
    for extra, value in _scores(output, models, benchmark, context.device, "test"):
        hparams = {"models": k, **method.hparams, **point, **extra}
        rows.append(row(hparams, "test", value))
        tag = f"{setting}/{_row_label(method.label, hparams)}/{k}_models"
        metrics = {f"{tag}/test_accuracy": value, f"{tag}/seconds": seconds}
        if benchmark.has_val:
            metrics[f"{tag}/val_accuracy"] = val
        ctx.logger.log_metrics(metrics)
    return rows


def _scores(
    output: Any, models: Any, benchmark: Any, device: torch.device, split: str
) -> list[tuple[dict[str, Any], float]]:
    """Accuracy on ``split`` of a merge output: a module by its logits, a state dict as the
    architecture's network, a list of states one score per model (``model: i``)."""
    if isinstance(output, nn.Module):
        nets = [({}, output)]
    elif isinstance(output, list | tuple):
        nets = [({"models": 1, "model": i}, models.network(s)) for i, s in enumerate(output)]
    else:
        nets = [({}, models.network(output))]
    return [(extra, benchmark.accuracy(net, device, split)) for extra, net in nets]


def _row_label(label: str, hparams: Mapping[str, Any]) -> str:
    return f"{label} {hparams['model']}" if "model" in hparams else label
