"""The whole path, config to result table, on a miniature sandbox (the README's run, small)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from evaluation.results import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "benchmark.num_tasks=2",
    "benchmark.n_train=200",
    "benchmark.n_test=100",
    "model.recipe.pretrain.samples_per_task=64",
    "model.recipe.pretrain.steps=4",
    "model.recipe.pretrain.warmup=1",
    "model.recipe.finetune.steps=4",
    "model.recipe.finetune.warmup=1",
    "protocol.alphas=[0.5,1.0]",
    "progress=false",
]


def run(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    result = run(*TINY, f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out"


def test_run_writes_long_format_results_and_table(finished_run):
    frame = pd.read_csv(finished_run / "results.csv")
    assert list(frame.columns) == list(COLUMNS)
    test = frame[(frame.split == "test") & (frame.metric == "accuracy")]
    methods = [
        "Zero-shot",
        "Fine-tuned",
        "Weight averaging",
        "Task arithmetic",
        "TIES",
        "TALL mask + TA",
        "Consensus TA",
    ]
    assert list(dict.fromkeys(test.method)) == methods
    assert set(test.task) == {"average", *frame[frame.task != "average"].task}
    # the selection curves: every alpha of task arithmetic was scored on val
    ta_val = frame[(frame.method == "Task arithmetic") & (frame.split == "val")]
    assert ta_val.hyperparameters.nunique() == 2
    # the experts' normalised accuracy is 100 by definition
    ft = frame[(frame.method == "Fine-tuned") & (frame.metric == "normalized_accuracy")]
    assert (ft.value.round(6) == 100).all()
    table = (finished_run / "table.md").read_text()
    assert "avg norm" in table and "Consensus TA" in table


def test_run_logs_an_offline_wandb_run(finished_run):
    runs = list((finished_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_resolved_config_is_written(finished_run):
    text = (finished_run / "config_resolved.yaml").read_text()
    assert "alphas:" in text and "${" not in text


@pytest.mark.parametrize(
    "override, message",
    [
        ("method=no_such_method", "Available options in 'method'"),
        ("benchmark=no_such_benchmark", "Available options in 'benchmark'"),
        ("model=no_such_model", "Available options in 'model'"),
        ("+method.ties.hparams.q=1", "no option method.ties.hparams.q"),
        ("method.ties.hparams.density=2.0", "'density'"),
        ("eval.batch_size=-1", "eval.batch_size must be >= 1"),
        ("method.ties.alphas=[]", "method.ties.alphas is empty"),
        ("model.recipe.vision.widht=3", "widht"),
    ],
)
def test_bad_input_fails_fast_naming_the_culprit(tmp_path, override, message):
    result = run(override, "logger=none", f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path}/o")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "sandbox_clip").exists()  # failed before building anything
