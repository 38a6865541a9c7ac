"""Fine-tune one CLIP expert: ``python -m experiments.finetune model=... benchmark=... task=...``.

The protocol of Task Arithmetic (Ilharco et al., ICLR 2023) and TALL masks (Wang et al.,
ICML 2024), all of it in conf/finetune.yaml: only the image encoder is trained, under the
task's frozen zero-shot head, with cross-entropy; AdamW (lr 1e-5, weight decay 0.1),
learning rate ``lr (s + 1) / w`` for the first ``w = 500`` steps, then
``lr (1 + cos(pi (s - w) / (S - w))) / 2`` (:mod:`evaluation.training`); gradient norm
clipped at 1; batch 128 of the train split minus val; ``S`` = the paper's epochs for the
task (about 2000 steps).

Writes ``<output_dir>/<arch>/<Task>Val/nonlinear_finetuned.safetensors`` (the image
encoder, open_clip keys: the zoo's tall_masks layout) and ``nonlinear_finetuned.json``
beside it with the expert's val and test accuracy, the denominators of normalised accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from evaluation.benchmark import select_tasks
from evaluation.cache import atomic_path, atomic_write_text, cache_root
from evaluation.clip.benchmark import HubVisionBenchmark
from evaluation.clip.datasets import split_images
from evaluation.clip.heads import cached_zeroshot_head
from evaluation.clip.tasks import DatasetSpec
from evaluation.clip.zoo import OpenClipZoo
from evaluation.training import optimise, warmup_schedule
from evaluation.zoo import Env
from experiments.config import EvalConfig, register_schemas
from experiments.loggers import NullLogger
from experiments.run import resolve_device
from merging.options import non_negative, positive, positive_int, probability


@dataclass
class FinetuneOptions:
    """``conf/finetune.yaml``: ``finetune``."""

    steps: int | None = None  # None: the paper's epochs for the task
    batch_size: int = 128
    grad_accumulation: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    augment: bool = True
    num_workers: int = 8


@dataclass
class FinetuneConfig:
    """The top-level config of ``python -m experiments.finetune`` (``conf/finetune.yaml``)."""

    model: Any = MISSING
    benchmark: Any = MISSING
    logger: Any = MISSING
    task: str = MISSING
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    output_dir: str = "outputs/experts"
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    cache_dir: str | None = None


register_schemas()
ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:  # as many epochs as the steps need
        yield from loader


def _check(ft: DictConfig) -> int:
    """Examples per micro-batch, after checking ``finetune``'s batch sizes, ``steps`` (a
    positive integer or null), ``warmup_steps`` (a positive integer, at most ``steps``),
    ``lr`` (positive, finite), ``grad_clip`` (positive; ``inf``: no clipping),
    ``weight_decay`` (non-negative, finite) and ``label_smoothing`` (in [0, 1));
    ``ValueError`` naming the key."""
    warmup = positive_int("finetune.warmup_steps", ft.warmup_steps)
    if ft.steps is not None and warmup > positive_int("finetune.steps", ft.steps):
        raise ValueError(f"finetune.warmup_steps={warmup} must be <= finetune.steps={ft.steps}")
    if ft.grad_clip != math.inf:
        positive("finetune.grad_clip", ft.grad_clip)
    for key, check in (("lr", positive), ("weight_decay", non_negative),
                       ("label_smoothing", probability)):  # fmt: skip
        check(f"finetune.{key}", ft[key])
    batch, accum = int(ft.batch_size), int(ft.grad_accumulation)
    if batch < 1 or accum < 1 or batch % accum:
        raise ValueError(
            f"finetune.batch_size={batch} must be a positive multiple of "
            f"finetune.grad_accumulation={accum}"
        )
    return batch // accum


def _steps(ft: DictConfig, spec: DatasetSpec, n_train: int) -> int:
    """Optimizer steps: finetune.steps, else the paper's epochs for the task."""
    if ft.steps is not None:
        steps = int(ft.steps)
    elif spec.epochs is not None:
        steps = spec.epochs * math.ceil(n_train / int(ft.batch_size))
    else:
        raise ValueError(f"task {spec.name} has no published epochs: set finetune.steps")
    if steps < 1 or not 0 < int(ft.warmup_steps) < steps + 1:
        raise ValueError(
            f"need steps >= 1 and 0 < finetune.warmup_steps <= steps, got "
            f"warmup_steps={ft.warmup_steps}, steps={steps}"
        )
    return steps


