"""The data-based baselines of issue 13 on tiny models with fixed batches: Fisher merging and
RegMean against their closed forms on a linear softmax model, and against brute-force
restatements (per-example, per-class autograd; hand-run attention) on small nonlinear ones;
RegMean++'s block-wise inputs; AdaMerging's entropy descent and parametrisation; the task
data's bookkeeping and the option errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from evaluation.protocol import Method
from merging import merge, method_spec
from merging.methods.adamerging import entropy, learn_coefficients
from merging.methods.fisher import diagonal_fisher
from merging.methods.regmean import gram_matrices
from merging.streaming import TaskVectors
from merging.task_data import TaskData, stand_in

T, C, D = 3, 4, 5  # tasks, classes, input features
TASKS = [f"t{i}" for i in range(T)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def data_for(module: nn.Module, inputs: dict[str, torch.Tensor], **extra) -> TaskData:
    """Task data over ``module`` (theta_0: its state) whose logits are its output."""
    return TaskData(
        module=module.eval(),
        pretrained={k: v.detach().clone() for k, v in module.state_dict().items()},
        sizes={t: len(x) for t, x in inputs.items()},
        load=lambda task, positions: inputs[task][positions],
        head=lambda task, output: output,
        **extra,
    )


def linear_setup(seed: int = 0, n: int = 6, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(D, C, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(C, D, generator=g))
        if bias:
            layer.bias.copy_(torch.randn(C, generator=g))
    module = nn.Sequential(OrderedDict(layer=layer))
    inputs = {t: torch.randn(n, D, generator=g) for t in TASKS}
    taus = [{k: 0.5 * torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}
            for _ in TASKS]  # fmt: skip
    return module, inputs, taus


# -- Fisher ------------------------------------------------------------------------------


def linear_fisher(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact diagonal Fisher of ``softmax(x W^T)`` w.r.t. W: since d log p_c / dW =
    (e_c - p) x^T, ``F_ij = (1/N) sum_n p_ni (1 - p_ni) x_nj^2``."""
    p = torch.softmax(x @ w.T, -1)
    return (p * (1 - p)).T @ x.square() / len(x)


def fisher_average(taus, fishers, floor=1e-6, normalize=True) -> torch.Tensor:
    weights = [f.clamp_min(floor) / (f.norm() if normalize else 1) for f in fishers]
    return sum(w * tau for w, tau in zip(weights, taus, strict=True)) / sum(weights)


def test_fisher_matches_its_closed_form_on_a_linear_softmax_model():
    module, inputs, taus = linear_setup()
    w0 = module.layer.weight.detach()
    key = "layer.weight"
    fishers = [linear_fisher(w0 + tau[key], inputs[t]) for tau, t in zip(taus, TASKS, strict=True)]
    for normalize in (True, False):
        out = merge("fisher", taus, context=data_for(module, inputs), normalize=normalize)
        expected = fisher_average([tau[key] for tau in taus], fishers, normalize=normalize)
        torch.testing.assert_close(out[key], expected, rtol=1e-4, atol=1e-6)
    # the floor: an expert whose Fisher is zero somewhere counts there with weight floor
    zeros = {t: torch.zeros_like(x) for t, x in inputs.items()}
    zeros["t0"] = inputs["t0"]
    out = merge("fisher", taus, context=data_for(module, zeros), floor=0.5, normalize=False)
    f0 = linear_fisher(w0 + taus[0][key], inputs["t0"])
    expected = fisher_average([tau[key] for tau in taus], [f0, 0 * f0, 0 * f0], 0.5, False)
    torch.testing.assert_close(out[key], expected)


def test_fisher_counts_only_the_requested_examples():
    module, inputs, taus = linear_setup(n=10)
    context = data_for(module, inputs)
    out = merge("fisher", taus, context=context, examples=4)
    key = "layer.weight"
    w0 = module.layer.weight.detach()
    fishers = [linear_fisher(w0 + taus[i][key], inputs[t][:4]) for i, t in enumerate(TASKS)]
    expected = fisher_average([tau[key] for tau in taus], fishers)
    torch.testing.assert_close(out[key], expected, rtol=1e-4, atol=1e-6)
    assert context.examples_used() == {t: 4 for t in TASKS}


