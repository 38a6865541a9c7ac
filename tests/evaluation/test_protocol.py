"""The selection protocol on a toy evaluator whose accuracies are known in closed form."""

import json

import pytest
import torch

import evaluation.protocol as protocol
from evaluation.protocol import Method, Scorer, evaluate_method
from evaluation.results import Row
from merging import merge_method

# accuracy of task t on a split = 100 - 10 * |w - target|, w the single merged weight
TARGETS = {"val": {"t0": 0.9, "t1": 1.5}, "test": {"t0": 0.0, "t1": 3.0}}
TAUS = [{"w": torch.tensor(1.0)}, {"w": torch.tensor(2.0)}]


class ToyEvaluator:
    def __init__(self):
        self.w = 0.0

    def load(self, tau, alpha=1.0):
        self.w = 0.0 if tau is None else alpha * tau["w"].item()

    def accuracy(self, task, split):
        return 100.0 - 10.0 * abs(self.w - TARGETS[split][task])


@merge_method("toy_scaled", label="Toy", reference="test stand-in", task_specific=True)
def toy_scaled(tvs, *, lam: float = 1.0):
    return tvs.map_each(lambda key, taus: [lam * t for t in taus])


def run(method, monkeypatch=None):
    scorer = Scorer(ToyEvaluator(), ["t0", "t1"])
    expert = {
        s: scorer.scores("finetuned", {}, lambda: [dict(t) for t in TAUS], 1.0, s)
        for s in ("val", "test")
    }
    rows, _ = evaluate_method(method, TAUS, scorer, expert, lambda *a: Row("r", "b", "m", *a))
    return rows, expert


def test_joint_selection_maximises_average_normalised_val_accuracy(monkeypatch):
    calls = []
    real_merge = protocol.merge
    monkeypatch.setattr(
        protocol, "merge", lambda *a, **k: calls.append(a[0]) or real_merge(*a, **k)
    )
    method = Method.from_config(
        "ta", {"label": "TA", "fn": "task_arithmetic", "alphas": [0.1 * i for i in range(1, 11)]}
    )
    rows, expert = run(method)
    assert calls == ["task_arithmetic"]  # ten alphas, one merge
    # absolute val accuracy ties for alpha in {0.3, 0.4, 0.5}; normalised favours t1 (lower
    # expert accuracy), i.e. w = 3 * alpha = 1.5
    test = {r.task: r for r in rows if r.split == "test" and r.metric == "accuracy"}
    assert json.loads(test["t0"].hyperparameters)["alpha"] == pytest.approx(0.5)
    # test accuracy is measured at the val choice, not re-selected on test
    assert test["t0"].value == pytest.approx(100 - 10 * 1.5)
    assert test["t1"].value == pytest.approx(100 - 10 * 1.5)
    norm = {
        r.task: r.value for r in rows if r.split == "test" and r.metric == "normalized_accuracy"
    }
    assert norm["t1"] == pytest.approx(100 * 85 / expert["test"]["t1"])
    assert norm["average"] == pytest.approx((norm["t0"] + norm["t1"]) / 2)
    assert len([r for r in rows if r.split == "val" and r.task == "average"]) == 20
    cost = {r.metric: r.value for r in rows if r.split == "merge"}
    assert set(cost) == {"merge_seconds", "merge_peak_mib"} and cost["merge_seconds"] > 0


def test_per_task_selection_with_ties_to_the_first_point():
    method = Method.from_config(
        "toy", {"fn": "toy_scaled", "search": {"lam": [0.5, 1.0, 1.5]}, "select": "per_task"}
    )
    rows, _ = run(method)
    chosen = {
        r.task: json.loads(r.hyperparameters)["lam"]
        for r in rows
        if r.split == "test" and r.task != "average"
    }
    # t0: w = lam, best at lam = 1.0; t1: w = 2 lam, lam 0.5 and 1.0 tie -> first (0.5)
    assert chosen == {"t0": 1.0, "t1": 0.5}
    avg = [r for r in rows if r.split == "test" and r.task == "average"]
    assert json.loads(avg[0].hyperparameters)["lam"] == "per_task"


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"fn": "nope"}, "unknown merge method 'nope'"),
        ({"fn": "task_arithmetic", "hparams": {"k": 1}}, "no option method.mine.hparams.k"),
        ({"fn": "toy_scaled", "search": {"lamb": [1]}}, "no option method.mine.search.lamb"),
        ({"fn": "toy_scaled", "alphas": []}, "method.mine.alphas is empty"),
        ({"fn": "toy_scaled", "alphas": [-0.5]}, "method.mine.alphas must be positive"),
        ({"fn": "toy_scaled", "search": {"lam": []}}, "search.lam"),
        ({"fn": "toy_scaled", "select": "best"}, "select must be"),
    ],
)
def test_bad_method_configs_name_the_config_and_option(cfg, match):
    with pytest.raises(ValueError, match=match):
        Method.from_config("mine", cfg)


def test_a_method_failing_on_the_stand_in_keeps_its_error_and_says_where(monkeypatch):
    """Bad options become a ``ValueError`` naming the method; any other failure of the
    method's own code on the stand-in keeps its type and traceback, with a note naming
    the method and the search point."""

    def failing(*args, **kwargs):
        raise RuntimeError("a shape bug in the method")

    monkeypatch.setattr(protocol, "merge", failing)
    method = Method.from_config("mine", {"fn": "toy_scaled", "search": {"lam": [0.5]}})
    with pytest.raises(RuntimeError, match="a shape bug") as caught:
        method.check_options(2)
    assert caught.value.__notes__ == [
        "raised by method.mine on stand-in task vectors at {'lam': 0.5}"
    ]
