"""Config schemas of the T5 family (registered by ``experiments.config.register_schemas``):
the transformers T5 zoo (``conf/base/model/t5.yaml``, composed by ``conf/model/{t5_base,
t5_large,flan_t5_base,flan_t5_large}.yaml``) and the prompted NLP benchmarks
(``conf/base/benchmark/t5_text.yaml``, composed by ``nlp7``, ``qa8``, ``nlp11``, ``glue8``).
The built objects subclass these dataclasses, so a config key is a constructor argument of
the same name. Dataclasses only: every run imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class ExpertFamily:
    """One family of experts: ``id`` is a hub repo id or local directory with ``{task}`` (the
    task's name) and ``{base}`` (the last part of the pretrained id, e.g. ``flan-t5-base``)
    to fill in; ``format`` is ``full`` (a fine-tuned transformers model) or ``lora`` (a PEFT
    LoRA adapter of the pretrained model, made dense: ``B A * alpha / r``)."""

    id: str = MISSING
    format: str = "full"
    revision: str | None = None
    whole_train: bool = False  # fine-tuned on the whole train split (which holds GLUE's val)


@dataclass
class T5ZooConfig:
    """A pretrained T5 and one expert per task (``evaluation.t5.zoo.T5Zoo``)."""

    name: str = MISSING
    pretrained: str = MISSING  # hub id or local directory of the pretrained model
    revision: str | None = None  # hub revision of the pretrained model and tokenizer
    tokenizer: str | None = None  # None: the pretrained model's
    experts: str = MISSING  # the key of `families` that supplies the experts
    families: dict[str, ExpertFamily] = field(default_factory=dict)
    expert_sources: dict[str, str] = field(default_factory=dict)  # task -> id replacing its own
    unmerged: list[str] = field(default_factory=list)  # parameters left at theta_0, not merged
    autocast: str | None = "bfloat16"  # evaluation dtype on CUDA (None: float32)
    _target_: str = "evaluation.t5.zoo.T5Zoo"


@dataclass
class TextBenchmarkConfig:
    """NLP tasks from the Hugging Face hub or local copies, prompted and tokenised once
    (``evaluation.t5.benchmark.TextBenchmark``); the tasks are read from
    ``evaluation/t5/data/tasks.json``."""

    name: str = MISSING
    task_names: list[str] = MISSING
    template: int = 0  # promptsource template index (the TIES-Merging T5 configs: 0)
    max_length: int = 128  # input and answer tokens kept (truncation)
    heldout_val: int = 32  # examples of the held-out split that are val (TIES-Merging: 32)
    heldout_seed: int = 42  # seed of Python's random.Random that shuffles it first
    val_from: str = "train"  # train_draw tasks (GLUE): val from train, or test (the rest is test)
    sources: dict[str, str] = field(default_factory=dict)  # task -> hub id or local path
    revisions: dict[str, str] = field(default_factory=dict)  # task -> hub dataset revision
    data_root: str | None = None  # a directory with one local dataset per task
    _target_: str = "evaluation.t5.benchmark.TextBenchmark"


SCHEMAS = {"model/t5": T5ZooConfig, "benchmark/t5_text": TextBenchmarkConfig}
