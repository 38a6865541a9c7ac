"""The whole-model merge methods (kind ``models``) on a :class:`merging.context.ModelContext`:
alignment undoes a permutation, outputs have the promised form, options are checked."""

import dataclasses

import pytest
import torch

from merging import METHODS, merge_models, method_spec
from merging.alignment import pair_statistics
from merging.context import ModelContext, standin_context
from merging.methods.direct_average import average_states
from tests.merging.toy_networks import (
    RES_POINTS,
    RES_SPEC,
    TinyResNet,
    inputs,
    permuted_copy,
    seeded_model,
)

MODEL_METHODS = [
    "base_models", "ensemble", "direct_average", "weight_matching", "activation_matching",
    "zipit", "cca_merge", "np_merge",
]  # fmt: skip


def context_of(*models) -> ModelContext:
    x = inputs((3, 8, 8), 96, seed=2)
    y = torch.randint(0, 5, (96,), generator=torch.Generator().manual_seed(0))
    batches = list(zip(x.split(32), y.split(32), strict=True))
    return ModelContext(
        [m.state_dict() for m in models], TinyResNet(), RES_SPEC, lambda: iter(batches),
        {g: [p] for g, p in RES_POINTS.items()},
        train_batches=lambda n, b: lambda: zip(x[:n].split(b), y[:n].split(b), strict=True),
        train_size=96,
    )  # fmt: skip


def logits(context, state):
    with torch.no_grad():
        return context.network(state)(inputs((3, 8, 8), 32, seed=4))


def test_every_model_method_is_registered_with_its_metadata():
    method_spec("zipit")
    found = sorted(name for name, spec in METHODS.items() if spec.kind == "models")
    assert set(MODEL_METHODS) <= set(found)
    assert all(METHODS[m].min_inputs == (1 if m == "base_models" else 2) for m in MODEL_METHODS)
    assert METHODS["ensemble"].storage == "experts"


@pytest.mark.parametrize("method", ["weight_matching", "activation_matching", "zipit", "cca_merge"])
def test_merging_a_model_with_a_permuted_copy_gives_the_model_back(method):
    # seed 3: no unit is dead on these inputs (CCA's map is unique only on features that vary;
    # a dead unit may be mixed with others, which a BatchNorm reset then brings to life)
    model = seeded_model(TinyResNet, 3)
    permuted, _ = permuted_copy(model, RES_SPEC, seed=1)
    context = context_of(model, permuted)
    expected = logits(context, context.reset_batchnorm(model.state_dict()))
    merged = merge_models(method, context)
    torch.testing.assert_close(logits(context, merged), expected, rtol=1e-3, atol=1e-3)
    averaged = merge_models("direct_average", context)
    assert not torch.allclose(logits(context, averaged), expected, rtol=1e-3, atol=1e-3)


def test_outputs_base_models_ensemble_and_averages():
    a, b, c = (seeded_model(TinyResNet, s) for s in range(3))
    context = context_of(a, b, c)
    states = merge_models("base_models", context)
    assert isinstance(states, list) and len(states) == 3
    for state, model in zip(states, (a, b, c), strict=True):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    ensemble = merge_models("ensemble", context.with_states(context.states[:2]))
    x = inputs((3, 8, 8), 8)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), (a(x) + b(x)) / 2)
    average = merge_models("direct_average", context)
    plain = average_states(context.states)
    for k, v in plain.items():
        moved = k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(average[k], v) != moved, k


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("zipit", {}, "zipit merges exactly 2 models, got 3"),
        ("zipit", {"beta": True}, "'beta'"),
        ("cca_merge", {}, "cca_merge merges exactly 2 models"),
        ("zipit", {"alpha": 1.5}, "'alpha'"),
        ("cca_merge", {"gamma": -1}, "'gamma'"),
        ("zipit", {"budget_count": "paper"}, "'budget_count'"),
        ("weight_matching", {"max_iter": 0}, "'max_iter'"),
        ("weight_matching", {"max_iter": 2.5}, "'max_iter' must be a positive integer"),
        ("weight_matching", {"seed": -1}, "'seed' must be a non-negative integer"),
        ("weight_matching", {"seed": 1.5}, "'seed' must be a non-negative integer"),
        ("cca_merge", {"gamma": float("inf")}, "'gamma' must be a finite non-negative"),
    ],
)
def test_bad_options_and_model_counts_are_named(method, options, message):
    with pytest.raises(ValueError, match=message):
        merge_models(method, standin_context(3), **options)


