"""A paper's comparison table from the results store: ``python -m experiments.compare``.

    python -m experiments.compare --method "TALL mask + TA" \\
        --baselines "Task arithmetic" TIES --model sandbox_clip --benchmark sandbox8

For each benchmark (default: every benchmark of the zoo on which the new method ran): the
new method next to the chosen baselines (default: every other method of that zoo and
benchmark in the store), test accuracy averaged over tasks, absolute and normalised, as
mean and standard deviation over seeds, the number of seeds, the published numbers where
known (``results/reference/tall_masks_vision.csv``, matched by the zoo's ``arch`` and the
number of tasks), ours minus published, and the new method minus each baseline; then the
per-task test accuracy (mean over seeds).

**Seeds.** Every stored unit (a method under one resolved config, :mod:`experiments.store`)
has its config. Units whose configs differ only in the ``--seed`` keys (default
``model.recipe.seed``, the sandbox zoo's build seed -- a new pretrained model and new
experts --, and ``method.hparams.seed``, e.g. DARE's drop seed) are replicates of one
setting; a sweep over one of those keys (``-m model.recipe.seed=0,1,2``) gives one
replicate per value. Keys in ``--ignore`` (default ``device`` and ``eval``: where and in
what batches it was computed) are not told apart either. When one method label has several
settings on a benchmark (e.g. TIES at two densities), each is its own row, labelled with
the keys that differ. Of two units with the same setting and seed (computed by different
code versions), the newer counts.

Writes ``compare.md``, ``compare.csv`` (the numbers) and the plots
(:mod:`experiments.plots`) to ``--out`` (default ``outputs/compare/<model>-<method>``) and
logs tables and plots to W&B (``--logger none`` to skip).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.cache import atomic_write_text, json_digest
from evaluation.results import AVERAGE
from experiments import plots
from experiments.loggers import NullLogger, WandbLogger
from experiments.report import REFERENCE, model_arch
from experiments.store import ResultStore
from experiments.tables import markdown

SEED_KEYS = ("model.recipe.seed", "method.hparams.seed")
IGNORED_KEYS = ("device", "eval")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values, as canonical JSON)."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(obj, sort_keys=True) if isinstance(obj, (list, dict)) else obj
    return {prefix[:-1]: value}


def _matches(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def units_of(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per stored unit: its key, zoo, benchmark, method label, merge function,
    number of tasks, config (the unit's own method under ``method``, the methods it depends
    on under ``inputs``), creation time and test averages ``abs``/``norm`` (%)."""
    test = rows[rows.split == "test"]
    averages = test[test.task == AVERAGE].pivot_table(
        index="unit_key", columns="metric", values="value", aggfunc="first"
    )
    tasks = test[test.task != AVERAGE].groupby("unit_key").task.nunique()
    units = rows.drop_duplicates("unit_key").set_index("unit_key")
    out = []
    for key, unit in units.iterrows():
        config = json.loads(unit.config)
        methods = config.pop("method")
        config["method"] = methods[unit.unit]
        config["inputs"] = {k: v for k, v in methods.items() if k != unit.unit}
        avg = averages.loc[key] if key in averages.index else pd.Series(dtype=float)
        out.append({
            "unit_key": key, "model": unit.model, "benchmark": unit.benchmark,
            "label": unit.method, "fn": config["method"].get("fn"),
            "num_tasks": int(tasks.get(key, 0)), "config": config, "created": unit.created,
            "abs": avg.get("accuracy", math.nan), "norm": avg.get("normalized_accuracy", math.nan),
        })  # fmt: skip
    return pd.DataFrame(out)


def replicates(
    units: pd.DataFrame, seeds: Sequence[str] = SEED_KEYS, ignore: Sequence[str] = IGNORED_KEYS
) -> pd.DataFrame:
    """``units`` with ``setting`` (digest of the config without seed and ignored keys),
    ``seed`` (the seed keys' values) and ``row`` (the label, with the keys that tell its
    settings apart when a label has several on one zoo and benchmark -- the same keys on
    every benchmark of that zoo); one unit per (setting, seed), the newest."""
    if units.empty:
        return units.assign(setting=[], seed=[], row=[])
    flat = [flatten(c) for c in units.config]
    kept = [{k: v for k, v in f.items() if not _matches(k, [*seeds, *ignore])} for f in flat]
    units = units.assign(
        setting=[json_digest(k) for k in kept],
        seed=[json.dumps({k: v for k, v in f.items() if _matches(k, seeds)}, sort_keys=True)
              for f in flat],
        flat=kept,
    )  # fmt: skip
    units = units.sort_values("created").drop_duplicates(["setting", "seed"], keep="last")
    differing: dict[tuple[str, str], set[str]] = {}  # (model, label) -> keys
    for (model, _, label), group in units.groupby(["model", "benchmark", "label"], sort=False):
        flats = list(group.drop_duplicates("setting").flat)
        keys = {k for f in flats for k in f}
        found = {k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1}
        differing.setdefault((model, label), set()).update(found)
    rows = {}
    for _, unit in units.drop_duplicates("setting").iterrows():
        keys = sorted(differing[unit.model, unit.label])
        suffix = ", ".join(f"{k}={unit.flat.get(k)}" for k in keys)
        rows[unit.setting] = f"{unit.label} [{suffix}]" if suffix else unit.label
    return units.assign(row=units.setting.map(rows)).drop(columns="flat")


