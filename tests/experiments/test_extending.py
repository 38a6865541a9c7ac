"""docs/extending.md, executed: a merge method of either regime is one function plus one
config, found by the registry and by Hydra without any other edit."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluation.protocol import Method
from experiments.config import register_schemas
from experiments.pipelines.task_vector_run import methods_of
from merging import METHODS, merge, merge_method, merge_models
from merging.streaming import summed

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def search_path(tmp_path):
    (tmp_path / "method").mkdir()
    yield tmp_path
    for name in ("halved_sum", "first_model"):
        METHODS.pop(name, None)


def composed(search_path: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=[f"hydra.searchpath=[file://{search_path}]", *overrides])


def add_halved_sum(search_path: Path, hparams: str) -> None:
    """The two files of docs/extending.md's example."""

    # file 1: merging/methods/halved_sum.py
    @merge_method("halved_sum", label="Halved sum", reference="docs/extending.md")
    def halved_sum(tvs, *, factor: float = 0.5):
        """``tau = factor * sum_t tau_t``."""
        return tvs.map(lambda key, taus: factor * summed(taus))

    # file 2: conf/method/halved_sum.yaml
    (search_path / "method" / "halved_sum.yaml").write_text(
        f"# @package method.halved_sum\nfn: halved_sum\nhparams: {hparams}\n"
        "alphas: ${protocol.alphas}\n"
    )


def test_a_task_vector_method_is_a_function_and_a_config(search_path):
    add_halved_sum(search_path, "{factor: 0.25}")
    cfg = composed(search_path, "method=[halved_sum,ties]")
    instantiate(cfg.pipeline).validate(cfg)
    method = methods_of(cfg)[0]
    assert isinstance(method, Method) and method.label == "Halved sum"
    out = merge("halved_sum", [{"w": torch.ones(2)}, {"w": torch.ones(2)}], **method.hparams)
    assert torch.equal(out["w"], torch.full((2,), 0.5))


def test_a_misspelt_option_of_a_new_method_names_its_path(search_path):
    add_halved_sum(search_path, "{factr: 0.25}")
    cfg = composed(search_path, "method=[halved_sum]")
    with pytest.raises(ValueError, match="method.halved_sum.hparams.factr"):
        instantiate(cfg.pipeline).validate(cfg)


def test_a_whole_model_method_is_a_function_and_a_config(search_path):
    @merge_method("first_model", kind="models", label="First model", reference="docs")
    def first_model(context):
        """The first model unchanged."""
        return dict(context.states[0])

    (search_path / "method" / "first_model.yaml").write_text(
        "# @package method.first_model\nfn: first_model\nmodels: [2]\n"
    )
    cfg = composed(search_path, "+experiment=different_init_sandbox", "method=[first_model]")
    instantiate(cfg.pipeline).validate(cfg)

    class Context:
        states = [{"w": torch.ones(1)}, {"w": torch.zeros(1)}]

    assert torch.equal(merge_models("first_model", Context())["w"], torch.ones(1))
