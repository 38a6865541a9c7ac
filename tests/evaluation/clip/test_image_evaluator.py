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


def make(
    input_cache_bytes: int, batch_size: int = 5, device: str = "cpu"
) -> tuple[ImageEvaluator, dict]:
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
        device,
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


def scores(evaluator: ImageEvaluator, tau: dict) -> list[float]:
    out = []
    for alpha in (None, 0.3, 1.0):
        evaluator.load(None if alpha is None else tau, alpha or 1.0)
        out += [evaluator.accuracy(t, s) for t in ("a", "b") for s in ("val", "test")]
    return out


def kept_bytes(evaluator: ImageEvaluator) -> int:
    return sum(x.nbytes for x in evaluator._inputs.values() if x is not None)


FLOATS_A_VAL = 13 * 3 * 8 * 8 * 4  # task a's val split preprocessed
RAW_ALL = 2 * (13 + 7) * 3 * 8 * 8  # every split's uint8 images (a: 13 x 192 bytes per split)


@pytest.mark.parametrize("budget", [0, FLOATS_A_VAL])  # none kept / only task a's val
def test_kept_inputs_give_the_same_scores_as_preprocessing_per_batch(budget: int) -> None:
    kept, tau = make(1 << 30)
    limited, _ = make(budget)
    assert scores(kept, tau) == scores(limited, tau)
    assert all(x is not None and x.is_floating_point() for x in kept._inputs.values())
    assert kept_bytes(limited) <= budget


def test_kept_uint8_images_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the CPU, kept splits are their uint8 images (forced here on the CPU): the same
    scores, within the budget, in order of first use."""
    kept, tau = make(1 << 30)
    monkeypatch.setattr(ImageEvaluator, "_keeps_floats", lambda self: False)
    raw, _ = make(RAW_ALL)  # every split's images
    some, _ = make(2 * 13 * 192)  # task a's two splits; b's do not fit after them
    assert scores(raw, tau) == scores(kept, tau) == scores(some, tau)
    assert all(x is not None and x.dtype == torch.uint8 for x in raw._inputs.values())
    tiers = {key: None if x is None else x.is_floating_point() for key, x in some._inputs.items()}
    assert tiers == {("a", "val"): False, ("a", "test"): False, ("b", "val"): None,
                     ("b", "test"): None}  # fmt: skip
    assert kept_bytes(raw) <= RAW_ALL and kept_bytes(some) <= 2 * 13 * 192


def test_the_default_budget_is_1_gib_on_the_cpu() -> None:
    evaluator, _ = make(None)
    assert evaluator.input_cache_bytes == 1 << 30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kept_or_streamed_the_same_scores_on_cuda() -> None:
    """uint8 images kept on the device, or batches streamed from pinned memory (the host not
    waiting for the copies): the same scores on the device."""
    kept, tau = make(1 << 30, device="cuda")
    streamed, _ = make(0, device="cuda")
    assert scores(kept, tau) == scores(streamed, tau)
    assert all(x is not None and x.dtype == torch.uint8 for x in kept._inputs.values())
    assert all(x is None for x in streamed._inputs.values())
    free, total = torch.cuda.mem_get_info()
    assert 0 < make(None, device="cuda")[0].input_cache_bytes <= min(total // 8, free // 4)
