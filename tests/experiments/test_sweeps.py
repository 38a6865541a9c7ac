"""Sweeps at scale: joblib and SLURM launchers, resumed sweeps, the Optuna search on the val
objective, methods sharded over several devices -- on the miniature sandbox of test_run."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from evaluation.results import Row
from experiments.pipelines.late_options import TALL_GRID
from experiments.pipelines.task_vectors import TaskVectorPipeline
from experiments.run import dependencies, resolve_device, unit_key, val_objective
from experiments.shards import shard_plan
from experiments.store import ResultStore
from tests.experiments.test_run import ENV, ROOT, TINY, command, run


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    """A directory whose ``cache`` holds the tiny zoo, built once for this module."""
    tmp = tmp_path_factory.mktemp("sweeps")
    result = run(*TINY, "method=zeroshot", "logger=none", f"cache_dir={tmp / 'cache'}",
                 f"hydra.run.dir={tmp / 'out'}", f"store_dir={tmp / 'store0'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def tiny(warm: Path, store: Path, *overrides: str) -> list[str]:
    return [*TINY, f"cache_dir={warm / 'cache'}", "logger=none", f"store_dir={store}", *overrides]


def row(task: str, split: str, metric: str, value: float, **hparams) -> Row:
    return Row("r", "b", "m", "M", json.dumps(hparams, sort_keys=True), task, split, metric, value)


def test_val_objective_is_the_selected_val_point_and_ignores_test():
    rows = [
        row("average", "val", "normalized_accuracy", 80.0, alpha=0.5),
        row("average", "val", "normalized_accuracy", 90.0, alpha=1.0),
        row("average", "test", "normalized_accuracy", 99.0, alpha=1.0),
        row("average", "val", "accuracy", 70.0, alpha=1.0),
    ]
    assert val_objective(rows) == 90.0
    assert val_objective([r for r in rows if r.split == "test"]) is None


def test_val_objective_with_per_task_selection_picks_each_tasks_best_val_accuracy():
    values = {
        ("a", 0.2): (50, 60),
        ("a", 0.4): (40, 99),
        ("b", 0.2): (10, 20),
        ("b", 0.4): (30, 40),
    }
    rows = [
        row(task, "val", metric, value, lam=lam)
        for (task, lam), pair in values.items()
        for metric, value in zip(("accuracy", "normalized_accuracy"), pair, strict=True)
    ]
    assert val_objective(rows, "per_task") == pytest.approx((60 + 40) / 2)


METHODS = {
    "zeroshot": {"fn": "zeroshot", "alphas": [1.0]},
    "ta": {"fn": "task_arithmetic", "alphas": [0.1] * 10},
    "ties": {"fn": "ties", "alphas": [0.1] * 10},
    "tall": {"fn": "tall_masks", "search": {"lam": [0.2] * 5}, "alphas": [1.0]},
    "cons": {"fn": "consensus", "hparams": {"lam": "from_tall_masks"}, "alphas": [0.1] * 10},
}


def test_the_task_vector_pipeline_declares_consensus_dependency_on_tall_masks():
    deps = dependencies(TaskVectorPipeline(), METHODS)
    assert deps == {"zeroshot": [], "ta": [], "ties": [], "tall": [], "cons": ["tall"]}
    fixed = {**METHODS, "cons": {"fn": "consensus", "hparams": {"lam": 0.4}}}
    assert dependencies(TaskVectorPipeline(), fixed)["cons"] == []  # a fixed lambda: none


DEFAULT_TALL = {"fn": "tall_masks", "hparams": {"base": "ta"}, "search": {"lam": TALL_GRID},
                "select": "per_task", "alphas": [1.0]}  # fmt: skip
CONSENSUS = {"fn": "consensus", "hparams": {"k": 2, "lam": "from_tall_masks", "base": "ta"},
             "alphas": [0.1] * 10}  # fmt: skip


@pytest.mark.parametrize(
    "change, depends",
    [
        ({}, False),  # the selection Consensus makes on its own: no dependency
        ({"hparams": {"base": "ta", "comparison": "strict"}}, True),
        ({"hparams": {"base": "ties"}}, True),
        ({"search": {"lam": [0.3, 0.4]}}, True),
        ({"select": "joint"}, True),
        ({"alphas": [0.5, 1.0]}, True),
    ],
)
def test_consensus_depends_on_a_tall_masks_method_only_if_it_selects_otherwise(change, depends):
    """Consensus next to the default TALL masks and Consensus alone are one unit (the same
    lambdas, one stored configuration); another TALL selection in the run keys it apart."""
    methods = {"tall": {**DEFAULT_TALL, **change}, "cons": CONSENSUS}
    deps = dependencies(TaskVectorPipeline(), methods)
    assert deps["cons"] == (["tall"] if depends else [])
    config = {"model": {"name": "m"}, "benchmark": {"name": "b"}}
    alone = unit_key({**config, "method": {"cons": CONSENSUS}}, "cons", "cpu", [])
    beside = unit_key({**config, "method": methods}, "cons", "cpu", deps["cons"])
    assert (beside == alone) != depends


class Chain:
    """A pipeline whose methods each depend on the one before (``b`` on ``a``, ...)."""

    def depends_on(self, unit, methods):
        order = list(methods)
        return order[order.index(unit) - 1 : order.index(unit)]


def test_dependencies_are_transitive_and_must_name_selected_methods():
    assert dependencies(Chain(), dict.fromkeys("abc", {})) == {"a": [], "b": ["a"], "c": ["a", "b"]}

    class Wrong(Chain):
        def depends_on(self, unit, methods):
            return ["tall_masks"] if unit == "b" else []

    with pytest.raises(ValueError, match=r"Wrong.depends_on\('b'\) names 'tall_masks'.*method.a"):
        dependencies(Wrong(), dict.fromkeys("ab", {}))


def test_a_units_key_changes_with_the_methods_it_depends_on_only():
    config = {"model": {"name": "m"}, "benchmark": {"name": "b"}, "method": METHODS}
    deps = dependencies(TaskVectorPipeline(), METHODS)
    key = {u: unit_key(config, u, "cpu", deps[u]) for u in METHODS}
    other_tall = {**METHODS, "tall": {**METHODS["tall"], "search": {"lam": [0.3]}}}
    changed = {**config, "method": other_tall}
    assert unit_key(changed, "cons", "cpu", deps["cons"]) != key["cons"]
    assert unit_key(changed, "ta", "cpu", deps["ta"]) == key["ta"]
    assert unit_key(config, "ta", "cuda:1", []) == unit_key(config, "ta", "cuda", [])
    assert unit_key(config, "ta", "cuda", []) != key["ta"]


def test_a_units_key_ignores_the_cache_directory_wherever_the_config_copies_it():
    config = {"cache_dir": "/c", "benchmark": {"name": "b", "cache_dir": "/c"}, "method": METHODS}
    moved = {"cache_dir": "/c/", "benchmark": {"name": "b", "cache_dir": "/c/"}, "method": METHODS}
    assert unit_key(config, "ta", "cpu", []) == unit_key(moved, "ta", "cpu", [])
    other = {**config, "benchmark": {"name": "b2", "cache_dir": "/c"}}
    assert unit_key(other, "ta", "cpu", []) != unit_key(config, "ta", "cpu", [])


def test_a_device_that_torch_does_not_know_is_refused_by_name():
    with pytest.raises(ValueError, match="device='gpu' is not a torch device"):
        resolve_device("gpu")
    assert resolve_device("cpu") == "cpu"


def test_shards_keep_consensus_with_the_tall_masks_it_depends_on():
    deps = dependencies(TaskVectorPipeline(), METHODS)
    plan = shard_plan(METHODS, finished=(), shards=2, depends_on=deps)
    assert sorted(u for s in plan for u in s) == sorted(METHODS)
    assert any({"tall", "cons"} <= set(s) for s in plan)
    assert all(s == sorted(s, key=list(METHODS).index) for s in plan)  # config order
    # finished methods are not run again, unless a method left to run depends on them
    plan = shard_plan(METHODS, finished=("zeroshot", "ta", "tall"), shards=2, depends_on=deps)
    assert sorted(u for s in plan for u in s) == ["cons", "tall", "ties"]


@pytest.mark.slow
def test_a_joblib_sweep_resumes_skipping_complete_jobs(warm, tmp_path):
    store = tmp_path / "store"
    first = run(*tiny(warm, store, "method=zeroshot"), f"hydra.run.dir={tmp_path / 'single'}")
    assert first.returncode == 0, first.stderr[-2000:]
    sweep = ["-m", *tiny(warm, store, "method=zeroshot,weight_averaging"), "hydra/launcher=joblib",
             "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    again = run(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("nothing left to compute") == 1  # zeroshot: skipped
    jobs = sorted((tmp_path / "sweep").glob("[0-9]"))
    assert [j.name for j in jobs] == ["0", "1"]  # one sweep directory, one subdir per job
    single = pd.read_csv(tmp_path / "single" / "results.csv").drop(columns="run")
    pd.testing.assert_frame_equal(pd.read_csv(jobs[0] / "results.csv").drop(columns="run"), single)
    results = ResultStore(store).results()
    assert set(results.method) == {"Zero-shot", "Weight averaging"}
    assert results.unit_key.nunique() == 2  # each unit computed and stored once
    runs = ResultStore(store).runs()
    assert len(runs.run_dir.unique()) == 3 and runs.reused.sum() == 1  # single run + 2 jobs


@pytest.mark.slow
def test_methods_sharded_over_two_devices_give_the_one_device_results(warm, tmp_path):
    args = tiny(warm, tmp_path / "store", "device=cpu", "resume=false",
                "method=[task_arithmetic,tall_masks,consensus]")  # fmt: skip
    one = run(*args, f"hydra.run.dir={tmp_path / 'one'}")
    two = run(*args, "shards=2", f"hydra.run.dir={tmp_path / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    a, b = (pd.read_csv(tmp_path / d / "results.csv").drop(columns="run") for d in ("one", "two"))
    timing = a.split == "merge"  # the merges' wall time and memory: measured, not computed
    assert (timing == (b.split == "merge")).all()
    pd.testing.assert_frame_equal(a[~timing], b[~timing])


@pytest.mark.slow
def test_the_slurm_config_composes_to_sbatch_and_runs_with_the_local_executor(
    warm, tmp_path, monkeypatch
):
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                     "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=4",
                     "+hydra.launcher.additional_parameters.mail-type=END"]  # fmt: skip
        cfg = compose("config", return_hydra_config=True, overrides=overrides)
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"].endswith("SlurmLauncher")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout", "name")}  # fmt: skip
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**params)  # as the launcher does; unknown keys would raise here
    sbatch = submitit.slurm.slurm._make_sbatch_string(
        command="python -m experiments.run",
        folder=tmp_path,
        map_count=9,
        **executor._executor.parameters,
    )
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=64GB", "--array=0-8%4", "--mail-type=END"):  # fmt: skip
        assert f"#SBATCH {line}" in sbatch, sbatch
    result = run("-m", *tiny(warm, tmp_path / "store", "method=weight_averaging"),
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sweep" / "0" / "table.md").exists()
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))


@pytest.mark.slow
def test_an_optuna_search_maximises_the_val_objective(warm, tmp_path):
    sweep = tmp_path / "search"
    result = run("-m", *tiny(warm, tmp_path / "store", "method=ties"), "hydra/sweeper=val_search",
                 "hydra.sweeper.n_trials=3", "method.ties.hparams.density=interval(0.05,0.9)",
                 f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    objectives, densities = [], []
    for job in sorted(sweep.glob("[0-9]")):
        frame = pd.read_csv(job / "results.csv")
        rows = [Row(**r) for r in frame.to_dict("records")]
        objectives.append(val_objective(rows))
        densities.append(json.loads(frame.hyperparameters.iloc[0])["density"])
    assert len(objectives) == 3 and len(set(densities)) == 3  # three proposals
    assert best["best_value"] == pytest.approx(max(objectives))
    assert 0.05 <= best["best_params"]["method.ties.hparams.density"] <= 0.9


@pytest.mark.slow
def test_the_optuna_sweeper_must_maximise(tmp_path):
    result = subprocess.run(
        command("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "method=ties",
                "method.ties.hparams.density=interval(0.1,0.2)", "logger=none",
                f"cache_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 's'}"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "hydra.sweeper.direction=maximize" in result.stdout + result.stderr
    assert not (tmp_path / "sandbox_clip").exists()  # failed before building anything


@pytest.mark.slow
def test_compare_on_a_real_store_draws_the_mask_overlap(warm, tmp_path):
    from experiments.compare import compare
    from experiments.plots import mask_counts

    store = tmp_path / "store"
    result = run(*tiny(warm, store, "method=[task_arithmetic,tall_masks]"),
                 f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tables = compare(store, "TALL mask + TA", ["Task arithmetic"], out=tmp_path / "cmp",
                     logger_kind="none", masks=True, cache_dir=str(warm / "cache"))  # fmt: skip
    assert list(tables["sandbox2"].index) == ["Task arithmetic", "TALL mask + TA"]
    assert (tmp_path / "cmp" / "plots" / "masks_sandbox2.png").exists()
    tall = ResultStore(store).results().query("unit == 'tall_masks'")
    config = json.loads(tall.config.iloc[0])
    config["method"] = config["method"]["tall_masks"]
    counts = mask_counts(config, [0.4, 0.4], str(warm / "cache"), "cpu")
    assert len(counts) == 3 and counts.sum() > 0  # weights kept by 0, 1 or 2 tasks


def test_a_units_key_ignores_how_much_input_the_evaluator_keeps():
    config = {"eval": {"batch_size": 8, "input_cache_gb": None}, "method": METHODS}
    kept = {"eval": {"batch_size": 8, "input_cache_gb": 2.0}, "method": METHODS}
    other = {"eval": {"batch_size": 16, "input_cache_gb": None}, "method": METHODS}
    assert unit_key(config, "ta", "cpu", []) == unit_key(kept, "ta", "cpu", [])
    assert unit_key(config, "ta", "cpu", []) != unit_key(other, "ta", "cpu", [])
