"""Train (or verify) the CNN zoo of the different-initialisation regime.

``python -m experiments.train_cnn +experiment=different_init_cifar10 device=cuda`` (or
``+experiment=different_init_sandbox``) trains every setting's base models that are not
cached yet, from scratch with seeds 0..num_models-1, and prints their test accuracy. The
merging run (``python -m experiments.run``) finds them in the same cache.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from evaluation.cache import cache_root
from evaluation.zoo import Env
from experiments.config import register_schemas
from experiments.pipelines.different_init import build
from experiments.run import resolve_device

register_schemas()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    zoo, benchmark = build(cfg)
    env = Env(cache_root(cfg.get("cache_dir")), resolve_device(str(cfg.device)), bool(cfg.progress))
    for setting in benchmark.settings:
        models = zoo.load(benchmark, setting, env)
        scores = ", ".join(f"seed {i}: {acc:.1f}%" for i, acc in enumerate(models.test_accuracy))
        print(f"{cfg.model.name} on {benchmark.setting_name(setting)}: {scores}")
    print(f"zoo cache: {env.cache_dir / 'cnn_zoo'}")


if __name__ == "__main__":
    main()
