"""Fine-tune one T5 expert: ``python -m experiments.finetune_t5 model=t5_large benchmark=nlp11
task=<name>``.

The recipe of the TIES-Merging T5 experts (Yadav et al., NeurIPS 2023; prateeky2806/ties-merging
``configs/t5_{base,large}.json``, ``src/training.py``), all of it in conf/finetune_t5.yaml:
the whole model trained on the task's train split, prompted with the benchmark's template
(0), by teacher-forced cross-entropy on the target tokens; AdamW (lr 1e-4, no weight decay),
constant learning rate; batch 1024 (T5-large: 64 x 16 accumulated); bfloat16 autocast on
CUDA; every ``eval_every`` steps the val accuracy (the benchmark's metric) is measured and
the best state kept; training stops after ``patience`` evaluations without improvement or
at ``steps``.

Writes the best state as a transformers model directory
``<output_dir>/<base>/<task>/`` (``config.json``, ``model.safetensors``: the layout of the T5
zoos' ``finetuned`` family, ``conf/base/model/t5_v1.yaml``) and ``mergelab_finetune.json``
beside it with its val and test accuracy, the denominators of normalised accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from evaluation.benchmark import select_tasks
from evaluation.cache import atomic_write_text, cache_root
from evaluation.t5.benchmark import TextBenchmark
from evaluation.t5.checkpoints import tied_groups
from evaluation.t5.evaluator import T5Evaluator, pad_batch
from evaluation.t5.zoo import T5Zoo
from evaluation.training import optimise
from experiments.config import EvalConfig, register_schemas
from experiments.run import resolve_device
from merging.options import non_negative, positive, positive_int

RECORD = "mergelab_finetune.json"


@dataclass
class T5FinetuneOptions:
    """``conf/finetune_t5.yaml``: ``finetune``."""

    steps: int = 75000  # the most optimizer steps (TIES-Merging: num_batches)
    batch_size: int = 1024  # examples per optimizer step
    grad_accumulation: int = 16  # micro-batches per step
    lr: float = 1e-4
    weight_decay: float = 0.0
    eval_every: int = 100  # steps between val evaluations (TIES-Merging: checkpoint_frequency)
    patience: int = 5  # evaluations without improvement before stopping


@dataclass
class T5FinetuneConfig:
    """The top-level config of ``python -m experiments.finetune_t5``."""

    model: Any = MISSING
    benchmark: Any = MISSING
    task: str = MISSING
    finetune: T5FinetuneOptions = field(default_factory=T5FinetuneOptions)
    output_dir: str = "outputs/t5_experts"
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42
    device: str = "auto"
    progress: bool = True
    cache_dir: str | None = None


register_schemas()
ConfigStore.instance().store(name="finetune_t5_schema", node=T5FinetuneConfig)


def _check(ft: DictConfig) -> int:
    """Examples per micro-batch, after checking ``finetune``'s batch sizes, ``steps``,
    ``eval_every`` and ``patience`` (positive integers), ``lr`` (positive, finite) and
    ``weight_decay`` (non-negative, finite);
    ``ValueError`` naming the key."""
    batch, accum = int(ft.batch_size), int(ft.grad_accumulation)
    if batch < 1 or accum < 1 or batch % accum:
        raise ValueError(
            f"finetune.batch_size={batch} must be a positive multiple of "
            f"finetune.grad_accumulation={accum}"
        )
    for key in ("steps", "eval_every", "patience"):
        positive_int(f"finetune.{key}", ft[key])
    positive("finetune.lr", ft.lr)
    non_negative("finetune.weight_decay", ft.weight_decay)
    return batch // accum


def finetune(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.task``'s expert, write it and its accuracies; returns the record."""
    ft, micro = cfg.finetune, _check(cfg.finetune)
    zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
    if not isinstance(zoo, T5Zoo) or not isinstance(benchmark, TextBenchmark):
        raise ValueError(
            f"model={cfg.model.name}, benchmark={cfg.benchmark.name}: experiments.finetune_t5 "
            "trains T5 experts (model=t5_*, flan_t5_*) on the T5 text benchmarks"
        )
    (task,) = select_tasks(benchmark.tasks(), [cfg.task])
    cache, device = cache_root(cfg.cache_dir), resolve_device(str(cfg.device))
    model, tokenizer = zoo.load_model()
    train = benchmark.load_split(task, "train", cache, tokenizer)
    splits = {(task.name, s): benchmark.load_split(task, s, cache, tokenizer)
              for s in ("val", "test")}  # fmt: skip
    spec = {task.name: benchmark.spec(task.name)}
    evaluator = T5Evaluator(model, tokenizer, {}, tied_groups(model), splits, spec,
                            int(cfg.eval.batch_size), device, zoo.autocast)  # fmt: skip
    model = evaluator.model
    opt = torch.optim.AdamW(
        model.parameters(), lr=float(ft.lr), weight_decay=float(ft.weight_decay)
    )
    generator = torch.Generator().manual_seed(int(cfg.seed))
    pad = model.config.pad_token_id

    def micro_batches() -> Iterator[list[int]]:
        """Shuffled micro-batches, epoch after epoch (a last short one is dropped)."""
        size = min(micro, len(train))
        while True:
            order = torch.randperm(len(train), generator=generator).tolist()
            for start in range(0, len(order) - size + 1, size):
                yield order[start : start + size]

    batches = micro_batches()
    best = {"score": -1.0, "step": 0, "state": None}
    evaluations_since_best = [0]

    def step_loss() -> torch.Tensor:
        model.train()
        for _ in range(int(ft.grad_accumulation)):
            rows = next(batches)
            ids, mask = pad_batch([train.inputs[i] for i in rows], pad)
            labels, label_mask = pad_batch([train.targets[i] for i in rows], pad)
            labels = labels.masked_fill(label_mask == 0, -100)
            with evaluator.autocast():
                loss = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                             labels=labels.to(device)).loss  # fmt: skip
            (loss / int(ft.grad_accumulation)).backward()
        return loss

    step = [0]

    def after_step() -> None:
        step[0] += 1
        if step[0] % int(ft.eval_every) and step[0] != int(ft.steps):
            return
        model.eval()
        score = evaluator.accuracy(task.name, "val")
        if score > best["score"]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best.update(score=score, step=step[0], state=state)
            evaluations_since_best[0] = 0
        else:
            evaluations_since_best[0] += 1

    def losses():
        for _ in range(int(ft.steps)):
            if evaluations_since_best[0] >= int(ft.patience):
                return
            yield step_loss

    optimise(opt, losses(), lambda s: 1.0, total=int(ft.steps), desc=f"fine-tuning {task.name}",
             progress=bool(cfg.progress), after_step=after_step)  # constant lr  # fmt: skip
    model.load_state_dict(best["state"])
    model.eval()
    record = {
        "task": task.name, "pretrained": str(zoo.pretrained), "benchmark": benchmark.name,
        "template": benchmark.template, "train_size": len(train), "steps": step[0],
        "best_step": best["step"], "val_accuracy": evaluator.accuracy(task.name, "val"),
        "test_accuracy": evaluator.accuracy(task.name, "test"),
        "finetune": OmegaConf.to_container(ft, resolve=True),
    }  # fmt: skip
    out = Path(cfg.output_dir) / zoo.base / task.name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{task.name}."))
    try:  # written beside its final place, then swapped in: never half-written
        model.save_pretrained(tmp)
        atomic_write_text(tmp / RECORD, json.dumps(record, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


@hydra.main(version_base=None, config_path="../conf", config_name="finetune_t5")
def main(cfg: DictConfig) -> None:
    record = finetune(cfg)
    print(json.dumps({k: v for k, v in record.items() if k != "finetune"}, indent=1))


if __name__ == "__main__":
    main()
