"""experiments.compare on a small hand-made store: means and deviations over seeds, settings
told apart, published numbers and differences, the plots it draws."""

import json
import math

import pandas as pd
import pytest

from evaluation.results import Row
from experiments.compare import compare, main, replicates, summary, units_of
from experiments.store import ResultStore

TASKS = ("a", "b")


def put(store, model, benchmark, label, fn, seed, value, created, tasks=TASKS, **hparams):
    """A unit whose test accuracy is ``value`` on every task (normalised: value + 10), with
    val curves over two alphas (and lambdas for TALL masks)."""
    config = {"model": {"name": model, "recipe": {"seed": seed}},
              "benchmark": {"name": benchmark, "num_tasks": len(tasks)}, "device": "cpu",
              "method": {"m": {"fn": fn, "hparams": hparams}}}  # fmt: skip
    rows = []
    points = [{"lam": lam, "alpha": 1.0} for lam in (0.2, 0.4)] if fn == "tall_masks" else \
        [{"alpha": alpha} for alpha in (0.5, 1.0)]  # fmt: skip
    for i, point in enumerate(points):
        for task in (*tasks, "average"):
            for metric, v in (("accuracy", value + i), ("normalized_accuracy", value + 10 + i)):
                rows.append(Row("r", benchmark, model, label, json.dumps({**hparams, **point}),
                                task, "val", metric, v))  # fmt: skip
    for task in (*tasks, "average"):
        for metric, v in (("accuracy", value), ("normalized_accuracy", value + 10)):
            rows.append(Row("r", benchmark, model, label, json.dumps({**hparams, **points[0]}),
                            task, "test", metric, v))  # fmt: skip
    key = f"{label}-{benchmark}-{seed}-{created}-{json.dumps(hparams)}"
    ResultStore(store).put(key, "m", rows, config, "code")
    frame = pd.read_parquet(ResultStore(store).unit_path(key))
    frame["created"] = pd.Timestamp(f"2026-01-0{created}", tz="UTC")
    frame.to_parquet(ResultStore(store).unit_path(key))


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    for seed, (ta, tall) in enumerate([(60.0, 80.0), (62.0, 84.0), (64.0, 88.0)]):
        put(s, "sandbox_clip", "sandbox2", "Task arithmetic", "task_arithmetic", seed, ta, 1)
        put(s, "sandbox_clip", "sandbox2", "TALL mask + TA", "tall_masks", seed, tall, 1)
    put(s, "sandbox_clip", "sandbox2", "TALL mask + TA", "tall_masks", 0, 70.0, 2)  # newer code
    put(s, "sandbox_clip", "sandbox2", "TIES", "ties", 0, 65.0, 1, density=0.2)
    put(s, "sandbox_clip", "sandbox2", "TIES", "ties", 0, 66.0, 1, density=0.1)
    for k, v in ((1, 50.0), (2, 70.0), (3, 60.0)):
        put(s, "sandbox_clip", "sandbox2", "Consensus TA", "consensus", 0, v, 1, k=k)
    put(
        s,
        "sandbox_clip",
        "sandbox3",
        "Task arithmetic",
        "task_arithmetic",
        0,
        55.0,
        1,
        tasks=("a", "b", "c"),
    )
    put(
        s,
        "sandbox_clip",
        "sandbox3",
        "TALL mask + TA",
        "tall_masks",
        0,
        75.0,
        1,
        tasks=("a", "b", "c"),
    )
    put(
        s,
        "clip_vit_b32",
        "tall8",
        "Task arithmetic",
        "task_arithmetic",
        0,
        70.0,
        1,
        tasks=tuple("abcdefgh"),
    )
    return s


def test_seeds_are_averaged_and_the_newest_unit_of_a_seed_counts(store):
    units = replicates(units_of(ResultStore(store).results()))
    stats = summary(units).set_index(["benchmark", "row"])
    tall = stats.loc[("sandbox2", "TALL mask + TA")]
    assert tall.n == 3 and tall.abs_mean == pytest.approx((70 + 84 + 88) / 3)
    assert tall.abs_std == pytest.approx(pd.Series([70.0, 84, 88]).std())
    assert tall.norm_mean == pytest.approx(tall.abs_mean + 10)
    assert math.isnan(stats.loc[("sandbox3", "Task arithmetic")].abs_std)  # one seed
    # one label with two settings: each its own row, named by the key that differs
    assert {"TIES [method.hparams.density=0.1]", "TIES [method.hparams.density=0.2]"} <= {
        r for _, r in stats.index
    }


