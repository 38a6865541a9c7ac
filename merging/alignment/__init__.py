"""Alignment of models trained from different initialisations: permutation specs, weight and
activation matching (Git Re-Basin), ZipIt! and CCA Merge. Pure tensor code.

>>> perms = weight_matching(spec, state_a, state_b)
>>> state_b_aligned = permute_state(spec, state_b, perms)
"""

from merging.alignment.activation_matching import (
    PairStats,
    activation_matching,
    collect_activations,
    pair_statistics,
)
from merging.alignment.cca import cca_maps, cca_merge
from merging.alignment.spec import (
    PermutationSpec,
    check_pair,
    conv_axes,
    identity_permutations,
    invert_permutation,
    linear_axes,
    norm_axes,
    permute_state,
    random_permutations,
    transform_state,
)
from merging.alignment.weight_matching import weight_matching
from merging.alignment.zipit import zip_features, zipit

__all__ = [
    "PairStats",
    "PermutationSpec",
    "activation_matching",
    "cca_maps",
    "cca_merge",
    "collect_activations",
    "check_pair",
    "conv_axes",
    "identity_permutations",
    "invert_permutation",
    "linear_axes",
    "norm_axes",
    "pair_statistics",
    "permute_state",
    "random_permutations",
    "transform_state",
    "weight_matching",
    "zip_features",
    "zipit",
]
