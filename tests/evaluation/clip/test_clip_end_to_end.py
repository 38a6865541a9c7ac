"""The CLIP zoo and benchmark end to end, offline: a small open_clip architecture saved in
each expert family's on-disk format, small local datasets in the hub loaders' form; zoo and
benchmark built from the composed configs (hydra.utils.instantiate), then heads from
templates, evaluation, a two-step fine-tune, merging, selection on val, test evaluation and
the reproduction report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file, save_file

from evaluation.checkpoints import CheckpointError
from evaluation.clip import zoo as clip_zoo
from evaluation.clip.benchmark import HubVisionBenchmark
from evaluation.clip.checkpoints import open_clip_to_hf
from evaluation.clip.evaluator import ImageEvaluator
from evaluation.clip.tasks import DATASETS
from evaluation.results import AVERAGE, read_rows
from evaluation.zoo import Env, TaskVectorZoo
from experiments.config import register_schemas
from experiments.report import main as report_main
from experiments.report import report
from merging import method_spec
from tests.threads import one_thread_fixture

ROOT = Path(__file__).resolve().parents[3]
ARCH, TASK_NAMES = "mergelab-tiny-vit", ["Cars", "DTD"]
TINY = {"embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                       "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}  # fmt: skip


def perturbed(state, seed, scale=0.02):
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in state.items()}


one_thread = one_thread_fixture("module", autouse=True)  # tiny stand-in models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Stand-ins of everything the real zoo and benchmark download."""
    root = tmp_path_factory.mktemp("clip")
    (root / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH)
    torch.save(clip.state_dict(), root / "pretrained.pt")
    visual = {k: v.detach().clone() for k, v in clip.visual.state_dict().items()}
    experts = {t: perturbed(visual, i) for i, t in enumerate(TASK_NAMES)}
    for task, state in experts.items():  # TALL masks layout: the authors' ImageEncoder state
        folder = root / "tall" / ARCH / f"{task}Val"
        folder.mkdir(parents=True)
        saved = {f"model.visual.{k}": v for k, v in state.items()}
        saved["model.token_embedding.weight"] = clip.token_embedding.weight.detach()
        torch.save(saved, folder / "nonlinear_finetuned.pt")
    base = perturbed(visual, 10)  # transformers layout: base CLIPModel and vision experts
    (root / "openai" / "clip-tiny").mkdir(parents=True)
    hf_base = {**open_clip_to_hf(base), "text_model.final_layer_norm.weight": torch.ones(32)}
    save_file(hf_base, str(root / "openai" / "clip-tiny" / "model.safetensors"))
    hf_experts = {t: perturbed(base, 20 + i) for i, t in enumerate(TASK_NAMES)}
    for task, state in hf_experts.items():
        folder = root / "hf" / f"clip-tiny_{DATASETS[task].hf_slug}"
        folder.mkdir(parents=True)
        hf = open_clip_to_hf(state)
        if task == "Cars":  # a plain CLIPVisionModel: no projection
            del hf["visual_projection.weight"]
        torch.save(hf, folder / "pytorch_model.bin")
    rng = np.random.default_rng(0)
    for task in TASK_NAMES:  # datasets as load_dataset returns them, saved locally
        names = datasets.ClassLabel(names=list(DATASETS[task].classnames))

        def split(n, names=names):
            images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(24, 48)), 40, 3),
                                                   dtype=np.uint8)) for _ in range(n)]  # fmt: skip
            labels = rng.integers(0, names.num_classes, n).tolist()
            features = datasets.Features({"image": datasets.Image(), "label": names})
            return datasets.Dataset.from_dict({"image": images, "label": labels}, features)

        datasets.DatasetDict({"train": split(40), "test": split(12)}).save_to_disk(
            str(root / "data" / task)
        )
    return {"root": root, "visual": visual, "experts": experts, "base": base,
            "hf_experts": hf_experts}  # fmt: skip


def local(files) -> list[str]:
    """Overrides pointing the configs at the stand-ins."""
    root = files["root"]
    return [
        f"model.arch={ARCH}", f"model.arch_config={root / f'{ARCH}.json'}",
        f"model.pretrained={root / 'pretrained.pt'}", "benchmark=tall8", "benchmark.num_tasks=2",
        f"benchmark.data_root={root / 'data'}", "benchmark.decode_workers=0",
    ]  # fmt: skip


