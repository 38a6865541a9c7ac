"""The sandbox CLIP zoo: building, caching, corruption handling, structure, its evaluator."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from evaluation.benchmark import Task
from evaluation.clip.benchmark import HubVisionBenchmark
from evaluation.clip.evaluator import ImageEvaluator
from evaluation.sandbox import zoo as sz
from evaluation.sandbox.benchmark import SandboxBenchmark
from evaluation.sandbox.tasks import GENERATORS
from evaluation.zoo import Env, Experts, TaskVectorZoo
from experiments.config import register_schemas
from tests.threads import one_thread_fixture

CONF = Path(__file__).resolve().parents[3] / "conf"
TASK_NAMES = ["digits", "arrows"]
TINY = {
    "embed_dim": 32,
    "vision": {"patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text": {"width": 32, "layers": 1, "heads": 2},
    "pretrain": {"samples_per_task": 8, "steps": 3, "batch_size": 16, "warmup": 1},
    "finetune": {"steps": 3, "batch_size": 8, "warmup": 1},
}


def tiny_recipe(**overrides) -> dict:
    recipe = OmegaConf.load(CONF / "model" / "sandbox_clip.yaml").recipe
    return OmegaConf.to_container(OmegaConf.merge(recipe, TINY, overrides))


def tiny_zoo(**overrides) -> sz.SandboxClipZoo:
    return sz.SandboxClipZoo(name="sandbox_clip", recipe=tiny_recipe(**overrides))


def benchmark(n_train: int = 40) -> SandboxBenchmark:
    return SandboxBenchmark(
        name="sandbox_tiny", num_tasks=20, n_train=n_train, n_test=20, real_images="false"
    )


def tasks(names=TASK_NAMES, bench=None) -> list[Task]:
    return [t for t in (bench or benchmark()).tasks() if t.name in names]


def load(cache, names=TASK_NAMES, zoo=None, bench=None) -> Experts:
    bench = bench or benchmark()
    return (zoo or tiny_zoo()).load(bench, tasks(names, bench), Env(Path(cache)))


one_thread = one_thread_fixture("module", autouse=True)  # tiny stand-in models


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A miniature two-task zoo, built once; tests copy its cache before changing it."""
    cache = tmp_path_factory.mktemp("zoo")
    return cache, load(cache)


@pytest.fixture
def cache(built, tmp_path):
    shutil.copytree(built[0], tmp_path, dirs_exist_ok=True)
    return tmp_path


class Calls:
    """Wraps the training functions to count (or forbid) rebuilds."""

    def __init__(self, monkeypatch, forbid: bool = False):
        self.pretrain = self.finetune = 0
        real_pretrain, real_finetune = sz.pretrain, sz.finetune

        def pretrain(*args, **kwargs):
            assert not forbid, "pretrained model rebuilt"
            self.pretrain += 1
            return real_pretrain(*args, **kwargs)

        def finetune(model, tokenizer, task, *args, **kwargs):
            assert not forbid, f"expert {task.name} rebuilt"
            self.finetune += 1
            return real_finetune(model, tokenizer, task, *args, **kwargs)

        monkeypatch.setattr(sz, "pretrain", pretrain)
        monkeypatch.setattr(sz, "finetune", finetune)


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def zoo_dir(cache: Path) -> Path:
    (root,) = (cache / "sandbox_clip").iterdir()
    return root


def expert_file(cache: Path, task: str, n_train: int = 40) -> Path:
    return zoo_dir(cache) / "experts" / f"{task}-train{n_train}.safetensors"


