"""Config schemas of the CLIP family (registered by ``experiments.config.register_schemas``):
the open_clip zoo (``conf/base/model/openai_clip.yaml``, composed by ``conf/model/clip_vit_*``)
and the hub vision benchmark (``conf/base/benchmark/tall.yaml``, composed by ``tall8/14/20``
and ``ta8``). The built objects subclass these dataclasses, so a config key is a
constructor argument of the same name. Dataclasses only (and the resolver that names a
hub vision benchmark): every run imports this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import MISSING, OmegaConf

from evaluation.clip.tasks import ORDERS


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

    name: str = MISSING  # conf/base/benchmark/tall.yaml derives it: vision_benchmark_name
    order: str = "tall"  # tall: the TALL masks order; ta: Task Arithmetic's 8 tasks
    num_tasks: int | None = None  # the first num_tasks of the order (None: all)
    task_names: list[str] | None = None  # an explicit task list replacing the order
    sources: dict[str, str] = field(default_factory=dict)  # task -> hub id or local path
    revisions: dict[str, str] = field(default_factory=dict)  # task -> hub dataset revision
    data_root: str | None = None  # a directory with one local dataset per task
    val_from: str = "train"  # train: the paper's val (10% of train); test: 10% of test
    trust_label_order: list[str] = field(default_factory=list)  # tasks taken unchecked
    decode_workers: int = 8
    _target_: str = "evaluation.clip.benchmark.HubVisionBenchmark"


def vision_benchmark_name(
    order: str, num_tasks: int | None, task_names: Sequence[str] | None, val_from: str = "train"
) -> str:
    """What a hub vision benchmark holds, as its name (result rows, run directory, table
    title): ``<order><n>`` for the first n tasks of an order (tall8, tall14, ta8; n = all
    of it when ``num_tasks`` is None); for an explicit ``task_names`` list, the tasks joined
    by ``+`` (up to 4 of them, e.g. ``MNIST+SVHN``), else ``custom<n>-<digest of the list>``;
    ``-val_from_test`` appended when val is held out of the test split. Registered as the
    OmegaConf resolver ``vision_benchmark_name``."""
    if task_names:
        names = list(task_names)[: None if num_tasks is None else int(num_tasks)]
        digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:8]
        name = "+".join(names) if len(names) <= 4 else f"custom{len(names)}-{digest}"
    else:
        n = len(ORDERS.get(order, ())) if num_tasks is None else int(num_tasks)
        name = f"{order}{n}"
    return name + ("-val_from_test" if val_from == "test" else "")


if not OmegaConf.has_resolver("vision_benchmark_name"):
    OmegaConf.register_new_resolver("vision_benchmark_name", vision_benchmark_name)


SCHEMAS = {"model/open_clip": OpenClipZooConfig, "benchmark/hub_vision": HubVisionBenchmarkConfig}
