"""The whole path, config to result table, on a miniature sandbox (the README's run, small)."""

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from evaluation.results import COLUMNS
from experiments.run import GPU_NODES

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


ENV = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}


def command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *overrides]


def run(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*overrides), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    """A directory whose ``cache`` holds the tiny zoo, built once for this module."""
    tmp = tmp_path_factory.mktemp("run")
    result = run(*TINY, f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'out'}",
                 f"store_dir={tmp / 'completed'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.fixture(scope="module")
def finished_run(warm) -> Path:
    return warm / "out"


def tiny(warm: Path, *overrides: str) -> list[str]:
    """The tiny run on the warm cache, with its own store of finished methods."""
    return [*TINY, f"cache_dir={warm / 'cache'}", "logger=none", *overrides]


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


def test_runs_started_together_never_share_a_directory(warm, tmp_path):
    procs = [
        subprocess.Popen(command(*tiny(warm, f"method={m}", "resume=false")), cwd=tmp_path,
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for m in ("zeroshot", "weight_averaging")
    ]  # fmt: skip
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    dirs = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(dirs) == 2
    methods = {pd.read_csv(d / "results.csv").method.iloc[0] for d in dirs}
    assert methods == {"Zero-shot", "Weight averaging"}


def test_two_runs_given_one_directory_never_share_it(warm, tmp_path):
    out = tmp_path / "out"
    args = tiny(warm, "method=zeroshot", "resume=false", f"store_dir={tmp_path / 'store'}",
                f"hydra.run.dir={out}")  # fmt: skip
    procs = [subprocess.Popen(command(*args, f"run_name=run{i}"), cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]  # fmt: skip
    codes = [p.wait(timeout=600) for p in procs]
    assert sorted(codes) == [0, 1], [p.stderr.read()[-2000:] for p in procs]
    winner, loser = (procs[codes.index(c)] for c in (0, 1))
    refusal = loser.stderr.read()
    assert f"hydra.run.dir={out}: it is the run directory of pid {winner.pid}" in refusal
    assert "the results store (store_dir) resumes from any directory" in refusal
    run_name = f"run{procs.index(winner)}"
    assert set(pd.read_csv(out / "results.csv").run) == {run_name}
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert f"run_name: {run_name}" in (out / ".hydra" / "config.yaml").read_text()
    again = run(*args, "run_name=later")  # one after the other: refused too, nothing touched
    assert again.returncode == 1 and "hydra.run.dir=" in again.stderr
    assert files == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_run_refused_for_bad_input_leaves_its_directory_to_the_fixed_command(warm, tmp_path):
    out = tmp_path / "out"
    args = tiny(warm, "method=zeroshot", f"store_dir={tmp_path / 'store'}", f"hydra.run.dir={out}")
    bad = run(*args, "protocol.alphas=[0.3,0.3]")
    assert bad.returncode == 1 and "protocol.alphas repeats 0.3" in bad.stderr
    assert not out.exists()  # its claim, .hydra/ and log removed: nothing of a run was written
    assert run(*args).returncode == 0 and (out / "results.csv").exists()


def test_a_directory_from_before_claims_is_refused_before_hydra_writes_there(warm, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.csv").write_text("rows of an earlier run")
    for mode, key in (("hydra.run.dir", "hydra.run.dir"), ("-m", "hydra.sweep.dir")):
        args = ["-m"] if mode == "-m" else []
        result = run(*args, *tiny(warm, "method=zeroshot", f"store_dir={tmp_path / 'store'}"),
                     f"{key}={old}")  # fmt: skip
        assert result.returncode == 1
        assert f"{key}={old}: it holds files of an earlier run or others (results.csv)" in (
            result.stderr
        )
        assert [p.name for p in old.iterdir()] == ["results.csv"]  # no .hydra/, no log


def test_a_sweep_checks_every_job_before_the_first_one_runs(warm, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("-m", *tiny(warm, "method=ties", f"store_dir={tmp_path / 'store'}"),
                 "method.ties.hparams.density=0.2,1.5", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 1
    assert "sweep job 1 of 2 (method.ties.hparams.density=1.5): ValueError" in result.stderr
    assert "option 'density' must be in (0, 1], got 1.5" in result.stderr
    assert not sweep.exists() and not list((tmp_path / "store").rglob("*.parquet"))  # none ran


@pytest.mark.skipif(any(glob.glob(p) for p in GPU_NODES), reason="needs a machine without GPU")
def test_a_sweep_leaves_the_device_to_its_jobs(warm, tmp_path):
    """The jobs of a sweep may run elsewhere (a SLURM array's GPU nodes): the pre-check
    does not test ``device`` on the submitting machine; each job tests its own."""
    result = run("-m", *tiny(warm, "method=zeroshot,weight_averaging", "device=cuda",
                             f"store_dir={tmp_path / 'store'}"),
                 f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert result.returncode == 1 and "sweep job" not in result.stderr
    assert "device='cuda' but no CUDA device is available" in result.stderr


def test_sweep_jobs_never_share_a_subdirectory(warm, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("-m", *tiny(warm, "method=ties", f"store_dir={tmp_path / 'store'}"),
                 "method.ties.hparams.density=0.2,0.3", f"hydra.sweep.dir={sweep}",
                 "hydra.sweep.subdir=same")  # fmt: skip
    assert result.returncode == 1
    assert "hydra.sweep.subdir='same' is the directory of sweep jobs 0 and 1" in result.stderr
    assert not sweep.exists() and not list((tmp_path / "store").rglob("*.parquet"))  # none ran


def test_a_rerun_reuses_finished_methods_and_gives_the_same_rows(warm, tmp_path):
    args = tiny(warm, "method=[zeroshot,task_arithmetic]", f"store_dir={tmp_path / 'done'}")
    first = run(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0 and "resumed" not in first.stdout
    second = run(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert second.returncode == 0
    assert "reused the finished rows of zeroshot, task_arithmetic" in second.stdout
    a, b = (pd.read_csv(tmp_path / d / "results.csv").drop(columns="run") for d in "ab")
    pd.testing.assert_frame_equal(a, b)
    third = run(*args, "resume=false", f"hydra.run.dir={tmp_path / 'c'}")
    assert "resumed" not in third.stdout


def test_an_interrupted_run_keeps_finished_methods_and_resumes(warm, tmp_path):
    args = tiny(warm, "method=[zeroshot,tall_masks,ties,task_arithmetic]",
                "protocol.alphas=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]",
                f"store_dir={tmp_path / 'done'}")  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(*args, f"hydra.run.dir={out}"), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "results.csv").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    rows = pd.read_csv(out / "results.csv")
    assert "Zero-shot" in set(rows.method)  # the first method's rows survived
    if proc.returncode != 0:  # interrupted before the end: no table, never a partial one
        assert not (out / "table.md").exists()
    again = run(*args, f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0 and "reused the finished rows of zeroshot" in again.stdout


def test_a_rerun_sweep_skips_its_finished_jobs(warm, tmp_path):
    args = ["-m", *tiny(warm, f"store_dir={tmp_path / 'done'}"),
            "method=zeroshot,weight_averaging", f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    assert run(*args).returncode == 0
    assert "hydra.sweep.dir=" in run(*args).stderr  # its directory is taken: a new one resumes
    args[-1] = f"hydra.sweep.dir={tmp_path}/again"
    again = subprocess.run([sys.executable, "-X", "importtime", *command(*args)[1:]], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0
    assert again.stdout.count("resumed: reused the finished rows") == 2
    assert again.stdout.count("nothing left to compute") == 2
    imported = re.findall(r"\|\s*([\w.]+)$", again.stderr, re.M)
    assert "pandas" in imported
    if not any(glob.glob(pattern) for pattern in GPU_NODES):  # device=auto asks torch there
        assert "torch" not in imported  # complete jobs import no torch, zoo or method


def test_two_methods_with_one_label_are_refused_before_compute(tmp_path):
    result = run("method=[ties]", "+method@method.ties_dense=ties",
                 "method.ties_dense.hparams.density=0.05", "logger=none",
                 f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path}/o")  # fmt: skip
    assert result.returncode != 0
    assert "share the label 'TIES'" in result.stderr
    assert not (tmp_path / "sandbox_clip").exists()


def test_a_failed_run_is_marked_failed_in_wandb(monkeypatch, tmp_path):
    from experiments.loggers import WandbLogger

    finished = []

    class FakeRun:
        def finish(self, exit_code=None):
            finished.append(exit_code)

    logger = WandbLogger.__new__(WandbLogger)
    logger.run = FakeRun()
    logger.finish(failed=True)
    logger.finish()
    assert finished == [1, 0]


def test_wandb_mode_from_the_environment_wins_over_the_default(monkeypatch, tmp_path):
    import wandb

    from experiments.loggers import WandbLogger

    seen = {}
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw))
    WandbLogger(run_dir=tmp_path, name="n", config={})
    assert seen["mode"] == "disabled"


def test_stored_rows_are_keyed_by_the_package_data_too():
    """Class names, templates and the other data files the code reads decide rows as the
    code does: an edit of one (e.g. a template in evaluation/sandbox/data/tasks.json) must
    not resume from rows computed before it."""
    from experiments.run import CODE_FILES, ROOT

    data = {p for d in ("merging", "evaluation") for p in (ROOT / d).rglob("data/*.json")}
    assert ROOT / "evaluation/sandbox/data/tasks.json" in data
    assert data <= set(CODE_FILES)
