"""Boolean masks at 1 bit per weight, and task vectors stored as masks of a shared vector.

TALL masks (Wang et al., ICML 2024) compress T fine-tuned models to one multi-task
vector plus T binary masks: ``tau_t ~ m_t * tau_MTL``. :func:`pack_masks` stores each
mask with ``numpy.packbits`` (8 weights per byte) and :func:`unpack_masks` restores it
bit-exactly; saving the bytes is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from merging.streaming import TaskVectors, masked

Tensor = torch.Tensor


@dataclass(frozen=True)
class PackedMask:
    """One boolean mask: its shape and ``numpy.packbits`` of its flattened values."""

    shape: tuple[int, ...]
    data: bytes

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def pack_mask(mask: Tensor, key: str = "mask") -> PackedMask:
    """A boolean tensor at 1 bit per entry."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask {key!r} must be boolean, got {mask.dtype}")
    bits = np.packbits(mask.detach().to("cpu").numpy().ravel())
    return PackedMask(tuple(mask.shape), bits.tobytes())


def unpack_mask(packed: PackedMask, key: str = "mask") -> Tensor:
    """The boolean tensor that :func:`pack_mask` stored."""
    n = packed.numel
    if len(packed.data) != (n + 7) // 8:
        raise ValueError(
            f"mask {key!r}: {len(packed.data)} bytes cannot hold shape {packed.shape} at 1 bit each"
        )
    bits = np.unpackbits(np.frombuffer(packed.data, dtype=np.uint8), count=n)
    return torch.from_numpy(bits.view(bool)).reshape(packed.shape)  # 0/1 bytes: no copy


def pack_masks(masks: Mapping[str, Tensor]) -> dict[str, PackedMask]:
    """Each key's boolean mask at 1 bit per weight."""
    return {key: pack_mask(m, key) for key, m in masks.items()}


def unpack_masks(packed: Mapping[str, PackedMask]) -> dict[str, Tensor]:
    """The boolean masks that :func:`pack_masks` stored, bit-exactly."""
    return {key: unpack_mask(p, key) for key, p in packed.items()}


def storage_bits(packed: Mapping[str, PackedMask]) -> int:
    """Bits the packed masks occupy (1 per weight, each key padded to whole bytes)."""
    return 8 * sum(len(p.data) for p in packed.values())


class MaskedVector(Mapping[str, Tensor]):
    """The task vector ``scale * m * tau``: ``vector[key]`` where the packed mask
    ``masks[key]`` is set and 0 elsewhere, times ``scale``, built when a key is read (in
    ``dtypes[key]`` if given: a vector kept in float32 is served in its input dtype); keys
    without a mask read ``vector`` as it is."""

    def __init__(
        self,
        vector: Mapping[str, Tensor],
        masks: Mapping[str, PackedMask],
        scale: float = 1.0,
        dtypes: Mapping[str, torch.dtype] | None = None,
    ) -> None:
        self.vector, self.masks, self.scale, self.dtypes = vector, masks, scale, dtypes

    def __getitem__(self, key: str) -> Tensor:
        x = self.vector[key]
        if key not in self.masks:
            return x
        x = masked(x, unpack_mask(self.masks[key], key).to(x.device))  # masked out: +-0.0
        if self.scale != 1.0:
            x.mul_(self.scale)  # x is fresh: the product above
        return x if self.dtypes is None else x.to(self.dtypes[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.vector)

    def __len__(self) -> int:
        return len(self.vector)


MaskFn = Callable[[str, list[Tensor], Tensor], list[Tensor]]


def masked_multitask(
    tvs: TaskVectors, merged: Callable[[str, list[Tensor]], Tensor], masks: MaskFn
) -> list[MaskedVector]:
    """Task vectors ``m_t * tau_MTL``, one per task, sharing one ``tau_MTL``.

    Streams the keys once: ``tau_MTL[key] = merged(key, taus)`` and
    ``m_t[key] = masks(key, taus, tau_MTL[key])[t]`` (float32 on ``tvs.device``); stores
    ``tau_MTL`` once in the input dtype and each mask at 1 bit per weight.
    """
    shared: dict[str, Tensor] = {}
    packed: list[dict[str, PackedMask]] = [{} for _ in range(len(tvs))]
    for key in tvs.keys:
        if not tvs.is_float(key):
            shared[key] = tvs.raw(0, key)
            continue
        taus = tvs.tensors(key)
        mtl = merged(key, taus)
        for p, m in zip(packed, masks(key, taus, mtl), strict=True):
            p[key] = pack_mask(m, key)
        shared[key] = tvs.finish(key, mtl)
    return [MaskedVector(shared, p) for p in packed]
