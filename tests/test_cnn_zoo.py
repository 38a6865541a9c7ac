"""The CNN zoo cache: trained once, reused, corrupt files detected and rebuilt."""

import json

import pytest
import torch

import evaluation.cnn.zoo as zoo_module
from evaluation.cnn.data import sandbox_data
from evaluation.cnn.train import TrainRecipe
from evaluation.cnn.zoo import load_zoo

MODEL = {"arch": "vgg11", "width": 0.0625}
RECIPE = TrainRecipe(epochs=1, batch_size=32)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return sandbox_data("sb", 4, 8, 96, 32, seed=0)


def build(data, cache, logs, num_models=2, setting=None):
    return load_zoo(
        MODEL, data, setting or {"kind": "same"}, num_models, RECIPE, cache, log=logs.append
    )


def test_zoo_is_trained_once_then_reused(data, tmp_path, monkeypatch):
    logs = []
    first = build(data, tmp_path, logs)
    assert sum("zoo: trained" in m for m in logs) == 2
    root = next((tmp_path / "cnn_zoo").iterdir())
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["recipe"]["training"]["epochs"] == 1 and len(manifest["models"]) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(zoo_module, "train_model", no_training)
    again = build(data, tmp_path, logs)
    for a, b in zip(first.states, again.states, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.test_accuracy == first.test_accuracy
    assert not torch.equal(
        first.states[0]["features.0.weight"], first.states[1]["features.0.weight"]
    )


def test_corrupt_file_is_detected_and_rebuilt_identically(data, tmp_path):
    logs = []
    first = build(data, tmp_path, logs)
    root = next((tmp_path / "cnn_zoo").iterdir())
    victim = sorted(root.glob("seed1-*.safetensors"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-4:] = b"\x00\x01\x02\x03"
    victim.write_bytes(bytes(raw))
    logs.clear()
    rebuilt = build(data, tmp_path, logs)
    assert any("corrupt" in m for m in logs) and sum("zoo: trained" in m for m in logs) == 1
    # training is deterministic by seed, so the rebuilt model equals the original
    assert all(torch.equal(first.states[1][k], v) for k, v in rebuilt.states[1].items())


def test_unreadable_manifest_retrains_and_other_settings_get_own_models(data, tmp_path):
    logs = []
    build(data, tmp_path, logs)
    root = next((tmp_path / "cnn_zoo").iterdir())
    (root / "manifest.json").write_text("{not json")
    logs.clear()
    build(data, tmp_path, logs, num_models=1)
    assert any("unusable" in m for m in logs) and sum("zoo: trained" in m for m in logs) == 1
    logs.clear()
    cross = build(data, tmp_path, logs, setting={"kind": "cross", "major_fraction": 1.0})
    assert sum("zoo: trained" in m for m in logs) == 2
    assert set(data.train_y[cross.subsets[0]].tolist()).isdisjoint(
        data.train_y[cross.subsets[1]].tolist()
    )
