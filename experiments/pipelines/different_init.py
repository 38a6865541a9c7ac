"""The different-initialisation pipeline: base models trained from scratch with different
seeds, merged by direct averaging, aligned averaging, ZipIt!, CCA Merge and NP Merge.

Per setting of ``cfg.benchmark.settings`` (``same`` / ``cross`` data), the zoo's
``num_models`` base models are built or loaded from the cache; every selected method runs
on the first ``k`` models for each ``k`` in its ``models`` list and is scored on the test
split. Nothing is selected on data, so rows carry ``split="test"`` only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evaluation.cnn.data import ImageData, check_setting, load_data
from evaluation.cnn.methods import METHODS, Merger, check_method
from evaluation.cnn.models import ARCHITECTURES
from evaluation.cnn.train import TrainRecipe, accuracy
from evaluation.cnn.zoo import CnnZoo, load_zoo
from evaluation.results import Row, hparams_key
from experiments.context import RunContext

FAMILY = "different_init"  # the ``family`` of this pipeline's benchmark and method configs


@dataclass(frozen=True)
class MethodRun:
    """One method config: ``fn`` on the first ``k`` models for each ``k`` in ``models``."""

    key: str
    label: str
    fn: str
    models: tuple[int, ...]
    hparams: dict[str, Any]


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def method_runs(cfg: DictConfig) -> list[MethodRun]:
    """The selected methods, checked against this benchmark's number of models."""
    methods = _container(cfg.get("method")) or {}
    if not methods:
        raise ValueError("no method selected: pass method=<name> or method=[a,b,...]")
    num_models = int(cfg.benchmark.get("num_models", 0))
    runs = []
    for key, m in methods.items():
        where = f"method config {key!r}"
        if not isinstance(m, Mapping):
            raise ValueError(f"{where} is not a mapping (label, fn, family, models, hparams)")
        if m.get("family") != FAMILY:
            raise ValueError(
                f"{where} is not a {FAMILY!r} method (its family: {m.get('family')!r}); CNN "
                f"models run methods of family {FAMILY!r} (fn: {', '.join(METHODS)})"
            )
        unknown = sorted(set(m) - {"label", "fn", "family", "models", "hparams"})
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}")
        models = tuple(
            dict.fromkeys(num_models if k == "all" else k for k in m.get("models") or [2])
        )
        if not all(isinstance(k, int) for k in models):
            raise ValueError(f"{where}: models must list integers or 'all', got {m['models']}")
        if m.get("fn") == "base_models":
            models = (1,)
        hparams = dict(m.get("hparams") or {})
        check_method(key, m.get("fn"), models, hparams, num_models)
        runs.append(MethodRun(key, str(m.get("label", key)), m["fn"], models, hparams))
    return runs


def validate(cfg: DictConfig) -> None:
    """Check the model, benchmark and method configs before any data is loaded or trained."""
    check_zoo_config(cfg.model, cfg.benchmark)
    method_runs(cfg)


def check_zoo_config(model: DictConfig, bench: DictConfig) -> None:
    """Check the model and benchmark configs (what the zoo is built from)."""
    problem = next(_problems(model, bench), None)
    if problem:
        raise ValueError(problem)


