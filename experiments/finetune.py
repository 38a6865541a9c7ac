"""Fine-tune one CLIP expert: ``python -m experiments.finetune model=... benchmark=... task=...``.

The protocol of Task Arithmetic (Ilharco et al., ICLR 2023) and TALL masks (Wang et al.,
ICML 2024), all of it in conf/finetune.yaml: only the image encoder is trained, under the
task's frozen zero-shot head, with cross-entropy; AdamW (lr 1e-5, weight decay 0.1),
learning rate ``lr (s + 1) / w`` for the first ``w = 500`` steps, then
``lr (1 + cos(pi (s - w) / (S - w))) / 2``; gradient norm clipped at 1; batch 128 of the
train split minus val; ``S`` = the paper's epochs for the task (about 2000 steps).

Writes ``<output_dir>/<arch>/<Task>Val/nonlinear_finetuned.safetensors`` (the image
encoder, open_clip keys: the zoo's tall_masks layout) and ``nonlinear_finetuned.json``
beside it with the expert's val and test accuracy, the denominators of normalised accuracy.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from tqdm.auto import tqdm

from evaluation.benchmarks import benchmark_tasks
from evaluation.clip.datasets import load_split, split_images
from evaluation.clip.tasks import get_spec
from evaluation.clip.zoo import load_pretrained
from evaluation.evaluate import Evaluator
from evaluation.cache import atomic_path, atomic_write_text, cache_root
from evaluation.heads import cached_zeroshot_head
from experiments.loggers import NullLogger, make_logger
from experiments.run import resolve_device


def warmup_cosine(warmup: int, steps: int):
    """The learning-rate factor of step ``s`` (the module docstring's schedule)."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    return factor


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:  # as many epochs as the steps need
        yield from loader


def _micro_batch(ft: Mapping[str, Any]) -> int:
    """Examples per micro-batch; errors name the option at fault."""
    batch, accum = int(ft["batch_size"]), int(ft["grad_accumulation"])
    if batch < 1 or accum < 1 or batch % accum:
        raise ValueError(
            f"finetune.batch_size={batch} must be a positive multiple of "
            f"finetune.grad_accumulation={accum}"
        )
    return batch // accum


def _steps(cfg: Mapping[str, Any], n_train: int) -> int:
    """Optimizer steps: finetune.steps, else the paper's epochs for the task."""
    ft, spec = cfg["finetune"], get_spec(cfg["task"])
    batch = int(ft["batch_size"])
    if ft["steps"] is not None:
        steps = int(ft["steps"])
    elif spec.epochs is not None:
        steps = spec.epochs * math.ceil(n_train / batch)
    else:
        raise ValueError(f"task {spec.name} has no published epochs: set finetune.steps")
    if steps < 1 or not 0 < int(ft["warmup_steps"]) < steps + 1:
        raise ValueError(
            f"need steps >= 1 and 0 < finetune.warmup_steps <= steps, got "
            f"warmup_steps={ft['warmup_steps']}, steps={steps}"
        )
    return steps


def finetune(cfg: DictConfig, logger: NullLogger | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.task``'s expert, write it and its accuracies; returns the record."""
    logger = logger or NullLogger()
    task = next((t for t in benchmark_tasks(cfg.benchmark) if t.name == cfg.task), None)
    if task is None:
        names = [t.name for t in benchmark_tasks(cfg.benchmark)]
        raise ValueError(f"task={cfg.task!r} is not in benchmark {cfg.benchmark.name}: {names}")
    device, cache = torch.device(resolve_device(str(cfg.device))), cache_root(cfg.cache_dir)
    ft = cfg.finetune
    micro = _micro_batch(ft)
    model, tokenizer, preprocess, name = load_pretrained(cfg.model)
    head = cached_zeroshot_head(model, tokenizer, task.classnames, task.templates, cache, name)
    size = model.visual.image_size[0]
    data = split_images(cfg.benchmark, get_spec(task.name), "train", size, cache)
    steps = _steps(cfg, len(data))

    encoder, head = model.visual.to(device).train(), head.to(device)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(ft.lr), weight_decay=float(ft.weight_decay))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(ft.warmup_steps), steps))
    loader = torch.utils.data.DataLoader(
        data, batch_size=micro, shuffle=True, num_workers=int(ft.num_workers),
        generator=torch.Generator().manual_seed(int(cfg.seed)), drop_last=len(data) >= micro,
        persistent_workers=int(ft.num_workers) > 0,
    )  # fmt: skip
    crop = RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    batches = _batches(loader)
    bar = tqdm(range(steps), desc=f"fine-tuning {task.name}", disable=not cfg.progress)
    for step in bar:
        for _ in range(int(ft.grad_accumulation)):
            x, y = next(batches)
            if ft.augment:
                x = torch.stack([crop(image) for image in x])
            with autocast:
                logits = head(encoder(preprocess(x.to(device))).float())
            loss = F.cross_entropy(logits, y.to(device), label_smoothing=float(ft.label_smoothing))
            (loss / int(ft.grad_accumulation)).backward()
        torch.nn.utils.clip_grad_norm_(params, float(ft.grad_clip))
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            logger.log_metrics({f"{task.name}/train_loss": loss.item()}, step=step)

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    splits = {
        (task.name, s): load_split(cfg.benchmark, task, s, cache, size) for s in ("val", "test")
    }
    evaluator = Evaluator(
        encoder, state, {task.name: head}, splits, preprocess, int(cfg.eval.batch_size), str(device)
    )
    evaluator.load(None)
    record = {
        "task": task.name, "arch": cfg.model.arch, "pretrained": name, "steps": steps,
        "train_size": len(data), "val_accuracy": evaluator.accuracy(task.name, "val"),
        "test_accuracy": evaluator.accuracy(task.name, "test"),
        "finetune": OmegaConf.to_container(ft, resolve=True),
    }  # fmt: skip
    out = Path(cfg.output_dir) / cfg.model.arch / f"{task.name}Val" / "nonlinear_finetuned"
    with atomic_path(out.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp), metadata={"task": task.name, "pretrained": name})
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
    logger = make_logger(cfg.logger, run_dir, f"finetune-{cfg.model.name}-{cfg.task}", config)
    try:
        record = finetune(cfg, logger)
    finally:
        logger.finish()
    print(
        f"{cfg.model.name} on {record['task']}: val {record['val_accuracy']:.2f}%, "
        f"test {record['test_accuracy']:.2f}% -> {cfg.output_dir}"
    )


if __name__ == "__main__":
    main()
