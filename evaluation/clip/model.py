"""An open_clip CLIP ready to score task vectors of its image encoder: the model (its text
tower makes the zero-shot heads), tokenizer, image normalisation and an id of its weights.
Both CLIP zoos (open_clip checkpoints, the sandbox) hand one to :meth:`ClipModel.experts`,
which gives the protocol an evaluator and data-based merge methods their task data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from evaluation.benchmark import Benchmark, Task, check_split
from evaluation.clip.evaluator import ImageEvaluator
from evaluation.clip.heads import ClassificationHead, cached_zeroshot_head
from evaluation.zoo import Env, Experts, StateDict
from merging.task_data import TaskData

Tensor = torch.Tensor
EVAL_SPLITS = ("val", "test")


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images (N, 3, S, S) -> float32 ``(x / 255 - mean) / std`` per channel."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, S, S), got {images.dtype} {tuple(images.shape)}"
        )
    m, s = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float() / 255 - m) / s


@functools.lru_cache(maxsize=16)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``mean`` and ``std`` as (1, 3, 1, 1) float32 tensors on ``device``, made once: a
    tensor made from Python numbers on a GPU is a copy the host waits for, per batch."""
    return (
        torch.tensor(mean, device=device).view(1, 3, 1, 1),
        torch.tensor(std, device=device).view(1, 3, 1, 1),
    )


def param_counts(model: nn.Module) -> tuple[int, int]:
    """``(N, N_m)`` of an open_clip CLIP as the TALL masks paper stores it (Wang et al., ICML
    2024, storage column): N counts every parameter but the text transformer's (the paper's
    ``ImageEncoder`` drops ``model.transformer`` and keeps the token embedding, final layer
    norm and projections), N_m those of the image encoder, the merged part. ViT-B/32:
    N = 113.4M, N_m = 87.8M."""
    total = sum(p.numel() for p in model.parameters())
    text_blocks = sum(p.numel() for p in model.transformer.parameters())
    return total - text_blocks, sum(p.numel() for p in model.visual.parameters())


@dataclass
class ClipModel:
    """``model``: an open_clip CLIP (``model.visual`` is what experts fine-tune and methods
    merge); ``tokenizer(texts) -> tokens``; ``preprocess``: uint8 images as the benchmark
    delivers them -> model input; ``weights_id``: identifies the weights (head cache key)."""

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]
    preprocess: Callable[[Tensor], Tensor]
    weights_id: str

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    def heads(self, tasks: Sequence[Task], env: Env) -> dict[str, ClassificationHead]:
        """Zero-shot heads of ``tasks`` from their class names and templates (cached,
        :func:`evaluation.clip.heads.cached_zeroshot_head`); the model moves to the device
        (the text tower encodes the prompts there)."""
        self.model.to(env.device)
        return {
            t.name: cached_zeroshot_head(
                self.model,
                self.tokenizer,
                t.classnames,
                t.templates,
                env.cache_dir,
                self.weights_id,
                task=t.name,
            )
            for t in tasks
        }

    def evaluator(
        self,
        pretrained: StateDict,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        batch_size: int,
        env: Env,
    ) -> ImageEvaluator:
        """An :class:`ImageEvaluator` of ``model.visual`` (set to ``pretrained``) on ``tasks``:
        zero-shot heads (:meth:`heads`) and the val and test splits of ``benchmark`` at the
        model's image size."""
        heads = self.heads(tasks, env)
        size = self.image_size
        splits = {
            (t.name, split): benchmark.load_split(t, split, env.cache_dir, image_size=size)
            for t in tasks
            for split in EVAL_SPLITS
        }
        evaluator = ImageEvaluator(
            self.model.visual, pretrained, heads, splits, self.preprocess, batch_size, env.device,
            env.input_cache_bytes,
        )  # fmt: skip
        evaluator.load(None)
        return evaluator

    def task_data(
        self,
        pretrained: StateDict,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        split: str,
        examples: int | None,
        env: Env,
    ) -> TaskData:
        """Examples of ``tasks`` for data-based merge methods (:class:`merging.task_data.
        TaskData`): ``model.visual`` with ``theta_0 = pretrained``, images of ``split``
        (``train`` for Fisher and RegMean; ``test`` for test-time adaptation, labels never
        handed out), preprocessed on the device batch by batch, and each task's zero-shot
        head. ``examples`` per task: a seeded random draw (seed 0, so class-sorted splits
        give mixed batches) of that many, or the whole split (``None`` or more than it
        holds). Blocks: the ViT's ``transformer.resblocks.<i>``."""
        check_split(split)
        heads = self.heads(tasks, env)
        device = torch.device(env.device)
        images, positions = {}, {}
        for t in tasks:
            images[t.name], _ = benchmark.load_split(
                t, split, env.cache_dir, image_size=self.image_size
            )
            n = len(images[t.name])
            draw = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            positions[t.name] = draw if examples is None else draw[:examples]

        def load(task: str, at: Tensor) -> Tensor:
            return self.preprocess(images[task][positions[task][at]].to(device))

        visual = self.model.visual.eval()
        depth = len(visual.transformer.resblocks)
        blocks = tuple(f"transformer.resblocks.{i}" for i in range(depth))
        return TaskData(
            module=visual,
            pretrained={k: v.detach().to(device, copy=True) for k, v in pretrained.items()},
            sizes={t.name: len(positions[t.name]) for t in tasks},
            load=load,
            head=lambda task, features: heads[task](features.float()),
            split=split,
            device=device,
            blocks=blocks,
        )

    def experts(
        self, pretrained: StateDict, experts: Mapping[str, StateDict], benchmark: Benchmark
    ) -> Experts:
        """The loaded zoo: ``pretrained`` and ``experts`` are states of ``model.visual``;
        ``evaluator(tasks, batch_size, env)`` scores merged weights on ``benchmark``
        (:meth:`evaluator`); ``task_data(tasks, split, examples, env)`` serves data-based
        methods (:meth:`task_data`); ``unmerged_entries = N - N_m``: the text-side entries
        that the TALL masks authors' flattened ``ImageEncoder`` checkpoints also hold
        (ViT-B/32 and B/16: 25,599,489; L/14: 38,595,841; results/fidelity.md)."""
        n, n_merged = param_counts(self.model)
        return Experts(
            name=self.weights_id,
            pretrained=pretrained,
            experts=experts,
            param_counts=(n, n_merged),
            evaluator=functools.partial(self.evaluator, pretrained, benchmark),
            unmerged_entries=n - n_merged,
            task_data=functools.partial(self.task_data, pretrained, benchmark),
        )
