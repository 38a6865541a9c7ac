"""mergelab's merge methods: pure tensor code over task vectors (torch, numpy, scipy only).

>>> from merging import merge, TaskVector
>>> taus = [TaskVector(ft, pretrained) for ft in finetuned_models]
>>> tau = merge("ties", taus, k=0.2)          # merged task vector, unscaled
>>> theta = apply_task_vector(pretrained, tau, alpha=0.4)
"""

from merging.masks import PackedMask, pack_masks, storage_bits, unpack_masks
from merging.methods.tall_masks import tall_masks_of
from merging.registry import METHODS, MethodSpec, merge, merge_method, method_spec
from merging.streaming import TaskVectors
from merging.task_vectors import TaskVector, apply_task_vector

__all__ = [
    "METHODS",
    "MethodSpec",
    "PackedMask",
    "TaskVector",
    "TaskVectors",
    "apply_task_vector",
    "merge",
    "merge_method",
    "method_spec",
    "pack_masks",
    "storage_bits",
    "tall_masks_of",
    "unpack_masks",
]