def test_compare_table_lists_baselines_then_the_new_method_with_differences(store, tmp_path):
    tables = compare(store, "TALL mask + TA", ["Task arithmetic"], model="sandbox_clip",
                     out=tmp_path / "out", logger_kind="none")  # fmt: skip
    assert list(tables) == ["sandbox2", "sandbox3"]
    table = tables["sandbox2"]
    assert list(table.index) == ["Task arithmetic", "TALL mask + TA"]
    assert table.loc["Task arithmetic", "abs"] == "62.0 ± 2.0"
    assert table.loc["Task arithmetic", "seeds"] == 3
    assert table.loc["Task arithmetic", "new - this (norm)"] == f"{(242 / 3) - 62:+.1f}"
    assert table.loc["TALL mask + TA", "paper abs (norm)"] == "-"  # no published sandbox
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "## sandbox3 (3 tasks)" in text and "Per task" in text
    assert "| method | a | b | avg abs |\n" in text  # per task, mean over seeds
    assert "| Task arithmetic | 62.0 | 62.0 | 62.0 |\n" in text
    numbers = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert set(numbers.benchmark) == {"sandbox2", "sandbox3"}


def test_published_numbers_are_matched_by_architecture_and_task_count(store, tmp_path):
    table = compare(store, "Task arithmetic", [], model="clip_vit_b32", out=tmp_path / "o",
                    logger_kind="none")["tall8"]  # fmt: skip
    assert table.loc["Task arithmetic", "paper abs (norm)"] == "70.8 (76.5)"
    assert table.loc["Task arithmetic", "ours - paper (abs)"] == "-0.8"


def test_plots_are_drawn_where_the_data_allows(store, tmp_path):
    compare(store, "TALL mask + TA", ["Task arithmetic", "Consensus TA [method.hparams.k=2]"],
            model="sandbox_clip", out=tmp_path / "out", logger_kind="none")  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert names == ["alpha_sandbox2.png", "alpha_sandbox3.png", "k_sandbox2.png",
                     "lambda_sandbox2.png", "lambda_sandbox3.png", "tasks.png"]  # fmt: skip
    assert all((tmp_path / "out" / "plots" / n).stat().st_size > 10_000 for n in names)


def test_unknown_methods_and_empty_stores_are_named(store, tmp_path, capsys):
    with pytest.raises(ValueError, match="'Nope' is not in the store for sandbox_clip"):
        compare(store, "TALL mask + TA", ["Nope"], model="sandbox_clip", out=tmp_path / "o",
                logger_kind="none")  # fmt: skip
    with pytest.raises(ValueError, match=r"the store holds 2 configurations of 'TIES' for sandb"
                       r"ox_clip, .*: give one of \['TIES \[method.hparams.density=0.1\]', "):
        compare(store, "TALL mask + TA", ["TIES"], model="sandbox_clip", out=tmp_path / "o",
                logger_kind="none")  # fmt: skip
    with pytest.raises(ValueError, match="is empty"):
        compare(tmp_path / "empty", "X", logger_kind="none")
    with pytest.raises(SystemExit, match="--model is needed"):
        main(["--method", "Task arithmetic", "--store", str(store), "--logger", "none"])


def test_the_command_line_prints_the_tables(store, tmp_path, capsys):
    main(
        [
            "--method",
            "TALL mask + TA",
            "--baselines",
            "Task arithmetic",
            "--store",
            str(store),
            "--benchmark",
            "sandbox2",
            "--out",
            str(tmp_path / "cli"),
            "--logger",
            "none",
        ]
    )
    out = capsys.readouterr().out
    assert "sandbox2" in out and "TALL mask + TA" in out and "written:" in out
    assert (tmp_path / "cli" / "compare.md").exists()
