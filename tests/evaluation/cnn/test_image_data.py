"""CNN data: CIFAR through `datasets` on a local stand-in, the sandbox, per-model subsets."""

import numpy as np
import pytest
import torch

from evaluation.cnn.config import Setting
from evaluation.cnn.data import HubImages, SandboxImages, batches, model_subsets, sandbox_data
from tests.evaluation.cnn.standins import write_cifar_standin


def test_cifar_path_loads_a_local_standin(tmp_path):
    path = write_cifar_standin(tmp_path / "cifar10")
    data = HubImages(name="cifar10", hub_id="uoft-cs/cifar10", path=str(path)).load()
    assert data.train_x.shape == (30, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (12, 3, 32, 32) and data.num_classes == 10
    assert data.train_y.tolist() == [i % 10 for i in range(30)]
    x, y = next(batches(data, "train", np.arange(8), 4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]


def test_cifar100_fine_labels_are_found(tmp_path):
    path = write_cifar_standin(tmp_path / "c100", label_key="fine_label", num_classes=100)
    data = HubImages(name="cifar100", path=str(path)).load()
    assert data.num_classes == 100


def test_missing_path_and_split_are_named(tmp_path):
    with pytest.raises(ValueError, match="benchmark.dataset.path.*nowhere"):
        HubImages(name="cifar10", path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="hub_id or a local path"):
        HubImages(name="cifar10")
    path = write_cifar_standin(tmp_path / "c10")
    with pytest.raises(KeyError, match="validation"):
        HubImages(name="cifar10", path=str(path), test_split="validation").load()


def test_sandbox_images_check_their_sizes_and_load():
    images = SandboxImages(name="sb", num_classes=6, image_size=12, train_size=300,
                           test_size=60, noise=0.1, seed=0)  # fmt: skip
    data = images.load()
    assert data.train_x.shape == (300, 3, 12, 12) and data.num_classes == 6
    with pytest.raises(ValueError, match="benchmark.dataset.train_size"):
        SandboxImages(name="sb", num_classes=6, image_size=12, train_size=0, test_size=60,
                      noise=0.1, seed=0)  # fmt: skip


def test_sandbox_is_deterministic_and_balanced():
    a = sandbox_data("sb", 6, 12, 300, 60, seed=0)
    b = sandbox_data("sb", 6, 12, 300, 60, seed=0)
    c = sandbox_data("sb", 6, 12, 300, 60, seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (300, 3, 12, 12) and set(a.train_y.tolist()) == set(range(6))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_same_setting_gives_every_model_all_data():
    labels = torch.arange(100) % 10
    subsets = model_subsets(labels, 10, 3, Setting("same"))
    assert len(subsets) == 3 and all(np.array_equal(s, np.arange(100)) for s in subsets)


@pytest.mark.parametrize("major", [1.0, 0.8])
def test_cross_setting_partitions_train_by_class_group(major):
    labels = torch.arange(1000) % 10
    subsets = model_subsets(labels, 10, 2, Setting("cross", major, 0))
    joined = np.concatenate(subsets)
    assert len(joined) == 1000 and len(np.unique(joined)) == 1000  # disjoint, complete
    for s in subsets:
        counts = np.bincount(labels[s].numpy(), minlength=10)
        own = counts >= 50
        assert own.sum() == 5  # its class group: half the classes
        assert counts[own].sum() == pytest.approx(500 * major, abs=5)
    if major == 1.0:
        classes = [set(labels[s].tolist()) for s in subsets]
        assert not classes[0] & classes[1]


def test_bad_setting_is_named():
    with pytest.raises(ValueError, match="major_fraction"):
        model_subsets(torch.arange(10), 10, 2, Setting("cross", 0.2))
    with pytest.raises(ValueError, match="kind"):
        model_subsets(torch.arange(10), 10, 2, Setting("split"))
    with pytest.raises(ValueError, match="major_fraction is an option of kind 'cross'"):
        model_subsets(torch.arange(10), 10, 2, Setting("same", 0.5))


def test_augmentation_keeps_shapes_and_is_seeded():
    data = sandbox_data("sb", 4, 8, 16, 4, seed=0)

    def first(seed):
        gen = torch.Generator().manual_seed(seed)
        return next(batches(data, "train", None, 16, generator=gen, augment=True))[0]

    assert first(0).shape == (16, 3, 8, 8)
    assert torch.equal(first(0), first(0)) and not torch.equal(first(0), first(1))
