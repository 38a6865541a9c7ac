"""The fine-tuning commands refuse out-of-range ``finetune.steps`` / ``finetune.lr`` first,
naming the key, before they build the zoo or load a model."""

import importlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"
BAD = [("steps=0", "'finetune.steps'"), ("steps=-5", "'finetune.steps'"),
       ("lr=0", "'finetune.lr'"), ("lr=-1e-5", "'finetune.lr'"), ("lr=nan", "'finetune.lr'"),
       ("lr=inf", "'finetune.lr'")]  # fmt: skip


@pytest.mark.parametrize("command", ["finetune", "finetune_t5"])
@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_bad_steps_or_lr_fail_before_the_model_is_built(command, override, message, monkeypatch):
    module = importlib.import_module(f"experiments.{command}")  # registers its schema

    def built(*args, **kwargs):
        raise AssertionError("the zoo was built before the options were checked")

    monkeypatch.setattr(module, "instantiate", built)
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose(command, overrides=["task=x", f"finetune.{override}"])
    with pytest.raises(ValueError, match=message):
        module.finetune(cfg)