def brute_force_fisher(module: nn.Module, weights: dict, x: torch.Tensor, aliases=None) -> dict:
    """``(1/N) sum_n sum_c p_nc (d log p_nc / d theta)^2`` by one autograd call per example
    and class (an independent restatement of the exact estimator); ``aliases`` (alias ->
    primary) are tied to their primary."""
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    total = {k: torch.zeros_like(v) for k, v in weights.items()}
    tied = {**params, **{a: params[p] for a, p in (aliases or {}).items()}}
    for n in range(len(x)):
        logp = torch.log_softmax(torch.func.functional_call(module, tied, (x[n : n + 1],)), -1)[0]
        for c in range(logp.shape[0]):
            grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True)
            for k, g in zip(params, grads, strict=True):
                total[k] += logp[c].exp().detach() * g.square()
    return {k: v / len(x) for k, v in total.items()}


def test_fisher_exact_estimator_equals_per_example_per_class_autograd_on_an_mlp():
    g = torch.Generator().manual_seed(1)
    module = nn.Sequential(nn.Linear(D, 7), nn.Tanh(), nn.Linear(7, C)).eval()
    inputs = {t: torch.randn(5, D, generator=g) for t in TASKS}
    state = module.state_dict()
    taus = [{k: 0.3 * torch.randn(v.shape, generator=g) for k, v in state.items()} for _ in TASKS]
    out = merge("fisher", taus, context=data_for(module, inputs))
    fishers = [
        brute_force_fisher(module, {k: state[k] + tau[k] for k in state}, inputs[t])
        for tau, t in zip(taus, TASKS, strict=True)
    ]
    norms = [torch.sqrt(sum(f.square().sum() for f in fs.values())) for fs in fishers]
    for key in state:
        w = [fs[key].clamp_min(1e-6) / n for fs, n in zip(fishers, norms, strict=True)]
        expected = sum(wt * tau[key] for wt, tau in zip(w, taus, strict=True)) / sum(w)
        torch.testing.assert_close(out[key], expected, rtol=1e-4, atol=1e-6)


