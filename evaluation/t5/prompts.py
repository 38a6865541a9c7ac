"""Prompts of the T5 tasks, from templates kept as data.

* ``promptsource`` tasks (TIES-Merging's NLP tasks): the task's promptsource templates
  (``data/promptsource_templates.json``) rendered as promptsource renders them (Bach et
  al., ACL 2022 demo; bigscience-workshop/promptsource ``templates.py``): Jinja over the
  example's fields, every ``{{ ... }}`` truncated to 2048 characters, ``answer_choices``
  rendered first and split on ``|||``, the prompt split on ``|||`` into input and target,
  each stripped; a ``|||`` inside a field is protected while splitting. The ``choice``
  filter (a random answer, used only in targets for training) takes the first answer here
  so prompts are deterministic.
* ``glue`` tasks (FusionBench's Flan-T5 experts): the input is a format string over the
  example's columns, the target the label's answer text (``data/glue_prompts.json``).

Each example becomes a :class:`Prompted`: input text, target text, answer choices and the
label's index among them (rank classification), and the gold answers (generation metrics).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evaluation.t5.tasks import DATA, TaskSpec

TEXT_VAR_LENGTH = 2048  # promptsource's truncation of each rendered variable
_PIPE = "|||"
_PROTECTED = "\x00pipe\x00"


@dataclass(frozen=True)
class Prompted:
    """One example as the model sees it."""

    input: str
    target: str
    choices: tuple[str, ...] = ()  # answer choices (rank classification)
    label: int = -1  # index of the answer among ``choices``
    answers: tuple[str, ...] = ()  # gold answers (generation metrics)


@functools.cache
def _jinja():
    from jinja2 import BaseLoader, Environment

    env = Environment(loader=BaseLoader)
    env.globals.update(zip=zip)
    env.filters["choice"] = lambda items: list(items)[0]
    env.filters["most_frequent"] = _most_frequent
    return env


def _most_frequent(items: list) -> list | None:
    """The items that occur most often (promptsource's filter of the same name)."""
    if not items:
        return None
    counts = Counter(items).most_common()
    return [item for item, n in counts if n == counts[0][1]]


@functools.cache
def promptsource_templates(task: str) -> tuple[dict[str, Any], ...]:
    """The promptsource templates TIES-Merging's reader keeps for ``task``, in its order."""
    data = json.loads((DATA / "promptsource_templates.json").read_text())
    if task not in data:
        raise ValueError(f"no promptsource templates for task {task!r}")
    return tuple(data[task]["templates"])


@functools.cache
def glue_prompt(task: str) -> dict[str, Any]:
    """FusionBench's prompt of GLUE task ``task`` (input format and targets)."""
    data = json.loads((DATA / "glue_prompts.json").read_text())
    if task not in data:
        raise ValueError(f"no GLUE prompt for task {task!r}")
    return data[task]


def _protect(example: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.replace(_PIPE, _PROTECTED) if isinstance(v, str) else v for k, v in example.items()
    }


def _split(rendered: str) -> list[str]:
    return [part.replace(_PROTECTED, _PIPE).strip() for part in rendered.split(_PIPE)]


def render_promptsource(template: Mapping[str, Any], example: Mapping[str, Any]) -> tuple:
    """``(input, target, answer choices)`` of a promptsource template applied to ``example``
    (module docstring); answer choices are ``None`` when the template has none."""
    env, fields = _jinja(), _protect(example)
    choices = None
    if template.get("answer_choices") is not None:
        choices = _split(env.from_string(template["answer_choices"]).render(**fields))
    jinja = template["jinja"].replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
    parts = _split(env.from_string(jinja).render(**fields, answer_choices=choices))
    return parts[0], parts[1] if len(parts) > 1 else "", choices


def _field(example: Mapping[str, Any], path: str) -> Any:
    value: Any = example
    for part in path.split("."):
        value = value[part]
    return value


def label_of(spec: TaskSpec, example: Mapping[str, Any]) -> int:
    """The answer index of ``example`` by the task's label rule (tasks.json)."""
    rule = spec.label
    value = _field(example, rule["field"])
    if "values" in rule:
        if value not in rule["values"]:
            raise ValueError(f"task {spec.name}: label {value!r} is not one of {rule['values']}")
        return rule["values"].index(value)
    return int(value) + int(rule.get("offset", 0))


def prompt(spec: TaskSpec, example: Mapping[str, Any], template: int = 0) -> Prompted:
    """``example`` of task ``spec`` prompted (module docstring); ``template`` indexes the
    task's promptsource templates. Errors name the task."""
    if spec.prompt == "glue":
        fmt, label = glue_prompt(spec.name), label_of(spec, example)
        targets = fmt["targets"]
        if isinstance(targets, str):
            target = targets.format(example[spec.label["field"]])
        elif str(label) in targets:
            target = targets[str(label)]
        else:
            raise ValueError(f"task {spec.name}: label {label} has no answer text (unlabelled?)")
        return Prompted(fmt["input"].format(**example), target, answers=(target,))
    templates = promptsource_templates(spec.name)
    if not 0 <= template < len(templates):
        raise ValueError(
            f"benchmark.template={template}: task {spec.name} has templates 0..{len(templates) - 1}"
        )
    text, target, choices = render_promptsource(templates[template], example)
    if spec.generative:
        answers = tuple(_field(example, spec.label["answers"]))
        return Prompted(text, target, answers=answers)
    label = label_of(spec, example)
    if not choices or not 0 <= label < len(choices):
        raise ValueError(
            f"task {spec.name}: label {label} outside the {len(choices or ())} answer choices of "
            f"template {template} ({templates[template]['name']!r})"
        )
    return Prompted(text, target, tuple(choices), label)
