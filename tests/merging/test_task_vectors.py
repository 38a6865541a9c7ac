"""Task vectors, the method registry and key-by-key access."""

import pytest
import torch

from merging import TaskVector, apply_task_vector, merge, method_spec


def state(value: float) -> dict[str, torch.Tensor]:
    return {
        "w": torch.full((2, 3), value),
        "b": torch.full((3,), value, dtype=torch.float16),
        "bn.num_batches_tracked": torch.tensor(7),
    }


def test_task_vector_reads_like_the_paper():
    pre, ft = state(1.0), state(3.0)
    tau = TaskVector(ft, pre)
    assert torch.equal(tau["w"], torch.full((2, 3), 2.0))
    assert tau["b"].dtype == torch.float16
    assert torch.equal(tau["bn.num_batches_tracked"], torch.tensor(7))  # carried, not merged
    theta = apply_task_vector(pre, tau, alpha=0.5)
    assert torch.equal(theta["w"], torch.full((2, 3), 2.0))
    assert torch.equal(theta["bn.num_batches_tracked"], pre["bn.num_batches_tracked"])


def test_task_vector_is_lazy():
    reads = []

    class Recording(dict):
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    tau = TaskVector(Recording(state(2.0)), state(1.0))
    assert reads == []
    tau["w"]
    assert reads == ["w"]


def test_task_vector_meta_is_what_a_read_gives():
    ft = {"w": torch.ones(2, 3, dtype=torch.float16), "b": torch.ones(3), "n": torch.tensor(7),
          "h": torch.ones(4, dtype=torch.bfloat16)}  # fmt: skip
    pre = {"w": torch.zeros(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16),
           "n": torch.tensor(1), "h": torch.zeros(4, dtype=torch.bfloat16)}  # fmt: skip
    tau = TaskVector(ft, pre)
    for key in ft:
        assert tau.meta(key) == (tau[key].shape, tau[key].dtype), key


@pytest.mark.parametrize("stride", [1, 2, 5])
def test_task_vector_samples_like_its_entries(stride: int):
    g = torch.Generator().manual_seed(0)
    ft = {"w": torch.randn(4, 5, generator=g), "h": torch.randn(7, generator=g).half(),
          "n": torch.tensor([3, 4])}  # fmt: skip
    pre = {"w": torch.randn(4, 5, generator=g), "h": torch.randn(7, generator=g),
           "n": torch.tensor([1, 2])}  # fmt: skip
    tau = TaskVector(ft, pre)
    for key in ft:
        assert torch.equal(tau.strided(key, stride), tau[key].reshape(-1)[::stride]), key
    with pytest.raises(ValueError, match="'w'.*differ in size"):
        TaskVector({**ft, "w": torch.ones(21)}, pre).strided("w", stride)


def test_task_vector_key_mismatch_names_the_key():
    ft = state(2.0)
    del ft["b"]
    with pytest.raises(KeyError, match="'b'"):
        TaskVector(ft, state(1.0))


def test_task_arithmetic_and_weight_averaging_by_hand():
    taus = [{"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([3.0, 4.0])}]
    assert torch.equal(merge("task_arithmetic", taus)["w"], torch.tensor([4.0, 2.0]))
    assert torch.equal(merge("weight_averaging", taus)["w"], torch.tensor([2.0, 1.0]))
    assert torch.equal(merge("zeroshot", taus)["w"], torch.zeros(2))
    experts = merge("finetuned", taus)
    assert [e["w"].tolist() for e in experts] == [[1.0, -2.0], [3.0, 4.0]]


def test_merge_keeps_input_dtype_and_carries_non_float():
    taus = [TaskVector(state(v), state(1.0)) for v in (2.0, 4.0)]
    out = merge("task_arithmetic", taus)
    assert out["b"].dtype == torch.float16 and torch.equal(out["b"], torch.full((3,), 4.0).half())
    assert torch.equal(out["bn.num_batches_tracked"], torch.tensor(7))


def test_unknown_method_lists_valid_ones():
    with pytest.raises(KeyError, match="valid: .*task_arithmetic"):
        merge("no_such_method", [state(1.0)])


def test_unknown_option_names_it():
    with pytest.raises(TypeError, match="no option k"):
        merge("task_arithmetic", [state(1.0)], k=0.1)


@pytest.mark.parametrize(
    "other, match",
    [
        ({"w": torch.zeros(3, 2), "b": torch.zeros(3).half()}, "key 'w': task vector 1 has shape"),
        (
            {"w": torch.zeros(2, 3).double(), "b": torch.zeros(3).half()},
            "key 'w': task vector 1 is",
        ),
        ({"w": torch.zeros(2, 3)}, "task vector 1 lacks key 'b'"),
        ({"w": torch.full((2, 3), float("nan")), "b": torch.zeros(3).half()}, "'w': task vector 1"),
    ],
)
def test_bad_task_vectors_name_key_and_task(other, match):
    good = {"w": torch.zeros(2, 3), "b": torch.zeros(3).half()}
    with pytest.raises((KeyError, ValueError, TypeError), match=match):
        merge("task_arithmetic", [good, other])


def test_method_spec_lists_hyperparameters():
    assert method_spec("task_arithmetic").hparams == {}
