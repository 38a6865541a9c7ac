"""merging.alignment: permutation specs, the feature statistics of two models, weight and
activation matching."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from merging.alignment import (
    PairStats,
    PermutationSpec,
    activation_matching,
    collect_activations,
    identity_permutations,
    invert_permutation,
    norm_axes,
    pair_statistics,
    permute_state,
    random_permutations,
    transform_state,
    weight_matching,
)
from tests.merging.toy_networks import (
    CASES,
    MLP,
    MLP_SPEC,
    RES_POINTS,
    RES_SPEC,
    TinyResNet,
    inputs,
    permuted_copy,
    seeded_model,
)


@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_permuted_network_computes_the_same_function(cls, spec, points, shape):
    model = seeded_model(cls, 0)
    permuted, perms = permuted_copy(model, spec)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    state, moved = model.state_dict(), permuted.state_dict()
    assert any(not torch.equal(state[k], moved[k]) for k in spec.axes)
    x = inputs(shape)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-5)


def test_permute_state_carries_keys_outside_the_spec_and_inverts():
    state = seeded_model(TinyResNet, 0).state_dict()
    perms = random_permutations(RES_SPEC, state, torch.Generator().manual_seed(0))
    out = permute_state(RES_SPEC, state, perms)
    assert out["bn0.num_batches_tracked"] is state["bn0.num_batches_tracked"]
    assert out["fc.bias"] is state["fc.bias"]
    back = permute_state(RES_SPEC, out, {g: invert_permutation(p) for g, p in perms.items()})
    assert all(torch.equal(back[k], state[k]) for k in state)
    ident = permute_state(RES_SPEC, state, identity_permutations(RES_SPEC, state))
    assert all(torch.equal(ident[k], state[k]) for k in state)


def test_transform_state_with_permutation_matrices_equals_permute_state():
    state = seeded_model(TinyResNet, 0).state_dict()
    perms = random_permutations(RES_SPEC, state, torch.Generator().manual_seed(1))
    mats = {g: torch.eye(len(p), dtype=torch.float64)[p] for g, p in perms.items()}
    out = transform_state(RES_SPEC, state, mats, {g: m.T for g, m in mats.items()})
    expected = permute_state(RES_SPEC, state, perms)
    for k in state:
        torch.testing.assert_close(out[k], expected[k])


def test_spec_errors_name_key_and_group():
    state = MLP().state_dict()
    state["fc2.bias"] = torch.zeros(17)
    with pytest.raises(ValueError, match=r"'h2'.*'fc2.bias'.*17"):
        MLP_SPEC.sizes(state)
    del state["fc2.bias"]
    with pytest.raises(KeyError, match="fc2.bias"):
        MLP_SPEC.sizes(state)
    with pytest.raises(ValueError, match="fc1.weight"):
        PermutationSpec({"fc1.weight": ("h1",)}).sizes(MLP().state_dict())
    with pytest.raises(KeyError, match="'h2'"):
        permute_state(MLP_SPEC, MLP().state_dict(), {"h1": torch.arange(16)})
    with pytest.raises(ValueError, match="not a permutation"):
        permute_state(
            MLP_SPEC, MLP().state_dict(), {"h1": torch.zeros(16).long(), "h2": torch.arange(16)}
        )


@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_weight_matching_recovers_a_random_permutation(cls, spec, points, shape):
    state_a = seeded_model(cls, 0).state_dict()
    perms = random_permutations(spec, state_a, torch.Generator().manual_seed(5))
    state_b = permute_state(spec, state_a, perms)
    found = weight_matching(spec, state_a, state_b)
    aligned = permute_state(spec, state_b, found)
    assert all(torch.equal(aligned[k], state_a[k]) for k in state_a)


def test_weight_matching_improves_the_objective_between_different_models():
    a, b = seeded_model(TinyResNet, 0).state_dict(), seeded_model(TinyResNet, 1).state_dict()

    def objective(sb):
        return sum((a[k].double() * sb[k].double()).sum() for k in RES_SPEC.axes)

    aligned = permute_state(RES_SPEC, b, weight_matching(RES_SPEC, a, b, seed=3))
    assert objective(aligned) > objective(b)


@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_activation_matching_recovers_a_random_permutation(cls, spec, points, shape):
    model_a = seeded_model(cls, 0)
    model_b, _ = permuted_copy(model_a, spec, seed=7)
    batches = list(inputs(shape, 64).split(16))
    acts_a = collect_activations(model_a, batches, points)
    acts_b = collect_activations(model_b, batches, points)
    found = activation_matching(acts_a, acts_b)
    streamed = activation_matching(stats=pair_statistics(model_a, model_b, batches, points))
    assert all(torch.equal(found[g], streamed[g]) for g in found)
    aligned = permute_state(spec, model_b.state_dict(), found)
    assert all(torch.equal(aligned[k], model_a.state_dict()[k]) for k in aligned)


def test_a_group_can_be_read_at_several_points():
    model_a = seeded_model(TinyResNet, 0)
    model_b, _ = permuted_copy(model_a, RES_SPEC, seed=8)
    batches = [inputs((3, 8, 8), 16)]
    points = {**RES_POINTS, "r1": ["relu0", "relu2"]}
    acts = collect_activations(model_a, batches, points)
    assert acts["r1"].shape == (2 * 16 * 8 * 8, 6)
    stats = pair_statistics(model_a, model_b, batches, points)
    assert stats["r1"].count == 2 * stats["b1"].count
    aligned = permute_state(RES_SPEC, model_b.state_dict(), activation_matching(stats=stats))
    assert all(torch.equal(aligned[k], model_a.state_dict()[k]) for k in aligned)


def test_pair_stats_match_torch_statistics():
    a, b = torch.randn(50, 3), torch.randn(50, 3)
    stats = PairStats()
    stats.update(a[:20], b[:20])
    stats.update(a[20:], b[20:])
    joint = torch.cat([a, b], 1).double()
    torch.testing.assert_close(stats.corr(), torch.corrcoef(joint.T))
    torch.testing.assert_close(stats.mean, joint.mean(0))


def test_activation_errors_name_group_and_module():
    with pytest.raises(KeyError, match="nope"):
        collect_activations(MLP(), [torch.randn(2, 8)], {"h1": "nope"})
    with pytest.raises(ValueError, match="'h1'"):
        activation_matching({"h1": torch.randn(5, 3)}, {"h1": torch.randn(5, 4)})


# Weight matching scores learned weights only (issue 9, item 4): a group over ``l1.weight``
# (rows), BatchNorm ``bn.*`` and ``l2.weight`` (columns).
ONE_GROUP = PermutationSpec(
    {"l1.weight": ("h", None), **norm_axes("bn", "h"), "l2.weight": (None, "h")}
)


def _one_group_state(running_var):
    return {
        "l1.weight": torch.tensor([[1.0, 0.5], [0.2, 1.0]]),
        "bn.weight": torch.tensor([1.0, 0.9]),
        "bn.bias": torch.tensor([0.1, -0.1]),
        "bn.running_mean": torch.tensor([0.3, 0.2]),
        "bn.running_var": torch.tensor(running_var),
        "l2.weight": torch.tensor([[0.5, 0.4]]),
    }


def test_weight_matching_does_not_score_batchnorm_statistics():
    """The issue's example: models identical except running_var A = [10, 0.1], B = [0.1, 10];
    the authors' answer is the identity (scoring the statistics gave the swap)."""
    a, b = _one_group_state([10.0, 0.1]), _one_group_state([0.1, 10.0])
    assert ONE_GROUP.statistics == {"bn.running_mean", "bn.running_var"}
    assert torch.equal(weight_matching(ONE_GROUP, a, b)["h"], torch.tensor([0, 1]))
    scored = PermutationSpec(ONE_GROUP.axes, statistics=())  # the former behaviour
    assert torch.equal(weight_matching(scored, a, b)["h"], torch.tensor([1, 0]))
    moved = permute_state(ONE_GROUP, b, {"h": torch.tensor([1, 0])})  # still permuted
    assert torch.equal(moved["bn.running_var"], torch.tensor([10.0, 0.1]))
    with pytest.raises(KeyError, match="not in the spec"):
        PermutationSpec(ONE_GROUP.axes, statistics=["bn.num_batches_tracked"])


