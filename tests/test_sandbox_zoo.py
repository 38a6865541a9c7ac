"""The sandbox CLIP zoo: building, caching, corruption handling, structure."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from evaluation.sandbox import zoo as sz
from evaluation.sandbox.tasks import TASKS

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "model" / "sandbox_clip.yaml"
TASK_NAMES = ["digits", "arrows"]
TINY = {
    "embed_dim": 32,
    "vision": {"patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text": {"width": 32, "layers": 1, "heads": 2},
    "data": {"n_train": 40, "n_test": 20},
    "pretrain": {"samples_per_task": 8, "steps": 3, "batch_size": 16, "warmup": 1},
    "finetune": {"steps": 3, "batch_size": 8, "warmup": 1},
}


def tiny_recipe(**overrides) -> dict:
    base = OmegaConf.merge(OmegaConf.load(CONFIG).recipe, TINY, overrides)
    return OmegaConf.to_container(base)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A miniature two-task zoo, built once; tests copy its cache before changing it."""
    cache = tmp_path_factory.mktemp("zoo")
    zoo = sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    return cache, zoo


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


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def zoo_dir(cache: Path) -> Path:
    (root,) = (cache / "sandbox_clip").iterdir()
    return root


def test_zoo_structure(built):
    cache, zoo = built
    visual = zoo.model.visual.state_dict()
    assert list(zoo.pretrained) == list(visual)
    assert set(zoo.experts) == set(TASK_NAMES)
    pretrained_file = load_file(zoo_dir(cache) / "pretrained.safetensors")
    for name, expert in zoo.experts.items():
        assert set(expert) == set(visual)
        assert any(not torch.equal(expert[k], zoo.pretrained[k]) for k in expert), name
        # swapping in the expert changes the visual tower and nothing else
        model = copy.deepcopy(zoo.model)
        model.visual.load_state_dict(dict(expert.items()))
        changed = {
            k for k, v in model.state_dict().items() if not torch.equal(v, pretrained_file[k])
        }
        assert changed and all(k.startswith("visual.") for k in changed)
    zoo.model.visual.load_state_dict(dict(zoo.experts["digits"].items()))
    try:  # loading other weights into the model leaves theta_0 alone
        assert all(
            torch.equal(v, pretrained_file[f"visual.{k}"]) for k, v in zoo.pretrained.items()
        )
    finally:
        zoo.model.visual.load_state_dict(zoo.pretrained)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    inp = zoo.preprocess(x)
    assert inp.dtype == torch.float32 and inp.shape == (4, 3, 32, 32)
    assert zoo.model.encode_image(inp).shape == (4, 32)
    assert zoo.tokenizer(["a seven."]).shape == (1, 16)
    with pytest.raises(ValueError, match="uint8"):
        zoo.preprocess(x.float())
    manifest = json.loads((zoo_dir(cache) / "manifest.json").read_text())
    assert set(manifest["files"]) == {"pretrained.safetensors"} | {
        f"experts/{n}.safetensors" for n in TASK_NAMES
    }


def test_cache_is_reused(cache, monkeypatch):
    Calls(monkeypatch, forbid=True)
    zoo = sz.load_sandbox_clip(TASK_NAMES[:1], cache, tiny_recipe(), progress=False)
    assert list(zoo.experts) == TASK_NAMES[:1]


def test_new_task_adds_one_expert_and_build_is_deterministic(cache, built, monkeypatch):
    calls = Calls(monkeypatch)
    zoo = sz.load_sandbox_clip(TASK_NAMES + ["faces"], cache, tiny_recipe(), progress=False)
    assert (calls.pretrain, calls.finetune) == (0, 1)
    root = zoo_dir(cache)
    before = {k: v.clone() for k, v in load_file(root / "experts" / "digits.safetensors").items()}
    (root / "experts" / "digits.safetensors").unlink()
    with pytest.warns(UserWarning, match="digits.safetensors is missing"):
        sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert same_state(load_file(root / "experts" / "digits.safetensors"), before)
    assert torch.equal(zoo.experts["faces"]["conv1.weight"], load_file(
        root / "experts" / "faces.safetensors")["conv1.weight"])  # fmt: skip


def test_changed_recipe_rebuilds(cache, monkeypatch):
    calls = Calls(monkeypatch)
    recipe = tiny_recipe(finetune={"lr": 3e-4})
    sz.load_sandbox_clip(TASK_NAMES[:1], cache, recipe, progress=False)
    assert (calls.pretrain, calls.finetune) == (1, 1)
    assert len(list((cache / "sandbox_clip").iterdir())) == 2
    assert sz.Recipe.from_mapping(recipe).digest() != sz.Recipe.from_mapping(tiny_recipe()).digest()
    digest = sz.Recipe.from_mapping(recipe).digest()
    monkeypatch.setattr(sz, "RECIPE_VERSION", sz.RECIPE_VERSION + 1)  # a new build procedure
    assert sz.Recipe.from_mapping(recipe).digest() != digest
    sz.load_sandbox_clip([], cache, recipe, progress=False)
    assert calls.pretrain == 2


