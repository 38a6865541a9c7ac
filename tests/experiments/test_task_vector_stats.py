"""Task-vector statistics: relative norms and pairwise cosines, streamed key by key."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.task_vector_stats import main, markdown, task_vector_stats


def test_norms_and_cosines():
    theta = {
        "a": torch.tensor([3.0, 0.0, 0.0]),
        "b": torch.tensor([[4.0]]),
        "steps": torch.tensor([7]),
    }
    experts = {
        "x": {
            "a": torch.tensor([4.0, 0.0, 0.0]),
            "b": torch.tensor([[4.0]]),
            "steps": torch.tensor([7]),
        },
        "y": {
            "a": torch.tensor([3.0, 2.0, 0.0]),
            "b": torch.tensor([[4.0]]),
            "steps": torch.tensor([7]),
        },
        "z": {
            "a": torch.tensor([5.0, 0.0, 0.0]),
            "b": torch.tensor([[5.0]]),
            "steps": torch.tensor([9]),
        },
    }
    stats = task_vector_stats(theta, experts)
    assert stats.theta_norm == pytest.approx(5.0)  # the integer entry is not a parameter
    assert stats.relative_norms == pytest.approx((0.2, 0.4, math.sqrt(5) / 5))
    cos = stats.cosines
    assert cos[0][1] == pytest.approx(0.0) and cos[0][0] == pytest.approx(1.0)
    assert cos[0][2] == pytest.approx(2 / math.sqrt(5))
    assert sorted(stats.off_diagonal()) == pytest.approx(sorted([0.0, 2 / math.sqrt(5), 0.0]))
    text = markdown(stats, "toy")
    assert "| x | 0.20000 |" in text and "pairwise cosine: 0.000 .. 0.894 (mean 0.298)" in text
    with pytest.raises(ValueError, match="no experts"):
        task_vector_stats(theta, {})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=resnet20"], "model 'resnet20.*' builds a zoo for the 'different_init' regime"),
        (["+experiment=different_init_sandbox"], "pipeline '.*DifferentInitPipeline'"),
        (["benchmark=different_init_sandbox"], "benchmark 'sandbox_parts10' is not a task"),
        (["pipeline=different_init"], "pipeline '.*DifferentInitPipeline'"),
    ],
)
def test_a_different_init_config_is_refused_naming_what_is_supported(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        main(overrides)
    assert "task_vector_stats reads task-vector zoos" in str(err.value)