def build(files, *overrides):
    """(zoo, benchmark) instantiated from the composed run config."""
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["model=clip_vit_b32", *local(files), *overrides])
    return instantiate(cfg.model), instantiate(cfg.benchmark)


def zoo_overrides(files):
    root = files["root"]
    return [f"model.tall_masks.repo={root / 'tall'}",
            f"model.hf_transformers.owner={root / 'hf'}",
            f"model.hf_transformers.base_owner={root / 'openai'}",
            "model.hf_transformers.name=clip-tiny"]  # fmt: skip


def equal_states(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)


def test_tall_masks_zoo(files, tmp_path, monkeypatch):
    zoo, benchmark = build(files, *zoo_overrides(files))
    assert isinstance(zoo, TaskVectorZoo) and isinstance(benchmark, HubVisionBenchmark)
    tasks, env = benchmark.tasks(), Env(tmp_path)
    assert [t.name for t in tasks] == TASK_NAMES
    experts = zoo.load(benchmark, tasks, env)
    assert equal_states(experts.pretrained, files["visual"])
    for task in TASK_NAMES:
        assert equal_states(experts.experts[task], files["experts"][task])
    n, n_merged = experts.param_counts
    assert ARCH in experts.name and n_merged == sum(v.numel() for v in files["visual"].values())
    assert experts.unmerged_entries == n - n_merged > 0
    clip = zoo.load_pretrained()
    assert clip.image_size == 32 and equal_states(clip.model.visual.state_dict(), files["visual"])
    x = clip.preprocess(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8))
    assert x.dtype == torch.float32 and x[:, 0].allclose(
        torch.tensor((1 - 0.48145466) / 0.26862954)
    )

    evaluator = experts.evaluator(tasks, 8, env)  # heads from templates, val and test splits
    assert isinstance(evaluator, ImageEvaluator)
    assert set(evaluator.splits) == {(t, s) for t in TASK_NAMES for s in ("val", "test")}
    assert len(evaluator.splits["Cars", "val"][1]) == 4  # 10% of the 40 training images
    zero_shot = evaluator.accuracy("DTD", "test")
    tau = {k: experts.experts["DTD"][k] - v for k, v in experts.pretrained.items()}
    evaluator.load(tau, 1.0)
    assert 0 <= evaluator.accuracy("DTD", "test") <= 100
    evaluator.load(None)
    assert evaluator.accuracy("DTD", "test") == zero_shot
    assert len(list((tmp_path / "heads").glob("*.safetensors"))) == 2

    def no_reading(*args, **kwargs):
        raise AssertionError("an expert was read again instead of from the expert cache")

    monkeypatch.setattr(clip_zoo, "load_visual", no_reading)
    again = zoo.load(benchmark, tasks, env)
    assert equal_states(again.experts["DTD"], files["experts"]["DTD"])


def test_hf_transformers_zoo(files, tmp_path):
    zoo, benchmark = build(files, *zoo_overrides(files), "model.experts=hf_transformers")
    with pytest.warns(UserWarning, match="whole train split.*benchmark.val_from=test"):
        experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))
    base = files["base"]
    assert equal_states(experts.pretrained, base)  # theta_0 is the experts' own base model
    assert equal_states(experts.experts["DTD"], files["hf_experts"]["DTD"])
    cars = dict(experts.experts["Cars"])
    assert torch.equal(cars.pop("proj"), base["proj"])  # no projection: the base's
    assert equal_states(cars, {k: v for k, v in files["hf_experts"]["Cars"].items() if k != "proj"})
    emnist = HubVisionBenchmark(name="tall20", num_tasks=20).tasks()[18]
    with pytest.raises(ValueError, match="no expert for task 'EMNIST'.*EMNISTLetters"):
        zoo.load(benchmark, [emnist], Env(tmp_path))
    zoo, held_out = build(files, *zoo_overrides(files), "model.experts=hf_transformers",
                          "benchmark.val_from=test")  # fmt: skip
    assert held_out.name == "tall2-val_from_test"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # val held out of test: nothing to warn about
        zoo.load(held_out, held_out.tasks(), Env(tmp_path))


