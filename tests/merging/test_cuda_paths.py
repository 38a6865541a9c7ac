"""Every data-free task-vector method on a CUDA device against the same merge on the CPU
(skipped without one: CI has none; run where a GPU is lent). Off the CPU the library takes
its torch branches (comparisons, the TALL rule, the exact top-k's band, masks, the spectral
solvers' ``torch.linalg.eigh``), which the CPU tests reach only in part (float64 inputs
take some of them): each must give the CPU's result within float tolerance (DARE's and
DELLA's seeded drops included: they are drawn on the CPU, whatever the device)."""

import pytest
import torch

from merging import merge
from merging.registry import METHODS

DEVICE = "cuda"
DATA_FREE = sorted(n for n, s in METHODS.items() if s.kind == "task_vectors" and not s.needs)
SHAPES = {
    "transformer.resblocks.0.attn.weight": (48, 32),
    "transformer.resblocks.0.attn.bias": (48,),
    "transformer.resblocks.1.mlp.weight": (24, 64),
    "conv.weight": (8, 4, 3, 3),
    "embedding": (40, 16),
}

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def task_vectors(num_tasks: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    tvs = [
        {k: torch.randn(s, generator=g) * 1e-2 for k, s in SHAPES.items()} for _ in range(num_tasks)
    ]
    for tv in tvs:
        tv["steps"] = torch.tensor(7)  # an integer buffer: carried, never merged
    return tvs


# The authors' variants and other bases, which take other branches
VARIANTS = [
    ("ties", {"topk_count": "authors", "extra_entries": 1, "zero_sign": "majority"}),
    ("ties", {"agg": "sum"}),
    ("tall_masks", {"base": "ties", "comparison": "strict", "lam": [0.2, 0.4, 0.6, 0.5]}),
    ("consensus", {"base": "ties", "k": 3}),
    ("magnitude_pruning", {"topk_count": "authors"}),
    ("tsv", {"rank_count": "authors"}),
    ("dare", {"base": "ties", "p": 0.5}),
]


@pytest.mark.parametrize(
    ("name", "options"),
    [(n, {}) for n in DATA_FREE] + VARIANTS,
    ids=[*DATA_FREE, *(f"{n}-{'-'.join(o)}" for n, o in VARIANTS)],
)
def test_the_device_gives_the_cpu_result(name: str, options: dict) -> None:
    tvs = task_vectors()
    on_cpu, on_device = merge(name, tvs, **options), merge(name, tvs, device=DEVICE, **options)
    on_cpu = on_cpu if isinstance(on_cpu, list) else [on_cpu]
    on_device = on_device if isinstance(on_device, list) else [on_device]
    assert len(on_device) == len(on_cpu)
    for cpu, device in zip(on_cpu, on_device, strict=True):
        assert list(device) == list(cpu)
        for key in cpu:
            got = device[key]
            assert got.device.type == "cpu" and got.dtype == cpu[key].dtype, key
            torch.testing.assert_close(got, cpu[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")
