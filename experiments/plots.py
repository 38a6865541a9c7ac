"""Figures of merging results (matplotlib, PNG), from the results store's rows
(:mod:`experiments.store`) as :mod:`experiments.compare` selects them:

* ``tasks``: average normalised test accuracy against the number of tasks (8/14/20), one
  line per method, mean ± std over seeds (Wang et al., ICML 2024, Fig. 1 style);
* ``alpha_<benchmark>``: each method's average normalised *val* accuracy against the
  scaling coefficient alpha (the curve the protocol selects on);
* ``lambda_<benchmark>``: TALL masks' normalised val accuracy per task against lambda
  (each task picks its own best lambda), and its mean over tasks;
* ``k_<benchmark>``: Consensus merging's average normalised test accuracy against k, the
  number of TALL masks that must keep a weight (from units run at several k);
* ``masks_<benchmark>``: how many tasks' TALL masks keep each weight, in % of the weights
  (the paper's mask-overlap histogram: weights used by no task are "catastrophic", by one
  task "selfish"); needs the zoo's experts (:func:`mask_overlap_from_store`).

A figure whose data is missing (one benchmark, one k, no TALL masks) is not drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.cache import atomic_path
from evaluation.results import AVERAGE


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Save ``fig`` as PNG through a temporary file, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _hparam(text: str, name: str) -> Any:
    return json.loads(text).get(name)


def _kept(rows: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    """``rows`` of the units in ``units``, with their ``row`` label."""
    return rows.merge(units[["unit_key", "row"]], on="unit_key")


def tasks_curve(stats: pd.DataFrame, methods: Sequence[str], path: Path) -> Path | None:
    """Normalised test accuracy against the number of tasks (``stats``: compare.summary)."""
    data = stats[stats.row.isin(methods)]
    if data.num_tasks.nunique() < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in methods:
        d = data[data.row == method].sort_values("num_tasks")
        if len(d):
            ax.errorbar(d.num_tasks, d.norm_mean, yerr=d.norm_std.fillna(0), marker="o",
                        capsize=3, label=method)  # fmt: skip
    ax.set_xticks(sorted(data.num_tasks.unique()))
    ax.set_xlabel("number of tasks")
    ax.set_ylabel("normalised test accuracy (%)")
    ax.set_title(f"{data.model.iloc[0]}: accuracy vs number of tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def alpha_curves(
    rows: pd.DataFrame, units: pd.DataFrame, methods: Sequence[str], path: Path
) -> Path | None:
    """Average normalised val accuracy against alpha, per method (mean ± std over seeds);
    a method with a search grid gets one line per search point."""
    val = _kept(rows[(rows.split == "val") & (rows.task == AVERAGE)
                     & (rows.metric == "normalized_accuracy")], units)  # fmt: skip
    searched = {u.unit_key: list(u.config["method"].get("search") or {}) for u in
                units.itertuples()}  # fmt: skip
    val = val[val.row.isin(methods)]
    val = val.assign(
        alpha=[_hparam(h, "alpha") for h in val.hyperparameters],
        point=[", ".join(f"{k}={json.loads(h).get(k)}" for k in searched[key])
               for h, key in zip(val.hyperparameters, val.unit_key, strict=True)],
    )  # fmt: skip
    curves = val.groupby(["row", "point", "alpha"], sort=False).value.agg(["mean", "std"])
    curves = curves.reset_index()
    lines = [(m, p) for m in methods for (r, p), g in curves.groupby(["row", "point"], sort=False)
             if r == m and len(g) > 1]  # fmt: skip
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, point in lines:
        d = curves[(curves.row == method) & (curves.point == point)].sort_values("alpha")
        label = f"{method} ({point})" if point else method
        ax.plot(d.alpha, d["mean"], marker=".", label=label)
        ax.fill_between(d.alpha, d["mean"] - d["std"].fillna(0),
                        d["mean"] + d["std"].fillna(0), alpha=0.15)  # fmt: skip
    ax.set_xlabel("scaling coefficient alpha")
    ax.set_ylabel("normalised val accuracy (%)")
    ax.set_title(f"{val.model.iloc[0]} on {val.benchmark.iloc[0]}: val accuracy vs alpha")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


def lambda_curve(rows: pd.DataFrame, units: pd.DataFrame, path: Path) -> Path | None:
    """TALL masks (the first TALL-masks row of ``units``): normalised val accuracy per task
    against lambda, and the mean over tasks."""
    tall = units[units.fn == "tall_masks"]
    if tall.empty:
        return None
    row = tall.row.iloc[0]
    val = _kept(rows[(rows.split == "val") & (rows.metric == "normalized_accuracy")], units)
    val = val[val.row == row]
    val = val.assign(lam=[_hparam(h, "lam") for h in val.hyperparameters])
    val = val.loc[np.array([isinstance(v, (int, float)) for v in val.lam], dtype=bool)]
    if val.lam.nunique() < 2:
        return None
    curves = val.groupby(["task", "lam"], sort=False).value.mean().reset_index()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, d in curves[curves.task != AVERAGE].groupby("task", sort=False):
        ax.plot(d.lam, d.value, color="0.6", lw=0.8, alpha=0.8)
        best = d.loc[d.value.idxmax()]
        ax.plot(best.lam, best.value, "o", color="0.4", ms=3)
    mean = curves[curves.task == AVERAGE].sort_values("lam")
    ax.plot(mean.lam, mean.value, color="C3", lw=2.5, marker="o", label="mean over tasks")
    ax.plot([], [], color="0.6", lw=0.8, label="one task (dot: its choice)")
    ax.set_xlabel("lambda (mask threshold)")
    ax.set_ylabel("normalised val accuracy (%)")
    ax.set_title(f"{row} on {val.benchmark.iloc[0]}: val accuracy vs lambda")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def k_curve(units: pd.DataFrame, path: Path) -> Path | None:
    """Consensus merging's normalised test accuracy against k (units run at several k),
    one line per label (Consensus TA, Consensus TIES), mean ± std over seeds."""
    cons = units[units.fn == "consensus"]
    cons = cons.assign(k=[c["method"].get("hparams", {}).get("k") for c in cons.config])
    cons = cons.loc[np.array([isinstance(k, int) for k in cons.k], dtype=bool)]
    if cons.k.nunique() < 2:
        return None
    curves = cons.groupby(["label", "k"]).norm.agg(["mean", "std"]).reset_index()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, d in curves.groupby("label", sort=False):
        ax.errorbar(d.k, d["mean"], yerr=d["std"].fillna(0), marker="o", capsize=3, label=label)
    ax.set_xticks(sorted(curves.k.unique()))
    ax.set_xlabel("k (a weight is kept if at least k TALL masks keep it)")
    ax.set_ylabel("normalised test accuracy (%)")
    ax.set_title(f"{cons.model.iloc[0]} on {cons.benchmark.iloc[0]}: Consensus vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def mask_overlap(counts: np.ndarray, path: Path, title: str) -> Path:
    """Bar chart of ``counts[j]`` (number of weights kept by exactly ``j`` tasks' masks,
    ``j = 0..T``) in % of all weights."""
    share = 100.0 * counts / counts.sum()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = ["C3", "C1", *["C0"] * (len(counts) - 2)][: len(counts)]
    ax.bar(np.arange(len(counts)), share, color=colours)
    names = ("kept by no task (catastrophic)", "by one task (selfish)", "by several tasks")
    for colour, name in zip(("C3", "C1", "C0"), names, strict=True):
        ax.bar([0], [0], color=colour, label=name)  # legend entries only
    ax.legend(fontsize=8)
    for x, s in enumerate(share):
        ax.annotate(f"{s:.1f}", (x, s), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xlabel("number of tasks whose TALL mask keeps the weight")
    ax.set_ylabel("weights (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def mask_counts(
    config: dict[str, Any], lams: Sequence[float], cache_dir: str | None, device: str
) -> np.ndarray:
    """Histogram (length ``T + 1``) of how many tasks' TALL masks keep each weight, for the
    zoo and benchmark of a stored TALL-masks unit's ``config``, at per-task ``lams``.
    Loads the experts (from the cache the zoo builds into); holds the T masks in memory at
    1 byte per weight per task."""
    import torch
    from hydra.utils import instantiate

    import merging
    from evaluation.cache import cache_root
    from evaluation.zoo import Env

    zoo, benchmark = instantiate(config["model"]), instantiate(config["benchmark"])
    tasks = benchmark.tasks()
    experts = zoo.load(benchmark, tasks, Env(cache_root(cache_dir), device, False))
    taus = [merging.TaskVector(experts.experts[t.name], experts.pretrained) for t in tasks]
    options = {k: v for k, v in config["method"].get("hparams", {}).items() if k != "lam"}
    masks = merging.tall_masks_of(taus, lam=list(lams), device=device, **options)
    counts = np.zeros(len(tasks) + 1, dtype=np.int64)
    for key in masks[0]:
        kept = sum(m[key].to(torch.int16) for m in masks)
        counts += np.bincount(kept.flatten().numpy(), minlength=len(tasks) + 1)
    return counts


def mask_overlap_from_store(
    rows: pd.DataFrame, units: pd.DataFrame, out_dir: Path, cache_dir: str | None, device: str
) -> list[Path]:
    """The mask-overlap histogram of the newest TALL-masks unit of each benchmark, at the
    lambdas it chose per task on val (its test rows); ``ValueError`` if there is none."""
    tall = units[units.fn == "tall_masks"].sort_values("created")
    if tall.empty:
        raise ValueError("--masks: no TALL-masks unit in the comparison's store rows")
    figures = []
    for benchmark, group in tall.groupby("benchmark", sort=False):
        unit = group.iloc[-1]
        test = rows[(rows.unit_key == unit.unit_key) & (rows.split == "test")
                    & (rows.metric == "accuracy") & (rows.task != AVERAGE)]  # fmt: skip
        lam_of = {t: _hparam(h, "lam") for t, h in zip(test.task, test.hyperparameters,
                                                         strict=True)}  # fmt: skip
        config = {**unit.config}
        tasks = [t.name for t in _tasks(config)]
        counts = mask_counts(config, [float(lam_of[t]) for t in tasks], cache_dir, device)
        title = (f"{unit.label}, {unit.model} on {benchmark}: weights by number of tasks "
                 "using them")  # fmt: skip
        figures.append(mask_overlap(counts, out_dir / f"masks_{benchmark}.png", title))
    return figures


def _tasks(config: dict[str, Any]) -> list[Any]:
    from hydra.utils import instantiate

    return instantiate(config["benchmark"]).tasks()


def comparison_plots(
    rows: pd.DataFrame, units: pd.DataFrame, stats: pd.DataFrame, methods: Sequence[str],
    out_dir: Path,
) -> list[Path]:  # fmt: skip
    """Every figure the data allows (module docstring), into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [tasks_curve(stats, methods, out_dir / "tasks.png")]
    for benchmark, here in units.groupby("benchmark", sort=False):
        rows_b = rows[rows.benchmark == benchmark]
        figures += [
            alpha_curves(rows_b, here, methods, out_dir / f"alpha_{benchmark}.png"),
            lambda_curve(rows_b, here, out_dir / f"lambda_{benchmark}.png"),
            k_curve(here, out_dir / f"k_{benchmark}.png"),
        ]
    return [f for f in figures if f is not None]
