"""The data-free baselines of issue 13 (Model Breadcrumbs, DELLA, MagMax, PCB-Merging,
Model Stock, WUDI-Merging, LiNeS, TSV-C): hand-computed cases, equality with the plain
restatements of data_free_references.py on random inputs, option errors, and the shared
helpers they brought (exact k-th largest, the low-rank storage rule)."""

from __future__ import annotations

import math

import pytest
import torch

import tests.merging.methods.data_free_references as ref
from merging import merge, method_spec
from merging.methods.della import keep_probabilities
from merging.methods.lines import layer_depths
from merging.selection import kth_largest
from merging.storage import storage_bits
from merging.streaming import TaskVectors

StateDict = dict[str, torch.Tensor]
T = torch.tensor
THREE = [{"w": T([1.0, -2.0, 3.0])}, {"w": T([3.0, 2.0, -1.0])}, {"w": T([-1.0, 1.0, -1.0])}]
BLOCKS = ("transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.1.mlp.c_fc.weight")


def make_tvs(num_tasks: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[StateDict]:
    """Random task vectors in an open_clip-like layout (two blocks, entries outside them,
    a 0-d and a 3-D entry) with an integer buffer in the middle."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "conv1.weight": (3, 2, 2),
        BLOCKS[0]: (9, 4),
        "transformer.resblocks.0.attn.in_proj_bias": (9,),
        "bn.num_batches_tracked": None,
        BLOCKS[1]: (6, 4),
        "ln_post.weight": (4,),
        "logit_scale": (),
        "proj": (4, 5),
    }
    return [
        {
            key: T(7) if shape is None else torch.randn(shape, generator=g).to(dtype)
            for key, shape in shapes.items()
        }
        for _ in range(num_tasks)
    ]


def assert_state_close(actual, expected: StateDict, **tol) -> None:
    assert list(actual.keys()) == list(expected.keys())
    for key, e in expected.items():
        a = actual[key]
        assert a.dtype == e.dtype and a.shape == e.shape, key
        if e.is_floating_point():
            torch.testing.assert_close(a, e, msg=key, **tol)
        else:
            assert torch.equal(a, e), key


# ---- hand-computed examples ------------------------------------------------------------


def test_breadcrumbs_by_hand() -> None:
    # n = 5: drop the int(0.2 * 5) = 1 largest (4), keep the next int(0.4 * 5) = 2.
    one = {"w": T([4.0, -3.0, 2.0, 1.0, 0.5])}
    assert merge("breadcrumbs", [one], density=0.4, gamma=0.2)["w"].tolist() == [0, -3, 2, 0, 0]
    two = {"w": T([0.5, 1.0, -2.0, 3.0, 0.1])}
    # second task: drops 3, keeps -2 and 1
    out = merge("breadcrumbs", [one, two], density=0.4, gamma=0.2)["w"].tolist()
    assert out == [0.0, -2.0, 0.0, 0.0, 0.0]
    # rows of a matrix (the authors' per-row masks) vs the whole layer
    m = {"w": T([[5.0, 1.0, 2.0], [0.1, 0.2, 0.3]])}
    rows = merge("breadcrumbs", [m], density=0.34, gamma=0.34, scope="row")["w"]
    torch.testing.assert_close(rows, T([[0.0, 0.0, 2.0], [0.0, 0.2, 0.0]]))  # drop 1, keep 1
    layer = merge("breadcrumbs", [m], density=0.34, gamma=0.34, scope="layer")["w"]
    torch.testing.assert_close(layer, T([[0.0, 1.0, 0.0], [0.0, 0.0, 0.3]]))  # of 6: 2 and 2
    scalar = merge("breadcrumbs", [{"s": T(2.0)}], density=0.1, gamma=0.5)["s"]
    assert scalar.item() == 2.0  # 0-d entries are kept


def test_della_by_hand() -> None:
    # ranks by magnitude 0, 2, 1 of 3 -> 0.4 + 0.2 * [0, 1, 0.5]
    probs = keep_probabilities(T([1.0, -3.0, 2.0]), p=0.5, window=0.2)
    torch.testing.assert_close(probs, T([0.4, 0.6, 0.5]))
    # each row of a matrix is ranked on its own; a single entry keeps 1 - p
    probs = keep_probabilities(T([[1.0, 2.0], [4.0, 3.0]]), p=0.5, window=0.2)
    torch.testing.assert_close(probs, T([[0.4, 0.6], [0.6, 0.4]]))
    torch.testing.assert_close(keep_probabilities(T([5.0]), p=0.3, window=0.1), T([0.7]))
    # p = 0, window = 0: nothing dropped; signs of the sums [3, 1, 1], disjoint mean
    assert merge("della", THREE, p=0.0, window=0.0)["w"].tolist() == [2.0, 1.5, 3.0]


def test_della_survivors_are_rescaled_by_their_keep_probability() -> None:
    tv = {"w": torch.linspace(-2, 2, 41)}
    out = merge("della", [tv], p=0.5, window=0.4, seed=3)["w"]
    kept = out != 0
    q = keep_probabilities(tv["w"], 0.5, 0.4)
    torch.testing.assert_close(out[kept], tv["w"][kept] / q[kept])
    assert 0 < int(kept.sum()) < 41
    again = merge("della", [tv], p=0.5, window=0.4, seed=3)["w"]
    assert torch.equal(out, again)  # seeded
    assert not torch.equal(out, merge("della", [tv], p=0.5, window=0.4, seed=4)["w"])


def test_magmax_by_hand() -> None:
    # column 2: |-2| = |2| = 2 -> the last of the tied tasks (2.0)
    assert merge("magmax", THREE)["w"].tolist() == [3.0, 2.0, 3.0]
    assert merge("magmax", [{"w": T([0.0, -1.0])}, {"w": T([0.0, 1.0])}])["w"].tolist() == [0, 1]


def test_pcb_by_hand() -> None:
    # One task, no clip: u = minmax|tau| = [0, 1/3, 1], beta = exp(u^2) tanh(tau^2); with
    # density 1 the threshold is the smallest beta (the first entry), whose weight is 0;
    # every other weight cancels in sum(w c) / sum(w).
    out = merge("pcb", [{"w": T([0.5, -1.0, 2.0])}], density=1.0, clip=0.0)["w"]
    torch.testing.assert_close(out, T([0.0, -1.0, 2.0]))
    # Two positive tasks, T = 2: u_1 = [0, 1/3, 2/3, 1], u_2 = [1/3, 1/3, 0, 1] and every
    # tanh(tau_t * S) is ~1, so each task's smallest score is where its u_t is 0 (entry 0
    # for task 1, entry 2 for task 2): there the other task's value is taken; where both
    # agree the weighted mean is that value.
    tvs = [{"w": T([1.0, 2.0, 3.0, 4.0])}, {"w": T([2.0, 2.0, 1.0, 4.0])}]
    out = merge("pcb", tvs, density=1.0, clip=0.0)["w"]
    torch.testing.assert_close(out, T([2.0, 2.0, 3.0, 4.0]))


def test_model_stock_by_hand() -> None:
    # orthogonal task vectors: cos = 0, t = 0, the merge stays at theta_0
    out = merge("model_stock", [{"w": T([1.0, 0.0])}, {"w": T([0.0, 1.0])}])["w"]
    torch.testing.assert_close(out, T([0.0, 0.0]))
    # cos = 1 / sqrt(2): t = 2c / (1 + c), times the mean [1, 0.5]
    c = 1 / math.sqrt(2)
    out = merge("model_stock", [{"w": T([1.0, 0.0])}, {"w": T([1.0, 1.0])}])["w"]
    torch.testing.assert_close(out, T([1.0, 0.5]) * (2 * c / (1 + c)))
    # identical task vectors: t = 1, the task vector itself (three tasks: N = 3)
    same = {"w": T([0.3, -0.2])}
    torch.testing.assert_close(merge("model_stock", [same, same, same])["w"], same["w"])


def test_wudi_by_hand() -> None:
    # orthogonal tasks do not interfere: the gradient at sum_t tau_t is 0
    tvs = [{"w": T([[1.0, 0.0]])}, {"w": T([[0.0, 1.0]])}]
    torch.testing.assert_close(merge("wudi", tvs, lr=0.1)["w"], T([[1.0, 1.0]]))
    # tau_1 = [1, 0], tau_2 = [1, 1]: gradient 2 [(S - t1) G1 + (S - t2) G2] = [3, 1];
    # Adam's first step moves every entry by lr against its gradient's sign.
    tvs = [{"w": T([[1.0, 0.0]]), "b": T([1.0])}, {"w": T([[1.0, 1.0]]), "b": T([3.0])}]
    out = merge("wudi", tvs, steps=1, lr=0.1)
    torch.testing.assert_close(out["w"], T([[1.9, 0.9]]))
    assert out["b"].tolist() == [2.0]  # non-matrix entries: the mean
    assert merge("wudi", tvs, steps=1, lr=0.1, others="zero")["b"].tolist() == [0.0]
    assert merge("wudi", tvs, steps=0)["w"].tolist() == [[2.0, 1.0]]  # steps 0: the sum


def test_wudi_reduces_its_loss() -> None:
    tvs = make_tvs(4, seed=5)
    taus = [tv[BLOCKS[0]] for tv in tvs]

    def loss(x: torch.Tensor) -> float:
        return sum(float((((x - t) @ t.T) ** 2).sum() / (t**2).sum()) for t in taus)

    start = merge("wudi", tvs, steps=0)[BLOCKS[0]]
    end = merge("wudi", tvs, steps=200, lr=1e-2)[BLOCKS[0]]
    assert loss(end) < 0.5 * loss(start)


def test_lines_by_hand() -> None:
    keys = [f"transformer.resblocks.{i}.w" for i in range(3)] + ["ln_post.w"]
    tvs = [{k: T([1.0, -1.0]) for k in keys}, {k: T([3.0, 1.0]) for k in keys}]
    out = merge("lines", tvs, depth_scale=1.0)  # task arithmetic: sum [4, 0], lam = 1 / 2
    assert [out[k].tolist() for k in keys] == [[2, 0], [4, 0], [6, 0], [2, 0]]
    out = merge("lines", tvs, depth_scale=0.5, min_scale=1.0)
    assert [out[k].tolist() for k in keys] == [[4, 0], [5, 0], [6, 0], [4, 0]]


def test_lines_norm_rule_follows_the_base() -> None:
    # lam = ||sum_t tau_t||_1 / (T ||tau_TIES||_1)
    keys = ["encoder.layer.0.w", "encoder.layer.1.w"]
    tvs = [
        {keys[0]: T([1.0, 4.0]), keys[1]: T([0.5])},
        {keys[0]: T([-2.0, -1.0]), keys[1]: T([0.5])},
    ]
    base = merge("ties", tvs, density=0.5)
    out = merge("lines", tvs, depth_scale=0.0, base="ties", base_options={"density": 0.5})
    lam = float(sum(sum(tv[k] for tv in tvs).abs().sum() for k in keys)) / (
        2 * float(sum(base[k].abs().sum() for k in keys))
    )
    for k in keys:
        torch.testing.assert_close(out[k], base[k] * lam)


def test_tsv_c_by_hand() -> None:
    diag = {"m": torch.diag(T([3.0, 2.0, 1.0, 0.5])), "b": T([1.0, 2.0])}
    other = {"m": torch.eye(4), "b": T([0.0, 0.0])}
    first, second = merge("tsv_c", [diag, other])  # rank 4, T = 2: two triplets each
    torch.testing.assert_close(first["m"], torch.diag(T([3.0, 2.0, 0.0, 0.0])))
    assert first["b"].tolist() == [1.0, 2.0] and second["b"].tolist() == [0.0, 0.0]
    assert torch.linalg.matrix_rank(second["m"]) == 2
    # rank 1 < T = 2: at least one triplet (the matrix), or none as the authors count
    row = [{"m": T([[1.0, 2.0, 3.0]])}, {"m": T([[0.0, 1.0, 0.0]])}]
    torch.testing.assert_close(merge("tsv_c", row)[0]["m"], row[0]["m"])
    assert merge("tsv_c", row, rank_count="authors")[0]["m"].tolist() == [[0.0, 0.0, 0.0]]


def test_tsv_c_keeps_factors_only() -> None:
    tvs = make_tvs(3, seed=2)
    out = merge("tsv_c", tvs)
    assert set(out[0].factors) == {BLOCKS[0], BLOCKS[1], "proj"}
    u, s, vh = out[0].factors[BLOCKS[0]]
    assert u.shape == (9, 1) and s.shape == (1,) and vh.shape == (1, 4)  # floor(4 / 3)


# ---- the streaming methods against the references on random inputs -----------------------


@pytest.mark.parametrize("scope", ["layer", "row"])
@pytest.mark.parametrize("seed", [0, 1])
def test_breadcrumbs_matches_reference(scope: str, seed: int) -> None:
    tvs = make_tvs(3, seed)
    out = merge("breadcrumbs", tvs, density=0.3, gamma=0.1, scope=scope)
    assert_state_close(out, ref.breadcrumbs(tvs, 0.3, 0.1, scope))


@pytest.mark.parametrize("p, window", [(0.3, 0.14), (0.7, 0.5), (0.1, 0.0)])
def test_della_matches_reference(p: float, window: float) -> None:
    tvs = make_tvs(4, seed=3)
    assert_state_close(
        merge("della", tvs, p=p, window=window, seed=9), ref.della(tvs, p, window, 9)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_magmax_matches_reference(dtype: torch.dtype) -> None:
    tvs = make_tvs(5, seed=4, dtype=dtype)
    tvs[2][BLOCKS[0]][0] = -tvs[1][BLOCKS[0]][0]  # exact ties of magnitude
    assert_state_close(merge("magmax", tvs), ref.magmax(tvs))


@pytest.mark.parametrize("cross", ["sum", "normalised"])
@pytest.mark.parametrize("density, clip", [(0.1, 0.01), (0.05, 0.0), (0.6, 0.2), (0.9, 0.01)])
def test_pcb_matches_reference(cross: str, density: float, clip: float) -> None:
    tvs = make_tvs(4, seed=6)
    out = merge("pcb", tvs, density=density, clip=clip, cross=cross)
    assert_state_close(out, ref.pcb(tvs, density, clip, cross), rtol=1e-4, atol=1e-5)


def test_pcb_with_a_negative_threshold_matches_reference() -> None:
    # tasks that mostly disagree: most scores tanh(tau_t * S) < 0, so the kept fraction
    # reaches into the negative scores
    g = torch.Generator().manual_seed(8)
    base = torch.randn(200, generator=g)
    tvs = [{"w": base + 0.1 * torch.randn(200, generator=g)}, {"w": -1.05 * base}]
    out = merge("pcb", tvs, density=0.8, clip=0.0)
    assert_state_close(out, ref.pcb(tvs, 0.8, 0.0, "sum"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_tasks", [2, 5])
def test_model_stock_matches_reference_in_weight_space(num_tasks: int) -> None:
    g = torch.Generator().manual_seed(num_tasks)
    tvs = make_tvs(num_tasks, seed=num_tasks)
    shared = {k: x.clone() for k, x in tvs[0].items()}
    for tv in tvs:  # correlated experts (acute angles), as fine-tuned models are
        for k, x in tv.items():
            if x.is_floating_point():
                tv[k] = shared[k] + 0.5 * x
    pretrained = {
        k: torch.randn(x.shape, generator=g) if x.is_floating_point() else x
        for k, x in tvs[0].items()
    }
    finetuned = [
        {k: pretrained[k] + x if x.is_floating_point() else x for k, x in tv.items()} for tv in tvs
    ]
    tau = merge("model_stock", tvs)
    weights = {k: pretrained[k] + x if x.is_floating_point() else x for k, x in tau.items()}
    assert_state_close(weights, ref.model_stock(pretrained, finetuned), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps, lr", [(300, 1e-5), (40, 1e-2)])
def test_wudi_matches_reference(steps: int, lr: float) -> None:
    tvs = make_tvs(3, seed=7)
    assert_state_close(
        merge("wudi", tvs, steps=steps, lr=lr), ref.wudi(tvs, steps, lr), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("base, options", [("task_arithmetic", {}), ("ties", {"density": 0.3})])
def test_lines_matches_reference(base: str, options: dict) -> None:
    tvs = make_tvs(3, seed=8)
    merged = merge(base, tvs, **options)
    depths = {BLOCKS[0]: 0.0, "transformer.resblocks.0.attn.in_proj_bias": 0.0, BLOCKS[1]: 1.0}
    out = merge("lines", tvs, depth_scale=0.7, base=base, base_options=options)
    expected = ref.lines(tvs, merged, {k: depths.get(k) for k in merged}, 0.7)
    assert_state_close(out, expected)


def test_tsv_c_matches_reference() -> None:
    tvs = make_tvs(3, seed=9)
    for got, expected in zip(merge("tsv_c", tvs), ref.tsv_c(tvs), strict=True):
        assert_state_close(got, expected, rtol=1e-4, atol=1e-5)


METHODS = ["breadcrumbs", "della", "magmax", "pcb", "model_stock", "wudi", "lines", "tsv_c"]


@pytest.mark.parametrize("name", METHODS)
def test_non_float_entries_are_carried_and_tied_keys_stay_tied(name: str) -> None:
    tvs = make_tvs(2, seed=10)
    for tv in tvs:
        tv["head.weight"] = tv[BLOCKS[1]]  # tied (one tensor under two keys)
    out = merge(name, tvs)
    for o in out if isinstance(out, list) else [out]:
        assert torch.equal(o["bn.num_batches_tracked"], T(7))
        assert torch.equal(o["head.weight"], o[BLOCKS[1]])


@pytest.mark.parametrize("name", METHODS)
def test_a_nan_names_the_task(name: str) -> None:
    tvs = make_tvs(2, seed=11)
    tvs[1][BLOCKS[1]][0, 0] = float("nan")
    with pytest.raises(ValueError, match="task vector 1 contains NaN"):
        merge(name, tvs)


# ---- options ----------------------------------------------------------------------------

OPTION_ERRORS = [
    ("breadcrumbs", {"density": 0.0}, "'density'"),
    ("breadcrumbs", {"gamma": 1.0}, "'gamma'"),
    ("breadcrumbs", {"scope": "column"}, "'scope'"),
    ("della", {"p": 1.0}, "'p'"),
    ("della", {"window": -0.1}, "'window'"),
    ("della", {"p": 0.1, "window": 0.4}, "'window'"),  # keep probability 1.1
    ("della", {"p": 0.9, "window": 0.2}, "'window'"),  # keep probability 0
    ("pcb", {"density": 1.5}, "'density'"),
    ("pcb", {"clip": 0.5}, "'clip'"),
    ("pcb", {"cross": "mean"}, "'cross'"),
    ("wudi", {"steps": -1}, "'steps'"),
    ("wudi", {"steps": 2.5}, "'steps'"),
    ("wudi", {"lr": 0.0}, "'lr'"),
    ("wudi", {"others": "sum"}, "'others'"),
    ("lines", {"depth_scale": "deep"}, "'depth_scale'"),
    ("lines", {"min_scale": "x"}, "'min_scale'"),
    ("lines", {"base": "tsv_c"}, "'base'"),
    ("lines", {"base": "lines"}, "'base'"),
    ("lines", {"base": "no_such_method"}, "option 'base': unknown merge method"),
    ("lines", {"base": "ties", "base_options": {"density": 2.0}}, "'density'"),
    ("tsv_c", {"rank_count": "floor"}, "'rank_count'"),
]


@pytest.mark.parametrize(
    "name, options, message", OPTION_ERRORS, ids=[f"{n}-{o}" for n, o, _ in OPTION_ERRORS]
)
def test_out_of_range_options_name_the_option(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        merge(name, make_tvs(2), **options)


def test_unknown_options_are_type_errors() -> None:
    with pytest.raises(TypeError, match="has no option"):
        merge("magmax", THREE, alpha=0.5)
    with pytest.raises(TypeError, match="base_options.k"):
        merge("lines", make_tvs(2), base="ties", base_options={"k": 0.2})
    with pytest.raises(ValueError, match="at least 2 task vectors"):
        merge("model_stock", THREE[:1])


@pytest.mark.parametrize("name", METHODS)
def test_every_method_declares_metadata(name: str) -> None:
    spec = method_spec(name)
    assert spec.label and spec.reference and spec.fn.__doc__
    assert spec.task_specific == (name == "tsv_c")
    assert spec.storage == ("low_rank" if name == "tsv_c" else "merged")


# ---- LiNeS' layer parser ------------------------------------------------------------------


def test_layer_depths_of_the_known_layouts() -> None:
    open_clip = [f"transformer.resblocks.{i}.attn.in_proj_weight" for i in range(3)]
    assert layer_depths(["conv1.weight", *open_clip, "ln_post.weight"]) == {
        "conv1.weight": None, open_clip[0]: 0.0, open_clip[1]: 0.5, open_clip[2]: 1.0,
        "ln_post.weight": None,
    }  # fmt: skip
    hf = ["vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.encoder.layers.4.x"]
    assert layer_depths(hf) == {hf[0]: 0.0, hf[1]: 1.0}
    bert = ["bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.output.w"]
    assert layer_depths([*bert, "bert.pooler.dense.weight"]) == {
        bert[0]: 0.0, bert[1]: 1.0, "bert.pooler.dense.weight": None,
    }  # fmt: skip
    # T5: encoder and decoder are separate stacks, each over its own number of blocks
    t5 = [
        "shared.weight",
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "encoder.block.1.layer.1.DenseReluDense.wi.weight",
        "encoder.block.2.layer.0.layer_norm.weight",
        "decoder.block.0.layer.2.DenseReluDense.wo.weight",
        "decoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder.final_layer_norm.weight",
    ]
    assert list(layer_depths(t5).values()) == [None, 0.0, 0.5, 1.0, 0.0, 1.0, None]
    # a full CLIP: the image and text towers are two stacks
    clip = ["visual.transformer.resblocks.0.x", "visual.transformer.resblocks.1.x",
            "transformer.resblocks.0.x", "transformer.resblocks.3.x"]  # fmt: skip
    assert list(layer_depths(clip).values()) == [0.0, 1.0, 0.0, 1.0]
    assert layer_depths(["block.0.w"]) == {"block.0.w": 0.0}  # one block: depth 0


@pytest.mark.parametrize(
    "keys, bad",
    [
        (["blocks.0.attn.qkv.weight", "blocks.1.attn.qkv.weight"], "blocks.0.attn.qkv.weight"),
        (["transformer.resblocks.0.w", "layer1.0.conv1.weight"], "layer1.0.conv1.weight"),
        (["fc.weight", "fc.bias"], "fc.weight"),
    ],
)
def test_layer_depths_name_the_key_they_cannot_place(keys: list[str], bad: str) -> None:
    with pytest.raises(ValueError, match=f"key '{bad}'"):
        layer_depths(keys)
    with pytest.raises(ValueError, match=f"key '{bad}'"):
        merge("lines", [{k: torch.ones(2) for k in keys}] * 2)


# ---- shared helpers -----------------------------------------------------------------------


def test_kth_largest_is_a_sort() -> None:
    g = torch.Generator().manual_seed(0)
    tvs = TaskVectors(
        [{"a": torch.randint(0, 9, (50,), generator=g).float() / 4,
          "b": torch.randint(0, 9, (7, 3), generator=g).float() / 4} for _ in range(3)]
    )  # fmt: skip
    counts = [[1, 30, 71], [5, 5, 2], [71, 10, 40]]
    got = kth_largest(tvs.float_keys, tvs.tensors, counts)
    for t, task_counts in enumerate(counts):
        flat = torch.cat([x.flatten() for x in (tvs.task(t, "a"), tvs.task(t, "b"))])
        ordered = flat.sort(descending=True).values
        assert got[t] == [float(ordered[n - 1]) for n in task_counts]
    with pytest.raises(ValueError, match="72-th largest of 71"):
        kth_largest(tvs.float_keys, tvs.tensors, [[72]] * 3)


def test_low_rank_storage_rule() -> None:
    # T = 2: a 4 x 3 matrix keeps max(1, 3 // 2) = 1 triplet, 4 + 3 + 1 floats; bias whole
    shapes = {"w": (4, 3), "b": (4,)}
    assert storage_bits("low_rank", 2, 100, 16, shapes) == 32 * 100 + 32 * 2 * (8 + 4)
    assert math.isnan(storage_bits("low_rank", 2, 100, 16))
    with pytest.raises(ValueError, match="hold 16 entries"):
        storage_bits("low_rank", 2, 100, 20, shapes)