def finetune(cfg: DictConfig, logger: NullLogger | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.task``'s expert, write it and its accuracies; returns the record."""
    logger = logger or NullLogger()
    micro, accum = _check(cfg.finetune), int(cfg.finetune.grad_accumulation)
    zoo, benchmark = instantiate(cfg.model), instantiate(cfg.benchmark)
    if not isinstance(zoo, OpenClipZoo) or not isinstance(benchmark, HubVisionBenchmark):
        raise ValueError(
            f"model={cfg.model.name}, benchmark={cfg.benchmark.name}: experiments.finetune "
            "trains open_clip experts (model=clip_vit_*) on the vision benchmark (tall*, ta8)"
        )
    (task,) = select_tasks(benchmark.tasks(), [cfg.task])
    env = Env(cache_root(cfg.cache_dir), resolve_device(str(cfg.device)), bool(cfg.progress))
    ft = cfg.finetune
    clip = zoo.load_pretrained()
    head = cached_zeroshot_head(
        clip.model, clip.tokenizer, task.classnames, task.templates, env.cache_dir, clip.weights_id
    )
    source = benchmark.task_source(task.name)
    data = split_images(source, "train", clip.image_size, env.cache_dir)
    steps = _steps(ft, source.spec, len(data))

    device = torch.device(env.device)
    encoder, head = clip.model.visual.to(device).train(), head.to(device)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(ft.lr), weight_decay=float(ft.weight_decay))
    loader = torch.utils.data.DataLoader(
        data, batch_size=micro, shuffle=True, num_workers=int(ft.num_workers),
        generator=torch.Generator().manual_seed(int(cfg.seed)), drop_last=len(data) >= micro,
        persistent_workers=int(ft.num_workers) > 0,
    )  # fmt: skip
    crop = RandomResizedCrop(
        clip.image_size, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    batches = _batches(loader)

    def step_loss(step: int) -> torch.Tensor:
        """One optimizer step's gradients: ``accum`` micro-batches, then the norm clip."""
        for _ in range(accum):
            x, y = next(batches)
            if ft.augment:
                x = torch.stack([crop(image) for image in x])
            with autocast:
                logits = head(encoder(clip.preprocess(x.to(device))).float())
            loss = F.cross_entropy(logits, y.to(device), label_smoothing=float(ft.label_smoothing))
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, float(ft.grad_clip))
        if step % 20 == 0 or step == steps - 1:
            logger.log_metrics({f"{task.name}/train_loss": loss.item()}, step=step)
        return loss

    optimise(
        opt, (functools.partial(step_loss, s) for s in range(steps)),
        warmup_schedule(int(ft.warmup_steps), steps, "cosine"), total=steps,
        desc=f"fine-tuning {task.name}", progress=env.progress,
    )  # fmt: skip

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    once = dataclasses.replace(env, input_cache_bytes=0)  # each split is scored once
    evaluator = clip.evaluator(state, benchmark, [task], int(cfg.eval.batch_size), once)
    record = {
        "task": task.name, "arch": zoo.arch, "pretrained": clip.weights_id, "steps": steps,
        "train_size": len(data), "val_accuracy": evaluator.accuracy(task.name, "val"),
        "test_accuracy": evaluator.accuracy(task.name, "test"),
        "finetune": OmegaConf.to_container(ft, resolve=True),
    }  # fmt: skip
    out = Path(cfg.output_dir) / zoo.arch / f"{task.name}Val" / "nonlinear_finetuned"
    with atomic_path(out.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp), metadata={"task": task.name, "pretrained": clip.weights_id})
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1))
    logger.log_metrics({f"{task.name}/{k}": record[k] for k in ("val_accuracy", "test_accuracy")})
    return record


@hydra.main(version_base=None, config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    name = f"finetune-{cfg.model.name}-{cfg.task}"
    # partial: instantiate's own first parameter is called config
    logger = instantiate(cfg.logger, _partial_=True)(run_dir=run_dir, name=name, config=config)
    failed = True
    try:
        record = finetune(cfg, logger)
        failed = False
    finally:
        logger.finish(failed=failed)
    print(
        f"{cfg.model.name} on {record['task']}: val {record['val_accuracy']:.2f}%, "
        f"test {record['test_accuracy']:.2f}% -> {cfg.output_dir}"
    )


if __name__ == "__main__":
    main()
