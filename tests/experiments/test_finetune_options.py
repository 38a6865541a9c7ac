"""The fine-tuning commands refuse out-of-range ``finetune`` options first, naming the key,
before they build the zoo or load a model."""

import importlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"
BAD = [("steps=0", "'finetune.steps'"), ("steps=-5", "'finetune.steps'"),
       ("lr=0", "'finetune.lr'"), ("lr=-1e-5", "'finetune.lr'"), ("lr=nan", "'finetune.lr'"),
       ("lr=inf", "'finetune.lr'"), ("weight_decay=-0.1", "'finetune.weight_decay'"),
       ("weight_decay=inf", "'finetune.weight_decay'")]  # fmt: skip
CLIP_ONLY = [("grad_clip=0", "'finetune.grad_clip'"), ("grad_clip=nan", "'finetune.grad_clip'"),
             ("label_smoothing=1.0", "'finetune.label_smoothing'"),
             ("warmup_steps=-1", "'finetune.warmup_steps'"),
             ("warmup_steps=0", "'finetune.warmup_steps'"),
             ("warmup_steps=11 steps=10", "warmup_steps=11 must be <= finetune.steps")]  # fmt: skip


CASES = [(c, *bad) for c in ("finetune", "finetune_t5") for bad in BAD] + [
    ("finetune", *bad) for bad in CLIP_ONLY
]


@pytest.mark.parametrize("command, override, message", CASES, ids=[f"{c}-{o}" for c, o, _ in CASES])
def test_bad_options_fail_before_the_model_is_built(command, override, message, monkeypatch):
    module = importlib.import_module(f"experiments.{command}")  # registers its schema

    def built(*args, **kwargs):
        raise AssertionError("the zoo was built before the options were checked")

    monkeypatch.setattr(module, "instantiate", built)
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose(command, overrides=["task=x", *(f"finetune.{o}" for o in override.split())])
    with pytest.raises(ValueError, match=message):
        module.finetune(cfg)


def test_an_infinite_gradient_clip_means_no_clipping():
    from experiments.finetune import _check

    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("finetune", overrides=["task=x", "finetune.grad_clip=inf"])
    assert _check(cfg.finetune) == 128  # examples per micro-batch: accepted