def test_unknown_options_and_too_few_models_fail_in_the_registry():
    with pytest.raises(TypeError, match="no option tol"):
        merge_models("weight_matching", standin_context(2), tol=1)
    with pytest.raises(ValueError, match="at least 2 models"):
        merge_models("ensemble", standin_context(1))


def test_standin_context_runs_every_method_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    context = standin_context(2)
    for method in MODEL_METHODS:
        merge_models(method, context)
    assert torch.equal(torch.rand(1), before)


def test_pair_stats_is_the_shared_collector():
    a, b = seeded_model(TinyResNet, 0), seeded_model(TinyResNet, 1)
    context = context_of(a, b)
    ours = context.pair_stats(a.state_dict(), b.state_dict())
    theirs = pair_statistics(a, b, context.batches, RES_POINTS)
    assert all(torch.equal(ours[g].cov, theirs[g].cov) for g in theirs)


def test_every_merge_goes_through_the_context_reset_np_merge_included():
    context = standin_context(3)
    default, calls = context.reset_batchnorm, []

    def reset(state):
        calls.append(state)
        return default(state)

    counted = dataclasses.replace(context, reset_batchnorm=reset)
    for method, resets in (("direct_average", 1), ("zipit", 1), ("cca_merge", 1)):
        calls.clear()
        merge_models(method, counted.with_states(counted.states[:2]))
        assert len(calls) == resets, method
    calls.clear()
    merge_models("np_merge", counted, epochs=1, batch_size=4)
    assert len(calls) == 2  # after each pairwise merge of three models


def test_pair_stats_are_computed_once_per_pair_of_states():
    a, b = seeded_model(TinyResNet, 0), seeded_model(TinyResNet, 1)
    context = context_of(a, b)
    sa, sb = context.states
    first = context.pair_stats(sa, sb)
    assert all(context.pair_stats(sa, sb)[g] is first[g] for g in first)
    copied = {k: v.clone() for k, v in sa.items()}
    assert all(context.pair_stats(copied, sb)[g] is not first[g] for g in first)
    assert all(context.with_states([sa, sb]).pair_stats(sa, sb)[g] is not first[g] for g in first)


def _nan(key):
    def change(state):
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")

    return change


BAD_MODELS = {
    "missing": (lambda s: s.pop("fc.bias"), KeyError, r"model 1 lacks .* \['fc.bias'\]"),
    "extra": (lambda s: s.update(extra=torch.zeros(1)), KeyError, r"model 1 has entries .*'extra'"),
    "shape": (
        lambda s: s.update({"fc.weight": torch.zeros(7, 4)}),
        ValueError,
        r"model 1: 'fc.weight' has shape \(7, 4\), the architecture's is \(3, 4\)",
    ),
    "dtype": (
        lambda s: s.update({"conv1.weight": s["conv1.weight"].double()}),
        ValueError,
        "model 1: 'conv1.weight' is torch.float64, the architecture's is torch.float32",
    ),
    "nan": (_nan("bn2.bias"), ValueError, "model 1: 'bn2.bias' has NaN or infinite entries"),
}


@pytest.mark.parametrize("bad", BAD_MODELS)
@pytest.mark.parametrize("method", MODEL_METHODS)
def test_a_model_that_does_not_fit_the_architecture_is_named_before_merging(method, bad):
    # before: direct averaging, ZipIt!, the ensemble and the base models turned a NaN model
    # into chance-level rows; a model of another width failed in torch.stack or
    # load_state_dict without naming the model; float64 crashed NP Merge's convolution
    change, error, message = BAD_MODELS[bad]
    good = standin_context(2)
    states = [good.states[0], dict(good.states[1])]
    change(states[1])
    with pytest.raises(error, match=message):
        merge_models(method, good.with_states(states))
