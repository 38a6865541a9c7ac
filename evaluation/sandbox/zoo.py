"""The sandbox CLIP zoo: a small open_clip CLIP and one fine-tuned image encoder per task.

Built on first use from the config's ``recipe`` and the benchmark's resolved task order
(generated or real tasks, :meth:`evaluation.sandbox.benchmark.SandboxBenchmark.task_order`)
and cached under ``<cache>/sandbox_clip/<hash of both>/``: ``pretrained.safetensors`` (the
whole CLIP), ``experts/<task>-train<n_train>.safetensors`` (image encoders fine-tuned on the
benchmark's training draw of ``n_train`` images) and a checksum manifest
(:class:`evaluation.cache.Manifest`) recording, per expert, the pretrained file it was
fine-tuned from. Files are written atomically and recorded only when complete, so an
interrupted build leaves nothing a later run trusts; a file that is unrecorded, fails its
checksum or was fine-tuned from another pretrained model is rebuilt with a warning naming
it. Experts are built per task on demand.

Pretraining: CLIP's symmetric contrastive loss (Radford et al., 2021) on sandbox images
of every task of the order (a real task's from its pretraining part, disjoint from the
benchmark's images, :mod:`evaluation.sandbox.real_tasks`) paired with captions (a random
template of the task filled with the class name); captions of the same class count as
positives of each other. Fine-tuning follows Ilharco et al. (ICLR 2023) and Wang et al.
(ICML 2024): image encoder only, the zero-shot head from the task's templates frozen,
AdamW, cosine schedule with linear warm-up (:mod:`evaluation.training`), on the
benchmark's "train" split (train minus val).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from evaluation.benchmark import Benchmark, Task
from evaluation.cache import Manifest, json_digest, locked
from evaluation.checkpoints import LazySafetensors
from evaluation.clip.heads import zeroshot_head
from evaluation.clip.model import ClipModel, normalise
from evaluation.sandbox.benchmark import SandboxBenchmark
from evaluation.sandbox.config import SandboxClipZooConfig, SandboxRecipe, Schedule
from evaluation.sandbox.data import DATA_VERSION, stable_seed
from evaluation.sandbox.real_tasks import SandboxTask, draw, real_tasks
from evaluation.sandbox.tasks import GENERATORS, IMAGE_SIZE
from evaluation.schemas import check_fields
from evaluation.training import optimise, pinned_threads, warmup_schedule
from evaluation.zoo import Env, Experts

RECIPE_VERSION = 3  # bump when the build procedure changes (3: two threads, fused AdamW)
BUILD_THREADS = 2  # torch threads of pretraining and fine-tuning, whatever the process has:
# the zoo (and the README's table) is then the same on every machine; evaluation uses them all.
# Two: 1.5x faster than one on a 2-core machine (results/performance.md); more than the
# machine has cores only slows the build, never changes it
Tensor = torch.Tensor
log = logging.getLogger(__name__)
preprocess = functools.partial(normalise, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)


def recipe_digest(recipe: SandboxRecipe, tasks: Sequence[SandboxTask]) -> str:
    """Hash of the recipe, the tasks it pretrains on (``mnist`` or the generated ``digits``,
    ...) with their class names and templates (captions and zero-shot heads are made of
    them), and the code versions that turn them into a zoo."""
    return json_digest(_manifest_recipe(recipe, tasks))[:16]


def _manifest_recipe(recipe: SandboxRecipe, tasks: Sequence[SandboxTask]) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "data_version": DATA_VERSION,
        "recipe": dataclasses.asdict(recipe),
        "tasks": [t.name for t in tasks],
        "task_text": {t.name: [list(t.classnames), list(t.templates)] for t in tasks},
    }


def build_model(recipe: SandboxRecipe, vocab_size: int) -> CLIP:
    """A randomly initialised open_clip CLIP of the recipe's architecture (seeded)."""
    v, t = recipe.vision, recipe.text
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return CLIP(
            recipe.embed_dim,
            CLIPVisionCfg(
                layers=v.layers,
                width=v.width,
                head_width=v.head_width,
                patch_size=v.patch_size,
                image_size=IMAGE_SIZE,
            ),
            CLIPTextCfg(
                context_length=t.context_length,
                vocab_size=vocab_size,
                width=t.width,
                heads=t.heads,
                layers=t.layers,
            ),
        )


