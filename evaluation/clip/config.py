"""Config schemas of the CLIP family (registered by ``experiments.config.register_schemas``):
the open_clip zoo (``conf/base/model/openai_clip.yaml``, composed by ``conf/model/clip_vit_*``)
and the hub vision benchmark (``conf/base/benchmark/tall.yaml``, composed by ``tall8/14/20``
and ``ta8``). The built objects subclass these dataclasses, so a config key is a
constructor argument of the same name. Dataclasses only: every run imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


@dataclass
class TallMasksSource:
    """Experts of the TALL masks paper: ``<repo>/<folder>/<first of files found>``."""

    repo: str = "nik-dim/tall_masks"
    folder: str = "{arch}/{task}Val"
    files: list[str] = field(
        default_factory=lambda: ["nonlinear_finetuned.safetensors", "nonlinear_finetuned.pt"]
    )
    revision: str | None = None


@dataclass
class HfTransformersSource:
    """transformers CLIP experts ``<owner>/<name>_<task slug>`` fine-tuned from the base model
    ``<base_owner>/<name>`` (``name`` None: the transformers name of the architecture)."""

    owner: str = "tanganke"
    base_owner: str = "openai"
    name: str | None = None
    revision: str | None = None


@dataclass
class OpenClipZooConfig:
    """An open_clip CLIP and one fine-tuned image encoder per task (``evaluation.clip.zoo``)."""

    name: str = MISSING
    arch: str = MISSING  # open_clip architecture, e.g. ViT-B-32
    pretrained: str = MISSING  # open_clip pretrained tag, or a local checkpoint file
    arch_config: str | None = None  # an extra open_clip model-config JSON
    quick_gelu: bool = False
    experts: str = "tall_masks"  # tall_masks | hf_transformers
    tall_masks: TallMasksSource = field(default_factory=TallMasksSource)
    hf_transformers: HfTransformersSource = field(default_factory=HfTransformersSource)
    expert_sources: dict[str, str] = field(default_factory=dict)  # task -> hub id or path
    allow_pickle: bool = False
    _target_: str = "evaluation.clip.zoo.OpenClipZoo"


@dataclass
class HubVisionBenchmarkConfig:
    """Vision tasks with data from the Hugging Face hub or local copies
    (``evaluation.clip.benchmark``)."""

    name: str = MISSING
    order: str = "tall"  # tall: the TALL masks order; ta: Task Arithmetic's 8 tasks
    num_tasks: int | None = None  # the first num_tasks of the order (None: all)
    task_names: list[str] | None = None  # an explicit task list replacing the order
    sources: dict[str, str] = field(default_factory=dict)  # task -> hub id or local path
    revisions: dict[str, str] = field(default_factory=dict)  # task -> hub dataset revision
    data_root: str | None = None  # a directory with one local dataset per task
    decode_workers: int = 8
    _target_: str = "evaluation.clip.benchmark.HubVisionBenchmark"


SCHEMAS = {"model/open_clip": OpenClipZooConfig, "benchmark/hub_vision": HubVisionBenchmarkConfig}


def checked(schema: type[T], values: Mapping[str, Any], where: str) -> T:
    """``values`` as an instance of dataclass ``schema``, checked as Hydra checks a config:
    an unknown key, a missing value or a wrong type raises ``ValueError`` naming
    ``<where>.<key>``; nested mappings become their dataclasses."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), dict(values)))
    except OmegaConfBaseException as err:
        key = f"{where}.{err.full_key}" if err.full_key else where
        raise ValueError(f"{key}: {str(err).splitlines()[0]}") from None


def check_fields(obj: Any, schema: type, where: str) -> None:
    """Check the fields of ``obj`` (an instance of a subclass of ``schema``) with
    :func:`checked` and store them back, nested mappings converted to their dataclasses."""
    clean = checked(schema, {f.name: getattr(obj, f.name) for f in fields(schema)}, where)
    for f in fields(schema):
        setattr(obj, f.name, getattr(clean, f.name))
