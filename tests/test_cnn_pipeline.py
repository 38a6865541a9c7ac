"""The different-initialisation pipeline end to end on miniature configs (sandbox and a CIFAR
stand-in), and its validation errors."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from evaluation.cnn.data import sandbox_data
from evaluation.cnn.methods import Merger, aligned_average, direct_average
from evaluation.cnn.models import build_model
from evaluation.cnn.zoo import CnnZoo
from evaluation.results import COLUMNS, rows_frame
from experiments.context import RunContext
from experiments.loggers import NullLogger
from experiments.pipelines import different_init
from merging.alignment import permute_state, random_permutations
from tests.test_cnn_data import write_cifar_standin

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = [
    "model.width=0.125",
    "benchmark.num_models=2",
    "benchmark.training.epochs=1",
    "benchmark.training.batch_size=32",
    "benchmark.merge_data.samples=32",
    "benchmark.merge_data.batch_size=16",
    "method.np_merge.hparams.samples=32",
    "method.np_merge.hparams.batch_size=16",
    "method.np_merge.hparams.epochs=1",
]
SANDBOX = [
    "+experiment=different_init_sandbox",
    "benchmark.dataset.image_size=8",
    "benchmark.dataset.train_size=96",
    "benchmark.dataset.test_size=40",
    *TINY,
]


class Recorder(NullLogger):
    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def composed(*overrides):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def context(tmp_path, logger=None):
    return RunContext("test", tmp_path, logger or NullLogger(), tmp_path / "cache", "cpu", False)


def test_sandbox_preset_runs_end_to_end(tmp_path):
    cfg = composed(*SANDBOX)
    different_init.validate(cfg)
    logger = Recorder()
    rows = different_init.run(cfg, context(tmp_path, logger))
    frame = rows_frame(rows)
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame.benchmark) == {"sandbox_parts10_same", "sandbox_parts10_cross"}
    assert set(frame.split) == {"test"} and set(frame.metric) == {"accuracy"}
    assert frame.value.between(0, 100).all() and set(frame.run) == {"test"}
    labels = {"Base model", "Ensemble", "Direct averaging", "Weight matching",
              "Activation matching", "ZipIt!", "CCA Merge", "NP Merge"}  # fmt: skip
    assert set(frame.method) == labels
    models = frame.hyperparameters.map(lambda h: json.loads(h)["models"])
    assert set(models[frame.method == "NP Merge"]) == {2}  # "all" = num_models = 2
    assert any(k.endswith("NP Merge/2_models/test_accuracy") for k in logger.metrics)

    table = different_init.table(frame)
    assert list(table.columns) == ["models", "sandbox_parts10_same", "sandbox_parts10_cross"]
    assert {"Base model 0", "Base model 1", "Ensemble", "NP Merge"} <= set(table.index)
    assert table.loc["Base model 0", "models"] == 1 and table.loc["CCA Merge", "models"] == 2

    # the zoo is cached: a second run trains nothing and gives the same table
    again = different_init.table(rows_frame(different_init.run(cfg, context(tmp_path))))
    assert again.equals(table)


def test_cifar_preset_runs_on_a_local_standin(tmp_path):
    path = write_cifar_standin(tmp_path / "cifar10", n=(40, 20), size=16)
    methods = "method=[base_models,ensemble,weight_matching,np_merge]"
    cfg = composed("+experiment=different_init_cifar10", f"benchmark.dataset.path={path}", methods,
                   "~benchmark.settings.cross", *TINY)  # fmt: skip
    rows = different_init.run(cfg, context(tmp_path))
    frame = rows_frame(rows)
    assert set(frame.benchmark) == {"cifar10_same"} and set(frame.task) == {"cifar10"}
    assert set(frame.model) == {"resnet20x0.125"}
    assert len(frame) == 2 + 1 + 1 + 1  # two base models, then one row per method


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.zipit.models=[2,3]", "zipit merges exactly 2 models"),
        ("method.np_merge.hparams.optimizer=lbfgs", "'optimizer' must be one of"),
        ("method.np_merge.hparams.order=[0,0,1]", "'order'"),
        ("+method.np_merge.hparams.steps=5", "unknown option 'steps'"),
        ("+method.weight_matching.hparams.options.tol=1", "no option 'tol'"),
        ("method.ensemble.models=[9]", "cannot combine 9 models"),
        ("benchmark.settings.cross.major_fraction=0.1", "benchmark.settings.cross"),
        ("benchmark.training.epochs=0", "training.epochs"),
        ("benchmark.merge_data.samples=0", "merge_data.samples"),
        ("model.arch=resnet18", "model.arch"),
    ],
)
def test_bad_configs_fail_before_any_work(override, message, tmp_path):
    cfg = composed("+experiment=different_init_sandbox", override)
    with pytest.raises(ValueError, match=message):
        different_init.validate(cfg)


def test_wrong_family_is_explained():
    with pytest.raises(ValueError, match="not a 'different_init' benchmark"):
        different_init.validate(composed("model=resnet20"))
    with pytest.raises(ValueError, match="not a 'different_init' method"):
        different_init.validate(
            composed("+experiment=different_init_sandbox", "method=task_arithmetic")
        )


@pytest.mark.parametrize("alignment", ["weight_matching", "activation_matching", "zipit", "cca"])
def test_alignment_undoes_a_random_permutation(alignment):
    """Merging a model with a randomly permuted copy of itself gives the model back."""
    data = sandbox_data("sb", 5, 8, 64, 32, seed=0)
    arch = {"arch": "resnet20", "width": 0.25}
    state = build_model(arch, data.num_classes, seed=0).state_dict()
    zoo = CnnZoo(arch, data.num_classes, [state], [], [])
    merger = Merger(zoo, data, merge_samples=64, batch_size=32)
    perms = random_permutations(merger.spec, state, torch.Generator().manual_seed(1))
    zoo.states.append(permute_state(merger.spec, state, perms))
    expected = merger.logits(merger.reset_batchnorm(state))
    ((_, merged),) = aligned_average(merger, [0, 1], alignment=alignment)
    ((_, averaged),) = direct_average(merger, [0, 1])
    torch.testing.assert_close(merged, expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(averaged, expected, rtol=1e-3, atol=1e-3)
