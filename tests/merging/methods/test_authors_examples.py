"""The examples of issue 9, each pinned to the value the authors' code gives (with the option
that selects the authors' behaviour), next to mergelab's default (the paper's definition)."""

import pytest
import torch

from merging import merge, method_spec, tall_masks_of
from merging.selection import authors_kept_count

T = torch.tensor

ARTEFACT_OPTIONS = {  # one named option per kind, its paper default, the methods it touches
    ("topk_count", "exact"): [
        "ties", "dare", "magnitude_masking", "magnitude_pruning", "tall_masks", "consensus"
    ],
    ("extra_entries", 0): [
        "ties", "dare", "magnitude_masking", "magnitude_pruning", "tall_masks", "consensus"
    ],
    ("zero_sign", "zero"): ["ties", "dare", "tall_masks", "consensus"],
    ("comparison", "inclusive"): ["tall_masks", "consensus"],
    ("rank_count", "at_least_one"): ["tsv"],
}  # fmt: skip


@pytest.mark.parametrize("option, default", list(ARTEFACT_OPTIONS))
def test_each_artefact_option_has_one_name_and_the_papers_default(option, default) -> None:
    for name in ARTEFACT_OPTIONS[option, default]:
        assert method_spec(name).hparams[option] == default, name


# ---- top-k counting (TIES, magnitude masking/pruning, TALL masks/Consensus over TIES) --------

V1 = [0.9, -0.1, 0.5, 0.05, -0.7, 0.3, 0.2, -0.02, 0.6, 0.01]
V2 = [-0.8, 0.2, 0.4, -0.6, 0.1, -0.35, 0.25, 0.02, -0.5, 0.03]
AUTHORS_TIES = [0.9, 0.0, 0.45, -0.6, -0.7, -0.35, 0.0, 0.0, 0.6, 0.0]


def test_ties_counts_the_zero_entries_of_the_authors_checkpoint() -> None:
    # N = 10 visual + 10 zero entries: int(20 * 0.2) + 1 = 5 kept per task.
    zero_key = [{"v": T(V1), "z": torch.zeros(10)}, {"v": T(V2), "z": torch.zeros(10)}]
    out = merge("ties", zero_key, density=0.2, topk_count="authors")
    torch.testing.assert_close(out["v"], T(AUTHORS_TIES))
    # the same through extra_entries, without the zero key
    visual = [{"v": T(V1)}, {"v": T(V2)}]
    out = merge("ties", visual, density=0.2, topk_count="authors", extra_entries=10)
    torch.testing.assert_close(out["v"], T(AUTHORS_TIES))
    # mergelab's default: exactly 20% of the 10 merged entries (2 per task)
    exact = merge("ties", visual, density=0.2, extra_entries=10)["v"]
    torch.testing.assert_close(exact, T([0.9, 0, 0, -0.6, -0.7, 0, 0, 0, 0, 0]))


def test_authors_threshold_keeps_one_more_entry_and_every_tie() -> None:
    tv = {"w": T([10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1])}
    # K N = 2 is an integer: the authors keep 3, mergelab 2
    kept = merge("magnitude_pruning", [tv], density=0.2, topk_count="authors")[0]["w"]
    assert kept.tolist() == [10, 9, 8, 0, 0, 0, 0, 0, 0, 0]
    assert merge("magnitude_pruning", [tv], density=0.2)[0]["w"].tolist()[:3] == [10, 9, 0]
    # K N = 2.5: both keep ceil = 3
    assert merge("magnitude_pruning", [tv], density=0.25)[0]["w"].tolist()[:4] == [10, 9, 8, 0]
    # ties with the threshold: the authors keep all of them, mergelab the earliest
    tied = {"w": T([3.0, 2.0, 2.0, 1.0])}
    assert merge("magnitude_pruning", [tied], density=0.25, topk_count="authors")[0][
        "w"
    ].tolist() == [3, 2, 2, 0]
    assert merge("magnitude_pruning", [tied], density=0.5)[0]["w"].tolist() == [3, 2, 0, 0]


@pytest.mark.parametrize(
    "visual, text, density, fraction",
    [  # CLIP image encoders and the text-side entries their ImageEncoder checkpoints keep
        (87_849_216, 25_599_489, 0.2, 0.2583),  # ViT-B/32, TIES
        (86_192_640, 25_599_489, 0.2, 0.2594),  # ViT-B/16
        (303_966_208, 38_595_841, 0.2, 0.2254),  # ViT-L/14
        (87_849_216, 25_599_489, 0.1, 0.1291),  # ViT-B/32, magnitude masking
        (86_192_640, 25_599_489, 0.1, 0.1297),
        (303_966_208, 38_595_841, 0.1, 0.1127),
    ],
)
def test_authors_kept_fractions_of_the_visual_weights(visual, text, density, fraction) -> None:
    assert round(authors_kept_count(density, visual, text) / visual, 4) == fraction