def summary(units: pd.DataFrame) -> pd.DataFrame:
    """Per (model, benchmark, row): number of tasks, seeds ``n``, mean and sample standard
    deviation (NaN for one seed) of the test averages."""
    groups = units.groupby(["model", "benchmark", "row"], sort=False)
    out = groups.agg(
        label=("label", "first"), fn=("fn", "first"), num_tasks=("num_tasks", "first"),
        n=("unit_key", "size"), abs_mean=("abs", "mean"), abs_std=("abs", "std"),
        norm_mean=("norm", "mean"), norm_std=("norm", "std"),
    )  # fmt: skip
    return out.reset_index()


def _stat(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}"


def not_in_store(name: str, labels: Sequence[str], where: str) -> ValueError:
    """The error for a method label ``name`` absent from ``labels`` (those of ``where``):
    where the store holds several configurations of that method, each labelled with the
    options that differ (``"TIES [method.hparams.density=0.1]"``), it lists them."""
    variants = [label for label in labels if label.startswith(f"{name} [")]
    if variants:
        return ValueError(
            f"the store holds {len(variants)} configurations of {name!r} for {where}, each "
            f"labelled with the options that differ: give one of {variants}"
        )
    return ValueError(f"{name!r} is not in the store for {where}; methods there: "
                      f"{', '.join(dict.fromkeys(labels))}")  # fmt: skip


def comparison(
    summary_b: pd.DataFrame, method: str, baselines: Sequence[str], reference: pd.DataFrame
) -> pd.DataFrame:
    """The table of one zoo and benchmark: rows ``baselines`` then ``method``."""
    rows = summary_b.set_index("row")
    if method not in rows.index:
        where = f"{summary_b.model.iloc[0]} on {summary_b.benchmark.iloc[0]}"
        raise not_in_store(method, list(rows.index), where)
    arch = model_arch(str(summary_b.model.iloc[0]))
    count = summary_b.num_tasks.iloc[0]
    ref = reference[(reference.model == arch) & (reference.num_tasks == count)].set_index("method")
    new = rows.loc[method]
    table = []
    for name in [*baselines, method]:
        if name not in rows.index:  # a baseline not run on this benchmark
            table.append({"method": name, "abs": "-", "norm": "-", "seeds": 0})
            continue
        r = rows.loc[name]
        paper_abs = float(ref.abs_acc.get(r.label, math.nan))
        paper_norm = float(ref.norm_acc.get(r.label, math.nan))
        table.append({
            "method": name,
            "abs": _stat(r.abs_mean, r.abs_std),
            "norm": _stat(r.norm_mean, r.norm_std),
            "seeds": int(r.n),
            "paper abs (norm)": "-" if math.isnan(paper_abs) else
            f"{paper_abs:.1f}" + ("" if math.isnan(paper_norm) else f" ({paper_norm:.1f})"),
            "ours - paper (abs)": _signed(r.abs_mean - paper_abs),
            "new - this (norm)": "-" if name == method else _signed(new.norm_mean - r.norm_mean),
        })  # fmt: skip
    return pd.DataFrame(table).set_index("method").fillna("-")


