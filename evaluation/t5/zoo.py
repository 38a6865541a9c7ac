"""The T5 zoo (``conf/model/{t5_base,t5_large,flan_t5_base,flan_t5_large}.yaml``): a pretrained
transformers T5 and one expert per task, scored on the T5 text benchmarks
(:mod:`evaluation.t5.benchmark`).

Expert ids are generated from (pretrained model, task): ``model.families[model.experts].id``
with ``{task}`` and ``{base}`` (the pretrained id's last part) filled in, e.g. FusionBench's
Flan-T5 GLUE experts (Tang et al., tanganke/fusion_bench) ``tanganke/flan-t5-base_glue-cola``
(full fine-tunes) and ``tanganke/flan-t5-base_glue-cola_lora-16`` (LoRA adapters of
``google/flan-t5-base``, made dense: :func:`evaluation.t5.checkpoints.lora_delta`).
``model.expert_sources[task]`` replaces one id; any id may be a local directory with the hub
layout (``config.json`` + weights, or ``adapter_config.json`` + adapter weights).

The whole model is merged except the parameters ``model.unmerged`` names, which stay at
theta_0 (``param_counts = (N, N_m)``, ``unmerged_entries = N - N_m``: the TALL masks NLP
table's storage column is exactly that of a T5 v1.1-large / Flan-T5-large, N = 783,150,080,
with one 32128 x 1024 matrix left out, N_m = 750,251,008). Tied weights are one parameter:
states hold the first key of each tied group only (:attr:`T5Zoo.tied` lists the groups
after :meth:`T5Zoo.load`; :mod:`evaluation.t5.checkpoints`), and the evaluator's writes
keep the groups tied. The pretrained state and every expert are converted once into
safetensors under ``<cache>/t5_experts/<base>/`` (checksummed,
:class:`evaluation.cache.Manifest`) and read from there lazily, key by key. Hub files are
keyed by (id, revision): pin ``revision`` to notice upstream changes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from evaluation.benchmark import Benchmark, Task
from evaluation.cache import Manifest, json_digest, locked, source_identity
from evaluation.checkpoints import CheckpointError, LazySafetensors, check_matches
from evaluation.schemas import check_fields
from evaluation.t5.benchmark import TextBenchmark
from evaluation.t5.checkpoints import (
    aliases,
    check_tied,
    load_seq2seq,
    lora_delta,
    read_lora,
    tied_groups,
    unique_state,
)
from evaluation.t5.config import T5ZooConfig
from evaluation.t5.evaluator import T5Evaluator
from evaluation.zoo import Env, Experts

Tensor = torch.Tensor
FORMATS = ("full", "lora")
AUTOCASTS = (None, "bfloat16", "float16")
EXPERT_CACHE_VERSION = 1


def _looks_local(repo: str) -> bool:
    """Whether ``repo`` can only be a local path (a hub id is ``name`` or ``owner/name``)."""
    return repo.startswith(("/", ".", "~")) or repo.count("/") > 1


@dataclasses.dataclass
class T5Zoo(T5ZooConfig):
    """The zoo of its config (fields: :class:`evaluation.t5.config.T5ZooConfig`); bad values
    fail on construction, naming the key."""

    regime = "task_vectors"

    def __post_init__(self) -> None:
        check_fields(self, T5ZooConfig, "model")
        if self.experts not in self.families:
            raise ValueError(
                f"model.experts={self.experts!r} is not a key of model.families "
                f"({', '.join(self.families) or 'none'})"
            )
        for key, family in self.families.items():
            if family.format not in FORMATS:
                raise ValueError(
                    f"model.families.{key}.format={family.format!r}; valid: {', '.join(FORMATS)}"
                )
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"model.autocast={self.autocast!r}; valid: {AUTOCASTS}")
        self.tied: list[tuple[str, ...]] = []
        self._merged: list[str] = []

    @property
    def base(self) -> str:
        """The pretrained id's last part (``google/flan-t5-base`` -> ``flan-t5-base``)."""
        return Path(str(self.pretrained).rstrip("/")).name

    def expert_location(self, task: str) -> tuple[str, str | None, str]:
        """(hub id or local directory, revision, format) of ``task``'s expert."""
        family = self.families[self.experts]
        if task in self.expert_sources:
            return str(self.expert_sources[task]), family.revision, family.format
        try:
            repo = family.id.format(task=task, base=self.base)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"model.families.{self.experts}.id={family.id!r}: only {{task}} and {{base}} "
                f"can be filled in ({err!r})"
            ) from None
        return repo, family.revision, family.format

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        """The pretrained model (float32, eval mode) and its tokenizer."""
        from transformers import AutoTokenizer

        model = load_seq2seq(self.pretrained, self.revision, f"model {self.name!r} pretrained")
        source = self.tokenizer or self.pretrained
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=self.revision)
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"model {self.name!r}: cannot load the tokenizer {source!r} ({err})"
            ) from err
        return model, tokenizer

    def load(self, benchmark: Benchmark, tasks: Sequence[Task], env: Env) -> Experts:
        """theta_0 and the experts of ``tasks`` (lazily read from the expert cache), scored
        on ``benchmark``; bad ids fail before any download."""
        if not isinstance(benchmark, TextBenchmark):
            raise ValueError(
                f"model {self.name!r} scores the T5 text benchmarks (nlp7, qa8, nlp11, glue8), "
                f"not {getattr(benchmark, 'name', benchmark)!r}"
            )
        locations = {t.name: self.expert_location(t.name) for t in tasks}
        for task, (repo, _, _) in locations.items():
            if _looks_local(repo) and not Path(repo).expanduser().is_dir():
                raise FileNotFoundError(
                    f"model {self.name!r} expert {task}: no directory {repo}. Train it "
                    f"(python -m experiments.finetune_t5 model={self.name} task={task}), or set "
                    f"model.expert_sources.{task} / model.families.{self.experts}.id"
                )
        drawn = [t.name for t in tasks if benchmark.spec(t.name).val == "train_draw"]
        if self.families[self.experts].whole_train and drawn and benchmark.val_from == "train":
            warnings.warn(
                f"model {self.name!r}: the {self.experts} experts were fine-tuned on the whole "
                f"train split, which holds the val split of {', '.join(drawn)}: "
                "benchmark.val_from=test selects on 10% of test instead",
                stacklevel=2,
            )
        model, tokenizer = self.load_model()
        self.tied = tied_groups(model)
        full = {k: v.detach() for k, v in model.state_dict().items()}
        unique = unique_state(full, self.tied)
        self._merged = [k for k in unique if k not in self.unmerged_keys(unique)]
        merged = {k: unique[k] for k in self._merged}
        root = Path(env.cache_dir) / "t5_experts" / self.base
        base_id = {"pretrained": source_identity(str(self.pretrained)),
                   "revision": self.revision, "tied": self.tied,
                   "shapes": {k: list(v.shape) for k, v in merged.items()}}  # fmt: skip
        with locked(root):
            manifest = Manifest(root, {"version": EXPERT_CACHE_VERSION}, "T5 expert")
            pretrained = self._cached(manifest, "pretrained", base_id, lambda: merged)
            experts = {}
            for task, (repo, revision, fmt) in tqdm(
                locations.items(), desc=f"{self.name} experts", disable=not env.progress
            ):
                identity = {"id": source_identity(repo), "revision": revision, "format": fmt,
                            "base": base_id}  # fmt: skip
                what = f"model {self.name!r} expert {task} ({repo})"
                build = (
                    (lambda r=repo, v=revision, w=what: self._full(r, v, full, w))
                    if fmt == "full"
                    else (lambda r=repo, v=revision, w=what: self._lora(r, v, full, w))
                )
                experts[task] = self._cached(manifest, f"{task}-{fmt}", identity, build)
        n, n_merged = (sum(v.numel() for v in s.values()) for s in (unique, merged))

        def evaluator(tasks: Sequence[Task], batch_size: int, env: Env) -> T5Evaluator:
            splits = {
                (t.name, s): benchmark.load_split(t, s, env.cache_dir, tokenizer)
                for t in tasks
                for s in ("val", "test")
            }
            specs = {t.name: benchmark.spec(t.name) for t in tasks}
            return T5Evaluator(model, tokenizer, pretrained, self.tied, splits, specs,
                               batch_size, env.device, self.autocast)  # fmt: skip

        return Experts(self.name, pretrained, experts, (n, n_merged), evaluator, n - n_merged)

    def unmerged_keys(self, unique: Mapping[str, Tensor]) -> set[str]:
        """The state keys of ``model.unmerged`` (an alias names its tied group's first key);
        ``ValueError`` naming the unknown one."""
        alias = aliases(self.tied)
        keys = {alias.get(k, k) for k in self.unmerged}
        unknown = sorted(keys - set(unique))
        if unknown:
            raise ValueError(
                f"model.unmerged: {unknown[0]!r} is not a parameter of {self.pretrained!r} "
                f"(e.g. {', '.join(list(unique)[:2])}, lm_head.weight)"
            )
        return keys

    @staticmethod
    def _cached(manifest: Manifest, stem: str, identity: Mapping, build: Any) -> LazySafetensors:
        """The cached safetensors of ``identity`` (built by ``build()`` on first use)."""
        name = f"{stem}-{json_digest(identity)[:16]}.safetensors"
        if not manifest.trusted(name):
            state = {k: v.detach().contiguous() for k, v in build().items()}
            with manifest.writing(name, what=stem) as tmp:
                save_file(state, str(tmp))
        return LazySafetensors(manifest.root / name)

    def _full(
        self, repo: str, revision: str | None, full: Mapping[str, Tensor], what: str
    ) -> dict[str, Tensor]:
        """A fully fine-tuned expert's state, one key per tied group, checked against the
        pretrained architecture and its ties."""
        state = load_seq2seq(repo, revision, what).state_dict()
        check_matches(state, full, what)
        check_tied(state, self.tied, what)
        for key in unique_state(full, self.tied):
            if key not in self._merged and not torch.equal(state[key], full[key]):
                warnings.warn(f"{what}: its change to unmerged {key} is dropped", stacklevel=2)
        return {k: state[k].to(full[k].dtype).clone() for k in self._merged}

    def _lora(
        self, repo: str, revision: str | None, full: Mapping[str, Tensor], what: str
    ) -> dict[str, Tensor]:
        """``theta_0`` plus a LoRA adapter's dense change (changes to a tied alias go to the
        group's first key, as merging the adapter into the tied weight does)."""
        config, adapter = read_lora(repo, revision, what)
        alias = aliases(self.tied)
        out = {k: full[k] for k in self._merged}
        for key, change in lora_delta(adapter, config, full, what).items():
            key = alias.get(key, key)
            if key not in out:
                warnings.warn(f"{what}: its change to unmerged {key} is dropped", stacklevel=2)
                continue
            out[key] = (out[key].float() + change).to(full[key].dtype)
        return out