def _problems(model: DictConfig, bench: DictConfig) -> Iterator[str]:
    if model.get("family") != "cnn" or model.get("arch") not in ARCHITECTURES:
        yield (
            f"model {model.get('name')!r}: this pipeline needs family 'cnn' and model.arch in "
            f"{', '.join(ARCHITECTURES)}, got {model.get('family')!r} / {model.get('arch')!r}"
        )
    if not float(model.get("width", 1.0)) > 0:
        yield f"model.width must be positive, got {model.get('width')!r}"
    if bench.get("family") != FAMILY:
        yield (
            f"benchmark {bench.get('name')!r} is not a {FAMILY!r} benchmark, which the CNN "
            f"model {model.get('name')!r} needs: use e.g. +experiment=different_init_sandbox"
        )
        return
    num_models = bench.get("num_models")
    if not isinstance(num_models, int) or num_models < 1:
        yield f"benchmark.num_models must be a positive integer, got {num_models!r}"
        return
    settings = _container(bench.get("settings")) or {}
    if not settings:
        yield f"benchmark {bench.name!r} has no settings (e.g. settings: {{same: {{kind: same}}}})"
    for name, setting in settings.items():
        try:
            check_setting(setting, num_models)
        except ValueError as err:
            yield f"benchmark.settings.{name}: {err}"
    dataset = bench.get("dataset") or {}
    if dataset.get("kind") not in ("sandbox", "hf"):
        yield f"benchmark.dataset.kind must be 'sandbox' or 'hf', got {dataset.get('kind')!r}"
    if dataset.get("path") and not Path(str(dataset.path)).expanduser().exists():
        yield f"benchmark.dataset.path {dataset.path!r} does not exist"
    try:
        TrainRecipe.from_cfg(_container(bench.get("training")) or {})
    except (KeyError, ValueError, TypeError) as err:
        yield str(err.args[0])
    merge_data = _container(bench.get("merge_data")) or {}
    for key in ("samples", "batch_size", "seed"):
        value = merge_data.get(key)
        least = 0 if key == "seed" else 1
        if not isinstance(value, int) or value < least:
            yield f"benchmark.merge_data.{key} must be an integer >= {least}, got {value!r}"


def zoos(
    cfg: DictConfig, cache_dir: str | Path, device: str = "cpu", progress: bool = False
) -> Iterator[tuple[str, ImageData, CnnZoo]]:
    """Per setting: its benchmark name (``<benchmark>_<setting>``), the data and the zoo,
    trained on first use and cached under ``cache_dir``."""
    bench = cfg.benchmark
    data = load_data(_container(bench.dataset))
    recipe = TrainRecipe.from_cfg(_container(bench.training))
    for name, setting in _container(bench.settings).items():
        zoo = load_zoo(
            _container(cfg.model), data, setting, bench.num_models, recipe, cache_dir,
            device=device, progress=progress, log=tqdm.write,
        )  # fmt: skip
        yield f"{bench.name}_{name}", data, zoo


def run(cfg: DictConfig, ctx: RunContext) -> list[Row]:
    """Build or load each setting's zoo, run every method, return long-format rows."""
    validate(cfg)
    methods = method_runs(cfg)
    num_models, merge_data = cfg.benchmark.num_models, _container(cfg.benchmark.merge_data)
    rows: list[Row] = []
    for benchmark, data, zoo in zoos(cfg, ctx.cache_dir, ctx.device, ctx.progress):
        merger = Merger(
            zoo, data, merge_samples=merge_data["samples"], batch_size=merge_data["batch_size"],
            seed=merge_data["seed"], device=ctx.device,
        )  # fmt: skip
        jobs = [(m, k) for m in methods for k in m.models]
        for method, k in tqdm(jobs, desc=benchmark, disable=not ctx.progress):
            chosen = list(range(num_models if method.fn == "base_models" else k))
            start = time.perf_counter()
            results = METHODS[method.fn](merger, chosen, **method.hparams)
            seconds = time.perf_counter() - start
            for extra, logits in results:
                value = accuracy(logits, data.test_y)
                hparams = {"models": k, **method.hparams, **extra}
                rows.append(
                    Row(ctx.name, benchmark, cfg.model.name, method.label, hparams_key(hparams),
                        data.name, "test", "accuracy", value)
                )  # fmt: skip
                tag = f"{benchmark}/{_row_label(method.label, hparams)}/{k}_models"
                ctx.logger.log_metrics({f"{tag}/test_accuracy": value, f"{tag}/seconds": seconds})
    return rows


def _row_label(label: str, hparams: Mapping[str, Any]) -> str:
    return f"{label} {hparams['model']}" if "model" in hparams else label


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper-style table: one row per method and number of models merged, one column per
    setting, test accuracy (%). Base models appear one per row (``<label> <index>``)."""
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