def test_zoo_structure_and_evaluator(built):
    cache, experts = built
    assert isinstance(tiny_zoo(), TaskVectorZoo)
    whole = load_file(zoo_dir(cache) / "pretrained.safetensors")
    visual = {k[len("visual.") :]: v for k, v in whole.items() if k.startswith("visual.")}
    assert same_state(experts.pretrained, visual)
    assert set(experts.experts) == set(TASK_NAMES)
    for name, expert in experts.experts.items():
        assert set(expert) == set(visual)
        assert any(not torch.equal(expert[k], visual[k]) for k in expert), name
    n, n_merged = experts.param_counts
    assert n_merged == sum(v.numel() for v in visual.values()) < n
    assert experts.name.startswith("sandbox_clip-")

    evaluator = experts.evaluator(tasks(), 16, Env(cache))
    assert isinstance(evaluator, ImageEvaluator)
    zero_shot = evaluator.accuracy("digits", "val")
    tau = {k: experts.experts["digits"][k] - v for k, v in experts.pretrained.items()}
    evaluator.load(tau, 1.0)
    assert 0 <= evaluator.accuracy("digits", "test") <= 100
    assert same_state(experts.pretrained, visual)  # loading weights leaves theta_0 alone
    evaluator.load(None)
    assert evaluator.accuracy("digits", "val") == zero_shot
    assert len(evaluator.splits["digits", "val"][1]) == 4  # 10% of the benchmark's 40
    assert evaluator.input_cache_bytes == 1 << 30  # the default (Env's None)
    limited = experts.evaluator(tasks(), 16, Env(cache, input_cache_bytes=0))  # eval.input_cache_gb
    assert limited.input_cache_bytes == 0
    assert (
        limited.accuracy("digits", "val") == zero_shot and limited._inputs["digits", "val"] is None
    )

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert sz.preprocess(x).dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        sz.preprocess(x.float())
    assert tiny_zoo().tokenizer(["a seven."]).shape == (1, 16)
    manifest = json.loads((zoo_dir(cache) / "manifest.json").read_text())
    assert set(manifest["files"]) == {"pretrained.safetensors"} | {
        f"experts/{n}-train40.safetensors" for n in TASK_NAMES
    }
    assert manifest["files"]["experts/digits-train40.safetensors"]["n_train"] == 40


def test_cache_is_reused(cache, monkeypatch):
    Calls(monkeypatch, forbid=True)
    experts = load(cache, TASK_NAMES[:1])
    assert list(experts.experts) == TASK_NAMES[:1]


def test_new_task_adds_one_expert_and_build_is_deterministic(cache, monkeypatch):
    calls = Calls(monkeypatch)
    experts = load(cache, TASK_NAMES + ["faces"])
    assert (calls.pretrain, calls.finetune) == (0, 1)
    path = expert_file(cache, "digits")
    before = {k: v.clone() for k, v in load_file(path).items()}
    path.unlink()
    with pytest.warns(UserWarning, match="digits-train40.safetensors is missing"):
        load(cache)
    assert same_state(load_file(path), before)
    assert torch.equal(
        experts.experts["faces"]["conv1.weight"],
        load_file(expert_file(cache, "faces"))["conv1.weight"],
    )


def test_the_benchmarks_training_draw_makes_other_experts(cache, monkeypatch):
    calls = Calls(monkeypatch)
    experts = load(cache, bench=benchmark(n_train=50))
    assert (calls.pretrain, calls.finetune) == (0, 2)  # same pretrained model, new experts
    assert expert_file(cache, "digits", 50).exists() and expert_file(cache, "digits").exists()
    assert not same_state(experts.experts["digits"], load_file(expert_file(cache, "digits")))


def test_changed_recipe_rebuilds(cache, monkeypatch):
    calls = Calls(monkeypatch)
    zoo = tiny_zoo(finetune={"lr": 2 * tiny_recipe()["finetune"]["lr"]})  # not the default
    load(cache, TASK_NAMES[:1], zoo=zoo)
    assert (calls.pretrain, calls.finetune) == (1, 1)
    assert len(list((cache / "sandbox_clip").iterdir())) == 2
    digest = sz.recipe_digest(zoo.recipe, GENERATORS)
    assert digest != sz.recipe_digest(tiny_zoo().recipe, GENERATORS)
    reworded = dataclasses.replace(GENERATORS[0], templates=("a {}.",))  # captions, heads
    assert sz.recipe_digest(zoo.recipe, (reworded, *GENERATORS[1:])) != digest
    monkeypatch.setattr(sz, "RECIPE_VERSION", sz.RECIPE_VERSION + 1)  # a new build procedure
    assert sz.recipe_digest(zoo.recipe, GENERATORS) != digest
    load(cache, [], zoo=zoo)
    assert calls.pretrain == 2


def flip_bytes(path: Path, at: int = -50) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_expert_is_rebuilt_with_a_warning(cache, monkeypatch, damage):
    path = expert_file(cache, "arrows")
    good = path.read_bytes()
    state = {k: v.clone() for k, v in load_file(path).items()}  # not a view of the file
    if damage == "flip":
        flip_bytes(path)
    else:
        path.write_bytes(good[: len(good) // 2])
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="arrows-train40.safetensors fails its checksum"):
        experts = load(cache)
    assert (calls.pretrain, calls.finetune) == (0, 1)
    assert path.read_bytes() == good
    assert same_state(experts.experts["arrows"], state)


def test_corrupt_pretrained_is_rebuilt(cache, monkeypatch):
    flip_bytes(zoo_dir(cache) / "pretrained.safetensors", at=-8)
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="pretrained.safetensors fails its checksum"):
        load(cache)
    assert calls.pretrain == 1  # deterministic rebuild: the experts still match it
    assert calls.finetune == 0