def per_task(rows: pd.DataFrame, units: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Test accuracy per task, mean over seeds (rows ``order``), then the averages."""
    test = rows[(rows.split == "test") & (rows.metric == "accuracy")]
    test = test.merge(units[["unit_key", "row"]], on="unit_key")
    listed = rows[rows.split == "val"].task if (rows.split == "val").any() else test.task
    tasks = [t for t in dict.fromkeys(listed) if t != AVERAGE]  # the benchmark's order
    table = test.pivot_table(index="row", columns="task", values="value", aggfunc="mean")
    table = table.reindex(index=list(order), columns=[*tasks, AVERAGE])
    table = table.rename(columns={AVERAGE: "avg abs"})
    table.index.name = "method"
    return table


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def compare(
    store_dir: str | Path,
    method: str,
    baselines: Sequence[str] | None = None,
    model: str | None = None,
    benchmarks: Sequence[str] | None = None,
    seeds: Sequence[str] = SEED_KEYS,
    ignore: Sequence[str] = IGNORED_KEYS,
    out: str | Path | None = None,
    logger_kind: str = "wandb",
    wandb_mode: str = "offline",
    masks: bool = False,
    cache_dir: str | None = None,
    device: str = "cpu",
) -> dict[str, pd.DataFrame]:
    """Build, write and log the comparison (see the module docstring) and print where it
    was written; returns the tables by benchmark. ``ValueError`` names what is missing
    from the store."""
    rows = ResultStore(store_dir).results()
    if rows.empty:
        raise ValueError(f"the results store {store_dir} is empty: run experiments first")
    models = list(dict.fromkeys(rows[rows.method == method].model))
    if model is None:
        if len(models) != 1:
            found = ", ".join(models) or f"none (methods: {', '.join(rows.method.unique())})"
            raise ValueError(f"--model is needed: {method!r} ran on zoos {found}")
        model = models[0]
    rows = rows[rows.model == model]
    units = replicates(units_of(rows), seeds, ignore)
    stats = summary(units)
    if benchmarks is None:
        benchmarks = list(dict.fromkeys(stats[stats.row == method].benchmark))
        if not benchmarks:
            raise not_in_store(method, list(stats.row), model)
    unknown = [b for b in baselines or [] if b not in set(stats.row)]
    if unknown:
        raise not_in_store(unknown[0], list(stats.row), model)
    reference = pd.read_csv(REFERENCE, dtype={"storage_gbit": str})
    out = Path(out or Path("outputs", "compare", f"{model}-{_slug(method)}"))
    tables: dict[str, pd.DataFrame] = {}
    lines = [
        f"# {method} against baselines: {model}",
        "",
        "Test accuracy averaged over tasks (%), absolute and normalised: mean ± standard "
        f"deviation over seeds ({', '.join(seeds)}); paper: the published number where known "
        "(Wang et al., ICML 2024, results/reference/tall_masks_vision.csv; '-' elsewhere); "
        "differences of means.",
    ]
    for benchmark in benchmarks:
        here = stats[stats.benchmark == benchmark]
        if here.empty:
            raise ValueError(f"nothing in the store for {model} on benchmark {benchmark!r}")
        others = [r for r in here.row if r != method] if baselines is None else list(baselines)
        tables[benchmark] = comparison(here, method, others, reference)
        tasks = per_task(rows[rows.benchmark == benchmark], units, [*others, method])
        lines += ["", f"## {benchmark} ({int(here.num_tasks.iloc[0])} tasks)", "",
                  markdown(tables[benchmark]).rstrip(), "",
                  "Per task, test accuracy (mean over seeds):", "",
                  markdown(tasks).rstrip()]  # fmt: skip
    chosen = [*tables[benchmarks[0]].index]
    shown = units[units.benchmark.isin(benchmarks)]
    figures = plots.comparison_plots(rows, shown, stats[stats.benchmark.isin(benchmarks)],
                                     chosen, out / "plots")  # fmt: skip
    if masks:
        figures += plots.mask_overlap_from_store(rows, shown, out / "plots", cache_dir, device)
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in figures]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    compared = stats.benchmark.isin(benchmarks) & stats.row.isin(chosen)  # the tables' rows
    numbers = stats[compared].drop(columns=["fn"])
    atomic_write_text(out / "compare.csv", numbers.to_csv(index=False))
    run = {"run_dir": out, "name": f"compare-{model}-{_slug(method)}",
           "config": {"method": method, "model": model, "benchmarks": list(benchmarks),
                      "seeds": list(seeds), "store": str(store_dir)}}  # fmt: skip
    logger = WandbLogger(**run, mode=wandb_mode) if logger_kind == "wandb" else NullLogger()
    failed = True
    try:
        for benchmark, table in tables.items():
            logger.log_table(f"compare/{benchmark}", table.reset_index())
        for figure in figures:
            logger.log_image(f"plots/{figure.stem}", figure)
        failed = False
    finally:
        logger.finish(failed=failed)
    logged = f"; W&B ({wandb_mode}) run in {out / 'wandb'}" if logger_kind == "wandb" else ""
    print(f"written: {out / 'compare.md'}, {out / 'compare.csv'}, {len(figures)} plots{logged}")
    return tables


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--method", required=True, help="the new method's row label")
    parser.add_argument("--baselines", nargs="+", help="row labels (default: every other)")
    parser.add_argument("--model", help="the zoo (default: the one the method ran on)")
    parser.add_argument(
        "--benchmark",
        nargs="+",
        dest="benchmarks",
        help="benchmarks, e.g. sandbox8 sandbox14 sandbox20 (default: all)",
    )
    parser.add_argument("--store", default="outputs/store", help="the results store")
    parser.add_argument(
        "--seed",
        nargs="+",
        default=list(SEED_KEYS),
        dest="seeds",
        help="config keys whose values make replicates",
    )
    parser.add_argument(
        "--ignore",
        nargs="*",
        default=list(IGNORED_KEYS),
        help="config keys that do not tell settings apart",
    )
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument(
        "--masks", action="store_true", help="also plot TALL mask overlap (loads the zoo's experts)"
    )
    parser.add_argument("--cache-dir", help="the zoo cache for --masks")
    parser.add_argument("--device", default="cpu", help="device for --masks")
    parser.add_argument("--logger", choices=["wandb", "none"], default="wandb")
    parser.add_argument("--wandb-mode", choices=["offline", "online", "disabled"],
                        default="offline")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        tables = compare(args.store, args.method, args.baselines, args.model, args.benchmarks,
                         args.seeds, args.ignore, args.out, args.logger, args.wandb_mode,
                         args.masks, args.cache_dir, args.device)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for benchmark, table in tables.items():
        print(f"\n{benchmark}\n{table.to_string()}")


if __name__ == "__main__":
    main()
