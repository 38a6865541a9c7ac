"""The different-initialisation benchmark's data: the val split held out of train, the
training pool everything else draws from, and the BatchNorm reset of the authors' protocol
(one epoch over the training images with the training augmentation)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from evaluation.cnn.models import build_model
from merging.batchnorm import recompute_batchnorm_state
from tests.evaluation.cnn.standins import tiny_benchmark


def _seen(source) -> torch.Tensor:
    """Every image of a batch source, concatenated."""
    return torch.cat([x for x, _ in source()])


def _rows_of(bench, indices) -> torch.Tensor:
    return bench.data.normalize(bench.data.train_x[torch.as_tensor(indices)])


def test_val_split_is_held_out_of_everything_else():
    bench = tiny_benchmark(val=16)
    val, pool = bench.val_indices, bench.pool
    assert len(val) == 16 and bench.train_size == 96 - 16 and bench.has_val
    assert np.intersect1d(val, pool).size == 0
    assert np.array_equal(np.union1d(val, pool), np.arange(96))
    for setting in bench.settings:
        for subset in bench.subsets(setting):
            assert np.intersect1d(subset, val).size == 0
    assert np.array_equal(bench.subsets("same")[0], pool)
    held = _rows_of(bench, val)
    sources = [bench.merge_batches(), bench.train_batches(1000, 16, 3, shuffle=True),
               bench.reset_batches()]  # fmt: skip
    for source in sources[:2]:  # un-augmented: rows are train images, none of them val's
        seen = _seen(source)
        assert not (seen[:, None] == held[None]).flatten(2).all(-1).any()
    assert len(_seen(sources[2])) == bench.train_size


def test_no_val_split_keeps_all_of_train_and_refuses_val_scores():
    bench = tiny_benchmark(val=0)
    assert not bench.has_val and bench.train_size == 96
    net = build_model({"arch": "vgg11", "width": 0.0625}, 4, seed=0)
    with pytest.raises(ValueError, match="no val split"):
        bench.accuracy(net, split="val")
    assert 0 <= bench.accuracy(net) <= 100


def test_val_accuracy_scores_the_held_out_images():
    bench = tiny_benchmark(val=16)

    class Oracle(nn.Module):  # predicts the label of each val image, class 0 elsewhere
        def forward(self, x):
            held = _rows_of(bench, bench.val_indices)
            labels = bench.data.train_y[torch.as_tensor(bench.val_indices)]
            hit = (x[:, None] == held[None]).flatten(2).all(-1)
            out = torch.zeros(len(x), 4)
            out[torch.arange(len(x)), (hit.float() @ labels.float()).long()] = 1.0
            return out

    assert bench.accuracy(Oracle(), split="val") == 100.0
    with pytest.raises(ValueError, match="'test' or 'val'"):
        bench.accuracy(Oracle(), split="train")


@pytest.mark.parametrize("augment", [True, False])
def test_reset_batches_are_one_augmented_epoch_and_the_same_on_every_call(augment):
    bench = tiny_benchmark(augment=augment)
    first, again = list(bench.reset_batches()()), list(bench.reset_batches()())
    assert len(first) == -(-bench.train_size // 16)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    images = torch.cat([x for x, _ in first])
    labels = torch.cat([y for _, y in first])
    assert sorted(labels.tolist()) == sorted(bench.data.train_y[bench.pool].tolist())
    plain = _rows_of(bench, bench.pool)
    matched = (images[:, None] == plain[None]).flatten(2).all(-1).any(1)
    if augment:  # random crops and flips: most images differ from every stored one
        assert matched.float().mean() < 0.5
    else:  # a shuffle of the pool
        assert matched.all()
    assert len(_seen(tiny_benchmark(reset=24).reset_batches())) == 24


def test_reset_follows_the_authors_reset_bn_stats():
    """Restated from shoroi/align-n-merge ``core/utils.py`` ``reset_bn_stats``: momentum None,
    running statistics reset, the model in train mode over the whole loader, no gradient."""
    bench = tiny_benchmark(augment=True)
    net = build_model({"arch": "resnet20", "width": 0.125}, 4, seed=1)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ours = recompute_batchnorm_state(net, state, bench.reset_batches())
    theirs = copy.deepcopy(net)
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    theirs.train()
    with torch.no_grad():
        for x, _ in bench.reset_batches()():
            theirs(x)
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours[k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours["bn1.running_var"], state["bn1.running_var"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"val": -1}, "benchmark.val.samples"),
        ({"val": 96}, "benchmark.val.samples"),
        ({"reset": 0}, "benchmark.batchnorm_reset.samples"),
    ],
)
def test_out_of_range_values_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_benchmark(**change)
