"""Data-based methods through ``python -m experiments.run``: Fisher, RegMean, RegMean++ and
AdaMerging on the tiny sandbox and on the CLIP stand-ins (open_clip architecture, local
datasets), with the examples they consumed and AdaMerging's test-time adaptation mark in
the result rows; a zoo without task data is refused naming the model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from evaluation.protocol import Method
from evaluation.results import AVERAGE
from evaluation.sandbox import zoo as sandbox_zoo
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.context import RunContext
from experiments.loggers import NullLogger
from experiments.pipelines.task_vector_run import data_request
from experiments.pipelines.task_vectors import TaskVectorPipeline
from tests.evaluation.clip.test_clip_end_to_end import files, local, zoo_overrides  # noqa: F401
from tests.experiments.test_run import TINY

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT),
       "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
METHODS = ["fisher", "regmean", "regmean_plusplus", "adamerging_taskwise", "adamerging_layerwise"]
SMALL = [  # few examples and steps: the tiny zoos need no more to exercise every path
    "method.fisher.hparams.examples=6",
    "method.regmean.hparams.examples=6",
    "method.regmean.hparams.batch_size=4",
    "method.regmean_plusplus.hparams.examples=5",
    "method.adamerging_taskwise.hparams.steps=4",
    "method.adamerging_taskwise.hparams.batch_size=8",
    "method.adamerging_layerwise.hparams.steps=3",
    "method.adamerging_layerwise.hparams.batch_size=8",
    "method.adamerging_layerwise.hparams.examples=10",
]
LABELS = {"fisher": "Fisher merging", "regmean": "RegMean", "regmean_plusplus": "RegMean++",
          "adamerging_taskwise": "AdaMerging task-wise (TTA)",
          "adamerging_layerwise": "AdaMerging layer-wise (TTA)"}  # fmt: skip


def run(tmp: Path, *overrides: str) -> pd.DataFrame:
    """``experiments.run`` with ``overrides``; its result rows."""
    out = tmp / "out"
    command = [sys.executable, "-m", "experiments.run", *overrides, "logger=none",
               f"method=[{','.join(METHODS)}]", *SMALL, f"hydra.run.dir={out}",
               f"store_dir={tmp / 'done'}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert all(label in (out / "table.md").read_text() for label in LABELS.values())
    return pd.read_csv(out / "results.csv")


def check_rows(rows: pd.DataFrame, tasks: list[str], train: dict[str, int], test: dict[str, int]):
    """Accuracy on every task, the examples each method consumed (from train, or from test
    for AdaMerging) and the test-time adaptation mark."""
    expected_used = {"fisher": 6, "regmean": 6, "regmean_plusplus": 5}
    for key, label in LABELS.items():
        mine = rows[rows.method == label]
        acc = mine[(mine.split == "test") & (mine.metric == "accuracy")]
        assert set(acc.task) == {*tasks, AVERAGE}, label
        used = mine[mine.metric == "examples_used"].set_index("task")
        assert list(used.index) == tasks, label
        tta = mine[mine.metric == "test_time_adaptation"].value.item()
        if key.startswith("adamerging"):
            assert set(used.split) == {"test"} and tta == 1.0
            limit = 10 if key == "adamerging_layerwise" else None
            for task in tasks:
                n = used.value[task]
                assert 8 <= n <= min(test[task], limit or test[task]), (label, task, n)
        else:
            assert set(used.split) == {"train"} and tta == 0.0
            assert all(used.value[t] == min(expected_used[key], train[t]) for t in tasks)
        cost = mine[mine.split == "merge"].set_index("metric").value
        assert cost["merge_seconds"] > 0, label
        alphas = {json.loads(h).get("alpha") for h in mine[mine.split == "val"].hyperparameters}
        assert alphas == {1.0}, label


@pytest.fixture(scope="module")
def sandbox_rows(tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    tmp = tmp_path_factory.mktemp("data_sandbox")
    return run(tmp, *TINY, f"cache_dir={tmp / 'cache'}"), tmp / "cache"


@pytest.mark.slow
def test_data_based_methods_run_on_the_sandbox(sandbox_rows):
    rows, _ = sandbox_rows
    tasks = [t for t in dict.fromkeys(rows.task) if t != AVERAGE]
    assert len(tasks) == 2
    # TINY: n_train 200 (180 train after val), n_test 100
    check_rows(rows, tasks, {t: 180 for t in tasks}, {t: 100 for t in tasks})
    acc = rows[(rows.split == "test") & (rows.metric == "accuracy") & (rows.task == AVERAGE)]
    assert acc.value.between(0, 100).all()


@pytest.mark.slow
def test_data_based_methods_run_on_the_clip_standins(files, tmp_path):  # noqa: F811
    overrides = ["model=clip_vit_b32", *local(files), *zoo_overrides(files),
                 f"cache_dir={tmp_path / 'cache'}", "device=cpu", "progress=false"]  # fmt: skip
    rows = run(tmp_path, *overrides)
    tasks = ["Cars", "DTD"]
    check_rows(rows, tasks, {t: 36 for t in tasks}, {t: 12 for t in tasks})  # 40 train - 4 val


@pytest.mark.slow
def test_a_zoo_without_task_data_is_refused_naming_the_model(sandbox_rows, monkeypatch, tmp_path):
    _, cache = sandbox_rows
    load = sandbox_zoo.SandboxClipZoo.load

    def without_data(self, *args, **kwargs):
        return dataclasses.replace(load(self, *args, **kwargs), task_data=None)

    monkeypatch.setattr(sandbox_zoo.SandboxClipZoo, "load", without_data)
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=[*TINY, "method=[task_arithmetic,regmean]"])
    ctx = RunContext("r", tmp_path, NullLogger(), Env(cache))
    with pytest.raises(ValueError, match="method.regmean .*needs task data, which model "
                                         "'sandbox_clip' cannot provide"):  # fmt: skip
        next(TaskVectorPipeline().run(cfg, ctx))


def test_the_split_and_example_count_a_method_asks_for():
    def method(fn, **kw):
        return Method(key=fn, label=fn, fn=fn, **kw)

    assert data_request(method("fisher")) == ("train", 256)
    assert data_request(method("regmean", search={"examples": [16, 64]})) == ("train", 64)
    assert data_request(method("adamerging", hparams={"granularity": "task"})) == ("test", None)
    assert data_request(method("adamerging", hparams={"examples": 50})) == ("test", 50)
