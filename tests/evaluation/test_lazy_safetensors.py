"""LazySafetensors: a safetensors file read one tensor per key, usable as a task vector."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from evaluation.checkpoints import LazySafetensors
from merging import merge
from merging.task_vectors import TaskVector


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


@pytest.mark.parametrize("stride", [1, 2, 3, 127])
def test_strided_reads_the_sampled_entries_exactly(tmp_path: Path, state, stride) -> None:
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    lazy = LazySafetensors(path)
    for key, x in state.items():
        got = lazy.strided(key, stride)
        assert got.dtype == x.dtype and torch.equal(got, x.flatten()[::stride]), key
    with pytest.raises(ValueError, match="stride"):
        lazy.strided("w", 0)
    with pytest.raises(KeyError, match="'missing'.*m.safetensors"):
        lazy.strided("missing", 2)
    path.write_bytes(path.read_bytes()[:-40])  # truncated after the header was read
    with pytest.raises(ValueError, match="truncated"):
        [lazy.strided(k, 1) for k in lazy]


def test_lazy_topk_samples_only_but_selects_and_checks_like_dicts(tmp_path: Path) -> None:
    """TIES' first pass samples through ``strided`` (no whole read): the same selection,
    and a NaN anywhere is still found, naming the task vector and the key."""
    g = torch.Generator().manual_seed(1)
    tvs = [{"w": torch.randn(300, 40, generator=g), "v": torch.randn(7, generator=g)}
           for _ in range(3)]  # fmt: skip
    paths = [tmp_path / f"{t}.safetensors" for t in range(3)]
    for tv, path in zip(tvs, paths, strict=True):
        save_file(tv, str(path))

    class Counting(LazySafetensors):  # counts whole-tensor reads
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.reads: dict[str, int] = {}

        def read_into(self, key: str, buffer: torch.Tensor) -> torch.Tensor:  # every whole read
            self.reads[key] = self.reads.get(key, 0) + 1
            return super().read_into(key, buffer)

    for density in (0.05, 0.2, 0.9):
        lazy = [Counting(p) for p in paths]
        a, b = merge("ties", tvs, density=density), merge("ties", lazy, density=density)
        assert all(torch.equal(a[k], b[k]) for k in a)
        # whole reads: the exact pass and the merge (shapes and dtypes come from the header)
        assert [c.reads for c in lazy] == [{"w": 2, "v": 2}] * 3
    tvs[2]["w"][123, 5] = float("nan")  # not on the sampled stride
    save_file(tvs[2], str(paths[2]))
    with pytest.raises(ValueError, match="'w'.*NaN"):
        merge("ties", [LazySafetensors(p) for p in paths])


def _data_free_methods() -> list[str]:
    from merging import METHODS, method_spec

    method_spec("ties")  # registers every method
    return sorted(n for n, s in METHODS.items() if s.kind == "task_vectors" and not s.needs)


def _assert_same(a: object, b: object) -> None:
    for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b],
                    strict=True):  # fmt: skip
        assert sorted(x) == sorted(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("name", _data_free_methods())
def test_every_data_free_method_merges_files_like_dicts(tmp_path: Path, name: str) -> None:
    """Lazy reads go into reused buffers (``TaskVectors.tensors``), also through
    ``TaskVector(fine-tuned file, pretrained)``: keys of growing and shrinking sizes, a
    float16 key and a non-float one merge bit for bit as from dicts, and no output still
    points into a buffer that a later key overwrote."""
    g = torch.Generator().manual_seed(2)
    block = "transformer.resblocks.{}.".format  # a layout LiNeS knows
    shapes = {block(0) + "a.weight": (6, 5), block(0) + "a.bias": (6,),
              block(1) + "b.weight": (12, 10), block(1) + "c.weight": (4, 10)}  # fmt: skip
    tvs = []
    for t in range(3):
        tv = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
        tv[block(1) + "h.weight"] = torch.randn(3, 4, generator=g).half()
        tv["n"] = torch.tensor(7)
        save_file(tv, str(tmp_path / f"{t}.safetensors"))
        tvs.append(tv)
    lazy = [LazySafetensors(tmp_path / f"{t}.safetensors") for t in range(3)]
    _assert_same(merge(name, tvs), merge(name, lazy))
    pretrained = {k: x.clone() / 3 for k, x in tvs[0].items()}  # the files as fine-tuned models
    in_memory = [TaskVector(tv, pretrained) for tv in tvs]
    _assert_same(merge(name, in_memory), merge(name, [TaskVector(x, pretrained) for x in lazy]))


def test_read_into_reuses_a_buffer_that_fits(tmp_path: Path, state) -> None:
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    lazy = LazySafetensors(path)
    buffer = torch.empty(4 * 12, dtype=torch.uint8)
    x = lazy.read_into("w", buffer)
    assert torch.equal(x, state["w"]) and x.data_ptr() == buffer.data_ptr()
    y = lazy.read_into("w", buffer[:10])  # too small: a fresh tensor
    assert torch.equal(y, state["w"]) and y.untyped_storage().data_ptr() != buffer.data_ptr()
    with pytest.raises(ValueError, match="uint8"):
        lazy.read_into("w", torch.empty(12))


def test_byte_range_locates_each_tensor_in_the_file(tmp_path: Path, state) -> None:
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    lazy, data = LazySafetensors(path), path.read_bytes()
    for key, x in state.items():
        start, stop = lazy.byte_range(key)
        assert stop - start == x.numel() * x.element_size()
        if x.numel():
            raw = torch.frombuffer(bytearray(data[start:stop]), dtype=x.dtype)
            assert torch.equal(raw.reshape(x.shape), x)
    with pytest.raises(KeyError, match="nope"):
        lazy.byte_range("nope")


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn,
                                   torch.float8_e5m2, torch.complex64])  # fmt: skip
def test_reads_every_dtype_safetensors_writes(tmp_path: Path, dtype) -> None:
    path = tmp_path / "m.safetensors"
    x = torch.arange(6).reshape(2, 3).to(dtype)
    save_file({"x": x, "w": torch.randn(3)}, str(path))
    lazy = LazySafetensors(path)
    assert lazy.meta("x") == (torch.Size([2, 3]), dtype)
    assert torch.equal(lazy["x"].view(torch.uint8), x.view(torch.uint8))  # the same bytes


def test_an_unknown_dtype_is_named_not_called_corruption(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(3)}, str(path))
    data = path.read_bytes().replace(b'"F32"', b'"F4X"')  # same length: a dtype from the future
    path.write_bytes(data)
    with pytest.raises(ValueError, match="key 'w' has dtype 'F4X'") as e:
        LazySafetensors(path)
    assert "corrupt" not in str(e.value)
