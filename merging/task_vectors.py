"""Task vectors (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

``tau = theta_ft - theta_0`` and ``theta = theta_0 + alpha * tau``, over mappings of
tensors that may load each entry lazily: a :class:`TaskVector` computes its entry for
a key only when that key is read, so no checkpoint is forced into memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from merging.streaming import entry_meta, entry_sample, tied_groups

Tensor = torch.Tensor


class TaskVector(Mapping[str, Tensor]):
    """``tau = finetuned - pretrained``, computed per key on access.

    Non-float entries (integer buffers, BatchNorm counters) are not task-vector
    entries: reading one returns the pretrained value, which merges carry unchanged.
    ``name`` (the task) is what errors call it; ``tied`` lists groups of keys that are one
    parameter (default: those sharing storage in ``pretrained`` when it is a dict).
    """

    def __init__(
        self,
        finetuned: Mapping[str, Tensor],
        pretrained: Mapping[str, Tensor],
        name: str | None = None,
        tied: Sequence[Sequence[str]] | None = None,
    ) -> None:
        ft, pt = set(finetuned.keys()), set(pretrained.keys())
        if ft != pt:
            only_ft, only_pt = sorted(ft - pt), sorted(pt - ft)
            where = (
                f"key {only_ft[0]!r} is in the fine-tuned model but not the pretrained one"
                if only_ft
                else f"key {only_pt[0]!r} is in the pretrained model but not the fine-tuned one"
            )
            raise KeyError(f"task vector{f' of {name}' if name else ''}: {where}")
        self.finetuned, self.pretrained = finetuned, pretrained
        self._keys = list(pretrained.keys())
        self.name = name
        self.tied = tied if tied is not None or not isinstance(pretrained, dict) else (
            tied_groups(pretrained)
        )

    def __getitem__(self, key: str) -> Tensor:
        return self._difference(key, self.finetuned[key], in_place=False)

    def meta(self, key: str) -> tuple[torch.Size, torch.dtype]:
        """Shape and dtype of ``self[key]`` without computing it: each model's
        (:func:`merging.streaming.entry_meta`; a safetensors header is not read); the dtype
        of ``theta_ft - theta_0`` is torch's promotion of the two."""
        (_, ft), (shape, pt) = entry_meta(self.finetuned, key), entry_meta(self.pretrained, key)
        return shape, torch.promote_types(ft, pt) if pt.is_floating_point else pt

    def read_into(self, key: str, buffer: Tensor) -> Tensor:
        """``self[key]``, computed in ``buffer`` where the fine-tuned mapping reads into one
        (its ``read_into``, e.g. :class:`evaluation.checkpoints.LazySafetensors`; see
        :meth:`merging.streaming.TaskVectors.task`): ``theta_ft`` is read there and
        ``theta_0`` subtracted in place, the same bits as ``theta_ft - theta_0`` (where the
        difference keeps ``theta_ft``'s dtype; else, and for other mappings, fresh)."""
        reader = getattr(self.finetuned, "read_into", None)
        if not callable(reader):
            return self[key]
        return self._difference(key, reader(key, buffer), in_place=True)

    def strided(self, key: str, stride: int) -> Tensor:
        """``self[key].flatten()[::stride]``, the sample that
        :meth:`merging.streaming.TaskVectors.strided` asks for: each model's every
        ``stride``-th entry, through its own ``strided`` where it has one (only those
        entries read; :func:`merging.streaming.entry_sample`), and their difference: the
        same bits as sampling ``theta_ft - theta_0``. ``ValueError`` if the two samples
        differ in length."""
        ft, pt = (entry_sample(m, key, stride) for m in (self.finetuned, self.pretrained))
        if ft.shape != pt.shape:
            raise ValueError(f"key {key!r}: fine-tuned{self._of()} and pretrained entries "
                             f"differ in size ({ft.numel()} and {pt.numel()} sampled)")  # fmt: skip
        return ft - pt if torch.is_floating_point(pt) else pt

    def _of(self) -> str:
        return f" of {self.name}" if self.name else ""

    def _difference(self, key: str, ft: Tensor, in_place: bool) -> Tensor:
        pt = self.pretrained[key]
        if ft.shape != pt.shape:
            raise ValueError(
                f"key {key!r}: fine-tuned{self._of()} shape {tuple(ft.shape)} != pretrained "
                f"{tuple(pt.shape)}"
            )
        if not torch.is_floating_point(pt):
            return pt
        if in_place and torch.promote_types(ft.dtype, pt.dtype) == ft.dtype:
            return ft.sub_(pt)
        return ft - pt

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def apply_task_vector(
    pretrained: Mapping[str, Tensor], tau: Mapping[str, Tensor], alpha: float = 1.0
) -> dict[str, Tensor]:
    """``theta = theta_0 + alpha * tau``; non-float entries are carried from ``theta_0``."""
    extra = sorted(set(tau.keys()) - set(pretrained.keys()))
    if extra:
        raise KeyError(f"task vector key {extra[0]!r} is not a parameter of the pretrained model")
    out: dict[str, Tensor] = {}
    for key, p in pretrained.items():
        if torch.is_floating_point(p) and key in tau:
            out[key] = p + alpha * tau[key].to(p.dtype)
        else:
            out[key] = p
    return out
