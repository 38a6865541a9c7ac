"""GPU figures of issue 15, printed as Markdown (and written to ``$OUT/gpu.md`` if ``OUT``
is set): (a) ViT-B/32 bf16 evaluation throughput from the preprocessed cache next to the
pure forward pass, (b) TIES on 20 ViT-L/14-shaped experts read lazily from safetensors
files (wall time, peak host and device memory, read floor), (c) the projected wall time of
the ViT-B/32 8/14/20-task table (``+experiment=tall_masks_reproduction``), (d) the
spectral merges TSV-M, Iso-C and Iso-CTS on 20 ViT-B/32-shaped experts on the device, checked
against the CPU on one block, and one block's full-SVD versions (before issue 15) against them
on the device.

    python benchmarks/gpu.py            # a CUDA machine: about 3 min on one H200 (estimate)
    python benchmarks/gpu.py --parts d  # only the spectral merges
    python benchmarks/gpu.py --tiny     # seconds on CPU: tiny shapes, checks the script

Parts run in the order (a), (c), (d), (b) (``--parts`` picks some; (c) needs (a)); each part's
Markdown is printed (and the file rewritten) as soon as it is done, and a part that fails
prints its error while the others still run. All parts run in one process: a figure of host
memory (RSS above the start of a merge) leaves out heap memory that earlier merges freed
and this one reused, so compare such figures only between runs of the same parts in the
same order.

Needs open_clip, hydra-core and omegaconf (carried as wheels where the machine lacks them).

(a) ``--images`` random 224 px uint8 images are written in the exact cache format of
:mod:`evaluation.clip.datasets` (``images.npy`` and ``labels.npy`` recorded with their
checksums in the directory's manifest) and read back by its ``load_split``, memory-mapped;
a randomly initialised open_clip ViT-B/32 image encoder (nothing is downloaded) scores them
through the CLIP zoos' :class:`evaluation.clip.evaluator.ImageEvaluator` (bf16 autocast on
CUDA, float32 on CPU), twice: with the split kept on the device (floats on the CPU, uint8
images elsewhere) and copied batch by batch (``input_cache_bytes=0``). Floors at the same
batch size: the encoder's forward pass alone on one batch already normalised on the device,
and the data path alone (uint8 batch to the device, pageable, and normalised). Best of
``--repeats`` passes after a warm-up pass.

(b) ``--experts`` task vectors shaped like open_clip's ViT-L-14 ``visual`` state (303.97M
float entries, 1.22 GB per file in float32) are drawn on the device and saved as
safetensors files, by default in /dev/shm when it has room (tmpfs: the files are in RAM,
as a warm page cache would hold them), else in the temporary directory. If writing the
first file shows that all of them would take longer than ``--write-budget`` seconds, fewer
are written (the output says so). Read floor: every file's every entry read once and
summed on the CPU (``benchmarks/merge_methods.read_floor``). TIES: ``merging.merge("ties",
..., device=...)`` with its defaults (density 0.2, disjoint mean, exact top-k) over
:class:`evaluation.checkpoints.LazySafetensors` mappings. Peak host memory: the largest
RSS above the RSS at the start (:class:`evaluation.resources.Measured`); peak device memory:
``torch.cuda.max_memory_allocated``.

(c) The preset composed with Hydra for benchmark=tall8, tall14 and tall20: every method's
grid points ``P_m = |search grid| x |alphas|`` (:class:`evaluation.protocol.Method`), the
protocol scoring every point on every task's val split and each method's chosen point once
on each task's test split (val: mergelab's split of the published train size,
:func:`evaluation.splits.train_val_indices`). Which splits the evaluator keeps follows its
rule with its default budget on the device (:func:`kept_images`, splits in order of first
use); ``time = kept images / kept rate + streamed images / streamed rate`` at the config's
``eval.batch_size``. Merging time and loading the experts are not included.

(d) ``--spectral-experts`` task vectors shaped like open_clip's ViT-B-32 ``visual`` state
(87.85M float32 entries, 351 MB per file), written as in (b). Each of ``merging.merge(name,
[LazySafetensors(f) ...], device=...)`` for TSV-M, Iso-C and Iso-CTS (defaults) is timed once
(wall, peak host RSS above its start, peak device memory); its output on the matrices of
transformer block 0 is compared with the same merge run on the CPU (max abs difference over
max abs value). Then, on block 0's matrix shapes drawn on the device (as
``benchmarks/merge_methods.py --spectral-before-after`` does on the CPU), the full-SVD
versions the methods replaced (``merge_methods.FULL_SVD``: float32 ``torch.linalg.svd``) and
the current methods are alternated ``--repeats`` times (medians), and both are compared with
the full-SVD version run in float64.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from merge_methods import FAILED, FULL_SVD, read_floor  # noqa: E402

from evaluation.checkpoints import LazySafetensors  # noqa: E402
from evaluation.clip import datasets as clip_data  # noqa: E402
from evaluation.clip.evaluator import ImageEvaluator, default_input_cache_bytes  # noqa: E402
from evaluation.clip.heads import ClassificationHead  # noqa: E402
from evaluation.clip.model import normalise  # noqa: E402
from evaluation.clip.tasks import dataset_spec  # noqa: E402
from evaluation.resources import Measured, rss_bytes  # noqa: E402
from evaluation.splits import train_val_indices  # noqa: E402
from merging import merge  # noqa: E402

GB, MIB = 1e9, 2**20
SPECTRAL = ("tsv", "iso_c", "iso_cts")
CHECKED_BLOCK = "transformer.resblocks.0."  # (d): keys compared with the CPU
PRESET = "tall_masks_reproduction"
TABLE = ("tall8", "tall14", "tall20")
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
# (train, test) sizes of the splits the benchmark reads (evaluation/clip/tasks.py: the hub
# datasets' "train" and test split; Food-101's "validation"), as their Hugging Face dataset
# viewers list them, EMNIST digits from torchvision (Cohen et al., 2017). Published sizes,
# not read from the data here; val is mergelab's 10% (at most 5000) of train.
SPLIT_SIZES = {
    "Cars": (8144, 8041),
    "DTD": (3760, 1880),
    "EuroSAT": (21600, 2700),
    "GTSRB": (26640, 12630),
    "MNIST": (60000, 10000),
    "RESISC45": (18900, 6300),
    "SVHN": (73257, 26032),
    "SUN397": (19850, 19850),
    "STL10": (5000, 8000),
    "OxfordIIITPet": (3680, 3669),
    "Flowers102": (1020, 6149),
    "CIFAR100": (50000, 10000),
    "PCAM": (262144, 32768),
    "FER2013": (28709, 7178),
    "CIFAR10": (50000, 10000),
    "Food101": (75750, 25250),
    "FashionMNIST": (60000, 10000),
    "RenderedSST2": (6920, 1821),
    "EMNIST": (240000, 40000),
    "KMNIST": (60000, 10000),
}


def log(message: str) -> None:
    """Progress on stderr (the Markdown goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clip_visual(config: dict[str, Any], device: str) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP image encoder of ``config`` (an open_clip model
    config: ``embed_dim``, ``vision_cfg``, ``text_cfg``), built on ``device`` (``meta``: shapes
    only)."""
    from open_clip.model import CLIP

    with torch.device(device):
        return CLIP(**config).visual.eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_rate(fn: Callable[[], int], repeats: int, device: str) -> float:
    """Items per second of the fastest of ``repeats`` calls of ``fn`` (which returns how
    many items it processed), after one warm-up call."""
    fn()
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        count = fn()
        synchronize(device)
        best = max(best, count / (time.perf_counter() - start))
    return best


def device_peak_mib(device: str) -> str:
    """Peak device memory since the last reset, or ``n/a (CPU)``."""
    if not device.startswith("cuda"):
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / MIB:,.0f}"


def reset_device_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---- (a) evaluation throughput ------------------------------------------------------------


def cached_split(root: Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images (3, size, size) with labels 0..9, written as task MNIST's
    test split in the data cache under ``root`` (the format of ``evaluation.clip.datasets``)
    and read back by its ``load_split`` (checksummed, memory-mapped)."""
    source = root / "data"
    source.mkdir(parents=True)
    task = clip_data.TaskSource(dataset_spec("MNIST"), str(source))
    path = clip_data.cache_path(task, "test", size, root / "cache")
    manifest = clip_data.Manifest(
        path.parent, {"version": clip_data.CACHE_VERSION}, "synthetic data"
    )
    record = {"n": n, "size": size, "what": "synthetic MNIST test"}
    rng = np.random.default_rng(0)
    with manifest.writing(f"{path.name}/images.npy", **record) as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        for start in range(0, n, 256):
            chunk = images[start : start + 256]
            chunk[:] = rng.integers(0, 256, chunk.shape, dtype=np.uint8)
        images.flush()
        del images
    with manifest.writing(f"{path.name}/labels.npy", **record) as tmp, open(tmp, "wb") as f:
        np.save(f, rng.integers(0, 10, n).astype(np.int64))
    return clip_data.load_split(task, "test", root / "cache", size)


TIERS = ("kept", "streamed")
"""The evaluator's inputs (:mod:`evaluation.clip.evaluator`), each timed in (a): the split
kept on the device (floats on the CPU, uint8 images elsewhere) or copied batch by batch."""


@torch.no_grad()
def throughput(
    config: dict[str, Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    device: str,
    repeats: int,
) -> dict[str, float]:
    """Images per second at ``batch``: ImageEvaluator.accuracy over the cached split with
    each input form of :data:`TIERS` (its ``input_cache_bytes`` set so that the split fits,
    or 0), ``forward`` (the encoder alone on one normalised batch on the device, as many
    batches as the split holds, under ``torch.inference_mode`` as the evaluator) and
    ``data`` (uint8 batches to the device, normalised)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    preprocess = functools.partial(normalise, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    encoder = clip_visual(config, device)
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    weight = torch.nn.functional.normalize(torch.randn(10, config["embed_dim"]), dim=-1)
    n = len(labels)
    budgets = dict(zip(TIERS, (1 << 62, 0), strict=True))
    evaluators = {
        tier: ImageEvaluator(
            encoder,
            state,
            {"MNIST": ClassificationHead(weight, 100.0)},
            {("MNIST", "test"): (images, labels)},
            preprocess,
            batch_size=batch,
            device=device,
            input_cache_bytes=budget,
        )  # fmt: skip
        for tier, budget in budgets.items()
    }
    evaluators[TIERS[0]].load(None)  # the encoder they share
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else contextlib.nullcontext()
    )
    x = preprocess(images[:batch].to(device))
    batches = math.ceil(n / batch)

    def evaluate(tier: str) -> Callable[[], int]:
        def run() -> int:
            evaluators[tier].accuracy("MNIST", "test")
            return n

        return run

    def forward() -> int:
        with torch.inference_mode():  # as the evaluator scores
            for _ in range(batches):
                with autocast:
                    encoder(x)
        return batches * len(x)

    def data() -> int:
        for start in range(0, n, batch):
            preprocess(images[start : start + batch].to(device))
        return n

    rates = {tier: best_rate(evaluate(tier), repeats, device) for tier in TIERS}
    return {**rates, "forward": best_rate(forward, repeats, device),
            "data": best_rate(data, repeats, device)}  # fmt: skip


def throughput_table(
    config: dict[str, Any],
    n: int,
    batches: Sequence[int],
    device: str,
    repeats: int,
    rates: dict[int, dict[str, float]],
) -> list[str]:
    """Markdown lines of part (a); ``rates[batch]`` gets the evaluator's images/s per tier."""
    size = config["vision_cfg"]["image_size"]
    log(f"(a) caching {n} images")
    lines = [
        f"## (a) ViT-B/32 evaluation throughput from the preprocessed cache ({device})",
        "",
        f"{n} cached uint8 {size} px images (memory-mapped, page cache warm), "
        f"{'bf16 autocast' if device.startswith('cuda') else 'float32'}, best of {repeats} "
        "passes after a warm-up pass (which builds what is kept). The evaluator "
        "(`evaluation/clip/evaluator.py`) with the split kept on the device (floats on the "
        "CPU, uint8 images normalised per batch elsewhere) or copied batch by batch (on CUDA "
        "from pinned memory, the host not waiting for the copy).",
        "",
        "| batch | " + " | ".join(f"evaluator, {t} (img/s)" for t in TIERS)
        + " | forward only: floor (img/s) | data only: uint8 to device + normalise, pageable "
        "(img/s) | " + " | ".join(f"{t} / floor time" for t in TIERS) + " |",
        "|---|" + "---|" * (2 * len(TIERS) + 2),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mergelab-gpu-data-") as tmp:
        images, labels = cached_split(Path(tmp), n, size)
        for batch in batches:
            log(f"(a) batch {batch}")
            r = throughput(config, images, labels, batch, device, repeats)
            rates[batch] = {t: r[t] for t in TIERS}
            lines.append(
                f"| {batch} | " + " | ".join(f"{r[t]:,.0f}" for t in TIERS)
                + f" | {r['forward']:,.0f} | {r['data']:,.0f} | "
                + " | ".join(f"{r['forward'] / r[t]:.2f}x" for t in TIERS) + " |"
            )  # fmt: skip
        del images, labels
    return lines


# ---- (b) TIES on ViT-L/14-shaped experts ---------------------------------------------------


def expert_dir(needed: float, requested: str | None) -> Path:
    """``requested``, else /dev/shm if it has room for ``needed`` bytes (+20%), else the
    temporary directory."""
    if requested:
        return Path(requested)
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * needed:
        return shm
    return Path(tempfile.gettempdir())


def write_experts(
    shapes: dict[str, torch.Size],
    count: int,
    dtype: torch.dtype,
    directory: Path,
    device: str,
    budget: float,
) -> tuple[list[Path], float, str]:
    """Save ``count`` random task vectors (``0.01 * N(0, 1)`` per entry, drawn on ``device``,
    seed = index) of ``shapes`` as ``dtype`` safetensors files in ``directory``; returns the
    files, the seconds taken and a note. Writes fewer (at least 2) when the first file shows
    that ``count`` would take more than ``budget`` seconds."""
    from safetensors.torch import save_file

    files, note, start = [], "", time.perf_counter()
    t = 0
    while t < count:
        generator = torch.Generator(device).manual_seed(t)
        state = {
            k: torch.randn(s, generator=generator, device=device).mul_(0.01).to(dtype).cpu()
            for k, s in shapes.items()
        }
        files.append(directory / f"expert_{t:02d}.safetensors")
        save_file(state, str(files[-1]))
        del state
        t += 1
        if t == 1 and count > 2 and (first := time.perf_counter() - start) * count > budget:
            fit = max(2, int(budget / first))
            note = (
                f"writing one file took {first:.1f} s, so {count} would take about "
                f"{first * count:.0f} s > --write-budget {budget:.0f} s: {fit} written"
            )
            count = fit
        log(f"  expert {t}/{count} written ({time.perf_counter() - start:.1f} s)")
    return files, time.perf_counter() - start, note


def ties_benchmark(
    config: dict[str, Any], count: int, dtype: torch.dtype, where: str | None, device: str,
    budget: float,
) -> list[str]:  # fmt: skip
    """Markdown lines of part (b)."""
    shapes = {k: v.shape for k, v in clip_visual(config, "meta").state_dict().items()}
    entries = sum(math.prod(s) for s in shapes.values())
    size = entries * dtype.itemsize
    base = expert_dir(count * size, where)
    directory = Path(tempfile.mkdtemp(prefix="mergelab-gpu-experts-", dir=base))
    try:
        log(f"(b) writing {count} experts of {size / GB:.2f} GB to {directory}")
        files, write_s, note = write_experts(shapes, count, dtype, directory, device, budget)
        total = sum(f.stat().st_size for f in files)
        log("(b) read floor")
        with Measured() as floor:
            read_floor([LazySafetensors(f) for f in files])
        log("(b) TIES")
        reset_device_peak(device)
        rss_start = rss_bytes()
        with Measured() as ties:
            merge("ties", [LazySafetensors(f) for f in files], device=device)
        synchronize(device)
        device_peak = device_peak_mib(device)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    kind = "tmpfs: in RAM" if str(base) == "/dev/shm" else "disk, page cache"
    lines = [
        f"## (b) TIES on {len(files)} ViT-L/14-shaped experts (device {device})",
        "",
        f"- experts: {len(files)} x {entries / 1e6:,.2f}M entries ({len(shapes)} tensors), "
        f"{dtype}, {total / GB:.1f} GB in {base} ({kind}); written in {write_s:.1f} s "
        f"({total / GB / write_s:.2f} GB/s)",
    ]
    if note:
        lines.append(f"- fewer experts than asked ({count}): {note}")
    lines += [
        "- TIES: `merging.merge('ties', [LazySafetensors(f) ...], device=...)`, defaults "
        "(density 0.2, disjoint mean, exact global top-k: a sampling pass and an exact pass "
        "(merging/selection.py), then the merge pass, each reading every file)",
        "",
        "| what | wall (s) | GB/s of files | peak host RSS above start (MiB) | peak device (MiB) |",
        "|---|---|---|---|---|",
        f"| read floor: read every entry once, sum on CPU | {floor.seconds:.1f} | "
        f"{total / GB / floor.seconds:.2f} | {floor.peak_mib:,.0f} | - |",
        f"| TIES | {ties.seconds:.1f} | {total / GB / ties.seconds:.2f} | {ties.peak_mib:,.0f} "
        f"| {device_peak} |",
        "",
        f"TIES / read floor: {ties.seconds / floor.seconds:.1f}x; process RSS at the TIES "
        f"start {rss_start / MIB:,.0f} MiB (Python, torch, open_clip; the CUDA context on a GPU).",
    ]
    return lines


# ---- (d) spectral merges -------------------------------------------------------------------


def relative_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ``max |a - b| / max |b|`` over the keys of ``b``."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


def spectral_before_after(
    shapes: dict[str, torch.Size], device: str, tasks: int, repeats: int
) -> list[str]:
    """Markdown rows: the full-SVD versions against the methods on ``device``, on ``tasks``
    task vectors of matrices ``shapes`` drawn there, both compared with the full-SVD version
    run in float64 on the same device (the reference)."""
    import statistics

    g = torch.Generator(device).manual_seed(0)
    tvs = [
        {k: torch.randn(s, generator=g, device=device).mul_(1e-3) for k, s in shapes.items()}
        for _ in range(tasks)
    ]
    rows = []
    for name in SPECTRAL:
        log(f"(d) one block, before / after: {name}")
        exact = {k: FULL_SVD[name]([tv[k].double() for tv in tvs]).float().cpu() for k in shapes}
        before, after, failed = [], [], ""
        for _ in range(repeats):
            FAILED.clear()
            synchronize(device)
            start = time.perf_counter()
            old = {k: FULL_SVD[name]([tv[k] for tv in tvs]).cpu() for k in shapes}
            before.append(time.perf_counter() - start)
            if FAILED:
                failed = f" (before: float32 SVD of {FAILED[0]} failed, redone in float64)"
            start = time.perf_counter()
            new = merge(name, tvs, device=device)
            after.append(time.perf_counter() - start)
        b, a = statistics.median(before), statistics.median(after)
        diffs = [relative_diff(new, old), relative_diff(old, exact), relative_diff(new, exact)]
        rows.append(f"| {name}{failed} | {b:.2f} | {a:.2f} | {b / a:.1f}x | "
                    + " | ".join(f"{d:.1e}" for d in diffs) + " |")  # fmt: skip
    return rows


def spectral_benchmark(
    config: dict[str, Any], count: int, where: str | None, device: str, budget: float,
    repeats: int,
) -> list[str]:  # fmt: skip
    """Markdown lines of part (d)."""
    shapes = {k: v.shape for k, v in clip_visual(config, "meta").state_dict().items()}
    entries = sum(math.prod(s) for s in shapes.values())
    checked = [k for k, s in shapes.items() if k.startswith(CHECKED_BLOCK) and len(s) == 2]
    base = expert_dir(count * entries * 4, where)
    directory = Path(tempfile.mkdtemp(prefix="mergelab-gpu-spectral-", dir=base))
    rows = []
    try:
        log(f"(d) writing {count} experts of {entries * 4 / GB:.2f} GB to {directory}")
        files, write_s, note = write_experts(
            shapes, count, torch.float32, directory, device, budget
        )
        for name in SPECTRAL:
            log(f"(d) {name} on {device}")
            reset_device_peak(device)
            with Measured() as run:
                merged = merge(name, [LazySafetensors(f) for f in files], device=device)
            synchronize(device)
            peak = device_peak_mib(device)
            log(f"(d) {name} on the CPU, block 0 ({run.seconds:.1f} s on {device})")
            block = [{k: LazySafetensors(f)[k] for k in checked} for f in files]
            with Measured() as cpu:
                reference = merge(name, block, device="cpu")
            diff = relative_diff(merged, reference)
            rows.append(f"| {name} | {run.seconds:.1f} | {run.peak_mib:,.0f} | {peak} | "
                        f"{cpu.seconds:.1f} | {diff:.1e} |")  # fmt: skip
            del merged, block, reference
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    lines = [
        f"## (d) TSV-M, Iso-C and Iso-CTS on {len(files)} ViT-B/32-shaped experts "
        f"(device {device})",
        "",
        f"- experts: {len(files)} x {entries / 1e6:,.2f}M entries ({len(shapes)} tensors), "
        f"float32, {len(files) * entries * 4 / GB:.1f} GB in {base}; written in {write_s:.1f} s",
    ]
    if note:
        lines.append(f"- fewer experts than asked ({count}): {note}")
    lines += [
        f"- `merging.merge(name, [LazySafetensors(f) ...], device={device!r})`, defaults; "
        f"'CPU, block 0': the same merge of the {len(checked)} matrices of `{CHECKED_BLOCK}*` "
        f"on the CPU (torch threads: {torch.get_num_threads()}), the reference of the last column",
        "",
        f"| method | whole model on {device} (s) | peak host RSS above start (MiB) | peak device "
        "(MiB) | CPU, block 0 (s) | max abs diff / max abs, block 0 |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Block 0's matrices ({', '.join('x'.join(map(str, shapes[k])) for k in checked)}), "
        f"{len(files)} tasks drawn on {device}: the full-SVD versions before issue 15 (float32 "
        f"`torch.linalg.svd`) against the current methods, {repeats} alternating rounds, "
        "medians; the differences are also given against the full-SVD version run in float64 "
        "on the same tensors.",
        "",
        "| method | before (s) | after (s) | speed-up | max abs diff / max abs: after vs "
        "before | before vs float64 full SVD | after vs float64 full SVD |",
        "|---|---|---|---|---|---|---|",
        *spectral_before_after({k: shapes[k] for k in checked}, device, len(files), repeats),
    ]
    return lines


# ---- (c) projection --------------------------------------------------------------------------


def composed(benchmark: str) -> Any:
    """The preset composed for ``benchmark`` (as ``experiments.run`` composes it)."""
    from hydra import compose, initialize_config_dir

    from experiments.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=[f"+experiment={PRESET}", f"benchmark={benchmark}"])


def split_sizes(tasks: Sequence[str]) -> tuple[list[int], list[int]]:
    """Val and test images of each of ``tasks`` (val: mergelab's split of the train size)."""
    missing = [t for t in tasks if t not in SPLIT_SIZES]
    if missing:
        raise KeyError(f"no split sizes for task {missing[0]!r} in benchmarks/gpu.py SPLIT_SIZES")
    vals = [len(train_val_indices(SPLIT_SIZES[t][0])[1]) for t in tasks]
    return vals, [SPLIT_SIZES[t][1] for t in tasks]


def kept_images(sizes: Sequence[int], budget: int, image_bytes: int) -> list[bool]:
    """Which splits of ``sizes`` (images, in order of first use) the evaluator keeps: each one
    that fits in what ``budget`` has left (:mod:`evaluation.clip.evaluator`)."""
    kept, left = [], budget
    for n in sizes:
        kept.append(n * image_bytes <= left)
        left -= n * image_bytes if kept[-1] else 0
    return kept


def projection(rates: dict[int, dict[str, float]], device: str) -> list[str]:
    """Markdown lines of part (c) from ``rates`` (evaluator images/s per batch size and
    input form, :data:`TIERS`)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from evaluation.protocol import Method

    budget = default_input_cache_bytes(device)
    image_bytes = 3 * 224 * 224 * (4 if device == "cpu" else 1)  # floats / uint8 (evaluator)
    rows, batch, total = [], None, {tier: 0 for tier in TIERS}
    for name in TABLE:
        cfg = composed(name)
        batch = int(cfg.eval.batch_size)
        tasks = [t.name for t in instantiate(cfg.benchmark).tasks()]
        vals, tests = split_sizes(tasks)
        methods = {
            key: Method.from_config(key, OmegaConf.to_container(cfg.method[key], resolve=True))
            for key in cfg.method
        }
        points = sum(len(m.grid()) * len(m.alphas) for m in methods.values())
        # first use: every val split (the first grid point), then the test splits
        kept = kept_images([*vals, *tests], budget, image_bytes)
        sizes = [n * points for n in vals] + [n * len(methods) for n in tests]
        scored = {
            tier: sum(n for n, k in zip(sizes, kept, strict=True) if k == (tier == TIERS[0]))
            for tier in TIERS
        }
        for tier in TIERS:
            total[tier] += scored[tier]
        rows.append(f"| {name} | {len(tasks)} | {sum(vals):,} | {sum(tests):,} | {points} | "
                    f"{sum(k for k in kept[:len(vals)])} / {len(vals)}, "
                    f"{sum(k for k in kept[len(vals):])} / {len(tests)} | "
                    + " | ".join(f"{scored[t]:,}" for t in TIERS) + " |")  # fmt: skip
    if batch not in rates:
        raise KeyError(f"eval.batch_size={batch} of the preset has no throughput from (a)")
    seconds = sum(total[t] / rates[batch][t] for t in TIERS)
    every = {t: sum(total.values()) / rates[batch][t] for t in TIERS}
    form = "floats" if device == "cpu" else "uint8 images"
    return [
        f"## (c) Projected evaluation time of the ViT-B/32 {'/'.join(TABLE)} table",
        "",
        f"`python -m experiments.run -m +experiment={PRESET} model=clip_vit_b32 "
        f"benchmark={','.join(TABLE)} device=cuda`: per benchmark, sum P_m = grid points "
        "(|search grid| x |alphas| per method m), every point scores every val split, each "
        "method's chosen point every test split once. Val = min(10% of train, 5000) "
        "(mergelab's split), train and test sizes as published (SPLIT_SIZES in this script). "
        f"Kept splits: the evaluator's rule with its default budget on {device} "
        f"({budget / GB:.1f} GB of {form}, {image_bytes:,} bytes per image), splits taken in "
        "order of first use (the val splits, then the test splits).",
        "",
        "| benchmark | tasks | V | T | sum P_m | val / test splits kept | "
        + " | ".join(f"images scored {t}" for t in TIERS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(TIERS),
        *rows,
        "",
        "time = " + " + ".join(f"{total[t]:,} / {rates[batch][t]:,.0f} img/s ({t})"
                                for t in TIERS)
        + f" ((a), evaluator, batch {batch}) = **{seconds / 60:.1f} min** of evaluation ("
        + "; ".join(f"everything {t}: {every[t] / 60:.1f} min" for t in TIERS)
        + "); merges, loading the experts and zero-shot heads, and caching the data are "
        "not included.",
    ]  # fmt: skip


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a check)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--images", type=int, default=None, help="cached images (a)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (a)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experts", type=int, default=None, help="ViT-L/14 experts (b)")
    parser.add_argument("--expert-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--dir", default=None, help="where expert files go (b)")
    parser.add_argument("--write-budget", type=float, default=120.0, help="seconds (b)")
    parser.add_argument("--spectral-experts", type=int, default=None, help="ViT-B/32 experts (d)")
    parser.add_argument(
        "--parts", nargs="+", choices=("a", "b", "c", "d"), default=["a", "b", "c", "d"],
        help="parts to run (default all; c needs a)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="default: 1 tiny, else all")
    args = parser.parse_args()
    if "c" in args.parts and "a" not in args.parts:
        parser.error("--parts: c (the projection) needs a (the throughput)")
    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    threads = args.threads or (1 if args.tiny else os.cpu_count() or 1)
    torch.set_num_threads(threads)
    images_n = args.images or (64 if args.tiny else 4096)
    preset_batch = int(composed(TABLE[0]).eval.batch_size)  # what (c) projects with
    batches = sorted({*(args.batches or ([16] if args.tiny else [1024])), preset_batch})
    experts = args.experts or (3 if args.tiny else 20)
    spectral_experts = args.spectral_experts or (3 if args.tiny else 20)
    b32 = TINY_CLIP if args.tiny else open_clip_config("ViT-B-32")
    l14 = TINY_CLIP if args.tiny else open_clip_config("ViT-L-14")
    start = time.perf_counter()
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    head = [
        f"# GPU figures (issue 15){' -- TINY CHECK RUN, not figures' if args.tiny else ''}",
        "",
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}`; device {device} ({where}), "
        f"torch {torch.__version__}, {threads} torch threads of {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start.",
    ]

    text: list[str] = []

    def emit(lines: list[str]) -> None:
        """Print ``lines`` and rewrite ``$OUT/gpu.md`` with everything so far (a run cut
        short keeps the finished parts)."""
        print("\n".join([*lines, ""]), flush=True)
        text.extend([*lines, ""])
        if os.environ.get("OUT"):
            out = Path(os.environ["OUT"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu.md").write_text("\n".join(text))

    def section(name: str, fn: Callable[[], list[str]]) -> None:
        """Emit part ``name``'s lines, or its error (the other parts still run)."""
        try:
            emit(fn())
        except Exception as err:
            traceback.print_exc()
            emit([f"## ({name}) failed", "", f"`{type(err).__name__}: {err}`"])

    emit(head)
    rates: dict[int, dict[str, float]] = {}
    if "a" in args.parts:
        section("a", lambda: throughput_table(b32, images_n, batches, device, args.repeats, rates))
    if "c" in args.parts:
        section("c", lambda: projection(rates, device))
    dtype = getattr(torch, args.expert_dtype)
    if "d" in args.parts:
        section("d", lambda: spectral_benchmark(
            b32, spectral_experts, args.dir, device, args.write_budget, args.repeats
        ))  # fmt: skip
    if "b" in args.parts:
        section(
            "b", lambda: ties_benchmark(l14, experts, dtype, args.dir, device, args.write_budget)
        )
    emit([f"Whole script: {time.perf_counter() - start:.0f} s."])


def open_clip_config(arch: str) -> dict[str, Any]:
    """open_clip's model config of ``arch`` (e.g. ``ViT-B-32``); ``KeyError`` if unknown."""
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise KeyError(f"open_clip has no model config {arch!r}")
    return config


if __name__ == "__main__":
    main()
