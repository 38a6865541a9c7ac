"""Permutation specs, weight / activation matching, ZipIt!, CCA Merge, BatchNorm reset."""

import copy

import pytest
import torch
from torch import nn

from merging.alignment import (
    PairStats,
    PermutationSpec,
    activation_matching,
    cca_merge,
    collect_activations,
    conv_axes,
    identity_permutations,
    invert_permutation,
    linear_axes,
    norm_axes,
    pair_statistics,
    permute_state,
    random_permutations,
    transform_state,
    weight_matching,
    zipit,
)
from merging.alignment.zipit import zip_features
from merging.batchnorm import reset_batchnorm


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(8, 16), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(16, 16), nn.ReLU()
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


MLP_SPEC = PermutationSpec(
    {
        **linear_axes("fc1", None, "h1"),
        **linear_axes("fc2", "h1", "h2"),
        **linear_axes("fc3", "h2", None),
    }
)
MLP_POINTS = {"h1": "act1", "h2": "act2"}


class TinyResNet(nn.Module):
    """Stem, one identity block, one downsampling block with a conv shortcut, linear head."""

    def __init__(self) -> None:
        super().__init__()
        conv = lambda i, o, s=1: nn.Conv2d(i, o, 3, s, 1, bias=False)  # noqa: E731
        self.conv0, self.bn0, self.relu0 = conv(3, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv1, self.bn1, self.relu1 = conv(6, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = conv(6, 6), nn.BatchNorm2d(6), nn.ReLU()
        self.conv3, self.bn3, self.relu3 = conv(6, 10, 2), nn.BatchNorm2d(10), nn.ReLU()
        self.conv4, self.bn4, self.relu4 = conv(10, 10), nn.BatchNorm2d(10), nn.ReLU()
        self.short = nn.Conv2d(6, 10, 1, 2, bias=False)
        self.bn_short = nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        h = self.bn4(self.conv4(self.relu3(self.bn3(self.conv3(x)))))
        x = self.relu4(h + self.bn_short(self.short(x)))
        return self.fc(x.mean((2, 3)))


RES_SPEC = PermutationSpec(
    {
        **conv_axes("conv0", None, "r1"),
        **norm_axes("bn0", "r1"),
        **conv_axes("conv1", "r1", "b1"),
        **norm_axes("bn1", "b1"),
        **conv_axes("conv2", "b1", "r1"),
        **norm_axes("bn2", "r1"),
        **conv_axes("conv3", "r1", "b2"),
        **norm_axes("bn3", "b2"),
        **conv_axes("conv4", "b2", "r2"),
        **norm_axes("bn4", "r2"),
        **conv_axes("short", "r1", "r2"),
        **norm_axes("bn_short", "r2"),
        **linear_axes("fc", "r2", None),
    }
)
RES_POINTS = {"r1": "relu2", "b1": "relu1", "b2": "relu3", "r2": "relu4"}


def _model(cls, seed):
    torch.manual_seed(seed)
    model = cls()
    for m in model.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


CASES = [
    pytest.param(MLP, MLP_SPEC, MLP_POINTS, (8,), id="mlp"),
    pytest.param(TinyResNet, RES_SPEC, RES_POINTS, (3, 8, 8), id="resnet"),
]


def _inputs(shape, n=64, seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _with_state(model, state):
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out.eval()


def _permuted_copy(model, spec, seed=3):
    state = model.state_dict()
    perms = random_permutations(spec, state, torch.Generator().manual_seed(seed))
    return _with_state(model, permute_state(spec, state, perms)), perms


@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_permuted_network_computes_the_same_function(cls, spec, points, shape):
    model = _model(cls, 0)
    permuted, perms = _permuted_copy(model, spec)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    state, moved = model.state_dict(), permuted.state_dict()
    assert any(not torch.equal(state[k], moved[k]) for k in spec.axes)
    x = _inputs(shape)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-5)


def test_permute_state_carries_keys_outside_the_spec_and_inverts():
    state = _model(TinyResNet, 0).state_dict()
    perms = random_permutations(RES_SPEC, state, torch.Generator().manual_seed(0))
    out = permute_state(RES_SPEC, state, perms)
    assert out["bn0.num_batches_tracked"] is state["bn0.num_batches_tracked"]
    assert out["fc.bias"] is state["fc.bias"]
    back = permute_state(RES_SPEC, out, {g: invert_permutation(p) for g, p in perms.items()})
    assert all(torch.equal(back[k], state[k]) for k in state)
    ident = permute_state(RES_SPEC, state, identity_permutations(RES_SPEC, state))
    assert all(torch.equal(ident[k], state[k]) for k in state)


def test_transform_state_with_permutation_matrices_equals_permute_state():
    state = _model(TinyResNet, 0).state_dict()
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
    state_a = _model(cls, 0).state_dict()
    perms = random_permutations(spec, state_a, torch.Generator().manual_seed(5))
    state_b = permute_state(spec, state_a, perms)
    found = weight_matching(spec, state_a, state_b)
    aligned = permute_state(spec, state_b, found)
    assert all(torch.equal(aligned[k], state_a[k]) for k in state_a)


def test_weight_matching_improves_the_objective_between_different_models():
    a, b = _model(TinyResNet, 0).state_dict(), _model(TinyResNet, 1).state_dict()

    def objective(sb):
        return sum((a[k].double() * sb[k].double()).sum() for k in RES_SPEC.axes)

    aligned = permute_state(RES_SPEC, b, weight_matching(RES_SPEC, a, b, seed=3))
    assert objective(aligned) > objective(b)


@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_activation_matching_recovers_a_random_permutation(cls, spec, points, shape):
    model_a = _model(cls, 0)
    model_b, _ = _permuted_copy(model_a, spec, seed=7)
    batches = list(_inputs(shape, 64).split(16))
    acts_a = collect_activations(model_a, batches, points)
    acts_b = collect_activations(model_b, batches, points)
    found = activation_matching(acts_a, acts_b)
    streamed = activation_matching(stats=pair_statistics(model_a, model_b, batches, points))
    assert all(torch.equal(found[g], streamed[g]) for g in found)
    aligned = permute_state(spec, model_b.state_dict(), found)
    assert all(torch.equal(aligned[k], model_a.state_dict()[k]) for k in aligned)


def test_a_group_can_be_read_at_several_points():
    model_a = _model(TinyResNet, 0)
    model_b, _ = _permuted_copy(model_a, RES_SPEC, seed=8)
    batches = [_inputs((3, 8, 8), 16)]
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


@pytest.mark.parametrize("method", [zipit, cca_merge], ids=["zipit", "cca"])
@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_merging_a_model_with_its_permutation_keeps_its_function(method, cls, spec, points, shape):
    model_a = _model(cls, 0)
    model_b, _ = _permuted_copy(model_a, spec, seed=11)
    batches = list(_inputs(shape, 128, seed=2).split(32))
    stats = pair_statistics(model_a, model_b, batches, points)
    merged = _with_state(
        model_a, method(spec, model_a.state_dict(), model_b.state_dict(), stats=stats)
    )
    x = _inputs(shape, 32, seed=4)
    with torch.no_grad():
        # float64 merge algebra; the tolerance covers the float32 round trip and CCA's
        # matrix square roots (exact permutation matrices up to ~1e-6)
        torch.testing.assert_close(merged(x), model_a(x), rtol=1e-4, atol=1e-4)


def test_zipit_accepts_raw_activations_and_differs_from_averaging_for_different_models():
    a, b = _model(MLP, 0), _model(MLP, 1)
    batches = [_inputs((8,), 256)]
    acts_a, acts_b = (
        collect_activations(a, batches, MLP_POINTS),
        collect_activations(b, batches, MLP_POINTS),
    )
    merged = zipit(MLP_SPEC, a.state_dict(), b.state_dict(), acts_a, acts_b)
    avg = {k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in merged}
    assert set(merged) == set(avg)
    assert not torch.allclose(merged["fc2.weight"], avg["fc2.weight"])
    torch.testing.assert_close(merged["fc3.bias"], avg["fc3.bias"])


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0.0, 1.0), (0.3, 0.5)])
def test_zip_features_partitions_into_n_clusters(alpha, beta):
    n = 12
    x = torch.randn(200, 2 * n, generator=torch.Generator().manual_seed(0))
    unmerge = zip_features(torch.corrcoef(x.T), alpha, beta)
    assert unmerge.shape == (2 * n, n)
    assert torch.equal(unmerge.sum(1), torch.ones(2 * n, dtype=unmerge.dtype))
    assert (unmerge.sum(0) >= 1).all()
    if alpha <= 0:
        assert torch.equal(unmerge.sum(0), torch.full((n,), 2.0, dtype=unmerge.dtype))
    within = ((unmerge[:n].sum(0) == 2) | (unmerge[n:].sum(0) == 2)).sum().item()
    assert within <= 2 * int(n // 2 * beta)
    if beta == 0:  # only across models: a permutation
        assert torch.equal(unmerge[:n].sum(0), unmerge[n:].sum(0))


def test_cca_maps_recover_a_linear_mixing():
    from merging.alignment.cca import cca_maps

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 5, generator=gen, dtype=torch.float64)
    mix = torch.randn(5, 5, generator=gen, dtype=torch.float64) + 3 * torch.eye(
        5, dtype=torch.float64
    )
    b = a @ mix.T  # f_B = mix f_A
    t, t_inv = cca_maps(PairStats.from_acts(a, b), reg=0.0)
    torch.testing.assert_close(t @ mix, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(t @ t_inv, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)


def test_reset_batchnorm_changes_only_running_statistics():
    model = _model(TinyResNet, 0).train()
    model.bn1.momentum = 0.3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs((3, 8, 8), 60)
    reset_batchnorm(model, [(xb, None) for xb in x.split(20)])
    after = model.state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    for k, v in before.items():
        if k.endswith(stats):
            assert not torch.equal(after[k], v), k
        else:
            assert torch.equal(after[k], v), k
    assert after["bn0.num_batches_tracked"].item() == 3
    assert model.training and model.bn1.momentum == 0.3
    with torch.no_grad():  # cumulative average of equal-size batch means = data mean
        h = model.conv0(x)
    torch.testing.assert_close(model.bn0.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_reset_batchnorm_respects_num_batches_and_rejects_empty_data():
    model = _model(TinyResNet, 0)
    reset_batchnorm(model, lambda: iter(_inputs((3, 8, 8), 40).split(10)), num_batches=2)
    assert model.bn0.num_batches_tracked.item() == 2
    with pytest.raises(ValueError, match="no data"):
        reset_batchnorm(model, [])


def test_repair_gives_each_channel_the_interpolated_endpoint_statistics():
    from merging.batchnorm import channel_moments, repair

    a, b = _model(MLP, 0), _model(MLP, 1)
    merged = _with_state(
        a, {k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in a.state_dict()}
    )
    batches = list(_inputs((8,), 400).split(100))
    repair(merged, a, b, batches, ["fc1", "fc2"], weight_a=0.3)
    for name in ("fc1", "fc2"):
        mean_a, sd_a = channel_moments(a, getattr(a, name), batches, None)
        mean_b, sd_b = channel_moments(b, getattr(b, name), batches, None)
        mean, sd = channel_moments(merged, getattr(merged, name), batches, None)
        torch.testing.assert_close(mean, 0.3 * mean_a + 0.7 * mean_b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sd, 0.3 * sd_a + 0.7 * sd_b, rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="nope"):
        repair(merged, a, b, batches, ["nope"])
