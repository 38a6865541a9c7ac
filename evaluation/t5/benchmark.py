"""The NLP benchmarks of the T5 family (``conf/benchmark/{nlp7,qa8,nlp11,glue8}.yaml``).

* ``nlp7``, ``qa8``, ``nlp11``: the task mixtures of TIES-Merging (Yadav et al., NeurIPS
  2023; prateeky2806/ties-merging ``src/data/dataset_mixtures.py``: ``t5_mixture`` and
  ``eight_qa``) and their union, the NLP columns of the TALL masks paper (Wang et al., ICML
  2024): promptsource prompts (template 0, as the authors' T5 configs), rank classification
  over the answer choices (ROPES: SQuAD EM/F1 of greedy generations), inputs truncated to
  128 tokens, val by the authors' held-out rule.
* ``glue8``: FusionBench's GLUE tasks for Flan-T5 (Tang et al., tanganke/fusion_bench):
  its text-to-text prompts, exact match of greedy generations (Spearman's rho for STS-B),
  ``nyu-mll/glue`` data, test = the validation split, val drawn from train.

Where a task's data comes from: ``sources[task]`` (hub id or local path) if set, else
``<data_root>/<task>`` if that exists, else the task's hub id (``data/tasks.json``).
Splits, prompting and the token cache: :mod:`evaluation.t5.data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.benchmark import Task, check_split
from evaluation.schemas import check_fields
from evaluation.t5.config import TextBenchmarkConfig
from evaluation.t5.data import SplitRecipe, TokenisedSplit, load_tokenised
from evaluation.t5.prompts import glue_prompt, promptsource_templates
from evaluation.t5.tasks import TaskSpec, task_names, task_spec


@dataclass
class TextBenchmark(TextBenchmarkConfig):
    """The benchmark of its config (fields: :class:`TextBenchmarkConfig`); bad names and
    values fail on construction, naming the key."""

    def __post_init__(self) -> None:
        check_fields(self, TextBenchmarkConfig, "benchmark")
        names = list(self.task_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"benchmark.task_names must list distinct tasks, got {names}")
        for key in ("task_names", "sources", "revisions"):
            unknown = sorted(set(getattr(self, key) or ()) - set(task_names()))
            if unknown:
                raise ValueError(
                    f"benchmark.{key} names unknown task {unknown[0]!r}; "
                    f"valid: {', '.join(task_names())}"
                )
        for key in ("max_length", "heldout_val"):
            if getattr(self, key) < 1:
                raise ValueError(f"benchmark.{key}={getattr(self, key)} must be >= 1")
        if self.val_from not in ("train", "test"):
            raise ValueError(f"benchmark.val_from={self.val_from!r}; valid: train, test")
        suffix = "-val_from_test"
        drawn = any(task_spec(n).val == "train_draw" for n in names)
        if self.val_from == "test" and drawn and not self.name.endswith(suffix):
            self.name += suffix  # result rows say that val was held out of test
        self._specs = [task_spec(name) for name in names]
        self._tasks = [self._task(spec) for spec in self._specs]

    def _task(self, spec: TaskSpec) -> Task:
        """The :class:`Task` of ``spec``: its fixed answer choices (if any) and its prompt."""
        if spec.prompt == "glue":
            targets = glue_prompt(spec.name)["targets"]
            classes = tuple(targets.values()) if isinstance(targets, dict) else ()
            return Task(spec.name, classes, (glue_prompt(spec.name)["input"],))
        templates = promptsource_templates(spec.name)
        if not 0 <= self.template < len(templates):
            raise ValueError(
                f"benchmark.template={self.template}: task {spec.name} has templates "
                f"0..{len(templates) - 1}"
            )
        chosen = templates[self.template]
        fixed = chosen["answer_choices"] or ""
        classes = tuple(c.strip() for c in fixed.split("|||")) if "{" not in fixed else ()
        return Task(spec.name, classes, (chosen["jinja"],))

    def tasks(self) -> list[Task]:
        """The benchmark's tasks in order."""
        return list(self._tasks)

    def spec(self, name: str) -> TaskSpec:
        """The spec (data, splits, metric) of task ``name`` of this benchmark."""
        for spec in self._specs:
            if spec.name == name:
                return spec
        raise ValueError(f"task {name!r} is not in benchmark {self.name!r}")

    def task_source(self, name: str) -> tuple[str, str | None]:
        """(hub id or local path, revision) of task ``name``'s data (module docstring)."""
        spec = self.spec(name)
        if name in self.sources:
            source = str(self.sources[name])
        elif self.data_root and (Path(self.data_root).expanduser() / name).exists():
            source = str(Path(self.data_root).expanduser() / name)
        else:
            source = spec.dataset
        return source, self.revisions.get(name)

    @property
    def recipe(self) -> SplitRecipe:
        return SplitRecipe(
            self.template, self.max_length, self.heldout_val, self.heldout_seed, self.val_from
        )

    def load_split(
        self, task: Task, split: str, cache_dir: str | Path, tokenizer: Any
    ) -> TokenisedSplit:
        """``task``'s ``split`` (train, val or test) prompted and tokenised with
        ``tokenizer``, from the cache under ``cache_dir`` (built on first use)."""
        check_split(split)
        source, revision = self.task_source(task.name)
        spec = self.spec(task.name)
        return load_tokenised(spec, split, source, revision, self.recipe, tokenizer, cache_dir)