def flip_bytes(path: Path, at: int = -50) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_expert_is_rebuilt_with_a_warning(cache, monkeypatch, damage):
    path = zoo_dir(cache) / "experts" / "arrows.safetensors"
    good = path.read_bytes()
    state = {k: v.clone() for k, v in load_file(path).items()}  # not a view of the file
    if damage == "flip":
        flip_bytes(path)
    else:
        path.write_bytes(good[: len(good) // 2])
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="arrows.safetensors fails its checksum"):
        zoo = sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert (calls.pretrain, calls.finetune) == (0, 1)
    assert same_state(load_file(path), state)
    assert torch.equal(zoo.experts["arrows"]["proj"], load_file(path)["proj"])


def test_corrupt_pretrained_is_rebuilt(cache, monkeypatch):
    flip_bytes(zoo_dir(cache) / "pretrained.safetensors", at=-8)
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="pretrained.safetensors fails its checksum"):
        sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert calls.pretrain == 1  # deterministic rebuild: the experts still match it
    assert calls.finetune == 0


def test_wrong_shapes_with_a_valid_checksum_are_rebuilt(cache, monkeypatch):
    root = zoo_dir(cache)
    path = root / "experts" / "digits.safetensors"
    with sz.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(path)
    state["proj"] = torch.zeros(3, 3)
    save_file(state, str(path), metadata=meta)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["experts/digits.safetensors"] = sz.file_sha256(path)
    (root / "manifest.json").write_text(json.dumps(manifest))
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="digits.safetensors has the wrong keys or shapes"):
        sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert calls.finetune == 1


def test_interrupted_build_is_not_trusted(cache, monkeypatch):
    root = zoo_dir(cache)
    path = root / "experts" / "digits.safetensors"
    # killed before the rename: only the temporary file exists
    leftover = path.with_name(f".{path.name}.abc123.tmp")
    path.rename(leftover)
    # killed after the rename, before the manifest update: an unrecorded file
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"]["experts/arrows.safetensors"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="arrows.safetensors is not recorded in the manifest"):
        sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert calls.finetune == 2 and path.exists()


def test_unreadable_manifest_trusts_nothing(cache, monkeypatch):
    (zoo_dir(cache) / "manifest.json").write_text("{not json")
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="manifest.json is unreadable"):
        sz.load_sandbox_clip(TASK_NAMES, cache, tiny_recipe(), progress=False)
    assert (calls.pretrain, calls.finetune) == (1, 2)


def test_bad_recipes_and_tasks_are_named(tmp_path):
    recipe = tiny_recipe()
    del recipe["finetune"]["lr"]
    with pytest.raises(KeyError, match="missing key recipe.finetune.lr"):
        sz.load_sandbox_clip(TASK_NAMES, tmp_path, recipe)
    with pytest.raises(KeyError, match="unknown key recipe.vision.depth"):
        sz.load_sandbox_clip(TASK_NAMES, tmp_path, tiny_recipe(vision={"depth": 2}))
    with pytest.raises(ValueError, match="recipe.pretrain.steps must be > 0"):
        sz.load_sandbox_clip(TASK_NAMES, tmp_path, tiny_recipe(pretrain={"steps": 0}))
    with pytest.raises(TypeError, match="recipe.seed must be int"):
        sz.load_sandbox_clip(TASK_NAMES, tmp_path, tiny_recipe(seed=0.5))
    with pytest.raises(ValueError, match="context_length=6 cuts the caption"):
        sz.load_sandbox_clip(TASK_NAMES, tmp_path, tiny_recipe(text={"context_length": 6}))
    with pytest.raises(KeyError, match="'mnist'.*digits"):
        sz.load_sandbox_clip(["mnist"], tmp_path, tiny_recipe())
    assert not (tmp_path / "sandbox_clip").exists()


def test_default_recipe_and_pretraining_classes():
    recipe = sz.Recipe.from_mapping(OmegaConf.to_container(OmegaConf.load(CONFIG).recipe))
    assert recipe.vision.patch_size == 8 and recipe.pretrain.class_fraction == 0.6
    for task in TASKS:
        seen = sz.pretrained_classes(task, recipe)
        k = len(task.classnames)
        assert seen == sz.pretrained_classes(task, recipe) and len(set(seen)) == len(seen)
        assert 1 <= len(seen) < k and abs(len(seen) - 0.6 * k) <= 0.5
        assert set(seen) <= set(range(k))
    everything = sz.Recipe.from_mapping(tiny_recipe(pretrain={"class_fraction": 1.0}))
    assert sz.pretrained_classes(TASKS[0], everything) == list(range(10))
    with pytest.raises(ValueError, match="class_fraction must be <= 1"):
        sz.Recipe.from_mapping(tiny_recipe(pretrain={"class_fraction": 1.5}))
