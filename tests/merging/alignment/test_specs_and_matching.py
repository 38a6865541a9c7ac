"""merging.alignment: permutation specs, the feature statistics of two models, weight and
activation matching."""

import pytest
import torch

from merging.alignment import (
    PairStats,
    PermutationSpec,
    activation_matching,
    collect_activations,
    identity_permutations,
    invert_permutation,
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
