"""The T5 family end to end, offline, on the stand-ins: fine-tune an expert
(``experiments.finetune_t5``), then the command line ``python -m experiments.run
model=t5_large benchmark=nlp7 ...`` (run as ``__main__`` with those arguments, in this
process to spare a second start of torch and transformers): prompts, rank
classification and generation, merging, selection on val, test; the reproduction report
next to the published NLP table; and ``model=flan_t5_base benchmark=glue8`` with LoRA
experts through the task-vector pipeline."""

from __future__ import annotations

import json
import runpy
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluation.results import AVERAGE, read_rows
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.context import RunContext
from experiments.loggers import NullLogger
from experiments.report import report
from tests.evaluation.t5.conftest import NLP_TASKS, ROOT, overrides


def composed(config: str, *extra: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config, overrides=list(extra))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'experiments.run' found in sys.modules")
def test_finetune_merge_select_evaluate_and_report(standins, tmp_path, monkeypatch):
    from experiments.finetune_t5 import finetune

    cache, experts = tmp_path / "cache", tmp_path / "experts"
    local = [o for o in overrides(standins, "t5") if not o.startswith(("model=", "benchmark="))]
    cfg = composed("finetune_t5", "model=t5_large", "benchmark=nlp11", *local, "task=paws",
                   "finetune.steps=3", "finetune.batch_size=4", "finetune.grad_accumulation=2",
                   "finetune.eval_every=1", f"output_dir={experts}", f"cache_dir={cache}",
                   "device=cpu", "progress=false")  # fmt: skip
    record = finetune(cfg)
    assert record["task"] == "paws" and record["steps"] == 3 and 1 <= record["best_step"] <= 3
    assert record["train_size"] == 24 and 0 <= record["test_accuracy"] <= 100
    trained = experts / "t5-tiny" / "paws"
    assert (trained / "config.json").exists() and (trained / "mergelab_finetune.json").exists()

    methods = "[zeroshot,finetuned,weight_averaging,task_arithmetic,ties,tall_masks]"
    run_dir = tmp_path / "run"
    command = ["experiments.run", *overrides(standins, "t5"),
               f"+model.expert_sources.paws={trained}", f"cache_dir={cache}", "device=cpu",
               "progress=false", f"method={methods}", "logger=none", "protocol.alphas=[0.5,1.0]",
               f"store_dir={tmp_path / 'store'}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", command)
    runpy.run_module("experiments.run", run_name="__main__")  # python -m experiments.run ...

    rows = read_rows(run_dir / "results.csv")
    assert set(rows.benchmark) == {"nlp7"} and set(rows.model) == {"t5_large"}
    test, val = rows[rows.split == "test"], rows[rows.split == "val"]
    ft = test[(test.method == "Fine-tuned") & (test.metric == "accuracy")].set_index("task").value
    assert ft["paws"] == pytest.approx(record["test_accuracy"])  # the fine-tune's own score
    assert set(ft.index) == {*NLP_TASKS, AVERAGE}
    ties = val[(val.method == "TIES") & (val.task == AVERAGE)]
    assert {json.loads(h)["alpha"] for h in ties.hyperparameters} == {0.5, 1.0}
    tall = test[(test.method == "TALL mask + TA") & (test.task == AVERAGE)]
    assert json.loads(tall.hyperparameters.iloc[0])["lam"] == "per_task"
    storage = test[test.metric == "storage_gbit"].set_index("method").value
    n = sum(v.numel() for v in standins["t5"]["state"].values())
    assert storage["Task arithmetic"] == pytest.approx(32 * n / 1e9)

    out = tmp_path / "reproduction.md"
    tables = report([run_dir], out, logger_kind="none")
    table = tables["t5_large"]
    assert "3 tasks: ours" in table and table.loc["Task arithmetic", "7 tasks: paper"] == (
        "71.9 (85.3)"
    )
    assert "## t5_large" in out.read_text()


def test_flan_glue_with_lora_experts_through_the_pipeline(standins, tmp_path):
    from experiments.pipelines.task_vectors import TaskVectorPipeline

    cfg = composed("config", *overrides(standins, "flan"), "model.experts=glue_lora16",
                   "benchmark.val_from=test",
                   "method=[finetuned,task_arithmetic,ties]", "protocol.alphas=[1.0]",
                   "logger=none", "eval.batch_size=8")  # fmt: skip
    pipeline = instantiate(cfg.pipeline)
    assert isinstance(pipeline, TaskVectorPipeline)
    pipeline.validate(cfg)
    ctx = RunContext("r", tmp_path, NullLogger(), Env(tmp_path / "cache"))
    rows = [r for _, unit in pipeline.run(cfg, ctx) for r in unit]
    test = {
        (r.method, r.task): r.value for r in rows if r.split == "test" and r.metric == "accuracy"
    }
    assert {t for _, t in test} == {"cola", "stsb", AVERAGE}
    assert {r.benchmark for r in rows} == {"glue8-val_from_test"}
    assert all(-100 <= v <= 100 for v in test.values())  # stsb: Spearman's rho, in %
