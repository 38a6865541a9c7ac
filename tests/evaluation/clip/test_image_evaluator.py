"""The grid-point path of the CLIP evaluator: the in-place weight writer and the kept
preprocessed inputs give exactly what the plain formulas give (issue 15)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from evaluation.clip.evaluator import ImageEvaluator
from evaluation.clip.heads import ClassificationHead
from evaluation.clip.model import normalise
from evaluation.zoo import write_task_vector

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.proj = nn.Linear(4 * 2 * 2, 6)
        self.register_buffer("steps", torch.tensor(3))  # a non-float entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x).flatten(1))


def make(input_cache_bytes: int, batch_size: int = 5) -> tuple[ImageEvaluator, dict]:
    torch.manual_seed(0)
    encoder = TinyEncoder()
    pretrained = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    heads = {
        t: ClassificationHead(nn.functional.normalize(torch.randn(3, 6, generator=g)), 10.0)
        for t in ("a", "b")
    }
    splits = {
        (t, s): (
            torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
            torch.randint(0, 3, (n,), generator=g),
        )
        for t, n in (("a", 13), ("b", 7))
        for s in ("val", "test")
    }
    preprocess = functools.partial(normalise, mean=MEAN, std=STD)
    evaluator = ImageEvaluator(
        encoder,
        pretrained,
        heads,
        splits,
        preprocess,
        batch_size,
        input_cache_bytes=input_cache_bytes,
    )
    tau = {
        k: torch.randn(v.shape, generator=g) for k, v in pretrained.items() if v.is_floating_point()
    }
    return evaluator, tau


def test_write_task_vector_matches_the_formula_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(50, 7, generator=g), "n": torch.tensor([1, 2])}
    tau = {"w": torch.randn(50, 7, generator=g), "n": torch.tensor([5, 5])}
    params = {k: torch.empty_like(v) for k, v in base.items()}
    for alpha in (0.1, 0.3, 1.0, 2.7):
        write_task_vector(params, base, tau, alpha)
        assert torch.equal(
            params["w"].view(torch.int32), (base["w"] + alpha * tau["w"]).view(torch.int32)
        )
        assert torch.equal(params["n"], base["n"])  # non-float entries keep theta_0
    write_task_vector(params, base, None)
    assert torch.equal(params["w"], base["w"])


def test_write_task_vector_refuses_a_tau_of_another_shape() -> None:
    params, base = {"w": torch.zeros(3, 2)}, {"w": torch.ones(3, 2)}
    with pytest.raises(ValueError, match="'w' has shape \\(2, 3\\)"):
        write_task_vector(params, base, {"w": torch.ones(2, 3)})
    assert params["w"].shape == (3, 2)


@pytest.mark.parametrize("budget", [0, 13 * 3 * 8 * 8 * 4])  # none kept / only task a's val
def test_kept_inputs_give_the_same_scores_as_preprocessing_per_batch(budget: int) -> None:
    kept, tau = make(1 << 30)
    limited, _ = make(budget)
    for alpha in (None, 0.3, 1.0):
        for evaluator in (kept, limited):
            evaluator.load(None if alpha is None else tau, alpha or 1.0)
        for task in ("a", "b"):
            for split in ("val", "test"):
                assert kept.accuracy(task, split) == limited.accuracy(task, split)
    assert all(x is not None for x in kept._inputs.values())
    held = sum(x.nbytes for x in limited._inputs.values() if x is not None)
    assert held <= budget
