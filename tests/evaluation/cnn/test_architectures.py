"""Every CNN architecture's permutation spec and activation points match the model; bad
architecture configs are named."""

import pytest
import torch

from evaluation.cnn.models import ARCHITECTURES, build_model
from evaluation.cnn.zoo import CnnZoo
from merging.alignment import PermutationSpec, permute_state, random_permutations

WIDTHS = {"resnet20": 0.25, "vgg11": 0.0625, "vgg16": 0.0625}


def random_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model with random BatchNorm statistics and affine parameters,
    so that eval-mode outputs depend on every permuted entry."""
    model = build_model({"arch": arch, "width": WIDTHS[arch]}, num_classes=7, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def outputs(model: torch.nn.Module, x: torch.Tensor, points: dict[str, list[str]]):
    """Logits and the output of every activation point."""
    modules, acts = dict(model.named_modules()), {}
    hooks = [
        modules[name].register_forward_hook(lambda m, i, o, n=name: acts.__setitem__(n, o))
        for names in points.values()
        for name in names
    ]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, acts


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_random_permutation_leaves_function_unchanged(arch):
    model = random_model(arch)
    spec = PermutationSpec(model.permutation_axes())
    state = model.state_dict()
    perms = random_permutations(spec, state, torch.Generator().manual_seed(1))
    permuted = random_model(arch, seed=5)
    permuted.load_state_dict(permute_state(spec, state, perms))
    points = model.activation_points()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    logits, acts = outputs(model, x, points)
    logits_p, acts_p = outputs(permuted, x, points)
    torch.testing.assert_close(logits_p, logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits, outputs(random_model(arch, seed=5), x, points)[0])
    # each activation point carries its group's units: permuted features = features[:, p]
    for group, names in points.items():
        for name in names:
            torch.testing.assert_close(
                acts_p[name], acts[name][:, perms[group]], rtol=1e-4, atol=1e-4
            )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_spec_covers_every_float_entry_and_points_every_group(arch):
    model = random_model(arch)
    spec = PermutationSpec(model.permutation_axes())
    state = model.state_dict()
    sizes = spec.sizes(state)
    assert {k for k, v in state.items() if v.is_floating_point()} == set(spec.axes)
    assert set(model.activation_points()) == set(sizes)
    modules = dict(model.named_modules())
    for group, names in model.activation_points().items():
        assert names and all(n in modules for n in names), group


def test_width_multiplier_scales_channels():
    narrow = build_model({"arch": "resnet20", "width": 0.5}, 10)
    wide = build_model({"arch": "resnet20", "width": 2}, 10)
    assert narrow.fc.in_features == 32 and wide.fc.in_features == 128
    assert build_model({"arch": "vgg16", "width": 0.25}, 100).classifier.out_features == 100


def test_same_seed_same_init_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model({"arch": "vgg11", "width": 0.125}, 10, seed=3)
    assert torch.equal(torch.rand(1), before)
    b = build_model({"arch": "vgg11", "width": 0.125}, 10, seed=3)
    c = build_model({"arch": "vgg11", "width": 0.125}, 10, seed=4)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


@pytest.mark.parametrize("cfg", [{"arch": "resnet56"}, {"arch": "vgg11", "width": 0}])
def test_bad_architecture_config_is_named(cfg):
    with pytest.raises(ValueError, match="model.arch|model.width"):
        build_model(cfg, 10)
    with pytest.raises(ValueError, match="model.arch|model.width"):
        CnnZoo(name="x", **cfg)
