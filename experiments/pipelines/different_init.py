"""The different-initialisation pipeline: base models trained from scratch with different
seeds, merged by the registered ``models`` methods (direct and aligned averaging, ZipIt!,
CCA Merge, NP Merge, the ensemble, the base models themselves).

The zoo (``cfg.model``, an :class:`evaluation.zoo.InitZoo`) and the benchmark
(``cfg.benchmark``) are built with ``hydra.utils.instantiate``. Per data setting of the
benchmark (``same`` / ``cross``) the zoo's ``num_models`` base models are built or loaded;
then every selected method (one unit of work; a unit the run has already finished is
reused) merges the first ``k`` of them for each ``k`` in its ``models`` list,
through :func:`merging.merge_models` on a :class:`merging.context.ModelContext`, and its
output is scored on the test split: a state dict as the architecture's network, a module
(the ensemble) by its own logits, a list of states one row per model (``model: i``).
Nothing is selected on data, so rows carry ``split="test"`` only; their hyperparameters are
``{"models": k, **hparams}``.

What the pipeline uses of the built objects: ``zoo.load(benchmark, setting, env)`` returns
base models with ``states``, ``network(state)``, ``spec`` and ``activation_points``; the
benchmark has ``name``, ``num_models``, ``settings``, ``merge_data.seed``,
``setting_name(s)``, ``merge_batches()``, ``train_batches(samples, batch_size, seed,
shuffle=)``, ``train_size`` and ``accuracy(module, device)`` (e.g.
:class:`evaluation.cnn.benchmark.DifferentInitBenchmark`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from evaluation.protocol import configured_spec
from evaluation.results import Row, hparams_key
from evaluation.zoo import InitZoo, check_regime
from experiments.context import RunContext
from merging import merge_models
from merging.context import ModelContext, standin_context

BENCHMARK_NEEDS = ("num_models", "settings", "merge_data", "merge_batches", "accuracy")


@dataclass(frozen=True)
class ModelsMethod:
    """One method config (``method.<key>``): ``fn`` on the first ``k`` base models for each
    ``k`` in ``models``."""

    key: str
    label: str
    fn: str
    models: tuple[int, ...]
    hparams: dict[str, Any]

    @classmethod
    def from_config(cls, key: str, cfg: Mapping[str, Any], num_models: int) -> ModelsMethod:
        """From a ``method.<key>`` config (schema ``experiments.config.MethodConfig``); errors
        name the key path at fault."""
        where = f"method.{key}"
        spec = configured_spec(key, cfg, "models")
        if cfg.get("search"):
            raise ValueError(
                f"{where}.search: the different_init pipeline selects nothing on data; "
                "give fixed values in hparams"
            )
        hparams = dict(cfg.get("hparams") or {})
        models = tuple(
            dict.fromkeys(num_models if k == "all" else k for k in cfg.get("models") or [2])
        )
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in models):
            raise ValueError(f"{where}.models must list integers or 'all', got {list(models)}")
        for k in models:
            if not spec.min_inputs <= k <= num_models:
                raise ValueError(
                    f"{where}.models: cannot combine {k} models (from {spec.min_inputs} to "
                    f"num_models={num_models})"
                )
        return cls(key, str(cfg.get("label") or spec.label), spec.name, models, hparams)

    def check_options(self) -> None:
        """Merge a tiny stand-in context (:func:`merging.context.standin_context`) of ``k``
        models for each ``k``, so that an out-of-range option fails, naming the option,
        before any long computation."""
        for k in self.models:
            try:
                merge_models(self.fn, standin_context(k), **self.hparams)
            except (ValueError, TypeError, KeyError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else err
                raise ValueError(f"method.{self.key}: {message}") from None


def methods_of(cfg: DictConfig, num_models: int) -> list[ModelsMethod]:
    """The selected methods, checked against the benchmark's number of models."""
    methods = OmegaConf.to_container(cfg.method, resolve=True) or {}
    if not methods:
        raise ValueError("no method selected: pass method=<name> or method=[a,b,...]")
    return [ModelsMethod.from_config(key, m, num_models) for key, m in methods.items()]


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

    def validate(self, cfg: DictConfig) -> None:
        """Check zoo, benchmark, methods and options before any data is loaded or trained."""
        _, benchmark = build(cfg)
        for method in methods_of(cfg, benchmark.num_models):
            method.check_options()

    def run(self, cfg: DictConfig, ctx: RunContext) -> Iterator[tuple[str, list[Row]]]:
        """Build or load the base models of every setting, then run each method on them;
        yields ``(method key, rows)`` as each method finishes (the rows of a method in
        ``ctx.finished`` as they are)."""
        zoo, benchmark = build(cfg)
        methods = methods_of(cfg, benchmark.num_models)
        contexts = {}
        if any(m.key not in ctx.finished for m in methods):
            device, seed = torch.device(ctx.device), benchmark.merge_data.seed
            for setting in benchmark.settings:
                models = zoo.load(benchmark, setting, ctx.env)
                contexts[benchmark.setting_name(setting)] = models, ModelContext(
                    models.states, models.network().to(device), models.spec,
                    benchmark.merge_batches(), models.activation_points,
                    train_batches=lambda n, b: benchmark.train_batches(n, b, seed, shuffle=True),
                    train_size=benchmark.train_size, device=device, seed=seed,
                )  # fmt: skip
        for method in methods:
            if method.key in ctx.finished:
                yield method.key, ctx.finished[method.key]
                continue
            rows = []
            for name, (models, context) in contexts.items():
                for k in method.models:
                    start = time.perf_counter()
                    output = merge_models(
                        method.fn, context.with_states(models.states[:k]), **method.hparams
                    )
                    scores = _scores(output, models, benchmark, context.device)
                    seconds = time.perf_counter() - start
                    for extra, value in scores:
                        hparams = {"models": k, **method.hparams, **extra}
                        rows.append(
                            Row(ctx.name, name, cfg.model.name, method.label, hparams_key(hparams),
                                benchmark.data.name, "test", "accuracy", value)
                        )  # fmt: skip
                        tag = f"{name}/{_row_label(method.label, hparams)}/{k}_models"
                        ctx.logger.log_metrics(
                            {f"{tag}/test_accuracy": value, f"{tag}/seconds": seconds}
                        )
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


def _scores(
    output: Any, models: Any, benchmark: Any, device: torch.device
) -> list[tuple[dict[str, Any], float]]:
    """Test accuracy of a merge output: a module by its logits, a state dict as the
    architecture's network, a list of states one score per model (``model: i``)."""
    if isinstance(output, nn.Module):
        nets = [({}, output)]
    elif isinstance(output, list | tuple):
        nets = [({"models": 1, "model": i}, models.network(s)) for i, s in enumerate(output)]
    else:
        nets = [({}, models.network(output))]
    return [(extra, benchmark.accuracy(net, device)) for extra, net in nets]


def _row_label(label: str, hparams: Mapping[str, Any]) -> str:
    return f"{label} {hparams['model']}" if "model" in hparams else label
