"""The data a data-based merge method receives as its ``context`` (``needs=("data",)``):
the merged part of the model as an ``nn.Module``, its pretrained weights, a few examples
of each task and each task's head, so that a method can run the model with any weights on
any task's inputs and read logits, activations or gradients. Pure torch: no file I/O; a
zoo family builds it from its loaded model and benchmark
(:attr:`evaluation.zoo.Experts.task_data`).

A method runs the module with weights of its own (``theta_0 + tau``, or a function of
learned coefficients) through ``torch.func.functional_call``; forward hooks on the
module's submodules (RegMean's Gram matrices) fire as usual.

What a family provides:

* CLIP image encoders (:mod:`evaluation.clip.model`): ``module`` is ``model.visual``, a
  batch is a float image tensor (preprocessed on ``load``), ``head`` the task's frozen
  zero-shot head on the image features, ``blocks`` the residual blocks
  ``transformer.resblocks.<i>``.
* A sequence-to-sequence family (T5 with rank classification) would pass the whole
  ``T5ForConditionalGeneration`` as ``module``; ``load`` returns a dict of keyword inputs
  (``input_ids``, ``attention_mask``, ``decoder_input_ids``), which :meth:`TaskData.forward`
  passes as keyword arguments; ``head`` turns the model output into one logit per answer
  choice (the label words' scores); ``blocks`` lists the encoder blocks, then the decoder
  blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from merging.streaming import TaskVectors

Tensor = torch.Tensor
Batch = Any  # a tensor (one positional input), a tuple (positional) or a mapping (keywords)


@dataclass(frozen=True)
class TaskData:
    """Examples of every task and what scores them, for data-based merge methods.

    ``module``: the merged part (eval mode, on ``device``); ``pretrained``: ``theta_0`` of
    ``module`` (every state-dict key, on ``device``); ``sizes[task]``: how many examples
    task ``task`` offers (tasks in the order of the task vectors); ``load(task, positions)``
    -> the batch of the examples at ``positions`` (int64, ``0 <= p < sizes[task]``) ready
    for ``module``; ``head(task, output)`` -> logits (B, classes) of the module's output;
    ``split``: the split the examples come from (``train``; ``test`` for test-time
    adaptation, unlabelled); ``blocks``: names of the module's residual blocks in forward
    order (empty if the family does not declare them; RegMean++ needs them).

    Every example handed out is recorded, so the caller can report how many examples of
    each task a method consumed (:meth:`examples_used`).
    """

    module: nn.Module
    pretrained: Mapping[str, Tensor]
    sizes: Mapping[str, int]
    load: Callable[[str, Tensor], Batch]
    head: Callable[[str, Any], Tensor]
    split: str = "train"
    device: torch.device = torch.device("cpu")
    blocks: tuple[str, ...] = ()
    _served: dict[str, set[int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def tasks(self) -> list[str]:
        return list(self.sizes)

    def check(self, num_tasks: int, keys: Sequence[str], method: str) -> None:
        """``ValueError`` naming ``method`` unless the data has one task per task vector,
        an example for each task, and ``theta_0`` for every merged key."""
        if len(self.sizes) != num_tasks:
            raise ValueError(
                f"merge method {method!r}: the task data holds {len(self.sizes)} tasks, "
                f"but {num_tasks} task vectors are merged"
            )
        for task, size in self.sizes.items():
            if size < 1:
                raise ValueError(f"merge method {method!r}: task {task!r} has no examples")
        missing = [k for k in keys if k not in self.pretrained]
        if missing:
            raise KeyError(
                f"merge method {method!r}: the task data's model has no parameter {missing[0]!r}"
            )

    def weights(
        self, delta: Mapping[str, Tensor] | None = None, aliases: Mapping[str, str] | None = None
    ) -> dict[str, Tensor]:
        """``theta_0 + delta`` on the keys of ``delta``, ``theta_0`` elsewhere (every key);
        each alias key of ``aliases`` (tied parameters: alias -> primary) gets its primary's
        tensor, so that ``functional_call`` keeps them tied."""
        delta = delta or {}
        out = {k: v + delta[k] if k in delta else v for k, v in self.pretrained.items()}
        for alias, primary in (aliases or {}).items():
            out[alias] = out[primary]
        return out

    def batch(self, task: str, positions: Tensor | Sequence[int]) -> Batch:
        """The examples of ``task`` at ``positions``, recorded as consumed."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        self._served.setdefault(task, set()).update(positions.tolist())
        return self.load(task, positions)

    def batches(self, task: str, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """The first ``min(limit, sizes[task])`` examples of ``task`` in batches."""
        n = self.sizes[task] if limit is None else min(limit, self.sizes[task])
        for start in range(0, n, batch_size):
            yield self.batch(task, torch.arange(start, min(start + batch_size, n)))

    def sample(
        self, task: str, batch_size: int, generator: torch.Generator, limit: int | None = None
    ) -> Batch:
        """``batch_size`` examples drawn without replacement from the first
        ``min(limit, sizes[task])`` of ``task`` (all of them if fewer)."""
        n = self.sizes[task] if limit is None else min(limit, self.sizes[task])
        return self.batch(task, torch.randperm(n, generator=generator)[:batch_size])

    def forward(self, weights: Mapping[str, Tensor], batch: Batch) -> Any:
        """The module's output on ``batch`` with ``weights`` in place of its own."""
        if isinstance(batch, Mapping):
            return functional_call(self.module, dict(weights), (), dict(batch))
        args = batch if isinstance(batch, tuple) else (batch,)
        return functional_call(self.module, dict(weights), args)

    def logits(self, task: str, weights: Mapping[str, Tensor], batch: Batch) -> Tensor:
        """``head(task, module(batch))`` with ``weights``: float32 logits (B, classes)."""
        return self.head(task, self.forward(weights, batch)).float()

    def examples_used(self) -> dict[str, int]:
        """How many distinct examples of each task were handed out so far."""
        return {task: len(self._served.get(task, ())) for task in self.sizes}


class _OneLinear(nn.Module):
    """A module holding one bias-free ``nn.Linear`` under a dotted path, applied to x."""

    def __init__(self, path: str, linear: nn.Linear) -> None:
        super().__init__()
        first, *rest = path.split(".")
        node: nn.Module = linear
        for name in reversed(rest):
            node = nn.ModuleDict({name: node})
        self.add_module(first, node)
        self.path = path

    def forward(self, x: Tensor) -> Tensor:
        return self.get_submodule(self.path)(x)


def stand_in(key: str, shape: tuple[int, int], num_tasks: int, examples: int = 4) -> TaskData:
    """Tiny task data for dry merges that check options before any long computation: a
    module with one linear layer whose weight is ``key`` (``<path>.weight``, shape
    (out, in)), random ``theta_0`` and inputs (seeded), logits = the layer's output."""
    if not key.endswith(".weight") or len(shape) != 2:
        raise ValueError(f"a stand-in needs a 2-D '<path>.weight' key, got {key!r} {shape}")
    generator = torch.Generator().manual_seed(0)
    module = _OneLinear(key[: -len(".weight")], nn.Linear(shape[1], shape[0], bias=False))
    tasks = [f"task {t}" for t in range(num_tasks)]
    inputs = {t: torch.randn(examples, shape[1], generator=generator) for t in tasks}
    return TaskData(
        module=module.eval(),
        pretrained={key: torch.randn(shape, generator=generator)},
        sizes={t: examples for t in tasks},
        load=lambda task, positions: inputs[task][positions],
        head=lambda task, output: output,
        blocks=(key[: -len(".weight")],),
    )


def task_vector(tvs: TaskVectors, t: int, device: torch.device) -> dict[str, Tensor]:
    """Task ``t``'s float entries (float32) on ``device``: one model's worth of memory."""
    return {key: tvs.task(t, key).to(device) for key in tvs.float_keys}


def merged_output(tvs: TaskVectors, merged: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A merge result in ``tvs``' key order: ``merged[key]`` for float keys (back on the CPU
    in the key's dtype), non-float entries carried from the first task vector."""
    return {
        key: tvs.finish(key, merged[key]) if tvs.is_float(key) else tvs.raw(0, key)
        for key in tvs.keys
    }
