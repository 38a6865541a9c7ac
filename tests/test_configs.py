"""Every config file composes, and every task-vector method config is valid."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from evaluation.protocol import MethodConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["model", "benchmark", "method", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def test_default_config_composes():
    cfg = composed()
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.model.name == "sandbox_clip" and cfg.benchmark.name == "sandbox8"


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_config_composes(group, option):
    cfg = composed(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if group == "method":
        assert list(resolved["method"]) == [option], "package header must be `method.<file name>`"
        body = resolved["method"][option]
        if body.get("family", "task_vectors") == "task_vectors":
            MethodConfig.from_config(option, body)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment):
    OmegaConf.to_container(composed(f"+experiment={experiment}"), resolve=True)
