"""The CNN zoo cache: trained once, reused, corrupt files detected and rebuilt identically."""

import logging
import warnings

import pytest
import torch

import evaluation.cnn.zoo as zoo_module
from evaluation.cnn.zoo import CnnZoo
from evaluation.zoo import Env
from tests.evaluation.cnn.standins import tiny_benchmark

ZOO = CnnZoo(name="vgg11_tiny", arch="vgg11", width=0.0625)


@pytest.fixture
def trained(caplog):
    """Messages of the models trained since the last call."""
    caplog.set_level(logging.INFO, logger="evaluation.cnn.zoo")

    def count():
        n = sum("cnn zoo: trained" in r.getMessage() for r in caplog.records)
        caplog.clear()
        return n

    return count


def test_zoo_is_trained_once_then_reused(tmp_path, monkeypatch, trained):
    bench, env = tiny_benchmark(), Env(tmp_path)
    first = ZOO.load(bench, "same", env)
    assert trained() == 2 and len(first.states) == 2
    root = next((tmp_path / "cnn_zoo").iterdir())
    assert root.name.startswith("sb-vgg11x0.0625-") and (root / "manifest.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(zoo_module, "train_model", no_training)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trusted cache warns about nothing
        again = ZOO.load(tiny_benchmark(), "same", env)
    for a, b in zip(first.states, again.states, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.test_accuracy == first.test_accuracy
    assert not torch.equal(
        first.states[0]["features.0.weight"], first.states[1]["features.0.weight"]
    )
    net = again.network(again.states[1])
    assert torch.equal(net.state_dict()["classifier.weight"], again.states[1]["classifier.weight"])
    assert set(again.activation_points) == set(again.spec.groups)


def test_corrupt_file_is_detected_and_rebuilt_identically(tmp_path, trained):
    env = Env(tmp_path)
    first = ZOO.load(tiny_benchmark(), "same", env)
    root = next((tmp_path / "cnn_zoo").iterdir())
    victim = sorted(root.glob("seed1-*.safetensors"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-4:] = b"\x00\x01\x02\x03"
    victim.write_bytes(bytes(raw))
    trained()
    with pytest.warns(UserWarning, match="fails its checksum"):
        rebuilt = ZOO.load(tiny_benchmark(), "same", env)
    assert trained() == 1
    # training is deterministic by seed, so the rebuilt model equals the original
    assert all(torch.equal(first.states[1][k], v) for k, v in rebuilt.states[1].items())


def test_a_new_recipe_or_setting_gets_its_own_models(tmp_path, trained):
    env = Env(tmp_path)
    ZOO.load(tiny_benchmark(), "same", env)
    trained()
    cross = ZOO.load(tiny_benchmark(), "cross", env)
    assert trained() == 2
    data = tiny_benchmark().data
    assert set(data.train_y[cross.subsets[0]].tolist()).isdisjoint(
        data.train_y[cross.subsets[1]].tolist()
    )
    ZOO.load(tiny_benchmark(lr=0.05), "same", env)
    assert trained() == 2 and len(list((tmp_path / "cnn_zoo").iterdir())) == 2
    with pytest.raises(KeyError, match="no setting 'mixed'"):
        ZOO.load(tiny_benchmark(), "mixed", env)


def test_unreadable_manifest_keeps_intact_models_and_retrains_the_rest(tmp_path, trained):
    env = Env(tmp_path)
    ZOO.load(tiny_benchmark(), "same", env)
    root = next((tmp_path / "cnn_zoo").iterdir())
    (root / "manifest.json").write_text("{not json")
    for sidecar in root.glob("seed1-*.record.json"):  # model 1 loses its own record too
        sidecar.unlink()
    trained()
    with pytest.warns(UserWarning, match="unreadable"):
        ZOO.load(tiny_benchmark(), "same", env)
    assert trained() == 1  # model 0 is recovered from its record, model 1 retrained


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_models": 0}, "benchmark.num_models"),
        ({"training": {"epochs": 0}}, "benchmark.training.epochs"),
        ({"training": {"warmup_epochs": -1}}, "benchmark.training.warmup_epochs"),
    ],
)
def test_out_of_range_benchmark_values_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        if "training" in change:
            tiny_benchmark(**change["training"])
        else:
            tiny_benchmark(**change)


def test_a_diverged_model_is_named_and_not_cached(tmp_path, monkeypatch):
    # before: a model trained to NaN weights was cached and trusted; every merge of it was
    # scored at chance, or failed in linear assignment without naming the model
    train = zoo_module.train_model

    def diverging(net, *args, seed, **kwargs):
        train(net, *args, seed=seed, **kwargs)
        if seed == 1:
            with torch.no_grad():
                net.classifier.weight.fill_(float("nan"))
        return net

    monkeypatch.setattr(zoo_module, "train_model", diverging)
    with pytest.raises(ValueError, match=r"seed1-.*\(seed 1\): 'classifier.weight' has NaN"):
        ZOO.load(tiny_benchmark(), "same", Env(tmp_path))
    root = next((tmp_path / "cnn_zoo").iterdir())
    assert [p.name.split("-")[0] for p in root.glob("*.safetensors")] == ["seed0"]


def test_a_cached_model_with_nan_weights_is_named(tmp_path):
    bench, env = tiny_benchmark(), Env(tmp_path)
    ZOO.load(bench, "same", env)
    root = next((tmp_path / "cnn_zoo").iterdir())
    manifest = zoo_module.Manifest(root, ZOO.recipe(bench), "cnn zoo")
    name = sorted(p.name for p in root.glob("seed0-*.safetensors"))[0]
    state = zoo_module.load_file(str(root / name))
    state["classifier.bias"][0] = float("inf")
    with manifest.writing(name, **manifest.files[name]) as tmp:  # recorded as intact
        zoo_module.save_file(state, str(tmp))
    with pytest.raises(ValueError, match=f"cached base model .*{name}: 'classifier.bias'"):
        ZOO.load(bench, "same", env)