@pytest.mark.parametrize("seed", range(5))
def test_weight_matching_equals_the_authors_linear_assignment_on_one_group(seed):
    """Restated from samuela/git-re-basin and shoroi/align-n-merge ``weight_matching``: with
    one permutation group it converges in one step, to ``linear_sum_assignment(A,
    maximize=True)`` with ``A = sum_(key, axis) W_A[key] W_B[key]^T`` (``axis`` moved first)
    over the keys of their spec, which lists weights and normalisation scale/bias only."""
    gen = torch.Generator().manual_seed(seed)
    h = 7

    def state():
        return {
            "l1.weight": torch.randn(h, 5, generator=gen),
            "bn.weight": torch.rand(h, generator=gen) + 0.5,
            "bn.bias": torch.randn(h, generator=gen),
            "bn.running_mean": 10 * torch.randn(h, generator=gen),
            "bn.running_var": 100 * torch.rand(h, generator=gen),
            "l2.weight": torch.randn(3, h, generator=gen),
        }

    a, b = state(), state()
    score = np.zeros((h, h))
    for key, axis in (("l1.weight", 0), ("bn.weight", 0), ("bn.bias", 0), ("l2.weight", 1)):
        wa = np.moveaxis(a[key].double().numpy(), axis, 0).reshape(h, -1)
        wb = np.moveaxis(b[key].double().numpy(), axis, 0).reshape(h, -1)
        score += wa @ wb.T
    rows, cols = linear_sum_assignment(score, maximize=True)
    assert np.array_equal(rows, np.arange(h))
    assert weight_matching(ONE_GROUP, a, b, seed=seed)["h"].tolist() == cols.tolist()
