"""The sandbox CLIP zoo: a small open_clip CLIP and one fine-tuned image encoder per task.

Built on first use from the config's ``recipe`` and cached under
``<cache>/sandbox_clip/<recipe hash>/``: ``pretrained.safetensors`` (the whole CLIP),
``experts/<task>.safetensors`` (image encoders) and ``manifest.json`` (recipe and SHA-256
of every file). Files are written atomically and recorded in the manifest only after
they are complete, so an interrupted build leaves nothing a later run trusts; a file that
is unrecorded, fails its checksum or has the wrong recipe, keys or shapes is rebuilt with
a warning naming it. Experts are built per task on demand.

Pretraining: CLIP's symmetric contrastive loss (Radford et al., 2021) on sandbox images
of every task paired with captions (a random template of the task filled with the class
name); captions of the same class count as positives of each other. Fine-tuning follows
Ilharco et al. (ICLR 2023) and Wang et al. (ICML 2024): image encoder only, the zero-shot
head from the task's templates frozen, AdamW (weight decay 0.1), cosine schedule with
linear warm-up, on the "train" split (train minus val).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from evaluation.cache import atomic_path, atomic_write_text, cache_root
from evaluation.heads import zeroshot_head
from evaluation.sandbox.data import DATA_VERSION, load_split, stable_seed, tensor_digest
from evaluation.sandbox.tasks import IMAGE_SIZE, TASKS, Task, get_task
from evaluation.zoo import ClipZoo

RECIPE_VERSION = 1  # bump when the build procedure changes
Tensor = torch.Tensor
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Vision:
    patch_size: int
    width: int
    layers: int
    head_width: int


@dataclasses.dataclass(frozen=True)
class Text:
    context_length: int
    width: int
    layers: int
    heads: int


@dataclasses.dataclass(frozen=True)
class Data:
    n_train: int
    n_test: int


@dataclasses.dataclass(frozen=True)
class Schedule:
    """AdamW for ``steps`` steps of ``batch_size``; lr warms up linearly, then cosine."""

    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float


@dataclasses.dataclass(frozen=True)
class Pretrain(Schedule):
    """``samples_per_task`` captioned images of a fraction ``class_fraction`` of each task's
    classes (the rest are never named in pretraining, as web data names only part of a
    downstream label space)."""

    samples_per_task: int
    class_fraction: float


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that changes the built zoo (conf/model/sandbox_clip.yaml: ``recipe``)."""

    seed: int
    embed_dim: int
    vision: Vision
    text: Text
    data: Data
    pretrain: Pretrain
    finetune: Schedule

    @classmethod
    def from_mapping(cls, recipe: Mapping) -> Recipe:
        """Parse and check a recipe mapping; errors name the offending key."""
        out = _parse(cls, recipe, "recipe")
        checks = [
            (IMAGE_SIZE % out.vision.patch_size == 0, "vision.patch_size must divide 32"),
            (out.vision.width % out.vision.head_width == 0, "vision.head_width must divide width"),
            (out.text.width % out.text.heads == 0, "text.heads must divide text.width"),
            (out.pretrain.warmup < out.pretrain.steps, "pretrain.warmup must be < steps"),
            (out.pretrain.class_fraction <= 1, "pretrain.class_fraction must be <= 1"),
            (out.finetune.warmup < out.finetune.steps, "finetune.warmup must be < steps"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"sandbox_clip recipe: {message}")
        return out

    def digest(self) -> str:
        """Hash of the recipe and the code versions that turn it into a zoo."""
        return hashlib.sha256(self.json().encode()).hexdigest()[:16]

    def json(self) -> str:
        return json.dumps(
            {
                "recipe_version": RECIPE_VERSION,
                "data_version": DATA_VERSION,
                "recipe": dataclasses.asdict(self),
            },
            sort_keys=True,
        )


_MAY_BE_ZERO = {"seed", "warmup", "weight_decay"}


def _parse(cls: type, value: object, where: str) -> object:
    if not isinstance(value, Mapping):
        raise TypeError(f"sandbox_clip {where} must be a mapping, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(map(str, value)) - set(names))
    missing = [n for n in names if n not in value]
    if unknown or missing:
        bad = (
            f"unknown key {where}.{unknown[0]}" if unknown else f"missing key {where}.{missing[0]}"
        )
        raise KeyError(f"sandbox_clip {bad}; {where} takes: {', '.join(names)}")
    out = {}
    for name in names:
        kind, v, key = hints[name], value[name], f"{where}.{name}"
        if dataclasses.is_dataclass(kind):
            out[name] = _parse(kind, v, key)
            continue
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        if not numeric or (kind is int and not isinstance(v, int)):
            raise TypeError(f"sandbox_clip {key} must be {kind.__name__}, got {v!r}")
        if v < 0 or (v == 0 and name not in _MAY_BE_ZERO):
            raise ValueError(
                f"sandbox_clip {key} must be {'>=' if name in _MAY_BE_ZERO else '>'} 0"
            )
        out[name] = kind(v)
    return cls(**out)


def preprocess(images: Tensor) -> Tensor:
    """uint8 images (N, 3, H, W) -> float input normalised with CLIP's mean and std."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"sandbox_clip expects uint8 images (N, 3, H, W), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def build_model(recipe: Recipe, vocab_size: int) -> CLIP:
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


def _warmup_cosine(warmup: int, steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def _optimise(
    params: list[torch.nn.Parameter],
    schedule: Schedule,
    n_samples: int,
    loss_fn: Callable[[Tensor], Tensor],
    seed: int,
    desc: str,
    progress: bool,
    after_step: Callable[[], None] = lambda: None,
) -> None:
    """Minimise ``loss_fn(batch_indices)`` over shuffled epochs of ``n_samples``."""
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(schedule.warmup, schedule.steps))
    gen = torch.Generator().manual_seed(seed)
    epochs = -(-schedule.steps * schedule.batch_size // n_samples)
    order = torch.cat([torch.randperm(n_samples, generator=gen) for _ in range(epochs)])
    bar = tqdm(range(schedule.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        loss = loss_fn(order[step * schedule.batch_size : (step + 1) * schedule.batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        after_step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")


def _captions(tasks: Sequence[Task]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All captions (class-major, template-minor) with, per global class, the index of its
    first caption and its number of templates."""
    captions, first, count = [], [], []
    for task in tasks:
        for name in task.classnames:
            first.append(len(captions))
            count.append(len(task.templates))
            captions += [t.format(name) for t in task.templates]
    return captions, np.array(first), np.array(count)


def check_captions(tokenizer: SimpleTokenizer, context_length: int) -> None:
    """Raise if a sandbox caption would be cut by ``context_length`` tokens."""
    tokens = {c: len(tokenizer.encode(c)) + 2 for c in _captions(TASKS)[0]}  # + start, end
    longest = max(tokens, key=tokens.__getitem__)
    if tokens[longest] > context_length:
        raise ValueError(
            f"sandbox_clip recipe text.context_length={context_length} cuts the caption "
            f"{longest!r} ({tokens[longest]} tokens)"
        )


def pretrained_classes(task: Task, recipe: Recipe) -> list[int]:
    """The classes of ``task`` that pretraining shows and names (a seeded random subset)."""
    k = len(task.classnames)
    n = min(k, max(1, round(recipe.pretrain.class_fraction * k)))
    order = np.random.default_rng(stable_seed("pretrain-classes", task.name, recipe.seed))
    return sorted(order.permutation(k)[:n].tolist())


def pretrain(model: CLIP, tokenizer: SimpleTokenizer, recipe: Recipe, progress: bool) -> None:
    """Contrastive pretraining of ``model`` on captioned images of every sandbox task."""
    p = recipe.pretrain
    captions, first, count = _captions(TASKS)
    tokens = tokenizer(captions)
    images, classes, offset = [], [], 0
    for task in tqdm(TASKS, desc="sandbox_clip pretraining data", disable=not progress):
        seed = stable_seed("pretrain", task.name, recipe.seed)
        x, y = task.sample(p.samples_per_task, seed, classes=pretrained_classes(task, recipe))
        images.append(torch.from_numpy(x))
        classes.append(torch.from_numpy(y) + offset)
        offset += len(task.classnames)
    x, cls = torch.cat(images), torch.cat(classes)
    first, count = torch.from_numpy(first), torch.from_numpy(count)
    gen = torch.Generator().manual_seed(stable_seed("captions", recipe.seed))

    def loss_fn(idx: Tensor) -> Tensor:
        c = cls[idx]
        pick = (torch.rand(len(idx), generator=gen) * count[c]).long()
        img = F.normalize(model.encode_image(preprocess(x[idx])), dim=-1)
        txt = F.normalize(model.encode_text(tokens[first[c] + pick]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        same = (c[:, None] == c[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def clamp() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    model.train()
    _optimise(
        list(model.parameters()), p, len(x), loss_fn, stable_seed("pretrain-order", recipe.seed),
        "sandbox_clip pretraining", progress, clamp,
    )  # fmt: skip
    model.eval()


def finetune(
    model: CLIP,
    tokenizer: SimpleTokenizer,
    task: Task,
    recipe: Recipe,
    cache_dir: Path,
    progress: bool,
) -> dict[str, Tensor]:
    """State of ``model.visual`` fine-tuned on ``task``'s train split, zero-shot head frozen."""
    images, labels = load_split(task.name, "train", cache_dir, **dataclasses.asdict(recipe.data))
    head = zeroshot_head(model, tokenizer, task.classnames, task.templates)
    visual = copy.deepcopy(model.visual).train()

    def loss_fn(idx: Tensor) -> Tensor:
        return F.cross_entropy(head(visual(preprocess(images[idx]))), labels[idx])

    _optimise(
        list(visual.parameters()), recipe.finetune, len(labels), loss_fn,
        stable_seed("finetune", task.name, recipe.seed), f"sandbox_clip expert {task.name}",
        progress,
    )  # fmt: skip
    return {k: v.detach().contiguous() for k, v in visual.state_dict().items()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SafetensorsState(Mapping[str, Tensor]):
    """A read-only state dict that loads each tensor from a safetensors file on access."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with safe_open(str(self.path), "pt") as f:
            self._keys = list(f.keys())
        self._keyset = set(self._keys)

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._keyset:
            raise KeyError(f"{key!r} is not in {self.path}")
        with safe_open(str(self.path), "pt") as f:
            return f.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _Store:
    """One recipe's cache directory: files are trusted only as the manifest records them."""

    def __init__(self, root: Path, recipe: Recipe) -> None:
        self.root, self.recipe_json, self.digest = root, recipe.json(), recipe.digest()
        self.manifest_path = root / "manifest.json"
        self.files: dict[str, str] = self._read_manifest()

    def _read_manifest(self) -> dict[str, str]:
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if manifest["recipe"] != json.loads(self.recipe_json):
                problem = "was written for another recipe"
            elif not all(isinstance(v, str) for v in manifest["files"].values()):
                problem = "has malformed checksums"
            else:
                return dict(manifest["files"])
        except Exception as exc:  # an unreadable manifest trusts nothing
            problem = f"is unreadable ({type(exc).__name__}: {exc})"
        warnings.warn(
            f"sandbox zoo manifest {self.manifest_path} {problem}; rebuilding its files",
            stacklevel=4,
        )
        return {}

    def verify(self, name: str, expected: Mapping[str, Tensor], meta: Mapping[str, str]) -> bool:
        """Whether file ``name`` can be used: recorded, checksum, metadata, keys and shapes."""
        path = self.root / name
        if not path.exists():
            if name in self.files:
                warnings.warn(
                    f"sandbox zoo cache file {path} is missing; rebuilding it", stacklevel=3
                )
            return False
        problem = None
        if name not in self.files:
            problem = "is not recorded in the manifest (left by an interrupted build?)"
        elif file_sha256(path) != self.files[name]:
            problem = "fails its checksum"
        else:
            try:
                with safe_open(str(path), "pt") as f:
                    found_meta = f.metadata() or {}
                    shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                              for k in f.keys()}  # fmt: skip
            except Exception as exc:
                found_meta, shapes = {}, {}
                problem = f"is unreadable ({type(exc).__name__}: {exc})"
            want = {k: (tuple(v.shape), _safetensors_dtype(v.dtype)) for k, v in expected.items()}
            if problem is None and any(found_meta.get(k) != v for k, v in meta.items()):
                problem = "was built from another recipe or pretrained model"
            elif problem is None and shapes != want:
                diff = sorted(set(shapes.items()) ^ set(want.items()))
                problem = f"has the wrong keys or shapes (first difference: {diff[0][0]!r})"
        if problem is not None:
            warnings.warn(f"sandbox zoo cache file {path} {problem}; rebuilding it", stacklevel=3)
            return False
        return True

    def save(self, name: str, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
        """Write ``name`` atomically, then record its checksum in the manifest."""
        with atomic_path(self.root / name) as tmp:
            save_file(dict(tensors), str(tmp), metadata=dict(meta))
            digest = file_sha256(tmp)
        self.files[name] = digest
        manifest = {"recipe": json.loads(self.recipe_json), "files": self.files}
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def _safetensors_dtype(dtype: torch.dtype) -> str:
    return _DTYPES.get(dtype, str(dtype))


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` so concurrent builds do not interleave."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_sandbox_clip(
    task_names: Sequence[str],
    cache_dir: str | os.PathLike | None,
    recipe: Mapping,
    progress: bool = True,
) -> ClipZoo:
    """The sandbox CLIP zoo for ``task_names``, built (or completed) on first use."""
    rec = Recipe.from_mapping(recipe)
    tasks = [get_task(name) for name in task_names]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"sandbox_clip: duplicate task names in {list(task_names)}")
    tokenizer = SimpleTokenizer(context_length=rec.text.context_length)
    check_captions(tokenizer, rec.text.context_length)
    cache = cache_root(cache_dir)
    root = cache / "sandbox_clip" / rec.digest()
    model = build_model(rec, tokenizer.vocab_size).eval()
    with _locked(root):
        store = _Store(root, rec)
        meta = {"recipe": rec.digest()}
        if not store.verify("pretrained.safetensors", model.state_dict(), meta):
            log.info("sandbox_clip: pretraining into %s", root)
            pretrain(model, tokenizer, rec, progress)
            store.save("pretrained.safetensors", model.state_dict(), meta)
        model.load_state_dict(load_file(root / "pretrained.safetensors"))
        model.eval()
        meta = {**meta, "pretrained": tensor_digest(model.state_dict())}
        experts = {}
        for task in tasks:
            name = f"experts/{task.name}.safetensors"
            if not store.verify(name, model.visual.state_dict(), {**meta, "task": task.name}):
                log.info("sandbox_clip: fine-tuning the %s expert", task.name)
                state = finetune(model, tokenizer, task, rec, cache, progress)
                store.save(name, state, {**meta, "task": task.name})
            experts[task.name] = SafetensorsState(root / name)
    return ClipZoo(
        name=f"sandbox_clip-{rec.digest()}",  # identifies the weights (head cache key)
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess,
        # a copy: loading other weights into model.visual must not change theta_0
        pretrained={k: v.detach().clone() for k, v in model.visual.state_dict().items()},
        experts=experts,
    )
