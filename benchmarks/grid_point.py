"""Cost of one grid point of the protocol next to the pure forward passes it runs (issue 15).

    .venv/bin/python benchmarks/grid_point.py [--threads 1] [--vit-images 64] [--repeats 3]

A grid point loads ``theta_0 + alpha * tau`` into the image encoder and scores every task's
val images: :class:`evaluation.protocol.Scorer` over the CLIP zoos'
:class:`evaluation.clip.evaluator.ImageEvaluator` (``load`` =
:func:`evaluation.zoo.write_task_vector`), built with the arguments that
:meth:`evaluation.clip.model.ClipModel.evaluator` passes (uint8 splits, the normalisation,
``eval.batch_size``). The floor is the pure forward pass of the same images: already
normalised float32 input, ``model.visual`` + the task's head under ``torch.inference_mode``,
at the best of several batch sizes. Both are timed in one process, interleaved, best of
``--repeats`` (a shared machine only ever slows a pass down); each grid point uses a new
alpha, as a sweep does.

Shapes: the sandbox (the ViT of ``conf/model/sandbox_clip.yaml``, 8 tasks x 300 val images
at 32 px) and open_clip ViT-B-32 (random weights, 224 px, ``--vit-tasks`` x ``--vit-images``).
Weights, images and heads are random (nothing is downloaded or built): timing does not
depend on their values.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.clip.evaluator import ImageEvaluator  # noqa: E402
from evaluation.clip.heads import ClassificationHead  # noqa: E402
from evaluation.clip.model import normalise  # noqa: E402
from evaluation.protocol import Scorer  # noqa: E402

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CLASSES = 10


def sandbox_visual() -> nn.Module:
    """The image tower of ``conf/model/sandbox_clip.yaml``'s recipe (random weights)."""
    import open_clip
    import yaml

    from evaluation.sandbox.tasks import IMAGE_SIZE

    recipe = yaml.safe_load((ROOT / "conf/model/sandbox_clip.yaml").read_text())["recipe"]
    v = recipe["vision"]
    cfg = open_clip.CLIPVisionCfg(
        layers=v["layers"], width=v["width"], head_width=v["head_width"],
        patch_size=v["patch_size"], image_size=IMAGE_SIZE,
    )  # fmt: skip
    text = open_clip.CLIPTextCfg(context_length=16, vocab_size=64, width=64, heads=2, layers=1)
    return open_clip.CLIP(recipe["embed_dim"], cfg, text).visual


def vit_b32_visual() -> nn.Module:
    import open_clip

    return open_clip.create_model("ViT-B-32").visual  # random init, no download


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``: on a loaded machine the CPU
    time is the steadier figure (the wall time also counts time waiting for a core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def pure_forward(visual: nn.Module, heads: dict, inputs: dict, batch: int) -> None:
    """``head(visual(x))`` over every task's preprocessed float images."""
    with torch.inference_mode():
        for task, x in inputs.items():
            for i in range(0, len(x), batch):
                heads[task](visual(x[i : i + batch]).float()).argmax(-1)


def measure(name: str, visual: nn.Module, tasks: int, images: int, args) -> None:
    """Print the pure forward floor, the grid point and their ratio for one shape."""
    visual = visual.eval()
    size = visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    g = torch.Generator().manual_seed(0)
    names = [f"task{t}" for t in range(tasks)]
    dim = visual.output_dim
    heads = {
        t: ClassificationHead(
            nn.functional.normalize(torch.randn(CLASSES, dim, generator=g)), 100.0
        )
        for t in names
    }
    splits = {
        (t, "val"): (
            torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, CLASSES, (images,), generator=g),
        )
        for t in names
    }
    pretrained = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    tau = {
        k: torch.randn(v.shape, generator=g) * 1e-3
        for k, v in pretrained.items()
        if v.is_floating_point()
    }
    preprocess = functools.partial(normalise, mean=MEAN, std=STD)
    inputs = {t: preprocess(splits[t, "val"][0]) for t in names}
    batches = sorted({b for b in (32, 64, 128, 256, 512) if b <= images} | {images})
    eval_batch = min(args.batch_size, images)  # a larger batch runs as one batch of all
    batches = sorted(set(batches) | {eval_batch})
    scorers = {  # one evaluator per batch size; each grid point loads its weights first
        b: Scorer(ImageEvaluator(visual, pretrained, heads, splits, preprocess, b), names)
        for b in batches
    }
    alphas = iter(0.05 * (i + 1) for i in range(10_000))

    def grid_point(b: int) -> None:
        scorers[b].scores("task_arithmetic", {}, lambda: tau, next(alphas), "val")

    for b in batches:  # warm-up: first use of each split (inputs kept), allocator
        grid_point(b)
        pure_forward(visual, heads, inputs, b)
    floor: dict[int, tuple[float, float]] = {}
    point: dict[int, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for b in batches:
            t = timed(lambda b=b: pure_forward(visual, heads, inputs, b))
            floor[b] = tuple(map(min, floor.get(b, t), t))
            t = timed(lambda b=b: grid_point(b))
            point[b] = tuple(map(min, point.get(b, t), t))
    n = tasks * images
    print(
        f"{name}: {tasks} tasks x {images} val images at {size} px ({n} images); best of "
        f"{args.repeats} interleaved rounds; wall s / CPU s"
    )
    print("  | batch | pure forward | grid point | grid point / pure forward (CPU) |")
    for b in batches:
        (fw, fc), (pw, pc) = floor[b], point[b]
        print(f"  | {b} | {fw:.3f} / {fc:.3f} | {pw:.3f} / {pc:.3f} | {pc / fc:.2f}x |")
    for i, what in enumerate(("wall", "CPU")):
        best = min(floor, key=lambda b, i=i: floor[b][i])
        f, p = floor[best][i], point[eval_batch][i]
        print(
            f"  {what}: pure forward {f:.3f} s (batch {best}, {n / f:.0f} images/s); grid point "
            f"at eval.batch_size {args.batch_size} {p:.3f} s ({n / p:.0f} images/s); "
            f"ratio {p / f:.2f}x",
            flush=True,
        )


def default_batch_size() -> int:
    """``eval.batch_size`` of ``conf/config.yaml``: what a run scores with unless overridden."""
    import yaml

    return int(yaml.safe_load((ROOT / "conf/config.yaml").read_text())["eval"]["batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=default_batch_size(),
        help="eval.batch_size (default: conf/config.yaml's)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; best kept")
    parser.add_argument("--sandbox-tasks", type=int, default=8)
    parser.add_argument("--sandbox-images", type=int, default=300)
    parser.add_argument("--vit-tasks", type=int, default=2)
    parser.add_argument("--vit-images", type=int, default=32)
    parser.add_argument("--skip-vit", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at start"
    )
    measure("sandbox ViT", sandbox_visual(), args.sandbox_tasks, args.sandbox_images, args)
    if not args.skip_vit:
        measure("ViT-B/32", vit_b32_visual(), args.vit_tasks, args.vit_images, args)
    print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