def test_bad_and_pickled_experts(files, tmp_path):
    visual = files["visual"]
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    extra = {**visual, "transformer.resblocks.2.ln_1.weight": torch.ones(64)}
    torch.save({f"model.visual.{k}": v for k, v in extra.items()}, wrong / "nonlinear_finetuned.pt")
    zoo, benchmark = build(files, *zoo_overrides(files), f"+model.expert_sources.DTD={wrong}")
    match = r"expert DTD .*unexpected keys \(1\): transformer\.resblocks\.2\.ln_1\.weight"
    with pytest.raises(CheckpointError, match=match):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c1"))

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    module = open_clip.create_model(ARCH).visual
    module.load_state_dict(files["experts"]["DTD"])
    torch.save(module, pickled / "nonlinear_finetuned.pt")  # a whole module: unpickling only
    zoo, benchmark = build(files, *zoo_overrides(files), f"+model.expert_sources.DTD={pickled}")
    with pytest.raises(CheckpointError, match="allow_pickle"):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c2"))
    zoo.allow_pickle = True
    experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "c2"))
    assert equal_states(experts.experts["DTD"], files["experts"]["DTD"])


def test_every_task_gets_its_own_expert(files, tmp_path, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("an expert was read before the locations were checked")

    monkeypatch.setattr(clip_zoo, "load_visual", no_reading)
    cache = Env(tmp_path / "cache")
    eurosat = "model.tall_masks.folder='{arch}/EuroSATVal'"  # the example
    zoo, benchmark = build(files, *zoo_overrides(files), eurosat)
    with pytest.raises(
        ValueError, match=r"model.tall_masks.folder='\{arch\}/EuroSATVal' has no \{task\}"
    ):
        zoo.load(benchmark, benchmark.tasks(), cache)
    zoo, _ = build(files, *zoo_overrides(files), "model.tall_masks.folder='{arch}/{Task}Val'")
    with pytest.raises(ValueError, match=r"folder=.*unknown placeholder \{Task\}; valid: \{arch\}"):
        zoo.load(benchmark, benchmark.tasks(), cache)
    dtd = files["root"] / "tall" / ARCH / "DTDVal"
    zoo, _ = build(files, *zoo_overrides(files), f"+model.expert_sources.Cars={dtd}",
                   f"+model.expert_sources.DTD={dtd}")  # fmt: skip
    with pytest.raises(ValueError, match="tasks Cars and DTD would read the same expert"):
        zoo.load(benchmark, benchmark.tasks(), cache)
    zoo, _ = build(files, *zoo_overrides(files), f"+model.expert_sources.Carz={dtd}")
    with pytest.raises(ValueError, match="model.expert_sources names unknown task 'Carz'"):
        zoo.load(benchmark, benchmark.tasks(), cache)
    assert not (tmp_path / "cache").exists()
    # a template without {task} is fine when every task's expert is given explicitly
    cars = files["root"] / "tall" / ARCH / "CarsVal"
    explicit = [f"+model.expert_sources.Cars={cars}", f"+model.expert_sources.DTD={dtd}"]
    zoo, _ = build(files, *zoo_overrides(files), eurosat,
                   *explicit)  # fmt: skip
    zoo.check_locations(["Cars", "DTD"])


def expert_cache_file(cache: Path, task: str) -> Path:
    (path,) = (cache / "clip_experts" / ARCH / "tall_masks").glob(f"{task}-*.safetensors")
    return path


def test_corrupt_expert_cache_is_rebuilt_and_a_lost_manifest_recovered(files, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    zoo, benchmark = build(files, *zoo_overrides(files))
    env = Env(tmp_path)
    zoo.load(benchmark, benchmark.tasks(), env)
    path = expert_cache_file(tmp_path, "DTD")
    zeroed = {k: torch.zeros_like(v) for k, v in load_file(path).items()}
    save_file(zeroed, str(path))  # the right keys and shapes, zeroed weights
    with pytest.warns(UserWarning, match=f"CLIP expert cache file {path} fails its checksum"):
        experts = zoo.load(benchmark, benchmark.tasks(), env)
    assert equal_states(experts.experts["DTD"], files["experts"]["DTD"])

    def no_reading(*args, **kwargs):
        raise AssertionError("an intact expert was read again")

    monkeypatch.setattr(clip_zoo, "load_visual", no_reading)
    manifest = path.parent / "manifest.json"
    manifest.write_text("{not json")
    with pytest.warns(UserWarning, match=r"manifest.json is unreadable.*recovered 2 intact file"):
        experts = zoo.load(benchmark, benchmark.tasks(), env)
    assert equal_states(experts.experts["Cars"], files["experts"]["Cars"])
    recovered = set(json.loads(manifest.read_text())["files"])
    assert recovered == {path.name, expert_cache_file(tmp_path, "Cars").name}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_expert_names_the_task_file_and_remedy(files, tmp_path, suffix):
    folder = tmp_path / "DTDcopy"
    folder.mkdir()
    state = {f"model.visual.{k}": v for k, v in files["experts"]["DTD"].items()}
    path = folder / f"nonlinear_finetuned{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    zoo, benchmark = build(files, *zoo_overrides(files), f"+model.expert_sources.DTD={folder}")
    with pytest.raises(
        CheckpointError, match=rf"expert DTD: {path} is truncated or corrupt .*again"
    ):
        zoo.load(benchmark, benchmark.tasks(), Env(tmp_path / "cache"))
    truncated = tmp_path / "pretrained.pt"
    truncated.write_bytes((files["root"] / "pretrained.pt").read_bytes()[:5000])
    zoo, _ = build(files, f"model.pretrained={truncated}")
    with pytest.raises(RuntimeError, match="model.pretrained=.*truncated or corrupt"):
        zoo.load_pretrained()


READ_ONLY_RUN = """
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from evaluation.zoo import Env
from experiments.config import register_schemas
register_schemas()
with initialize_config_dir(config_dir={conf!r}, version_base=None):
    cfg = compose("config", overrides={overrides!r})
zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
experts = zoo.load(benchmark, benchmark.tasks(), Env({cache!r}))
evaluator = experts.evaluator(benchmark.tasks(), 8, Env({cache!r}))
print("accuracy", evaluator.accuracy("DTD", "test"))
try:
    open({cache!r} + "/probe", "w")
except PermissionError:
    print("writing is denied")
"""


@pytest.mark.slow
def test_a_complete_cache_is_usable_read_only(files, tmp_path, read_only):
    overrides = ["model=clip_vit_b32", *local(files), *zoo_overrides(files)]
    zoo, benchmark = build(files, *zoo_overrides(files))
    cache = tmp_path / "cache"
    experts = zoo.load(benchmark, benchmark.tasks(), Env(cache))
    accuracy = experts.evaluator(benchmark.tasks(), 8, Env(cache)).accuracy("DTD", "test")
    for kind in ("heads", "clip_data", "clip_experts"):  # group- and world-readable files
        assert all(p.stat().st_mode & 0o044 == 0o044 for p in (cache / kind).rglob("*")), kind
    code = READ_ONLY_RUN.format(conf=str(ROOT / "conf"), overrides=overrides, cache=str(cache))
    done = read_only(cache, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"accuracy {accuracy}" in done.stdout and "writing is denied" in done.stdout
    assert "Permission" not in done.stderr and "rebuilding" not in done.stderr


def test_bad_zoo_configs_name_the_key(files):
    with pytest.raises(InstantiationException, match="model.experts='hub' is unknown"):
        build(files, "model.experts=hub")
    with pytest.raises(ValueError, match="model.name: .*missing"):
        clip_zoo.OpenClipZoo(arch="ViT-B-32", pretrained="openai")
    with pytest.raises(ValueError, match="model.tall_masks.files: .*"):
        clip_zoo.OpenClipZoo(name="z", arch="a", pretrained="p", tall_masks={"files": 3})


@pytest.mark.slow
def data_free_methods() -> list[str]:
    """The method configs whose function merges task vectors without data."""
    out = []
    for path in sorted((ROOT / "conf" / "method").glob("*.yaml")):
        spec = method_spec(OmegaConf.load(path).fn)
        if spec.kind == "task_vectors" and not spec.needs:
            out.append(path.stem)
    return out


def test_finetune_merge_select_evaluate_and_report(files, tmp_path):
    root, cache, experts = files["root"], tmp_path / "cache", tmp_path / "experts"
    overrides = [*local(files), f"cache_dir={cache}", "device=cpu", "progress=false"]
    steps = ["finetune.steps=2", "finetune.warmup_steps=1", "finetune.batch_size=8",
             "finetune.num_workers=0", f"output_dir={experts}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "experiments.finetune", *overrides, *steps, "task=Cars",
               f"hydra.run.dir={tmp_path / 'finetune'}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = experts / ARCH / "CarsVal"
    record = json.loads((out / "nonlinear_finetuned.json").read_text())
    assert record["task"] == "Cars" and record["train_size"] == 36  # 40 minus val
    assert record["steps"] == 2 and 0 <= record["val_accuracy"] <= 100
    trained = load_file(out / "nonlinear_finetuned.safetensors")
    assert not equal_states(trained, files["visual"])
    # DTD's expert stays in the authors' .pt format beside the new safetensors one
    shutil.copytree(root / "tall" / ARCH / "DTDVal", experts / ARCH / "DTDVal")

    methods = data_free_methods()  # every data-free task-vector method (issue 13)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.run", "model=clip_vit_b32", *overrides,
               f"model.tall_masks.repo={experts}", f"method=[{','.join(methods)}]", "logger=none",
               "protocol.alphas=[0.5,1.0]", f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_rows(run_dir / "results.csv")
    test, val = rows[rows.split == "test"], rows[rows.split == "val"]
    ft = test[(test.method == "Fine-tuned") & (test.metric == "accuracy")].set_index("task").value
    assert ft["Cars"] == pytest.approx(record["test_accuracy"])  # the fine-tune's own score
    ta = val[(val.method == "Task arithmetic") & (val.task == AVERAGE)]
    assert {json.loads(h)["alpha"] for h in ta.hyperparameters} == {0.5, 1.0}  # selection grid
    labels = {method_spec(OmegaConf.load(ROOT / "conf/method" / f"{m}.yaml").fn).label
              for m in methods}  # fmt: skip
    assert set(test[test.task == AVERAGE].method) >= labels
    assert len(list((cache / "heads").glob("*.safetensors"))) == 2  # one head per task

    out = tmp_path / "results" / "reproduction.md"
    tables = report([run_dir], out, logger_kind="wandb", wandb_mode="disabled")
    text = out.read_text()
    assert "## ViT-B-32" in text and "2 tasks: ours" in text and "8 tasks: paper" in text
    assert tables["ViT-B-32"].loc["Task arithmetic", "8 tasks: paper"] == "70.8 (76.5)"


def test_report_compares_with_the_paper_and_names_bad_files(tmp_path):
    tasks = [f"t{i}" for i in range(8)]
    rows = [("r", "tall8", "clip_vit_b32", "Task arithmetic", "{}", t, "test", "accuracy", 71.0)
            for t in tasks]  # fmt: skip
    rows += [("r", "tall8", "clip_vit_b32", "Task arithmetic", "{}", AVERAGE, "test", m, v)
             for m, v in (("accuracy", 71.0), ("normalized_accuracy", 76.0),
                          ("storage_gbit", 3.63))]  # fmt: skip
    columns = ["run", "benchmark", "model", "method", "hyperparameters", "task", "split", "metric",
               "value"]  # fmt: skip
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "results.csv", index=False)
    tables = report([tmp_path / "results.csv"], tmp_path / "report.md", logger_kind="none")
    row = tables["ViT-B-32"].loc["Task arithmetic"]
    assert row["8 tasks: ours"] == "71.0 (76.0)" and row["8 tasks: diff"] == "+0.2 (-0.5)"
    assert row["8 tasks: storage Gbit (ours / paper)"] == "3.6 / 3.6"
    assert tables["ViT-B-32"].loc["TIES", "8 tasks: ours"] == "-"

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: not a mergelab results file"):
        report([tmp_path / "bad.csv"], tmp_path / "r.md", logger_kind="none")
    with pytest.raises(SystemExit, match="no_such_run: no such file"):
        report_main([str(tmp_path / "no_such_run"), "--logger", "none"])
