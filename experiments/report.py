"""The reproduction report: ``python -m experiments.report <run dirs or results.csv ...>``.

Turns finished runs into the TALL masks paper's table (Wang et al., ICML 2024): per model,
one row per method and, per task count, our test accuracy as "abs (norm)" (average absolute
and normalised accuracy, %), the published cell, their difference and the storage (ours /
published, Gbit). Published numbers: results/reference/tall_masks_vision.csv and
tall_masks_nlp.csv (see SOURCE.md there; the NLP table counts as model ``t5_large``); runs
are matched to them by the model config's ``arch`` (else its name) and the number of
tasks. Writes Markdown (default results/reproduction.md) and logs each table as a W&B Table
through :mod:`experiments.loggers` (``--logger none`` to skip).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from evaluation.cache import atomic_write_text
from evaluation.results import AVERAGE, read_rows
from experiments.loggers import NullLogger, WandbLogger
from experiments.tables import markdown

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "tall_masks_vision.csv"
NLP_REFERENCE = ROOT / "results" / "reference" / "tall_masks_nlp.csv"
NLP_COLUMNS = {"7 NLP tasks": 7, "8 QA tasks": 8, "All 11 tasks": 11}  # nlp7, qa8, nlp11
NLP_MODEL = "t5_large"  # the paper's NLP backbone, most likely T5-large (SOURCE.md there)
STORAGE = "storage_gbit"


def result_files(paths: Sequence[str | Path]) -> list[Path]:
    """``results.csv`` of each run directory, or the file itself; errors name the path.
    Hydra's ``multirun.yaml`` (beside the jobs of a sweep, so in ``<sweep>/*``) is skipped."""
    files = []
    for path in map(Path, paths):
        if path.name == "multirun.yaml" and path.is_file():
            continue
        file = path / "results.csv" if path.is_dir() else path
        if not file.is_file():
            what = "run directory without results.csv" if path.is_dir() else "no such file"
            raise FileNotFoundError(f"{path}: {what}")
        files.append(file)
    return files


def model_arch(model: str) -> str:
    """The ``arch`` of conf/model/<model>.yaml (how the paper names the model), else ``model``."""
    path = ROOT / "conf" / "model" / f"{model}.yaml"
    return str(OmegaConf.load(path).get("arch") or model) if path.exists() else model


def references() -> pd.DataFrame:
    """The published rows (model, num_tasks, method, abs_acc, norm_acc, storage_gbit): the
    vision table, and the NLP table as the T5 zoo ``NLP_MODEL`` on 7 / 8 / 11 tasks."""
    vision = pd.read_csv(REFERENCE, dtype={"storage_gbit": str})
    nlp = pd.read_csv(NLP_REFERENCE, dtype={"storage_gbit": str})
    nlp = nlp.assign(model=NLP_MODEL, num_tasks=nlp.benchmark_column.map(NLP_COLUMNS))
    return pd.concat([vision, nlp.drop(columns="benchmark_column")], ignore_index=True)


def our_results(files: Sequence[Path]) -> pd.DataFrame:
    """One row per (model, num_tasks, method): abs_acc, norm_acc, storage_gbit (test, averages).
    A later file wins over an earlier one for the same cell."""
    rows = []
    for file in files:
        frame = read_rows(file)
        test = frame[(frame.split == "test") & (frame.task != AVERAGE)]
        avg = frame[(frame.split == "test") & (frame.task == AVERAGE)]
        if avg.empty:
            raise ValueError(f"{file}: no test-split averages (not a finished mergelab run?)")
        for (run, model, method), group in avg.groupby(["run", "model", "method"], sort=False):
            value = group.groupby("metric")["value"].first()
            tasks = test[(test.run == run) & (test.method == method)].task.nunique()
            storage = frame[
                (frame.run == run) & (frame.method == method) & (frame.metric == STORAGE)
            ]
            rows.append({
                "model": model_arch(model), "num_tasks": tasks, "method": method,
                "abs_acc": value.get("accuracy", math.nan),
                "norm_acc": value.get("normalized_accuracy", math.nan),
                "storage_gbit": storage.value.iloc[0] if len(storage) else math.nan,
            })  # fmt: skip
    out = pd.DataFrame(rows, columns=["model", "num_tasks", "method", "abs_acc", "norm_acc",
                                      "storage_gbit"])  # fmt: skip
    return out.drop_duplicates(["model", "num_tasks", "method"], keep="last")


