"""Timings of the different-initialisation regime: each alignment and NP Merge's optimisation.

    python benchmarks/different_init_timing.py                      # the sandbox preset
    python benchmarks/different_init_timing.py model=vgg16 model.width=0.25 device=cuda

Arguments are Hydra overrides of ``+experiment=different_init_sandbox`` (or pass another
``+experiment=...`` first). Models 0 and 1 of the first setting's zoo (trained on first use)
are merged; ``--random-init`` uses two randomly initialised models instead (the cost depends
on shapes only, so real-scale timings need no training, e.g. ``model.width=4
benchmark.dataset.image_size=32`` for CIFAR-sized ResNet-20x4). Every step is timed
``--repeat`` times (median, seconds) and printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.cnn.data import batches, load_data, sample_indices  # noqa: E402
from evaluation.cnn.methods import Merger  # noqa: E402
from evaluation.cnn.models import build_model  # noqa: E402
from evaluation.cnn.zoo import CnnZoo  # noqa: E402
from evaluation.cache import cache_root  # noqa: E402
from experiments.pipelines.different_init import check_zoo_config, zoos  # noqa: E402
from experiments.run import resolve_device  # noqa: E402
from merging.alignment import activation_matching, cca_merge, weight_matching, zipit  # noqa: E402
from merging.np_merge import np_merge  # noqa: E402


def timed(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--random-init", action="store_true", help="skip training the zoo")
    args, overrides = parser.parse_known_args()
    if not any(o.startswith("+experiment=") for o in overrides):
        overrides = ["+experiment=different_init_sandbox", *overrides]
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=overrides)
    check_zoo_config(cfg.model, cfg.benchmark)
    device = resolve_device(str(cfg.device))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if args.random_init:
        data = load_data(OmegaConf.to_container(cfg.benchmark.dataset))
        arch = {"arch": cfg.model.arch, "width": float(cfg.model.width)}
        states = [build_model(arch, data.num_classes, seed=s).state_dict() for s in (0, 1)]
        benchmark, zoo = "random init", CnnZoo(arch, data.num_classes, states, [], [])
    else:
        benchmark, data, zoo = next(zoos(cfg, cache_root(cfg.get("cache_dir")), device, False))
    md = cfg.benchmark.merge_data
    m = Merger(
        zoo, data, merge_samples=md.samples, batch_size=md.batch_size, seed=md.seed, device=device
    )
    a, b = zoo.states[0], zoo.states[1]
    stats = m.pair_stats(a, b)
    wm = weight_matching(m.spec, a, b)
    hp = OmegaConf.to_container(cfg.method.np_merge.hparams) if "np_merge" in cfg.method else {}
    samples, batch_size = hp.get("samples", 1000), hp.get("batch_size", 64)
    steps = hp.get("epochs", 10) * -(-min(samples, len(data.train_y)) // batch_size)
    indices = sample_indices(len(data.train_y), samples, md.seed)
    b_aligned = m.align(a, b, "weight_matching", {})

    def np_opt() -> None:
        data_fn = lambda: batches(data, "train", indices, batch_size)  # noqa: E731
        lr, optimizer = hp.get("lr", 1e-2), hp.get("optimizer", "adam")
        np_merge(
            m.template,
            a,
            b_aligned,
            data_fn,
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            device=device,
        )

    rows = {
        "activation statistics (both models, merge data)": lambda: m.pair_stats(a, b),
        "weight matching": lambda: weight_matching(m.spec, a, b),
        "activation matching (from statistics)": lambda: activation_matching(stats=stats),
        "ZipIt! (from statistics)": lambda: zipit(m.spec, a, b, stats=stats),
        "CCA Merge (from statistics)": lambda: cca_merge(m.spec, a, b, stats=stats),
        "BatchNorm reset (merge data)": lambda: m.reset_batchnorm(a),
        f"NP Merge optimisation ({steps} steps x {batch_size})": np_opt,
    }
    params = sum(v.numel() for k, v in a.items() if v.is_floating_point())
    print(f"{cfg.model.name} ({params / 1e6:.2f} M params, {len(wm)} permutation groups) "
          f"on {benchmark}, device {device}, torch threads {torch.get_num_threads()}, "
          f"merge data {len(m.merge_indices)} images, median of {args.repeat}")  # fmt: skip
    print("| step | seconds |\n|---|---|")
    for name, fn in rows.items():
        seconds = timed(fn, args.repeat, sync)
        extra = f" ({1000 * seconds / steps:.1f} ms/step)" if name.startswith("NP Merge") else ""
        print(f"| {name} | {seconds:.3f}{extra} |")


if __name__ == "__main__":
    main()
