"""The T5 zoo from its composed configs, offline: pretrained model, full and LoRA experts
(made dense), tied weights kept as one parameter and still tied after a merge is loaded,
the expert cache, and errors that name the key."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from evaluation.t5 import zoo as t5_zoo
from evaluation.t5.benchmark import TextBenchmark
from evaluation.t5.evaluator import T5Evaluator
from evaluation.zoo import Env, TaskVectorZoo
from experiments.config import register_schemas
from merging import TaskVector, merge
from tests.evaluation.t5.conftest import GLUE_TASKS, NLP_TASKS, ROOT, overrides

TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def build(standins, kind, *extra):
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=[*overrides(standins, kind), *extra])
    return instantiate(cfg.model), instantiate(cfg.benchmark)


def equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)


def test_t5_v1_zoo_ties_head_and_embeddings_and_keeps_them_tied(standins, tmp_path, monkeypatch):
    zoo, benchmark = build(standins, "t5")
    assert isinstance(zoo, TaskVectorZoo) and isinstance(benchmark, TextBenchmark)
    tasks, env = benchmark.tasks(), Env(tmp_path)
    experts = zoo.load(benchmark, tasks, env)
    # one key per tied group: shared.weight stands for the embeddings and the LM head
    assert zoo.tied == [("shared.weight", *TIED, "lm_head.weight")]
    assert equal(experts.pretrained, standins["t5"]["state"])
    for task in NLP_TASKS:
        assert equal(experts.experts[task], standins["t5"]["experts"][task])
    n = sum(v.numel() for v in standins["t5"]["state"].values())
    assert experts.param_counts == (n, n) and experts.unmerged_entries == 0

    evaluator = experts.evaluator(tasks, 16, env)
    assert isinstance(evaluator, T5Evaluator)
    model = evaluator.model
    taus = [TaskVector(experts.experts[t], experts.pretrained) for t in NLP_TASKS]
    merged = merge("ties", taus, density=0.2)
    assert "lm_head.weight" not in merged  # the tied head is merged once, as shared.weight
    evaluator.load(merged, 0.7)
    expected = experts.pretrained["shared.weight"] + 0.7 * merged["shared.weight"]
    for key in ("shared.weight", *TIED, "lm_head.weight"):
        assert model.get_parameter(key).data_ptr() == model.shared.weight.data_ptr()
        assert torch.allclose(model.get_parameter(key), expected)
    evaluator.load(None)
    assert torch.equal(model.lm_head.weight, experts.pretrained["shared.weight"])

    def no_reading(*args, **kwargs):
        raise AssertionError("an expert was read again instead of from the expert cache")

    monkeypatch.setattr(t5_zoo, "load_seq2seq", no_reading)
    monkeypatch.setattr(zoo, "load_model", lambda: (model, evaluator.tokenizer))
    again = zoo.load(benchmark, tasks, env)
    assert equal(again.experts["paws"], standins["t5"]["experts"]["paws"])


def test_flan_zoo_full_and_lora_experts(standins, tmp_path):
    zoo, benchmark = build(standins, "flan")
    with pytest.warns(UserWarning, match="whole train split, which holds the val split of cola"):
        experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))
    state = standins["flan"]["state"]
    assert zoo.tied == [("shared.weight", *TIED)]  # a separate LM head, merged on its own
    assert "lm_head.weight" in experts.pretrained and equal(experts.pretrained, state)
    assert equal(experts.experts["cola"], standins["flan"]["experts"]["cola"])

    zoo, benchmark = build(standins, "flan", "model.experts=glue_lora16", "benchmark.val_from=test")
    experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))
    for task in GLUE_TASKS:
        changes = standins["flan"]["loras"][task]
        tau = TaskVector(experts.experts[task], experts.pretrained)
        for key in state:
            want = changes.get(key, torch.zeros_like(state[key]))
            assert torch.allclose(tau[key], want, atol=1e-6), key
    evaluator = experts.evaluator(benchmark.tasks(), 8, Env(tmp_path))
    assert evaluator.model.lm_head.weight.data_ptr() != evaluator.model.shared.weight.data_ptr()

    # a parameter left out of the merge: kept at theta_0, counted in N but not in N_m
    zoo, benchmark = build(
        standins, "flan", "model.unmerged=[lm_head.weight]", "benchmark.val_from=test"
    )
    with pytest.warns(UserWarning, match="change to unmerged lm_head.weight is dropped"):
        experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))
    head = state["lm_head.weight"]
    assert (
        "lm_head.weight" not in experts.pretrained
        and "lm_head.weight" not in experts.experts["cola"]
    )
    n = sum(v.numel() for v in state.values())
    assert (
        experts.param_counts == (n, n - head.numel()) and experts.unmerged_entries == head.numel()
    )
    evaluator = experts.evaluator(benchmark.tasks(), 8, Env(tmp_path))
    evaluator.load({k: torch.ones_like(v) for k, v in experts.pretrained.items()}, 1.0)
    assert torch.equal(evaluator.model.lm_head.weight, head)
    zoo, benchmark = build(standins, "flan", "model.unmerged=[head]", "benchmark.val_from=test")
    with pytest.raises(ValueError, match="model.unmerged: 'head' is not a parameter"):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))


def test_bad_experts_and_configs_name_the_key(standins, tmp_path):
    from evaluation.checkpoints import CheckpointError

    zoo, benchmark = build(standins, "t5", f"+model.expert_sources.qasc={tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match=r"expert qasc: no directory .*finetune_t5"):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    zoo, benchmark = build(standins, "t5", f"+model.expert_sources.qasc={tmp_path / 'empty'}")
    with pytest.raises(CheckpointError, match=r"expert qasc .*cannot load"):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c"))
    flan = standins["flan"]["path"].parent.parent / "experts" / "flan-tiny" / "cola"
    zoo, benchmark = build(standins, "t5", f"+model.expert_sources.qasc={flan}")
    with pytest.raises(CheckpointError, match="expert qasc .*does not match the architecture"):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c"))
    with pytest.raises(InstantiationException, match="model.experts='hub' is not a key"):
        build(standins, "t5", "model.experts=hub")
    with pytest.raises(InstantiationException, match=r"model.families.finetuned.format='dense'"):
        build(standins, "t5", "model.families.finetuned.format=dense")
    with pytest.raises(InstantiationException, match="benchmark.task_names names unknown task"):
        build(standins, "t5", "benchmark.task_names=[paws,boolq]")
    zoo, _ = build(standins, "t5", "model.families.finetuned.id='x/{arch}_{task}'")
    with pytest.raises(ValueError, match=r"only \{task\} and \{base\}"):
        zoo.expert_location("paws")
