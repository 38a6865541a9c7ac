"""One training loop and one warm-up schedule, shared by every zoo that trains models
(the sandbox CLIP experts and pretraining, ``experiments.finetune``, the CNN zoos).

Schedule: the learning-rate factor rises linearly over ``warmup`` steps,
``(s + 1) / warmup``, then decays to 0 at ``steps``, either by a half cosine
``0.5 (1 + cos(pi (s - warmup) / (steps - warmup)))`` (Ilharco et al., ICLR 2023; Wang et
al., ICML 2024) or linearly ``(steps - s) / (steps - warmup)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

DECAYS = ("cosine", "linear")


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count.
    Training on the CPU is deterministic for a given thread count but not across counts
    (reductions are split differently), so a zoo built under a pin is the same bits on
    every machine whatever ``OMP_NUM_THREADS`` says."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def warmup_schedule(warmup: float, steps: int, decay: str = "cosine") -> Callable[[int], float]:
    """The learning-rate factor of step ``s`` (module docstring); ``warmup`` may be 0."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}")

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if decay == "cosine":
            # (pi (s - w)) / (S - w), in this order: bit-exact with the zoos built before
            return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        return max(0.0, (steps - s) / max(1, steps - warmup))  # not 1 - progress: bit-exact

    return factor


def optimise(
    optimizer: torch.optim.Optimizer,
    losses: Iterable[Callable[[], torch.Tensor]],
    schedule: Callable[[int], float],
    *,
    total: int,
    desc: str = "train",
    progress: bool = False,
    after_step: Callable[[], None] = lambda: None,
) -> None:
    """Take one optimiser step per closure of ``losses`` (``total`` of them), the learning
    rate scaled by ``schedule(step)``. Each closure computes its loss and calls
    ``backward`` itself (so it may accumulate gradients over micro-batches) and returns
    the loss; gradients are zeroed before it runs. ``after_step`` runs after each step."""
    lr = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for step, loss_fn in enumerate(losses):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        optimizer.step()
        lr.step()
        after_step()
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
