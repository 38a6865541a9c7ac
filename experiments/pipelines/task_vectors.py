"""The task-vector pipeline: a CLIP zoo, merge methods, the TALL masks protocol.

``tau_t = theta_t - theta_0`` per task; each method merges the task vectors once per
search point and is scored at every alpha without re-merging (evaluation.protocol).
"""

from __future__ import annotations

import functools

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evaluation.benchmarks import benchmark_tasks, load_split
from evaluation.evaluate import Evaluator
from evaluation.heads import cached_zeroshot_head
from evaluation.protocol import MethodConfig, Scorer, evaluate_method
from evaluation.results import AVERAGE, Row, hparams_key
from evaluation.storage import clip_param_counts, storage_bits
from evaluation.zoo import ZOO_LOADERS, load_zoo
from experiments.context import RunContext
from merging import TaskVector, merge


def method_configs(cfg: DictConfig) -> list[MethodConfig]:
    methods = OmegaConf.to_container(cfg.method, resolve=True) or {}
    if not methods:
        raise ValueError("no method selected: pass method=<name> or method=[a,b,...]")
    return [MethodConfig.from_config(key, value) for key, value in methods.items()]


def validate(cfg: DictConfig) -> None:
    """Check model, benchmark and methods before any long computation."""
    if cfg.model.get("loader") not in ZOO_LOADERS:
        raise ValueError(
            f"model {cfg.model.get('name')!r}: unknown zoo loader {cfg.model.get('loader')!r}; "
            f"valid: {', '.join(ZOO_LOADERS)}"
        )
    num_tasks = len(benchmark_tasks(cfg.benchmark))
    for method in method_configs(cfg):
        method.check_options(num_tasks)


def run(cfg: DictConfig, ctx: RunContext) -> list[Row]:
    methods = method_configs(cfg)
    tasks = benchmark_tasks(cfg.benchmark)
    names = [t.name for t in tasks]
    zoo = load_zoo(cfg.model, names, ctx.cache_dir, ctx.progress)
    zoo.model.to(ctx.device)  # text tower too: heads are encoded on the device
    heads = {
        t.name: cached_zeroshot_head(
            zoo.model, zoo.tokenizer, t.classnames, t.templates, ctx.cache_dir, zoo.name
        )
        for t in tasks
    }
    splits = {
        (t.name, split): load_split(cfg.benchmark, t, split, ctx.cache_dir, zoo.image_size)
        for t in tasks
        for split in ("val", "test")
    }
    evaluator = Evaluator(
        zoo.image_encoder,
        zoo.pretrained,
        heads,
        splits,
        zoo.preprocess,
        batch_size=int(cfg.eval.batch_size),
        device=ctx.device,
    )
    taus = [TaskVector(zoo.experts[name], zoo.pretrained) for name in names]
    scorer = Scorer(evaluator, names)
    expert = {
        split: scorer.scores("finetuned", {}, lambda: merge("finetuned", taus), 1.0, split)
        for split in ("val", "test")
    }
    make_row = functools.partial(Row, ctx.name, cfg.benchmark.name, cfg.model.name)
    param_counts = clip_param_counts(zoo.model)
    total = sum(len(m.grid()) * len(m.alphas) for m in methods)
    rows: list[Row] = []
    with tqdm(total=total, desc="methods x grid", disable=not ctx.progress) as bar:
        for method in methods:
            bar.set_postfix_str(method.label)
            method_rows = evaluate_method(
                method, taus, scorer, expert, make_row, device=ctx.device, on_point=bar.update
            )
            bits = storage_bits(method.fn, method.hparams, len(names), *param_counts)
            method_rows.append(
                make_row(
                    method.label,
                    hparams_key(method.hparams),
                    AVERAGE,
                    "test",
                    "storage_gbit",
                    bits / 1e9,
                )
            )
            _log(ctx, method, method_rows)
            rows += method_rows
    return rows


def _log(ctx: RunContext, method: MethodConfig, rows: list[Row]) -> None:
    frame = pd.DataFrame([r.__dict__ for r in rows])
    test = frame[frame.split == "test"]
    ctx.logger.log_metrics(
        {f"{method.label}/{r.task}/test_{r.metric}": r.value for r in test.itertuples()}
    )
    val = frame[(frame.split == "val") & (frame.task == AVERAGE)]
    curve = val.pivot_table(index="hyperparameters", columns="metric", values="value", sort=False)
    ctx.logger.log_table(f"selection/{method.key}", curve.reset_index())


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper-style table: one row per method, one column per task (test accuracy),
    then the average absolute and average normalised accuracy."""
    test = frame[frame.split == "test"]
    methods = list(dict.fromkeys(test.method))
    tasks = [t for t in dict.fromkeys(test.task) if t != AVERAGE]
    acc = test[test.metric == "accuracy"].pivot_table(
        index="method", columns="task", values="value", aggfunc="first"
    )
    norm = test[(test.metric == "normalized_accuracy") & (test.task == AVERAGE)]
    out = acc.reindex(index=methods, columns=tasks)
    out["avg abs"] = acc.reindex(methods)[AVERAGE]
    out["avg norm"] = norm.set_index("method").reindex(methods)["value"]
    out.index.name = "method"
    return out
