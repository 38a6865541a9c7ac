"""LazySafetensors: a safetensors file read one tensor per key, usable as a task vector."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from evaluation.checkpoints import LazySafetensors
from merging import merge


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(4, 3, generator=g),
        "h": torch.randn(5, generator=g).half(),
        "b": torch.randn(2, 2, generator=g).bfloat16(),
        "n": torch.tensor(7),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


def test_reads_every_tensor_exactly(tmp_path: Path, state) -> None:
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    lazy = LazySafetensors(path)
    assert set(lazy) == set(state) and len(lazy) == len(state)
    for key, x in state.items():
        assert lazy[key].dtype == x.dtype and lazy[key].shape == x.shape
        assert torch.equal(lazy[key], x), key
    lazy["w"].add_(1)  # each read is a fresh tensor
    assert torch.equal(lazy["w"], state["w"])


def test_lazy_task_vectors_merge_like_dicts(tmp_path: Path) -> None:
    tvs = [{"w": torch.randn(6, 5), "v": torch.randn(7)} for _ in range(3)]
    lazy = []
    for t, tv in enumerate(tvs):
        save_file(tv, str(tmp_path / f"{t}.safetensors"))
        lazy.append(LazySafetensors(tmp_path / f"{t}.safetensors"))
    for name in ["ties", "consensus"]:
        a, b = merge(name, tvs), merge(name, lazy)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_errors_name_the_file_and_key(tmp_path: Path, state) -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        LazySafetensors(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="bad.safetensors"):
        LazySafetensors(bad)
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    with pytest.raises(KeyError, match="'missing'.*m.safetensors"):
        LazySafetensors(path)["missing"]
    lazy = LazySafetensors(path)
    path.write_bytes(path.read_bytes()[:-40])  # truncated after the header was read
    with pytest.raises(ValueError, match="truncated"):
        [lazy[k] for k in lazy]
