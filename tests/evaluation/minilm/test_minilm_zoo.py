"""The MiniLM zoo on a tiny BERT: heads trained on the frozen pretrained encoder, experts
fine-tuned through them, both cached; the evaluator's theta_0 + alpha * tau; the ways to
name the pretrained weights; errors naming the key at fault."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evaluation.checkpoints import CheckpointError
from evaluation.minilm import zoo as zoo_module
from evaluation.minilm.encoder import embeddings, load_encoder, locate, tokenize
from evaluation.minilm.zoo import MiniLMZoo
from evaluation.real.benchmark import RealTextBenchmark
from evaluation.real.sources import SourceMissing
from evaluation.sandbox.benchmark import SandboxBenchmark
from evaluation.zoo import Env
from merging import TaskVector
from tests.evaluation.minilm.conftest import RECIPE, TASKS


def bench() -> RealTextBenchmark:
    return RealTextBenchmark(name="tiny", task_names=TASKS, n_train=14, n_test=8)


def test_heads_and_experts_are_trained_once_and_scored(patched_sources, tmp_path, monkeypatch):
    env, benchmark = Env(tmp_path), bench()
    zoo = MiniLMZoo(name="minilm", pretrained="minilm", recipe=RECIPE)
    experts = zoo.load(benchmark, benchmark.tasks(), env)
    pretrained = experts.pretrained
    assert not any(k.startswith("pooler.") for k in pretrained)  # mean pooling replaces it
    n = sum(v.numel() for v in pretrained.values())
    assert experts.param_counts == (n, n) and experts.unmerged_entries == 0
    for task in TASKS:
        state = experts.experts[task]
        assert set(state) == set(pretrained)
        assert any(not torch.equal(state[k], pretrained[k]) for k in pretrained)

    evaluator = experts.evaluator(benchmark.tasks(), 3, env)
    model, tokenizer = load_encoder(locate("minilm", tmp_path)[0], None, "test")
    for task in benchmark.tasks():
        tau = TaskVector(experts.experts[task.name], pretrained)
        texts, labels = benchmark.load_split(task, "test", tmp_path)
        ids = tokenize(tokenizer, texts, RECIPE.max_length)
        head = evaluator.heads[task.name]

        def own(state, head=head, ids=ids, labels=labels):
            model.load_state_dict(dict(state), strict=True)
            z = embeddings(model, ids, tokenizer.pad_token_id, 5, "cpu")
            return 100.0 * (head(z).argmax(-1) == labels).float().mean().item()

        evaluator.load(None)
        zeroshot = evaluator.accuracy(task.name, "test")
        assert zeroshot == pytest.approx(own(pretrained))
        evaluator.load(tau, 0.0)
        assert evaluator.accuracy(task.name, "test") == zeroshot
        evaluator.load(tau, 1.0)
        assert evaluator.accuracy(task.name, "test") == pytest.approx(
            own(experts.experts[task.name])
        )

    def fail(*args, **kwargs):
        pytest.fail("trained again")

    monkeypatch.setattr(zoo_module, "train_head", fail)
    monkeypatch.setattr(zoo_module, "finetune", fail)
    again = MiniLMZoo(name="minilm", pretrained="minilm", recipe=RECIPE).load(
        benchmark, benchmark.tasks(), env
    )
    assert again.experts[TASKS[0]].path == experts.experts[TASKS[0]].path
    longer = dataclasses.replace(RECIPE, finetune=dataclasses.replace(RECIPE.finetune, steps=5))
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # another recipe: retrained
        MiniLMZoo(name="minilm", pretrained="minilm", recipe=longer).load(
            benchmark, benchmark.tasks()[:1], env
        )


def test_the_pretrained_weights_by_source_directory_or_hub_id(patched_sources, tmp_path):
    directory = patched_sources["minilm"].root
    by_source, source_id = locate("minilm", tmp_path)
    assert source_id.startswith("source:minilm:") and by_source == str(tmp_path / "real" / "minilm")
    assert locate(directory, tmp_path)[1].startswith("dir:")
    assert locate("sentence-transformers/all-MiniLM-L6-v2", tmp_path) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        "hub:sentence-transformers/all-MiniLM-L6-v2",
    )
    a, _ = load_encoder(by_source, None, "a")
    b, _ = load_encoder(directory, None, "b")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(Exception, match=r"model 'x': cannot load '.*/nothing'"):
        load_encoder(str(tmp_path / "nothing"), None, "model 'x'")


def test_errors_name_the_key(patched_sources, tmp_path, monkeypatch):
    bad = dataclasses.replace(RECIPE, finetune=dataclasses.replace(RECIPE.finetune, warmup=4))
    with pytest.raises(ValueError, match=r"model.recipe.finetune.warmup must be in \[0, steps\)"):
        MiniLMZoo(name="minilm", pretrained="minilm", recipe=bad)
    with pytest.raises(ValueError, match="model.autocast='int8'"):
        MiniLMZoo(name="minilm", pretrained="minilm", autocast="int8")
    with pytest.raises(ValueError, match="model.recipe.max_length"):
        MiniLMZoo(name="minilm", pretrained="minilm", recipe={"max_length": "long"})
    zoo = MiniLMZoo(name="minilm", pretrained="minilm", recipe=RECIPE)
    sandbox = SandboxBenchmark(  # generated tasks: the user's cache is not read
        name="sandbox2", num_tasks=2, n_train=100, n_test=100, real_images="false"
    )
    with pytest.raises(ValueError, match="'sandbox2' is not one \\(choose benchmark=text_real8\\)"):
        zoo.load(sandbox, sandbox.tasks(), Env(tmp_path))
    gone = dataclasses.replace(patched_sources["minilm"], root=str(tmp_path / "none"))
    monkeypatch.setitem(patched_sources, "minilm", gone)
    with pytest.raises(SourceMissing, match="apt-get install -y tiny-bert"):
        zoo.load(bench(), bench().tasks(), Env(tmp_path / "cache"))


def test_a_hub_id_that_cannot_load_gives_the_fetch_command_for_the_cache_in_use(
    tmp_path, monkeypatch
):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")  # as without network

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", offline)
    with pytest.raises(CheckpointError, match=rf"--cache-dir {tmp_path} fetch minilm\) or a local"):
        load_encoder("no-such-org/no-such-model", None, "model 'x'", tmp_path)