def _cell(abs_acc: float, norm_acc: float, signed: bool = False) -> str:
    if math.isnan(abs_acc):
        return "-"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    norm = "" if math.isnan(norm_acc) else f" ({fmt.format(norm_acc)})"
    return fmt.format(abs_acc) + norm


def comparison(ours: pd.DataFrame, reference: pd.DataFrame, model: str) -> pd.DataFrame:
    """The side-by-side table of one model (rows: methods; columns per task count)."""
    ours, ref = ours[ours.model == model], reference[reference.model == model]
    counts = sorted(set(ours.num_tasks) | set(ref.num_tasks))
    methods = list(dict.fromkeys([*ref.method, *ours.method]))
    table = pd.DataFrame(index=pd.Index(methods, name="method"))
    for t in counts:
        o = ours[ours.num_tasks == t].set_index("method").reindex(methods)
        r = ref[ref.num_tasks == t].set_index("method").reindex(methods)
        table[f"{t} tasks: ours"] = [
            _cell(a, n) for a, n in zip(o.abs_acc, o.norm_acc, strict=True)
        ]
        table[f"{t} tasks: paper"] = [
            _cell(a, n) for a, n in zip(r.abs_acc, r.norm_acc, strict=True)
        ]
        table[f"{t} tasks: diff"] = [
            _cell(a - ra, n - rn, signed=True)
            for a, n, ra, rn in zip(o.abs_acc, o.norm_acc, r.abs_acc, r.norm_acc, strict=True)
        ]
        table[f"{t} tasks: storage Gbit (ours / paper)"] = [
            f"{'-' if math.isnan(s) else f'{s:.1f}'} / {'-' if pd.isna(p) else p}"
            for s, p in zip(o.storage_gbit, r.storage_gbit, strict=True)
        ]
    return table


def report(
    paths: Sequence[str | Path], out: Path, logger_kind: str = "wandb", wandb_mode: str = "offline"
) -> dict[str, pd.DataFrame]:
    """Build, write and log the tables of the runs in ``paths``; returns them by model."""
    files = result_files(paths)
    reference = references()
    ours = our_results(files)
    tables = {model: comparison(ours, reference, model) for model in dict.fromkeys(ours.model)}
    lines = [
        "# Reproduction of the TALL masks tables",
        "",
        'Test accuracy "abs (norm)" in %: average absolute and normalised accuracy over the '
        "tasks; diff = ours - paper; storage in Gbit. Published numbers: Wang et al., ICML 2024 "
        "(results/reference/tall_masks_vision.csv, tall_masks_nlp.csv).",
        "",
        "Inputs: " + ", ".join(f"`{f}`" for f in files),
    ]
    for model, table in tables.items():
        lines += ["", f"## {model}", "", markdown(table).rstrip()]
    atomic_write_text(out, "\n".join(lines) + "\n")
    run = {"run_dir": out.parent, "name": "reproduction-report",
           "config": {"inputs": [str(f) for f in files]}}  # fmt: skip
    logger = WandbLogger(**run, mode=wandb_mode) if logger_kind == "wandb" else NullLogger()
    failed = True
    try:
        for model, table in tables.items():
            logger.log_table(f"reproduction/{model}", table.reset_index())
        failed = False
    finally:
        logger.finish(failed=failed)
    return tables


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories or results.csv files")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reproduction.md")
    parser.add_argument("--logger", choices=["wandb", "none"], default="wandb")
    parser.add_argument(
        "--wandb-mode", choices=["offline", "online", "disabled"], default="offline"
    )
    args = parser.parse_args(argv)
    try:
        tables = report(args.runs, args.out, args.logger, args.wandb_mode)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for model, table in tables.items():
        print(f"\n{model}\n{table.to_string()}")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
