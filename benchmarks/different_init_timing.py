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

from evaluation.cache import cache_root  # noqa: E402
from evaluation.cnn.models import build_model  # noqa: E402
from evaluation.cnn.zoo import BaseModels  # noqa: E402
from evaluation.zoo import Env  # noqa: E402
from experiments.config import register_schemas  # noqa: E402
from experiments.pipelines.different_init import build  # noqa: E402
from experiments.run import resolve_device  # noqa: E402
from merging.alignment import activation_matching, weight_matching  # noqa: E402
from merging.context import ModelContext  # noqa: E402
from merging.methods.cca_merge import cca_merge_pair  # noqa: E402
from merging.methods.np_merge import np_merge_pair  # noqa: E402
from merging.methods.weight_matching import align_weights  # noqa: E402
from merging.methods.zipit import zipit_pair  # noqa: E402


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
    register_schemas()
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=overrides)
    zoo, bench = build(cfg)
    device = resolve_device(str(cfg.device))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    setting = next(iter(bench.settings))
    if args.random_init:
        num_classes = bench.data.num_classes
        arch = {"arch": zoo.arch, "width": float(zoo.width)}
        states = [build_model(arch, num_classes, seed=s).state_dict() for s in (0, 1)]
        name = "random init"
        models = BaseModels(zoo.arch, float(zoo.width), num_classes, states, [], [])
    else:
        name = bench.setting_name(setting)
        env = Env(cache_root(cfg.get("cache_dir")), device, False)
        models = zoo.load(bench, setting, env)
    md = bench.merge_data
    m = ModelContext(
        models.states[:2], models.network().to(device), models.spec, bench.merge_batches(),
        models.activation_points, device=torch.device(device), seed=md.seed,
    )  # fmt: skip
    a, b = m.states
    stats = m.pair_stats(a, b)
    wm = weight_matching(m.spec, a, b)
    hp = OmegaConf.to_container(cfg.method.np_merge.hparams) if "np_merge" in cfg.method else {}
    samples, batch_size = hp.get("samples", 1000), hp.get("batch_size", 64)
    steps = hp.get("epochs", 10) * -(-min(samples, bench.train_size) // batch_size)
    b_aligned = align_weights(m, a, b)

    def np_opt() -> None:
        data_fn = bench.train_batches(samples, batch_size, md.seed)
        lr, optimizer = hp.get("lr", 1e-2), hp.get("optimizer", "adam")
        np_merge_pair(
            m.template, a, b_aligned, data_fn, steps=steps, lr=lr, optimizer=optimizer,
            device=device,
        )  # fmt: skip

    rows = {
        "activation statistics (both models, merge data)": lambda: m.pair_stats(a, b),
        "weight matching": lambda: weight_matching(m.spec, a, b),
        "activation matching (from statistics)": lambda: activation_matching(stats=stats),
        "ZipIt! (from statistics)": lambda: zipit_pair(m.spec, a, b, stats=stats),
        "CCA Merge (from statistics)": lambda: cca_merge_pair(m.spec, a, b, stats=stats),
        "BatchNorm reset (merge data)": lambda: m.reset_batchnorm(a),
        f"NP Merge optimisation ({steps} steps x {batch_size})": np_opt,
    }
    params = sum(v.numel() for k, v in a.items() if v.is_floating_point())
    images = min(md.samples, bench.train_size)
    print(f"{cfg.model.name} ({params / 1e6:.2f} M params, {len(wm)} permutation groups) "
          f"on {name}, device {device}, torch threads {torch.get_num_threads()}, "
          f"merge data {images} images, median of {args.repeat}")  # fmt: skip
    print("| step | seconds |\n|---|---|")
    for step, fn in rows.items():
        seconds = timed(fn, args.repeat, sync)
        extra = f" ({1000 * seconds / steps:.1f} ms/step)" if step.startswith("NP Merge") else ""
        print(f"| {step} | {seconds:.3f}{extra} |")


if __name__ == "__main__":
    main()
