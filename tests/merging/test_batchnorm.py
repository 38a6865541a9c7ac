"""BatchNorm statistics after merging: reset from data, REPAIR, a state's statistics
recomputed."""

import pytest
import torch

from merging.batchnorm import channel_moments, recompute_batchnorm_state, repair, reset_batchnorm
from tests.merging.toy_networks import MLP, TinyResNet, inputs, seeded_model, with_state


def test_reset_batchnorm_changes_only_running_statistics():
    model = seeded_model(TinyResNet, 0).train()
    model.bn1.momentum = 0.3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = inputs((3, 8, 8), 60)
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
    model = seeded_model(TinyResNet, 0)
    reset_batchnorm(model, lambda: iter(inputs((3, 8, 8), 40).split(10)), num_batches=2)
    assert model.bn0.num_batches_tracked.item() == 2
    with pytest.raises(ValueError, match="no data"):
        reset_batchnorm(model, [])


def test_repair_gives_each_channel_the_interpolated_endpoint_statistics():
    a, b = seeded_model(MLP, 0), seeded_model(MLP, 1)
    merged = with_state(a, {k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in a.state_dict()})
    batches = list(inputs((8,), 400).split(100))
    repair(merged, a, b, batches, ["fc1", "fc2"], weight_a=0.3)
    for name in ("fc1", "fc2"):
        mean_a, sd_a = channel_moments(a, getattr(a, name), batches, None)
        mean_b, sd_b = channel_moments(b, getattr(b, name), batches, None)
        mean, sd = channel_moments(merged, getattr(merged, name), batches, None)
        torch.testing.assert_close(mean, 0.3 * mean_a + 0.7 * mean_b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sd, 0.3 * sd_a + 0.7 * sd_b, rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="nope"):
        repair(merged, a, b, batches, ["nope"])


def test_recompute_batchnorm_state_changes_only_the_statistics_of_a_copy():
    model = seeded_model(TinyResNet, 0)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    state = seeded_model(TinyResNet, 1).state_dict()
    batches = [(x, None) for x in inputs((3, 8, 8), 40).split(20)]
    fresh = recompute_batchnorm_state(model, state, batches)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in own.items())
    for k, v in state.items():
        moved = k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(fresh[k], v) != moved, k
    with_bn = with_state(model, state).train()
    reset_batchnorm(with_bn, batches)
    assert all(torch.equal(fresh[k], v) for k, v in with_bn.state_dict().items())
