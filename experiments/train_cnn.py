"""Train (or verify) the CNN zoo of the different-initialisation regime.

``python -m experiments.train_cnn model=resnet20 benchmark=different_init_cifar10 device=cuda``
(or ``+experiment=different_init_sandbox``) trains every setting's base models that are not
cached yet, from scratch with seeds 0..num_models-1, and prints their test accuracy. The
merging run (``python -m experiments.run``) finds them in the same cache.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from evaluation.cache import cache_root
from experiments.pipelines.different_init import check_zoo_config, zoos
from experiments.run import resolve_device


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    check_zoo_config(cfg.model, cfg.benchmark)
    cache = cache_root(cfg.get("cache_dir"))
    device = resolve_device(str(cfg.device))
    for benchmark, _, zoo in zoos(cfg, cache, device, bool(cfg.progress)):
        scores = ", ".join(f"seed {i}: {acc:.1f}%" for i, acc in enumerate(zoo.test_accuracy))
        print(f"{cfg.model.name} on {benchmark}: {scores}")
    print(f"zoo cache: {cache / 'cnn_zoo'}")


if __name__ == "__main__":
    main()
