"""Config schema of the MiniLM zoo (registered by ``experiments.config.register_schemas``;
``conf/model/minilm.yaml``). The built object subclasses it, so a config key is a
constructor argument of the same name; range checks run when it is built
(:meth:`MiniLMRecipe.check`). Dataclasses only: every run imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class HeadRecipe:
    """A task's linear head (embedding -> classes) trained on the frozen pretrained encoder's
    embeddings of the task's train split: full-batch AdamW for ``steps`` steps at ``lr``,
    then frozen for fine-tuning and evaluation (the role of CLIP's zero-shot head)."""

    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 0.0


@dataclass
class FinetuneRecipe:
    """Every encoder parameter fine-tuned through the frozen head: AdamW, ``steps`` steps of
    ``batch_size`` texts, learning rate warmed up linearly over ``warmup`` steps then
    decayed by a half cosine (:mod:`evaluation.training`), dropout on, seeded."""

    steps: int = 50
    batch_size: int = 16
    lr: float = 1.0e-4
    warmup: int = 5
    weight_decay: float = 0.01
    seed: int = 0
    # padded tokens per forward pass: a batch runs as length-sorted micro-batches of at most
    # this many, gradients accumulated (the same mean loss; only float rounding and the
    # dropout draws depend on it); null: the whole batch at once
    micro_tokens: int | None = 256


@dataclass
class MiniLMRecipe:
    """Everything that changes the trained heads and experts."""

    max_length: int = 32  # tokens kept of each text ([CLS] and [SEP] included)
    head: HeadRecipe = field(default_factory=HeadRecipe)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)

    def check(self, where: str = "model.recipe") -> None:
        """``ValueError`` naming the key of an out-of-range value."""
        checks = [
            (self.max_length >= 3, "max_length must be >= 3"),
            (self.head.steps >= 1, "head.steps must be >= 1"),
            (self.head.lr > 0, "head.lr must be > 0"),
            (self.head.weight_decay >= 0, "head.weight_decay must be >= 0"),
            (self.finetune.steps >= 1, "finetune.steps must be >= 1"),
            (self.finetune.batch_size >= 1, "finetune.batch_size must be >= 1"),
            (self.finetune.lr > 0, "finetune.lr must be > 0"),
            (
                0 <= self.finetune.warmup < self.finetune.steps,
                "finetune.warmup must be in [0, steps)",
            ),
            (self.finetune.weight_decay >= 0, "finetune.weight_decay must be >= 0"),
            (
                self.finetune.micro_tokens is None or self.finetune.micro_tokens >= 1,
                "finetune.micro_tokens must be >= 1 or null",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{where}.{message}")


@dataclass
class MiniLMZooConfig:
    """A pretrained BERT sentence encoder (mean pooling, L2-normalised, as
    sentence-transformers' all-MiniLM-L6-v2) and one fine-tuned expert per task
    (``evaluation.minilm.zoo.MiniLMZoo``). ``pretrained``: a source of the registry
    (``evaluation/real/data/sources.json``, e.g. ``minilm``: the PyPI package), a hub id
    (``sentence-transformers/all-MiniLM-L6-v2``) or a local directory in the hub layout."""

    name: str = MISSING
    pretrained: str = MISSING
    revision: str | None = None  # hub revision (hub ids only)
    recipe: MiniLMRecipe = field(default_factory=MiniLMRecipe)
    autocast: str | None = None  # evaluation dtype (None: float32; bfloat16 on CPU or CUDA)
    # evaluation and the heads' features: padded tokens per forward pass at most (texts sorted
    # by length, at most eval.batch_size of them); results depend on it only by float rounding
    batch_tokens: int = 512
    _target_: str = "evaluation.minilm.zoo.MiniLMZoo"


SCHEMAS = {"model/minilm": MiniLMZooConfig}
