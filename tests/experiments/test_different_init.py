"""The different-initialisation pipeline end to end on miniature configs (sandbox and a CIFAR
stand-in), its result rows, and its validation errors."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from evaluation.results import COLUMNS, rows_frame
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.context import RunContext
from experiments.loggers import NullLogger
from experiments.pipelines.different_init import DifferentInitPipeline, _context, build
from merging.batchnorm import recompute_batchnorm_state
from tests.evaluation.cnn.standins import write_cifar_standin

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY = [
    "model.width=0.125",
    "benchmark.num_models=2",
    "benchmark.training.epochs=1",
    "benchmark.training.batch_size=32",
    "benchmark.val.samples=16",
    "benchmark.merge_data.samples=32",
    "benchmark.merge_data.batch_size=16",
    "benchmark.batchnorm_reset.batch_size=16",
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
LABELS = {"Base model", "Ensemble", "Direct averaging", "Weight matching",
          "Activation matching", "ZipIt!", "CCA Merge", "NP Merge"}  # fmt: skip


class Recorder(NullLogger):
    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def composed(*overrides):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def context(tmp_path, logger=None):
    return RunContext("test", tmp_path, logger or NullLogger(), Env(tmp_path / "cache"))


def run_rows(cfg, ctx):
    units, rows = [], []
    for unit, unit_rows in DifferentInitPipeline().run(cfg, ctx):
        units.append(unit)
        rows += unit_rows
    return units, rows_frame(rows)


@pytest.mark.slow
def test_sandbox_preset_runs_end_to_end(tmp_path):
    cfg = composed(*SANDBOX)
    assert isinstance(instantiate(cfg.pipeline), DifferentInitPipeline)
    DifferentInitPipeline().validate(cfg)
    logger = Recorder()
    units, frame = run_rows(cfg, context(tmp_path, logger))
    assert units == list(cfg.method)  # one unit per method, over both settings
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame.benchmark) == {"sandbox_parts10_same", "sandbox_parts10_cross"}
    assert set(frame.split) == {"val", "test"} and set(frame.metric) == {"accuracy"}
    assert frame.value.between(0, 100).all() and set(frame.run) == {"test"}
    assert set(frame.method) == LABELS and set(frame.task) == {"sandbox_parts10"}
    hparams = frame.hyperparameters.map(json.loads)
    assert set(hparams[frame.method == "NP Merge"].map(lambda h: h["models"])) == {2}
    same = (frame.benchmark == "sandbox_parts10_same") & (frame.split == "test")
    assert list(hparams[same & (frame.method == "Base model")]) == [
        {"model": 0, "models": 1}, {"model": 1, "models": 1}
    ]  # fmt: skip
    # each alignment method has its own options (formerly alignment + options of one fn)
    assert list(hparams[same & (frame.method == "Weight matching")]) == [
        {"max_iter": 100, "models": 2, "seed": 0}
    ]
    # searched methods: val rows at every point of the authors' grid, test at the best one
    for setting in ("sandbox_parts10_same", "sandbox_parts10_cross"):
        for method, grid in (("ZipIt!", 36), ("CCA Merge", 14), ("Ensemble", 1)):
            rows = frame[(frame.benchmark == setting) & (frame.method == method)]
            val, test = rows[rows.split == "val"], rows[rows.split == "test"]
            assert len(val) == grid and len(test) == 1
            best = val.iloc[int(val.value.to_numpy().argmax())]  # ties: the first
            assert test.hyperparameters.item() == best.hyperparameters
    zipit = hparams[same & (frame.method == "ZipIt!")].item()
    assert set(zipit) == {"alpha", "beta", "budget_count", "models"}
    assert zipit["budget_count"] == "authors"
    assert any(k.endswith("NP Merge/2_models/test_accuracy") for k in logger.metrics)

    table = DifferentInitPipeline().table(frame)
    assert list(table.columns) == ["models", "sandbox_parts10_same", "sandbox_parts10_cross"]
    assert {"Base model 0", "Base model 1", "Ensemble", "NP Merge"} <= set(table.index)
    assert table.loc["Base model 0", "models"] == 1 and table.loc["CCA Merge", "models"] == 2

    # the zoo is cached: a second run trains nothing and gives the same table
    again = DifferentInitPipeline().table(run_rows(cfg, context(tmp_path))[1])
    assert again.equals(table)


def test_finished_units_are_reused_without_loading_anything(tmp_path):
    cfg = composed("+experiment=different_init_sandbox", "method=[ensemble,zipit]")
    done = {key: [f"rows of {key}"] for key in ("ensemble", "zipit")}
    ctx = RunContext("test", tmp_path, NullLogger(), Env(tmp_path / "cache"), finished=done)
    assert list(DifferentInitPipeline().run(cfg, ctx)) == list(done.items())
    assert not (tmp_path / "cache").exists()


def test_cifar_preset_runs_on_a_local_standin(tmp_path):
    path = write_cifar_standin(tmp_path / "cifar10", n=(40, 20), size=16)
    methods = "method=[base_models,ensemble,weight_matching,np_merge]"
    cfg = composed("+experiment=different_init_cifar10", f"benchmark.dataset.path={path}", methods,
                   "~benchmark.settings.cross", *TINY)  # fmt: skip
    DifferentInitPipeline().validate(cfg)
    _, frame = run_rows(cfg, context(tmp_path))
    assert set(frame.benchmark) == {"cifar10_same"} and set(frame.task) == {"cifar10"}
    assert set(frame.model) == {"resnet20x0.125"}
    for split in ("val", "test"):  # two base models, then one row per method
        assert (frame.split == split).sum() == 2 + 1 + 1 + 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.zipit.models=[2,3]", "zipit merges exactly 2 models"),
        ("method.np_merge.hparams.optimizer=lbfgs", "'optimizer' must be one of"),
        ("method.np_merge.hparams.order=[0,0,1]", "'order'"),
        ("method.np_merge.hparams.epochs=0", "'epochs'"),
        ("method.cca_merge.search.gamma=[0.1,-1]", "'gamma'"),
        ("method.zipit.search.beta=[2]", "'beta'"),
        ("+method.zipit.hparams.alpha=0.3", "'alpha' is both in hparams and in search"),
        ("method.zipit.hparams.budget_count=paper", "'budget_count'"),
        ("benchmark.val.samples=0", "method.zipit.search.alpha selects on the val split"),
        ("benchmark.val.samples=4000", "benchmark.val.samples"),
        ("benchmark.batchnorm_reset.samples=0", "benchmark.batchnorm_reset.samples"),
        ("method.weight_matching.hparams.max_iter=0", "'max_iter'"),
        ("+method.np_merge.hparams.steps=5", "no option method.np_merge.hparams.steps"),
        ("+method.weight_matching.hparams.tol=1", "no option method.weight_matching.hparams.tol"),
        ("+method.np_merge.hparams.alignment_options.tol=1", "alignment_options.tol"),
        ("method.ensemble.models=[9]", "cannot combine 9 models"),
        ("method.ensemble.models=[]", "method.ensemble.models must list at least one"),
        ("+method@method.wm2=weight_matching", "method.wm2 and method.weight_matching share"),
        ("method.direct_average.models=[1]", "cannot combine 1 models"),
        ("benchmark.settings.cross.major_fraction=0.1", "benchmark.settings.cross"),
        ("benchmark.settings.same.seed=1", "benchmark.settings.same"),
        ("benchmark.training.epochs=0", "benchmark.training.epochs"),
        ("benchmark.merge_data.samples=0", "benchmark.merge_data.samples"),
        ("benchmark.num_models=0", "benchmark.num_models"),
        ("benchmark.dataset.train_size=0", "benchmark.dataset.train_size"),
        ("model.arch=resnet18", "model.arch"),
        ("model.width=0", "model.width"),
        # non-finite or out-of-range values that passed validation (below: what happened)
        ("model.width=inf", "model.width must be positive and finite"),  # OverflowError
        ("benchmark.training.lr=inf", "benchmark.training.lr"),  # trained NaN models
        ("benchmark.training.weight_decay=inf", "benchmark.training.weight_decay"),
        ("benchmark.training.warmup_epochs=inf", "benchmark.training.warmup_epochs"),  # lr 0
        ("benchmark.training.momentum=1.5", "benchmark.training.momentum must be < 1"),
        ("benchmark.dataset.noise=nan", "benchmark.dataset.noise"),  # images all 0
        ("benchmark.dataset.noise=inf", "benchmark.dataset.noise"),
        ("benchmark.dataset.image_size=2", "benchmark.dataset.image_size must be >= 3"),
        ("benchmark.settings.cross.seed=-1", "benchmark.settings.cross: seed must be >= 0"),
        ("benchmark.dataset.num_classes=2", "benchmark.settings.cross: 2 classes cannot"),
        ("method.cca_merge.search.gamma=[inf]", "method.cca_merge: option 'gamma'"),
        (
            "method.np_merge.models=[2] method.np_merge.hparams.lr=inf",
            "method.np_merge: option 'lr'",
        ),
        ("method.weight_matching.hparams.seed=-1", "method.weight_matching: option 'seed'"),
    ],
)
def test_bad_configs_fail_before_any_work(override, message, tmp_path):
    cfg = composed("+experiment=different_init_sandbox", *override.split(), f"cache_dir={tmp_path}")
    with pytest.raises(ValueError, match=message):
        DifferentInitPipeline().validate(cfg)
    assert not (tmp_path / "cnn_zoo").exists()


@pytest.mark.parametrize(
    "override, path",
    [
        ("benchmark.training.epoch=3", "benchmark.training.epoch"),
        ("model.widht=2", "model.widht"),
        ("method.np_merge.hparams.lrr=1", "method.np_merge.hparams.lrr"),
        ("benchmark.dataset.imagesize=8", "benchmark.dataset.imagesize"),
        ("benchmark.settings.cross.fraction=0.5", "benchmark.settings.cross.fraction"),
        ("benchmark.training.epochs=many", "benchmark.training.epochs"),
    ],
)
def test_a_misspelt_key_fails_at_composition_naming_its_path(override, path):
    with pytest.raises(ConfigCompositionException) as err:
        composed("+experiment=different_init_sandbox", override)
    assert path in str(err.value) + str(err.value.__cause__)


def test_a_regime_mismatch_is_explained():
    with pytest.raises(ValueError, match="not a different-initialisation benchmark"):
        DifferentInitPipeline().validate(composed("pipeline=different_init", "model=resnet20"))
    with pytest.raises(ValueError, match="choose pipeline=task_vectors"):
        DifferentInitPipeline().validate(
            composed("+experiment=different_init_sandbox", "method=task_arithmetic")
        )


def test_without_a_val_split_one_point_is_scored_on_test_only(tmp_path):
    cfg = composed(*SANDBOX, "benchmark.val.samples=0",
                   "method=[base_models,zipit,cca_merge,np_merge]",
                   "method.zipit.search.alpha=[0.3]", "method.zipit.search.beta=[0.125]",
                   "method.cca_merge.search.gamma=[0.1]")  # fmt: skip
    DifferentInitPipeline().validate(cfg)
    _, frame = run_rows(cfg, context(tmp_path))
    assert set(frame.split) == {"test"}
    zipit = frame[frame.method == "ZipIt!"].hyperparameters.map(json.loads)
    fixed = {"alpha": 0.3, "beta": 0.125, "budget_count": "authors", "models": 2}
    assert list(zipit) == [fixed] * 2  # both settings


def test_base_models_are_reset_with_the_benchmark_reset_before_merging(tmp_path):
    cfg = composed(*SANDBOX, "~benchmark.settings.cross")
    zoo, benchmark = build(cfg)
    models = zoo.load(benchmark, "same", Env(tmp_path))
    merge_context = _context(models, benchmark, torch.device("cpu"))
    for trained, reset in zip(models.states, merge_context.states, strict=True):
        expected = recompute_batchnorm_state(models.network(), trained, benchmark.reset_batches())
        assert all(torch.equal(reset[k], v) for k, v in expected.items())
        assert not torch.equal(reset["bn1.running_var"], trained["bn1.running_var"])
        assert torch.equal(reset["conv1.weight"], trained["conv1.weight"])
    merged = merge_context.reset_batchnorm(merge_context.states[0])
    assert all(torch.equal(merged[k], v) for k, v in merge_context.states[0].items())


def test_a_method_failing_on_the_stand_in_models_keeps_its_error_and_says_where(monkeypatch):
    import experiments.pipelines.different_init as pipeline

    def failing(*args, **kwargs):
        raise RuntimeError("a shape bug in the method")

    monkeypatch.setattr(pipeline, "merge_models", failing)
    method = pipeline.ModelsMethod.from_config("avg", {"fn": "direct_average"}, num_models=2)
    with pytest.raises(RuntimeError, match="a shape bug") as caught:
        method.check_options()
    assert caught.value.__notes__ == ["raised by method.avg on 2 stand-in models at {}"]
