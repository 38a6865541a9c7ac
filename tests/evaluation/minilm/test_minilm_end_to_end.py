"""The MiniLM regime end to end, offline, on the stand-ins: ``python -m experiments.run
model=minilm benchmark=text_real8 ...`` (run as ``__main__`` in this process) trains the
heads and experts, merges with the task-vector methods (the data-based ones on the zoo's
task data), selects on val and scores on test;
``python -m experiments.task_vector_stats`` then reads the same cached experts."""

from __future__ import annotations

import json
import runpy
import sys

import pytest

from evaluation.results import AVERAGE, read_rows
from experiments import task_vector_stats
from tests.evaluation.minilm.conftest import TASKS

RECIPE = [
    "model.recipe.max_length=12",
    "model.recipe.head.steps=30",
    "model.recipe.head.lr=0.05",
    "model.recipe.finetune.steps=4",
    "model.recipe.finetune.batch_size=4",
    "model.recipe.finetune.lr=1e-3",
    "model.recipe.finetune.warmup=1",
]
BENCHMARK = [
    "benchmark=text_real8",
    "benchmark.num_tasks=null",
    "benchmark.name=tiny",
    f"benchmark.task_names=[{','.join(TASKS)}]",
    "benchmark.n_train=14",
    "benchmark.n_test=8",
]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'experiments.run' found in sys.modules")
@pytest.mark.filterwarnings("ignore:text task")
def test_run_then_task_vector_statistics(patched_sources, tmp_path, monkeypatch, capsys):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    methods = (
        "[zeroshot,finetuned,weight_averaging,task_arithmetic,ties,tall_masks,consensus,emr,"
        "regmean,fisher]"
    )
    command = [
        "experiments.run",
        "model=minilm",
        *RECIPE,
        *BENCHMARK,
        f"method={methods}",
        f"cache_dir={cache}",
        "device=cpu",
        "progress=false",
        "logger=none",
        "protocol.alphas=[0.5,1.0]",
        "method.regmean.hparams.examples=6",
        "method.fisher.hparams.examples=6",
        f"store_dir={tmp_path / 'store'}",
        f"hydra.run.dir={run_dir}",
    ]
    monkeypatch.setattr(sys, "argv", command)
    runpy.run_module("experiments.run", run_name="__main__")  # python -m experiments.run ...

    rows = read_rows(run_dir / "results.csv")
    assert set(rows.benchmark) == {"tiny"} and set(rows.model) == {"minilm"}
    test = rows[(rows.split == "test") & (rows.metric == "accuracy")]
    assert set(test.task) == {*TASKS, AVERAGE}
    assert {
        "Zero-shot",
        "Fine-tuned",
        "Task arithmetic",
        "TIES",
        "TALL mask + TA",
        "Consensus TA",
        "EMR-Merging",
        "RegMean",
        "Fisher merging",
    } <= set(test.method)
    val = rows[(rows.split == "val") & (rows.method == "Task arithmetic") & (rows.task == AVERAGE)]
    assert {json.loads(h)["alpha"] for h in val.hyperparameters} == {0.5, 1.0}
    assert ((test.value >= 0) & (test.value <= 100)).all()

    capsys.readouterr()
    text = task_vector_stats.main(
        ["model=minilm", *RECIPE, *BENCHMARK, f"cache_dir={cache}", "progress=false"]
    )
    assert "### Task vectors of minilm on tiny" in text and "pairwise cosine:" in text
    assert f"| {TASKS[0]} | 0.0" in text and text in capsys.readouterr().out