# ---- TIES: a summed sign of exactly 0 --------------------------------------------------------


def test_ties_zero_sum_takes_the_majority_sign() -> None:
    tvs = [{"w": T([1.0, 5.0])}, {"w": T([-1.0, 1.0])}]
    assert merge("ties", tvs, density=1.0, zero_sign="majority")["w"].tolist() == [1.0, 3.0]
    assert merge("ties", tvs, density=1.0)["w"].tolist() == [0.0, 3.0]
    # negative majority (two keys: the sign counts span the whole vector)
    tvs = [{"a": T([1.0]), "b": T([-5.0, -2.0])}, {"a": T([-1.0]), "b": T([1.0, -1.0])}]
    assert merge("ties", tvs, density=1.0, zero_sign="majority")["a"].tolist() == [-1.0]
    # no majority at all: the authors' disjoint merge keeps the negative entries
    tvs = [{"w": T([1.0, 2.0, -2.0])}, {"w": T([-1.0, 1.0, -1.0])}]
    out = merge("ties", tvs, density=1.0, agg="sum", zero_sign="majority")
    assert out["w"].tolist() == [-1.0, 3.0, -3.0]


# ---- TALL masks: strict comparison -------------------------------------------------------------


def test_tall_masks_strict_comparison() -> None:
    tvs = [{"w": T([1.0, 0.0])}, {"w": T([2.0, 0.0])}]
    strict = tall_masks_of(tvs, 0.5, comparison="strict")
    assert [m["w"].tolist() for m in strict] == [[False, False], [True, False]]
    inclusive = tall_masks_of(tvs, 0.5)
    assert [m["w"].tolist() for m in inclusive] == [[True, True], [True, True]]
    out = merge("tall_masks", tvs, lam=0.5, comparison="strict")
    assert [o["w"].tolist() for o in out] == [[0.0, 0.0], [3.0, 0.0]]


# ---- Consensus: per-task lambdas ---------------------------------------------------------------


def test_consensus_builds_on_each_tasks_lambda() -> None:
    # tau_t = 1, tau_MTL = 3: m_t = 1{1 >= 2 lam_t}; only task 3 keeps the weight.
    tvs = [{"w": T([1.0])} for _ in range(3)]
    assert merge("consensus", tvs, k=2, lam=[0.6, 0.6, 0.2])["w"].tolist() == [0.0]
    assert merge("consensus", tvs, k=2, lam=0.4)["w"].tolist() == [3.0]
    assert merge("consensus", tvs, k=1, lam=[0.6, 0.6, 0.2])["w"].tolist() == [3.0]


# ---- EMR-Merging rescaler ------------------------------------------------------------------------


def test_emr_rescaler_is_a_ratio_of_summed_per_tensor_means() -> None:
    tau_a = {"w": T([1.0, 1.0, 1.0, 1.0]), "b": T([-2.0])}
    tau_b = {"w": T([3.0, -0.5, 3.0, -0.5]), "b": T([4.0])}
    out_a, out_b = merge("emr", [tau_a, tau_b])
    # lambda_A = (1 + 2) / (2 + 0) = 1.5; lambda_B = (1.75 + 4) / (1.5 + 4) = 1.0455
    torch.testing.assert_close(out_a["w"], T([4.5, 1.5, 4.5, 1.5]))
    assert out_a["b"].tolist() == [0.0]
    torch.testing.assert_close(out_b["w"], T([3.0, 0.0, 3.0, 0.0]) * (5.75 / 5.5))
    torch.testing.assert_close(out_b["b"], T([4.0]) * (5.75 / 5.5))
    assert round(float(out_b["b"][0]) / 4.0, 4) == 1.0455


def test_emr_zero_sum_counts_as_negative() -> None:
    out_a, out_b = merge("emr", [{"w": T([1.0, 2.0])}, {"w": T([-1.0, 2.0])}])
    # w[0]: sum 0 -> gamma = -1, tau_uni = -1, only task B agrees
    assert out_a["w"][0] == 0.0 and out_b["w"][0] < 0.0


# ---- TSV-M: a layer of rank below the number of tasks -------------------------------------------


def test_tsv_rank_below_the_number_of_tasks() -> None:
    g = torch.Generator().manual_seed(0)
    tvs = [{"w": torch.randn(2, 5, generator=g), "b": torch.randn(5, generator=g)}
           for _ in range(3)]  # fmt: skip
    authors = merge("tsv", tvs, rank_count="authors")
    assert torch.equal(authors["w"], torch.zeros(2, 5))
    assert merge("tsv", tvs)["w"].abs().sum() > 0  # at least one triplet per task
    torch.testing.assert_close(authors["b"], torch.stack([tv["b"] for tv in tvs]).mean(0))
