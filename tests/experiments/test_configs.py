"""Every config composes against its schema; a misspelt key fails naming its path."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evaluation.protocol import Method
from experiments.config import register_schemas
from merging import method_spec

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ["model", "benchmark", "method", "logger", "pipeline"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def composed(*overrides: str):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def test_default_config_composes():
    cfg = composed()
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.model.name == "sandbox_clip" and cfg.benchmark.name == "sandbox8"
    assert cfg.pipeline._target_.endswith("TaskVectorPipeline")


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_config_composes(group, option):
    cfg = composed(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if group == "method":
        assert list(resolved["method"]) == [option], "package header must be `method.<file name>`"
        body = resolved["method"][option]
        if method_spec(body["fn"]).kind == "task_vectors":
            instantiate(cfg.pipeline).validate(cfg)  # merges tiny task vectors with its options
            assert Method.from_config(option, body).label
    elif group != "method":
        assert "_target_" in resolved[group], f"conf/{group}/{option}.yaml builds no object"


@pytest.mark.parametrize(
    "override, path",
    [
        ("eval.batch_sise=3", "batch_sise"),
        ("seeed=1", "seeed"),
        ("logger.projct=x", "projct"),
        ("method.ties.hparms={}", "hparms"),
        ("model.nme=x", "nme"),
        ("benchmark.num_taks=3", "num_taks"),
    ],
)
def test_a_misspelt_key_fails_at_composition_naming_it(override, path):
    with pytest.raises(ConfigCompositionException) as err:
        composed(override, "method=[ties]")
    text = str(err.value) + str(err.value.__cause__)
    assert path in text


def test_a_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as err:
        composed("eval.batch_size=many")
    assert "batch_size" in str(err.value) + str(err.value.__cause__)
