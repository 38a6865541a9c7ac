"""The catalogue of bad inputs (issue 10): one line per input -> the error it must raise,
before any computation. Each line runs in-process (composition + the pipeline's validate, or
a direct call); the cases that need a real run, a corrupt file or a killed process are
tested where their code lives and are listed at the end of this file."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from experiments.config import register_schemas
from merging import TaskVector, merge

CONF = Path(__file__).resolve().parents[1] / "conf"
COMPOSE = ConfigCompositionException

# (overrides, error type, what the message must contain)
CONFIG_CASES = [
    (["method=no_such_method"], COMPOSE, "no_such_method"),
    (["model=no_such_model"], COMPOSE, "no_such_model"),
    (["seed=1"], COMPOSE, "seed"),  # the old top-level seed seeded nothing: removed
    (["eval.batch_sise=3"], COMPOSE, "batch_sise"),
    (["eval.batch_size=many"], COMPOSE, "batch_size"),
    (["model.recipe.vision.widht=3"], COMPOSE, "widht"),
    (["method=[ties]", "method.ties.hparms={}"], COMPOSE, "hparms"),
    (["eval.batch_size=-1"], ValueError, "eval.batch_size must be >= 1"),
    (["eval.batch_size=0"], ValueError, "eval.batch_size must be >= 1"),
    (["eval.input_cache_gb=-1"], ValueError, "eval.input_cache_gb must be a number of GB >= 0"),
    (["eval.input_cache_gb=inf"], ValueError, "eval.input_cache_gb must be a number of GB >= 0"),
    (["eval.input_cache_gb=lots"], COMPOSE, "input_cache_gb"),
    (["method=[ties]", "method.ties.alphas=[]"], ValueError, "method.ties.alphas is empty"),
    (["method=[ties]", "method.ties.alphas=[-0.5]"], ValueError, "alphas must be positive"),
    (["protocol.alphas=[]"], ValueError, "alphas is empty"),
    (["method=[ties]", "method.ties.alphas=[nan]"], ValueError, "positive and finite"),
    (["protocol.alphas=[inf]"], ValueError, "positive and finite"),
    (["method=[tall_masks]", "method.tall_masks.search.lam=[nan]"], ValueError, "finite"),
    (["method=[ties]", "method.ties.hparams.density=nan"], ValueError, "'density'"),
    (["method=[ties]", "+method.ties.hparams.q=1"], ValueError, "method.ties.hparams.q"),
    (["method=[ties]", "method.ties.hparams.density=abc"], ValueError, "must be a finite number"),
    (["method=[ties]", "method.ties.hparams.density=2.0"], ValueError, "'density'"),
    (["method=[consensus]", "method.consensus.hparams.k=9"], ValueError, "number of tasks"),
    (["method=[dare]", "method.dare.hparams.p=1.0"], ValueError, "'p'"),
    (["method=[tall_masks]", "method.tall_masks.search.lam=[]"], ValueError, "search.lam"),
    (["method=[tall_masks]", "benchmark.num_tasks=1"], ValueError,
     "method.tall_masks: merge method 'tall_masks' needs at least 2 task vectors, got 1"),
    (["method=[consensus]", "benchmark.num_tasks=1"], ValueError,
     "method.consensus: merge method 'consensus' needs at least 2 task vectors, got 1"),
    (["protocol.alphas=[0.3,0.3,0.5]"], ValueError, "protocol.alphas repeats 0.3"),
    (["protocol.alphas_to_3=[0.5,1.0,0.5]"], ValueError, "protocol.alphas_to_3 repeats 0.5"),
    (["method=[ties]", "method.ties.alphas=[1,1.0]"], ValueError, "method.ties.alphas repeats 1"),
    (["method=[tall_masks]", "method.tall_masks.search.lam=[0.2,0.3,0.2]"], ValueError,
     "method.tall_masks.search.lam repeats 0.2"),
    (["+experiment=different_init_sandbox", "method=[zipit]",
      "method.zipit.search.alpha=[0.5,0.5]"], ValueError, "method.zipit.search.alpha repeats 0.5"),
    (["method=[ties]", "+method@method.ties_dense=ties", "method.ties_dense.hparams.density=0.05"],
     ValueError, "share the label 'TIES'"),  # fmt: skip
    (["model=resnet20"], ValueError, "pipeline=different_init"),
    (["method=[weight_matching]"], ValueError, "pipeline=different_init"),
    (["+experiment=different_init_sandbox", "method=[ties]"], ValueError,
     "pipeline=task_vectors"),  # fmt: skip
    (["+experiment=different_init_sandbox", "benchmark.training.epochs=0"], ValueError,
     "epochs"),  # fmt: skip
    (["+experiment=different_init_sandbox", "benchmark.training.lr=inf"], ValueError,
     "'benchmark.training.lr' must be a finite number"),  # fmt: skip
    (["+experiment=different_init_sandbox", "method.np_merge.hparams.lr=-1"], ValueError,
     "'lr'"),  # fmt: skip
]


def validated(overrides: list[str]) -> None:
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=overrides)
    instantiate(cfg.pipeline).validate(cfg)


@pytest.mark.parametrize(
    "overrides, error, message", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES]
)
def test_bad_config_input_fails_before_computation(overrides, error, message):
    with pytest.raises((error, ValueError)) as err:
        validated(overrides)
    assert err.type is error or issubclass(err.type, error)
    text = str(err.value) + str(err.value.__cause__ or "")
    assert message in text


def tau(name: str, values: list[float]) -> TaskVector:
    return TaskVector({"w": torch.tensor(values)}, {"w": torch.zeros(len(values))}, name=name)


# (what, call, error type, message)
CALL_CASES = [
    ("NaN in a task vector names the task",
     lambda: merge("task_arithmetic", [tau("cola", [1.0, 2.0]), tau("rte", [float("nan"), 0.0])]),
     ValueError, "rte contains NaN or Inf"),
    ("a shape mismatch names key and tasks",
     lambda: merge("task_arithmetic", [tau("cola", [1.0, 2.0]), tau("rte", [1.0, 2.0, 3.0])]),
     ValueError, "key 'w': rte has shape (3,), cola has (2,)"),
    ("a missing key names the task",
     lambda: merge("task_arithmetic", [{"w": torch.ones(1), "b": torch.ones(1)},
                                       {"w": torch.ones(1)}]),
     KeyError, "lacks key 'b'"),
    ("an unknown method lists the valid ones",
     lambda: merge("tie", [{"w": torch.ones(1)}]), KeyError, "valid: "),
    ("too few task vectors", lambda: merge("tall_masks", [{"w": torch.ones(1)}], lam=0.4),
     ValueError, "at least 2 task vectors"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, error, message", CALL_CASES, ids=[c[0] for c in CALL_CASES])
def test_bad_call_input_names_its_culprit(what, call, error, message):
    with pytest.raises(error) as err:
        call()
    assert message in str(err.value)


# Cases tested where their code lives (issue 10's items):
# 1 runs started together -> own directories: tests/experiments/test_run.py
#   test_runs_started_together_never_share_a_directory
# 2 interrupted run / sweep -> finished methods kept, re-run resumes: test_run.py
#   test_an_interrupted_run_keeps_finished_methods_and_resumes, test_a_rerun_sweep_skips_*
# 3 failed run -> W&B marked failed: test_run.py test_a_failed_run_is_marked_failed_in_wandb
# 4 two configs, one label -> refused: CONFIG_CASES above and test_run.py
# 6 two tasks with identical expert weights -> refused naming both:
#   tests/experiments/test_task_vector_pipeline.py
# 9 batch size, k above T, empty / negative alphas, seed: CONFIG_CASES above
# 10 tied parameters -> one parameter, stay tied: tests/merging/test_tied_parameters.py
# 12 WANDB_MODE wins over the default: test_run.py test_wandb_mode_from_the_environment_*
# 13 errors name task / option: CALL_CASES above, tests/merging/test_tied_parameters.py
# 14 stale temporaries, permissions, read-only cache, lock message: tests/evaluation/test_cache.py
# 5, 7, 8, 11, 13 (checkpoints), 14 (manifest, module. prefix): tests/evaluation/clip/,
#   tests/evaluation/sandbox/ (see results/... note of issue 10)
