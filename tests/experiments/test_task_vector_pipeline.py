"""The task-vector pipeline's own checks: distinct experts, Consensus' TALL lambdas."""

import pytest
import torch

from evaluation.protocol import Method
from experiments.pipelines.late_options import TALL_GRID
from experiments.pipelines.task_vector_run import (
    _tall_method_for,
    _with_zoo_entries,
    check_distinct_experts,
)


def state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(5, generator=g), "b": torch.randn(3, 2, generator=g),
            "n": torch.tensor(7)}  # fmt: skip


def test_two_tasks_with_the_same_expert_weights_are_refused_naming_both():
    pretrained = state(0)
    experts = {"EuroSAT": state(1), "MNIST": state(2), "SVHN": state(1)}
    with pytest.raises(ValueError, match="task 'SVHN' has the same weights as task 'EuroSAT'"):
        check_distinct_experts(pretrained, experts, list(experts))


def test_an_expert_equal_to_the_pretrained_model_is_refused():
    with pytest.raises(ValueError, match="same weights as the pretrained model"):
        check_distinct_experts(state(0), {"MNIST": state(0)}, ["MNIST"])


def test_distinct_experts_pass():
    check_distinct_experts(state(0), {"a": state(1), "b": state(2)}, ["a", "b"])


def method(key: str, fn: str, **hparams) -> Method:
    return Method(key=key, label=key, fn=fn, hparams=hparams,
                  search={"lam": [0.2, 0.4]} if fn == "tall_masks" else {})  # fmt: skip


def test_consensus_reuses_the_run_s_tall_masks_method_with_the_same_base():
    ta, ties = method("tm", "tall_masks", base="ta"), method("tmt", "tall_masks", base="ties")
    assert _tall_method_for(method("c", "consensus", base="ta"), [ties, ta]) == (ta, False)
    consensus_ties = method("ct", "consensus", base="ties", agg="sum")
    assert _tall_method_for(consensus_ties, [ta, ties]) == (ties, False)
    strict = method("cs", "consensus", base="ta", comparison="strict")
    own, is_own = _tall_method_for(strict, [ta, ties])  # no run with the same masks: its own
    assert own.hparams == {"base": "ta", "comparison": "strict"} and own.select == "per_task"
    assert is_own


def test_consensus_takes_another_selection_of_the_run_before_its_own_in_any_order():
    """The TALL-masks methods in a Consensus unit's key (those that select otherwise than it
    would on its own) decide its lambdas, whatever the config's order: a run-level method
    that makes its own selection serves only where none of those fits."""
    default = Method(key="tall_masks", label="TALL", fn="tall_masks", hparams={"base": "ta"},
                     search={"lam": TALL_GRID}, select="per_task")  # fmt: skip
    consensus = method("c", "consensus", base="ta", lam="from_tall_masks")
    a, b = method("a_tall", "tall_masks", base="ta"), method("b_tall", "tall_masks", base="ta")
    for run in ([default, b, a], [a, default, b], [b, a, default]):
        assert _tall_method_for(consensus, run) == (a, False)
    assert _tall_method_for(consensus, [default]) == (default, True)


def test_extra_entries_from_the_zoo():
    m = method("t", "ties", extra_entries="from_zoo")
    assert _with_zoo_entries(m, 25_599_489).hparams["extra_entries"] == 25_599_489
    assert _with_zoo_entries(method("t", "ties"), 5).hparams == {}
