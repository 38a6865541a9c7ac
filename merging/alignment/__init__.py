"""Alignment of models trained from different initialisations: permutation specs, the
features two models compute on the same inputs, and weight and activation matching
(Git Re-Basin). Pure tensor code; the merge methods built on them (aligned averaging,
ZipIt!, CCA Merge, NP Merge) live in ``merging.methods``.

>>> perms = weight_matching(spec, state_a, state_b)
>>> state_b_aligned = permute_state(spec, state_b, perms)
"""

from merging.alignment.features import (
    PairStats,
    collect_activations,
    pair_statistics,
    pair_stats_from,
    require_groups,
)
from merging.alignment.matching import activation_matching, linear_assignment, weight_matching
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

__all__ = [
    "PairStats",
    "PermutationSpec",
    "activation_matching",
    "check_pair",
    "collect_activations",
    "conv_axes",
    "identity_permutations",
    "invert_permutation",
    "linear_assignment",
    "linear_axes",
    "norm_axes",
    "pair_statistics",
    "pair_stats_from",
    "permute_state",
    "random_permutations",
    "require_groups",
    "transform_state",
    "weight_matching",
]