def test_fisher_fusion_bench_estimator_is_its_batched_squared_gradient():
    """FusionBench's form: ``(d/dW sum_{n,c} sqrt(p_nc) log p_nc)^2 / N`` per batch; on the
    linear model the gradient is ``sum_n (sqrt(p_n) - p_n sum_c sqrt(p_nc)) x_n^T``."""
    module, inputs, taus = linear_setup()
    key, w0 = "layer.weight", module.layer.weight.detach()

    def batched(w, x):
        p = torch.softmax(x @ w.T, -1)
        grad = (p.sqrt() - p * p.sqrt().sum(-1, keepdim=True)).T @ x
        return grad.square() / len(x)

    out = merge("fisher", taus, context=data_for(module, inputs), estimator="fusion_bench",
                batch_size=64)  # fmt: skip
    fishers = [batched(w0 + tau[key], inputs[t]) for tau, t in zip(taus, TASKS, strict=True)]
    torch.testing.assert_close(out[key], fisher_average([tau[key] for tau in taus], fishers),
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_fisher_sampled_estimator_is_unbiased():
    """One class drawn per example from the model's prediction: over many copies of one
    example, the estimate approaches the exact Fisher."""
    module, inputs, taus = linear_setup()
    x = inputs["t0"][:1].repeat(1500, 1)
    context = data_for(module, {t: x for t in TASKS})
    w = {k: v.detach() for k, v in module.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    sampled = diagonal_fisher(context, "t0", w, {}, 1500, "sampled", 1, generator)
    exact = linear_fisher(w["layer.weight"], x[:1])
    torch.testing.assert_close(sampled["layer.weight"], exact, rtol=0.15, atol=1e-3)


# -- RegMean -----------------------------------------------------------------------------


def reduced(gram: torch.Tensor, a: float) -> torch.Tensor:
    return a * gram + (1 - a) * torch.diag(torch.diagonal(gram))


def regmean_closed_form(grams, weights, a):
    """``W = (sum_t G~_t)^-1 sum_t G~_t W_t^T`` (as (out, in))."""
    g = [reduced(gt, a) for gt in grams]
    return torch.linalg.solve(sum(g), sum(gt @ w.T for gt, w in zip(g, weights, strict=True))).T


@pytest.mark.parametrize("off_diagonal", [1.0, 0.95, 0.0])
def test_regmean_matches_its_closed_form_on_one_linear_layer(off_diagonal):
    module, inputs, taus = linear_setup(bias=True, n=9)
    key = "layer.weight"
    grams = [inputs[t].T @ inputs[t] / len(inputs[t]) for t in TASKS]
    out = merge("regmean", taus, context=data_for(module, inputs), off_diagonal=off_diagonal,
                batch_size=4)  # fmt: skip
    expected = regmean_closed_form(grams, [tau[key] for tau in taus], off_diagonal)
    torch.testing.assert_close(out[key], expected, rtol=1e-4, atol=1e-5)
    # in weights: the same closed form on theta_t = theta_0 + tau_t (theta_0 cancels)
    w0 = module.layer.weight.detach()
    on_weights = regmean_closed_form(grams, [w0 + tau[key] for tau in taus], off_diagonal)
    torch.testing.assert_close(w0 + out[key], on_weights, rtol=1e-4, atol=1e-5)
    bias = sum(tau["layer.bias"] for tau in taus) / T  # other entries: averaged
    torch.testing.assert_close(out["layer.bias"], bias)
    if off_diagonal == 0.0:  # diagonal Gram matrices: a per-input-feature weighted average
        d = torch.stack([torch.diagonal(g) for g in grams])  # (T, in)
        weighted = sum(d[i] * taus[i][key] for i in range(T)) / d.sum(0)
        torch.testing.assert_close(out[key], weighted, rtol=1e-4, atol=1e-5)


class Attention(nn.Module):
    """LayerNorm, self-attention, MLP: the linear maps of a ViT block."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.fc = nn.Linear(8, 6)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x if self.batch_first else x.transpose(0, 1))
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h if self.batch_first else h.transpose(0, 1)
        return self.fc(h).mean(1)


def attention_context(mha: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    """The input of ``out_proj``: heads' ``softmax(q k^T / sqrt(d)) v`` concatenated, by
    hand. ``h``: (batch, tokens, E)."""
    e, heads = mha.embed_dim, mha.num_heads
    q, k, v = (h @ mha.in_proj_weight[i * e:(i + 1) * e].T + mha.in_proj_bias[i * e:(i + 1) * e]
               for i in range(3))  # fmt: skip
    split = [x.reshape(*x.shape[:2], heads, e // heads).transpose(1, 2) for x in (q, k, v)]
    att = torch.softmax(split[0] @ split[1].transpose(-1, -2) / (e // heads) ** 0.5, -1)
    return (att @ split[2]).transpose(1, 2).reshape(h.shape)


@pytest.mark.parametrize("batch_first", [True, False])
def test_regmean_reads_multihead_attention_projections_inputs(batch_first):
    torch.manual_seed(0)
    module = Attention(batch_first).eval()
    x = torch.randn(3, 5, 8)
    context = data_for(module, {"t0": x})
    weights = dict(context.pretrained)
    grams = gram_matrices(context, weights, "t0", list(weights), 3, 2)
    h = module.norm(x)
    rows = h.reshape(-1, 8)
    ctx = attention_context(module.attn, h).reshape(-1, 8)
    with torch.no_grad():
        seq = h if batch_first else h.transpose(0, 1)
        attended = module.attn(seq, seq, seq, need_weights=False)[0]
        attended = attended if batch_first else attended.transpose(0, 1)
        mid = (h + attended).reshape(-1, 8)
    expected = {
        ("attn.in_proj_weight", 0, 24): rows.T @ rows / len(rows),
        ("attn.out_proj.weight", 0, 8): ctx.T @ ctx / len(ctx),
        ("fc.weight", 0, 6): mid.T @ mid / len(mid),
    }
    assert set(grams) == set(expected)
    for block, gram in expected.items():
        torch.testing.assert_close(grams[block], gram.detach(), rtol=1e-4, atol=1e-5)


def test_regmean_on_attention_solves_each_projection():
    torch.manual_seed(0)
    module = Attention(True).eval()
    inputs = {t: torch.randn(4, 5, 8) for t in TASKS}
    state = module.state_dict()
    taus = [{k: 0.1 * torch.randn(v.shape) for k, v in state.items()} for _ in TASKS]
    context = data_for(module, inputs)
    out = merge("regmean", taus, context=context, off_diagonal=0.9)
    key = "attn.in_proj_weight"
    grams = []
    for tau, t in zip(taus, TASKS, strict=True):
        w = {k: state[k] + tau[k] for k in state}
        grams.append(gram_matrices(context, w, t, [key], 4, 4)[key, 0, 24])
    expected = regmean_closed_form(grams, [tau[key] for tau in taus], 0.9)
    torch.testing.assert_close(out[key], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["norm.weight"], sum(tau["norm.weight"] for tau in taus) / T)


def test_regmean_plusplus_takes_each_blocks_inputs_from_the_merged_earlier_blocks():
    g = torch.Generator().manual_seed(3)
    module = nn.Sequential(OrderedDict(l0=nn.Linear(D, 6, bias=False),
                                       l1=nn.Linear(6, C, bias=False))).eval()  # fmt: skip
    inputs = {t: torch.randn(7, D, generator=g) for t in TASKS}
    state = {k: v.detach() for k, v in module.state_dict().items()}
    taus = [{k: 0.5 * torch.randn(v.shape, generator=g) for k, v in state.items()} for _ in TASKS]
    context = data_for(module, inputs, blocks=("l0", "l1"))
    out = merge("regmean_plusplus", taus, context=context, off_diagonal=0.8)
    a = 0.8
    xs = [inputs[t] for t in TASKS]
    tau0 = regmean_closed_form([x.T @ x / 7 for x in xs], [tau["l0.weight"] for tau in taus], a)
    merged_l0 = state["l0.weight"] + tau0
    hs = [x @ merged_l0.T for x in xs]  # block 1 reads the merged block 0 (RegMean++)
    tau1 = regmean_closed_form([h.T @ h / 7 for h in hs], [tau["l1.weight"] for tau in taus], a)
    torch.testing.assert_close(out["l0.weight"], tau0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["l1.weight"], tau1, rtol=1e-4, atol=1e-5)
    plain = merge("regmean", taus, context=context, off_diagonal=0.8)  # reads each expert's own
    hs = [x @ (state["l0.weight"] + tau["l0.weight"]).T for x, tau in zip(xs, taus, strict=True)]
    own = regmean_closed_form([h.T @ h / 7 for h in hs], [tau["l1.weight"] for tau in taus], a)
    torch.testing.assert_close(plain["l1.weight"], own, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain["l1.weight"], out["l1.weight"])
    with pytest.raises(ValueError, match="needs the model's block order"):
        merge("regmean_plusplus", taus, context=data_for(module, inputs))


# -- AdaMerging --------------------------------------------------------------------------


def test_adamerging_decreases_entropy_and_returns_the_coefficients_combination():
    module, inputs, taus = linear_setup(n=8)
    tvs = TaskVectors(taus)
    out, lam, losses = learn_coefficients(tvs, data_for(module, inputs), granularity="task",
                                          steps=60, lr=0.05, init=0.3, batch_size=8, clamp=True,
                                          examples=None, seed=0)  # fmt: skip
    assert losses[-1] < losses[0] - 0.05
    assert lam.shape == (1, T) and ((lam >= 0) & (lam <= 1)).all()
    expected = sum(lam[0, t] * taus[t]["layer.weight"] for t in range(T))
    torch.testing.assert_close(out["layer.weight"], expected)
    # the learned model has lower entropy than task arithmetic at the initial 0.3
    w0 = module.layer.weight.detach()

    def total_entropy(tau):
        return sum(float(entropy(x @ (w0 + tau).T)) for x in inputs.values())

    assert total_entropy(out["layer.weight"]) < total_entropy(0.3 * sum(t["layer.weight"]
                                                                        for t in taus))  # fmt: skip


def test_adamerging_first_step_follows_the_entropy_gradient():
    """Adam's first step moves each coefficient by lr against the sign of dL/dlam, with L the
    summed per-task entropy of theta_0 + sum_t lam_t tau_t (restated by hand)."""
    g = torch.Generator().manual_seed(5)
    module = nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, C)).eval()
    inputs = {t: torch.randn(4, D, generator=g) for t in TASKS}
    state = {k: v.detach() for k, v in module.state_dict().items()}
    taus = [{k: torch.randn(v.shape, generator=g) for k, v in state.items()} for _ in TASKS]
    context = data_for(module, inputs)
    for granularity in ("task", "layer"):
        _, lam, _ = learn_coefficients(TaskVectors(taus), context, granularity, 1, 0.01, 0.3, 4,
                                       True, None, 0)  # fmt: skip
        layerwise = granularity == "layer"
        rows = len(state) if layerwise else 1
        coefficients = torch.full((rows, T), 0.3, requires_grad=True)
        lam_of = {k: coefficients[i if layerwise else 0] for i, k in enumerate(state)}
        weights = {k: state[k] + sum(lam_of[k][t] * taus[t][k] for t in range(T)) for k in state}
        loss = sum(
            entropy(torch.func.functional_call(module, weights, (inputs[task],))) for task in TASKS
        )
        (grad,) = torch.autograd.grad(loss, coefficients)
        torch.testing.assert_close(lam, 0.3 - 0.01 * grad.sign(), atol=1e-6, rtol=0)


def test_adamerging_granularities_and_zero_steps_are_task_arithmetic_at_init():
    module, inputs, taus = linear_setup()
    spec = method_spec("adamerging")
    assert spec.needs == ("data", "test_inputs") and "TTA" in spec.label
    for granularity in ("task", "layer"):
        context = data_for(module, inputs, split="test")
        out = merge("adamerging", taus, context=context, granularity=granularity, steps=0, init=0.4)
        torch.testing.assert_close(out["layer.weight"], 0.4 * sum(t["layer.weight"] for t in taus))
    context = data_for(module, inputs)
    merge("adamerging", taus, context=context, steps=3, batch_size=2, examples=3)
    assert all(0 < n <= 3 for n in context.examples_used().values())


# -- task data, registry and option errors ----------------------------------------------


def test_task_data_serves_batches_samples_and_counts_distinct_examples():
    module, inputs, _ = linear_setup(n=10)
    context = data_for(module, inputs)
    assert [len(b) for b in context.batches("t0", 4, limit=9)] == [4, 4, 1]
    generator = torch.Generator().manual_seed(0)
    sample = context.sample("t1", 3, generator, limit=5)
    assert len(sample) == 3 and all(any(torch.equal(s, x) for x in inputs["t1"][:5])
                                    for s in sample)  # fmt: skip
    context.batch("t1", [0, 0, 1])
    assert context.examples_used()["t0"] == 9 and context.examples_used()["t2"] == 0
    assert 3 <= context.examples_used()["t1"] <= 5
    weights = context.weights({"layer.weight": torch.ones(C, D)})
    torch.testing.assert_close(weights["layer.weight"], module.layer.weight.detach() + 1)


@pytest.mark.parametrize(
    "name, option, value, message",
    [
        ("fisher", "examples", 0, "'examples' must be a positive integer"),
        ("fisher", "estimator", "empirical", "'estimator' must be one of"),
        ("fisher", "floor", 0.0, "'floor' must be positive"),
        ("regmean", "off_diagonal", 1.5, r"'off_diagonal' must be in \[0, 1\]"),
        ("regmean_plusplus", "batch_size", -1, "'batch_size'"),
        ("adamerging", "lr", 0, "'lr' must be positive"),
        ("adamerging", "clamp", "yes", "'clamp' must be true or false"),
        ("adamerging", "examples", 0, "'examples' must be a positive integer"),
        ("adamerging", "granularity", "block", "'granularity' must be one of 'task', 'layer'"),
    ],
)
def test_bad_options_name_the_option(name, option, value, message):
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    taus = [{key: torch.randn(4, 3)} for _ in range(2)]
    with pytest.raises(ValueError, match=message):
        merge(name, taus, context=stand_in(key, (4, 3), 2), **{option: value})
    method = Method(key=name, label=name, fn=name, hparams={option: value})
    with pytest.raises(ValueError, match=f"method.{name}: .*{message}"):
        method.check_options(2)  # the pipeline's dry merge on stand-in task data


def test_a_data_method_needs_matching_task_data():
    module, inputs, taus = linear_setup()
    for name in ("fisher", "regmean", "regmean_plusplus", "adamerging"):
        assert "data" in method_spec(name).needs
        with pytest.raises(ValueError, match=f"merge method {name!r} needs a context"):
            merge(name, taus)
        with pytest.raises(ValueError, match="task data holds 2 tasks, but 3 task vectors"):
            merge(name, taus, context=data_for(module, {t: inputs[t] for t in TASKS[:2]},
                                                blocks=("layer",)))  # fmt: skip
    Method(key="f", label="f", fn="fisher", search={"examples": [2, 4]}).check_options(8)


@pytest.mark.parametrize("name", ["fisher", "regmean", "regmean_plusplus", "adamerging"])
def test_the_task_vectors_are_left_untouched(name):
    module, inputs, taus = linear_setup(bias=True)
    copies = [{k: v.clone() for k, v in tau.items()} for tau in taus]
    merge(
        name,
        taus,
        context=data_for(module, inputs, blocks=("layer",)),
        **({"steps": 2} if name.startswith("adamerging") else {}),
    )
    for tau, copy in zip(taus, copies, strict=True):
        assert all(torch.equal(tau[k], copy[k]) for k in copy)


class Tied(nn.Module):
    """Two uses of one square layer (tied weights) and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.out = nn.Linear(D, D, bias=False), nn.Linear(D, C)
        self.again = nn.Linear(D, D, bias=False)
        self.again.weight = self.first.weight
        self.register_buffer("count", torch.tensor(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.again(torch.tanh(self.first(x)))))


@pytest.mark.parametrize("name", ["fisher", "regmean", "regmean_plusplus", "adamerging"])
def test_integer_buffers_are_carried_and_tied_weights_stay_tied(name):
    torch.manual_seed(0)
    module = Tied().eval()
    inputs = {t: torch.randn(4, D) for t in TASKS}
    taus = []
    for _ in TASKS:
        shared = 0.1 * torch.randn(D, D)
        out_layer = {"out.weight": 0.1 * torch.randn(C, D), "out.bias": 0.1 * torch.randn(C)}
        taus.append({"first.weight": shared, "again.weight": shared, "count": torch.tensor(7),
                     **out_layer})  # fmt: skip
    context = data_for(module, inputs, blocks=("first", "again", "out"))
    out = merge(name, taus, context=context, **({"steps": 2} if "ada" in name else {}))
    assert torch.equal(out["count"], torch.tensor(7))
    assert out["again.weight"] is out["first.weight"]
    if name == "fisher":  # the tied weight's Fisher sums the gradients of both uses
        floats = ["first.weight", "out.weight", "out.bias"]
        state = module.state_dict()
        fishers = [
            brute_force_fisher(module, {k: state[k] + tau[k] for k in floats}, inputs[t],
                               {"again.weight": "first.weight"})
            for tau, t in zip(taus, TASKS, strict=True)
        ]  # fmt: skip
        norms = [torch.sqrt(sum(f.square().sum() for f in fs.values())) for fs in fishers]
        w = [fs["first.weight"].clamp_min(1e-6) / n for fs, n in zip(fishers, norms, strict=True)]
        expected = sum(wt * tau["first.weight"] for wt, tau in zip(w, taus, strict=True)) / sum(w)
        torch.testing.assert_close(out["first.weight"], expected, rtol=1e-4, atol=1e-6)
