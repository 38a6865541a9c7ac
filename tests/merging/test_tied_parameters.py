"""A tied parameter (two keys holding one tensor, such as T5's embedding and LM head) is one
parameter in every method: merged once, counted once by a global top-k, one mask, and it
comes out tied."""

import pytest
import torch

from merging import TaskVector, merge, method_spec
from merging.streaming import tied_groups


def tied_state(seed: int, n: int = 400) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n // 20, 20, generator=g)
    return {"shared": emb, "lm_head": emb, "other": torch.randn(50, generator=g)}


def test_keys_sharing_storage_are_found():
    assert tied_groups(tied_state(0)) == [["shared", "lm_head"]]
    assert tied_groups({"a": torch.ones(3), "b": torch.ones(3)}) == []


@pytest.mark.parametrize(
    "method, options",
    [
        ("ties", {"density": 0.2}),
        ("magnitude_pruning", {"density": 0.2}),
        ("task_arithmetic", {}),
        ("tall_masks", {"lam": 0.4}),
        ("consensus", {"k": 2, "lam": 0.4}),
        ("emr", {}),
    ],
)
def test_a_tied_parameter_is_merged_once_and_stays_tied(method, options):
    taus = [tied_state(s) for s in range(3)]
    out = merge(method, taus, **options)
    for o in out if isinstance(out, list) else [out]:
        assert set(o) == {"shared", "lm_head", "other"}
        assert o["shared"] is o["lm_head"] or torch.equal(o["shared"], o["lm_head"])


def test_global_top_k_counts_a_tied_parameter_once():
    taus = [tied_state(s) for s in range(2)]
    untied = [{"shared": t["shared"], "other": t["other"]} for t in taus]
    tied_out = merge("ties", taus, density=0.2)
    untied_out = merge("ties", untied, density=0.2)
    for key in ("shared", "other"):
        assert torch.equal(tied_out[key], untied_out[key])


def test_task_vectors_of_tied_checkpoints_declare_their_ties():
    pretrained, finetuned = tied_state(0), tied_state(1)
    tau = TaskVector(finetuned, pretrained, name="rte")
    assert tau.tied == [["shared", "lm_head"]]
    out = merge("ties", [tau, TaskVector(tied_state(2), pretrained)], density=0.2)
    assert out["shared"] is out["lm_head"]


def test_errors_name_the_task():
    pretrained = {"w": torch.zeros(3)}
    bad = TaskVector({"w": torch.tensor([0.0, float("nan"), 0.0])}, pretrained, name="cola")
    good = TaskVector({"w": torch.ones(3)}, pretrained, name="rte")
    with pytest.raises(ValueError, match="key 'w': cola contains NaN or Inf"):
        merge("task_arithmetic", [good, bad])


def test_a_non_numeric_option_names_the_option():
    with pytest.raises(ValueError, match="option 'density' must be a finite number, got 'abc'"):
        merge("ties", [{"w": torch.ones(3)}, {"w": torch.ones(3)}], density="abc")
    assert method_spec("ties").hparams["density"] == 0.2


def test_a_view_in_another_dtype_is_not_tied() -> None:
    a = torch.randn(4)
    tvs = [
        {"w": a, "bits": a.view(torch.int32)},
        {"w": torch.randn(4), "bits": torch.randn(4).view(torch.int32)},
    ]
    assert tied_groups(tvs[0]) == []
    out = merge("task_arithmetic", tvs)
    assert out["bits"].dtype == torch.int32 and torch.equal(out["bits"], tvs[0]["bits"])