def _train(
    params: list[torch.nn.Parameter],
    schedule: Schedule,
    n_samples: int,
    loss_fn: Callable[[Tensor], Tensor],
    seed: int,
    desc: str,
    progress: bool,
    after_step: Callable[[], None] = lambda: None,
) -> None:
    """Minimise ``loss_fn(batch_indices)`` over shuffled epochs of ``n_samples`` with AdamW
    and the warm-up cosine schedule (:func:`evaluation.training.optimise`); AdamW's fused
    kernel (torch's): 5-10% faster per step on the CPU than its loop over tensors (measured:
    pretraining 0.204 vs 0.225 s at one thread, 0.134-0.147 vs 0.146-0.153 s at two)."""
    opt = torch.optim.AdamW(
        params, lr=schedule.lr, weight_decay=schedule.weight_decay, fused=True
    )
    gen = torch.Generator().manual_seed(seed)
    epochs = -(-schedule.steps * schedule.batch_size // n_samples)
    order = torch.cat([torch.randperm(n_samples, generator=gen) for _ in range(epochs)])

    def losses() -> Iterator[Callable[[], Tensor]]:
        for step in range(schedule.steps):
            idx = order[step * schedule.batch_size : (step + 1) * schedule.batch_size]
            yield functools.partial(_backward, loss_fn, idx)

    optimise(
        opt, losses(), warmup_schedule(schedule.warmup, schedule.steps, "cosine"),
        total=schedule.steps, desc=desc, progress=progress, after_step=after_step,
    )  # fmt: skip


def _backward(loss_fn: Callable[[Tensor], Tensor], idx: Tensor) -> Tensor:
    loss = loss_fn(idx)
    loss.backward()
    return loss


def _captions(generators: Sequence[SandboxTask]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All captions (class-major, template-minor) with, per global class, the index of its
    first caption and its number of templates."""
    captions, first, count = [], [], []
    for task in generators:
        for name in task.classnames:
            first.append(len(captions))
            count.append(len(task.templates))
            captions += [t.format(name) for t in task.templates]
    return captions, np.array(first), np.array(count)


def check_captions(tokenizer: SimpleTokenizer, context_length: int) -> None:
    """Raise if a caption of a sandbox task (generated or real) would be cut by
    ``context_length`` tokens."""
    every = _captions([*GENERATORS, *real_tasks()])[0]
    tokens = {c: len(tokenizer.encode(c)) + 2 for c in every}  # start, end
    longest = max(tokens, key=tokens.__getitem__)
    if tokens[longest] > context_length:
        raise ValueError(
            f"model.recipe.text.context_length={context_length} cuts the caption "
            f"{longest!r} ({tokens[longest]} tokens)"
        )


def pretrained_classes(task: SandboxTask, recipe: SandboxRecipe) -> list[int]:
    """The classes of ``task`` that pretraining shows and names (a seeded random subset)."""
    k = len(task.classnames)
    n = min(k, max(1, round(recipe.pretrain.class_fraction * k)))
    order = np.random.default_rng(stable_seed("pretrain-classes", task.name, recipe.seed))
    return sorted(order.permutation(k)[:n].tolist())


def pretrain(
    model: CLIP,
    tokenizer: SimpleTokenizer,
    recipe: SandboxRecipe,
    tasks: Sequence[SandboxTask],
    progress: bool,
) -> None:
    """Contrastive pretraining of ``model`` on captioned images of every task of ``tasks``
    (real ones from their pretraining part), on the device of ``model``'s parameters (the
    zoo builds on the CPU; ``benchmarks/sandbox_recipe.py`` may use a GPU)."""
    p = recipe.pretrain
    device = next(model.parameters()).device
    captions, first, count = _captions(tasks)
    tokens = tokenizer(captions).to(device)
    images, classes, offset = [], [], 0
    for task in tqdm(tasks, desc="sandbox_clip pretraining data", disable=not progress):
        seed = stable_seed("pretrain", task.name, recipe.seed)
        x, y = draw(task, p.samples_per_task, seed, "pretrain", pretrained_classes(task, recipe),
                    "model.recipe.pretrain.samples_per_task")  # fmt: skip
        images.append(torch.from_numpy(x))
        classes.append(torch.from_numpy(y) + offset)
        offset += len(task.classnames)
    x, cls = torch.cat(images), torch.cat(classes)
    first, count = torch.from_numpy(first), torch.from_numpy(count)
    gen = torch.Generator().manual_seed(stable_seed("captions", recipe.seed))

    def loss_fn(idx: Tensor) -> Tensor:
        c = cls[idx]
        pick = (torch.rand(len(idx), generator=gen) * count[c]).long()
        img = F.normalize(model.encode_image(preprocess(x[idx].to(device))), dim=-1)
        txt = F.normalize(model.encode_text(tokens[(first[c] + pick).to(device)]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        same = (c[:, None] == c[None, :]).float().to(device)
        target = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def clamp() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    model.train()
    _train(
        list(model.parameters()), p, len(x), loss_fn, stable_seed("pretrain-order", recipe.seed),
        "sandbox_clip pretraining", progress, clamp,
    )  # fmt: skip
    model.eval()


def finetune(
    model: CLIP,
    tokenizer: SimpleTokenizer,
    task: SandboxTask,
    recipe: SandboxRecipe,
    train: tuple[Tensor, Tensor],
    progress: bool,
) -> dict[str, Tensor]:
    """State of ``model.visual`` fine-tuned on ``train`` = (images, labels) of ``task``,
    its zero-shot head frozen, on the device of ``model``'s parameters; returned on the CPU."""
    images, labels = train
    device = next(model.parameters()).device
    head = zeroshot_head(model, tokenizer, task.classnames, task.templates, task.name).to(device)
    visual = copy.deepcopy(model.visual).train()

    def loss_fn(idx: Tensor) -> Tensor:
        logits = head(visual(preprocess(images[idx].to(device))))
        return F.cross_entropy(logits, labels[idx].to(device))

    _train(
        list(visual.parameters()), recipe.finetune, len(labels), loss_fn,
        stable_seed("finetune", task.name, recipe.seed), f"sandbox_clip expert {task.name}",
        progress,
    )  # fmt: skip
    return {k: v.detach().cpu().contiguous() for k, v in visual.state_dict().items()}


@dataclasses.dataclass
class SandboxClipZoo(SandboxClipZooConfig):
    """The zoo of its config (fields: :class:`evaluation.sandbox.config.SandboxClipZooConfig`);
    a bad recipe fails on construction, naming the key."""

    regime = "task_vectors"

    def __post_init__(self) -> None:
        check_fields(self, SandboxClipZooConfig, "model")
        self.recipe.check(IMAGE_SIZE)
        self.tokenizer = SimpleTokenizer(context_length=self.recipe.text.context_length)
        check_captions(self.tokenizer, self.recipe.text.context_length)

    def load(self, benchmark: Benchmark, tasks: Sequence[Task], env: Env) -> Experts:
        """The pretrained image encoder and the experts of ``tasks``, each fine-tuned on
        ``benchmark``'s training draw, built (or completed) on first use."""
        if not isinstance(benchmark, SandboxBenchmark):
            raise ValueError(
                f"model {self.name!r} trains its experts on sandbox tasks; benchmark "
                f"{benchmark.name!r} is not a sandbox benchmark (choose benchmark=sandbox8, "
                "sandbox14 or sandbox20)"
            )
        order = benchmark.task_order()
        generators = [benchmark.sandbox_task(t.name) for t in tasks]
        names = [t.name for t in order]
        recipe, digest = self.recipe, recipe_digest(self.recipe, order)
        root = Path(env.cache_dir) / "sandbox_clip" / digest
        model = build_model(recipe, self.tokenizer.vocab_size).eval()
        experts = {}
        with locked(root):
            manifest = Manifest(root, _manifest_recipe(recipe, order), "sandbox zoo")
            if not manifest.trusted("pretrained.safetensors"):
                log.info("sandbox_clip: pretraining on %s into %s", ", ".join(names), root)
                with pinned_threads(BUILD_THREADS):
                    pretrain(model, self.tokenizer, recipe, order, env.progress)
                with manifest.writing("pretrained.safetensors") as tmp:
                    save_file(model.state_dict(), str(tmp))
            model.load_state_dict(load_file(root / "pretrained.safetensors"))
            model.eval()
            pretrained_sha = manifest.files["pretrained.safetensors"]["sha256"]
            for task, generator in zip(tasks, generators, strict=True):
                name = f"experts/{task.name}-train{benchmark.n_train}.safetensors"
                if not self._trusted(manifest, name, pretrained_sha):
                    log.info("sandbox_clip: fine-tuning the %s expert", task.name)
                    train = benchmark.load_split(task, "train", env.cache_dir)
                    with pinned_threads(BUILD_THREADS):
                        state = finetune(
                            model, self.tokenizer, generator, recipe, train, env.progress
                        )
                    record = {"task": task.name, "n_train": benchmark.n_train}
                    with manifest.writing(name, pretrained=pretrained_sha, **record) as tmp:
                        save_file(state, str(tmp))
                experts[task.name] = LazySafetensors(root / name)
        clip = ClipModel(model, self.tokenizer, preprocess, f"sandbox_clip-{digest}")
        # a copy: loading other weights into model.visual must not change theta_0
        pretrained = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
        return clip.experts(pretrained, experts, benchmark)

    @staticmethod
    def _trusted(manifest: Manifest, name: str, pretrained_sha: str) -> bool:
        """Whether expert ``name`` is intact and was fine-tuned from this pretrained file."""
        if not manifest.trusted(name):
            return False
        if manifest.files[name].get("pretrained") != pretrained_sha:
            warnings.warn(
                f"sandbox zoo cache file {manifest.root / name} was fine-tuned from another "
                "pretrained model; rebuilding",
                stacklevel=3,
            )
            return False
        return True