def test_expert_of_another_pretrained_model_is_rebuilt(cache, monkeypatch):
    root = zoo_dir(cache)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["experts/digits-train40.safetensors"]["pretrained"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="digits-train40.safetensors was fine-tuned from another"):
        load(cache)
    assert calls.finetune == 1


def test_interrupted_build_is_not_trusted(cache, monkeypatch):
    root = zoo_dir(cache)
    path = expert_file(cache, "digits")
    # killed before the rename: only the temporary file exists
    path.rename(path.with_name(f".{path.name}.abc123.tmp"))
    # killed after the rename, before the records (sidecar, manifest): an unrecorded file
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"]["experts/arrows-train40.safetensors"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "experts" / "arrows-train40.safetensors.record.json").unlink()
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="arrows-train40.safetensors is not recorded"):
        load(cache)
    assert calls.finetune == 2 and path.exists()


def test_corrupt_manifest_keeps_the_intact_files(cache, monkeypatch):
    (zoo_dir(cache) / "manifest.json").write_text("{not json")
    flip_bytes(expert_file(cache, "arrows"))  # this one is damaged as well
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning) as warned:
        load(cache)
    messages = " | ".join(str(w.message) for w in warned)
    assert "manifest.json is unreadable" in messages and "recovered 2 intact file" in messages
    assert "arrows-train40.safetensors fails its checksum" in messages
    assert (calls.pretrain, calls.finetune) == (0, 1)  # only the damaged expert
    manifest = json.loads((zoo_dir(cache) / "manifest.json").read_text())
    assert manifest["files"]["experts/digits-train40.safetensors"]["n_train"] == 40


def test_bad_recipes_benchmarks_and_tasks_are_named(tmp_path):
    recipe = tiny_recipe()
    del recipe["finetune"]["lr"]
    with pytest.raises(ValueError, match="model.recipe.finetune.lr: .*missing"):
        sz.SandboxClipZoo(name="sandbox_clip", recipe=recipe)
    with pytest.raises(ValueError, match="model.recipe.vision.depth: Key 'depth' not in"):
        tiny_zoo(vision={"depth": 2})
    with pytest.raises(ValueError, match="model.recipe.pretrain.steps=0 must be > 0"):
        tiny_zoo(pretrain={"steps": 0})
    with pytest.raises(ValueError, match="model.recipe.seed: .*Integer"):
        tiny_zoo(seed=0.5)
    with pytest.raises(ValueError, match="model.recipe.vision.patch_size must divide 32"):
        tiny_zoo(vision={"patch_size": 5})
    with pytest.raises(ValueError, match="context_length=6 cuts the caption"):
        tiny_zoo(text={"context_length": 6})
    with pytest.raises(KeyError, match="'mnist'.*digits"):
        tiny_zoo().load(benchmark(), [Task("mnist", ("0",), ("{}",))], Env(tmp_path))
    with pytest.raises(ValueError, match="benchmark 'tall8' is not a sandbox benchmark"):
        tiny_zoo().load(HubVisionBenchmark(name="tall8", num_tasks=8), [], Env(tmp_path))
    assert not (tmp_path / "sandbox_clip").exists()


def test_default_config_builds_the_zoo_and_pretraining_classes():
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config")
    zoo = instantiate(cfg.model)
    assert isinstance(zoo, sz.SandboxClipZoo) and zoo.name == "sandbox_clip"
    recipe = zoo.recipe
    assert recipe.vision.patch_size == 8 and recipe.pretrain.class_fraction == 0.6
    for task in GENERATORS:
        seen = sz.pretrained_classes(task, recipe)
        k = len(task.classnames)
        assert seen == sz.pretrained_classes(task, recipe) and len(set(seen)) == len(seen)
        assert 1 <= len(seen) < k and abs(len(seen) - 0.6 * k) <= 0.5
        assert set(seen) <= set(range(k))
    everything = tiny_zoo(pretrain={"class_fraction": 1.0}).recipe
    assert sz.pretrained_classes(GENERATORS[0], everything) == list(range(10))
    with pytest.raises(ValueError, match="class_fraction must be <= 1"):
        tiny_zoo(pretrain={"class_fraction": 1.5})
