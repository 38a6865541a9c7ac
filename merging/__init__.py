"""mergelab's merge methods, both regimes: pure tensor code (torch, numpy, scipy only).

>>> from merging import merge, TaskVector
>>> taus = [TaskVector(ft, pretrained) for ft in finetuned_models]
>>> tau = merge("ties", taus, density=0.2)    # merged task vector, unscaled
>>> theta = apply_task_vector(pretrained, tau, alpha=0.4)

Models trained from different initialisations: ``merge_models(name, context, ...)``.
"""

from merging.masks import PackedMask, pack_masks, storage_bits, unpack_masks
from merging.methods.tall_masks import tall_masks_of
from merging.registry import METHODS, MethodSpec, merge, merge_method, merge_models, method_spec
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
    "merge_models",
    "method_spec",
    "pack_masks",
    "storage_bits",
    "tall_masks_of",
    "unpack_masks",
]
