"""The open_clip CLIP zoo (``conf/model/clip_vit_*.yaml``): a pretrained CLIP plus one
fine-tuned image encoder per task, from one of two expert families (``model.experts``):

* ``tall_masks``: the TALL masks paper's checkpoints (Wang et al., ICML 2024), hub repo
  ``nik-dim/tall_masks`` (``model.tall_masks.repo``), file
  ``<arch>/<Task>Val/nonlinear_finetuned.{safetensors,pt}`` (``folder`` and ``files`` are
  configurable); theta_0 is open_clip's ``pretrained`` weights, which the authors
  fine-tuned from.
* ``hf_transformers``: transformers CLIP vision experts ``<owner>/<name>_<task slug>``
  (``tanganke/clip-vit-base-patch32_sun397``, ...) fine-tuned from ``<base_owner>/<name>``
  (``openai/clip-vit-base-patch32``), mapped into open_clip's key space; theta_0 is that
  base model's image encoder. Experts without a projection take the base's.

Checkpoint ids are generated from (architecture, task); ``model.expert_sources[task]``
replaces one, and any repo, owner or id may be a local directory with the hub layout. Every
task must get its own expert: a ``folder`` template without ``{task}`` (that is not
overridden for every task by ``expert_sources``) or two tasks resolving to one location fail
before anything is read, naming the key. The hf_transformers experts were fine-tuned on
their datasets' whole train split (their model cards), which holds the paper's val split:
a run selecting on that val is warned and pointed at ``benchmark.val_from=test``.
Each expert is read once (safely, :mod:`evaluation.clip.checkpoints`), checked against the
architecture and stored as safetensors in open_clip's visual keys under
``<cache>/clip_experts/<arch>/<family>/`` (checksummed, :class:`evaluation.cache.Manifest`);
runs read it from there lazily, key by key. Hub files are keyed by (repo, file, revision):
pin ``revision`` to notice upstream changes.
"""

from __future__ import annotations

import dataclasses
import functools
import string
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from evaluation.benchmark import Benchmark, Task
from evaluation.cache import Manifest, file_sha256, json_digest, locked
from evaluation.checkpoints import LazySafetensors, resolve_file
from evaluation.clip.checkpoints import hf_to_open_clip, load_visual, visual_from_open_clip
from evaluation.clip.config import OpenClipZooConfig
from evaluation.clip.model import ClipModel, normalise
from evaluation.clip.tasks import DATASETS, dataset_spec
from evaluation.schemas import check_fields
from evaluation.zoo import Env, Experts

Tensor = torch.Tensor
FAMILIES = ("tall_masks", "hf_transformers")
HF_NAMES = {  # open_clip architecture -> transformers model name
    "ViT-B-32": "clip-vit-base-patch32",
    "ViT-B-16": "clip-vit-base-patch16",
    "ViT-L-14": "clip-vit-large-patch14",
}
HF_FILES = ("model.safetensors", "pytorch_model.bin")
EXPERT_CACHE_VERSION = 2
FOLDER_FIELDS = ("arch", "task")  # placeholders of model.tall_masks.folder


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _from_hf(
    state: Mapping[str, Tensor], base: Mapping[str, Tensor] | None, where: str
) -> dict[str, Tensor]:
    """open_clip visual keys of a transformers state; experts without a projection (plain
    ``CLIPVisionModel``) share the base model's, which fine-tuning left untouched."""
    return {**({"proj": base["proj"]} if base is not None else {}), **hf_to_open_clip(state, where)}


@dataclasses.dataclass
class OpenClipZoo(OpenClipZooConfig):
    """The zoo of its config (fields: :class:`evaluation.clip.config.OpenClipZooConfig`);
    bad values fail on construction, naming the key."""

    regime = "task_vectors"

    def __post_init__(self) -> None:
        check_fields(self, OpenClipZooConfig, "model")
        if self.experts not in FAMILIES:
            raise ValueError(
                f"model.experts={self.experts!r} is unknown; valid: {', '.join(FAMILIES)}"
            )
        if self.arch_config and not Path(self.arch_config).expanduser().is_file():
            raise FileNotFoundError(f"model.arch_config: {self.arch_config} does not exist")

    def load_pretrained(self) -> ClipModel:
        """The pretrained open_clip CLIP, its tokenizer and preprocessing; its ``weights_id``
        identifies the weights (the zero-shot head cache key)."""
        import open_clip

        identity = [self.arch, str(self.pretrained), f"quick_gelu={self.quick_gelu}"]
        if self.arch_config:
            path = Path(self.arch_config).expanduser()
            open_clip.add_model_config(path)
            identity.append(file_sha256(path)[:16])
        if Path(self.pretrained).expanduser().is_file():
            identity[1] = _file_identity(Path(self.pretrained).expanduser())
        local = Path(self.pretrained).expanduser().is_file()
        try:
            model = open_clip.create_model(
                self.arch, pretrained=self.pretrained, force_quick_gelu=self.quick_gelu
            )
        except Exception as err:  # a short or damaged file fails deep in torch (OSError, ...)
            reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
            hint = (
                "The file may be truncated or corrupt, or hold another architecture: replace "
                "it with an intact copy."
                if local
                else "A pretrained tag downloads its weights once (network needed); a local "
                "checkpoint file works offline."
            )
            raise RuntimeError(
                f"model {self.name!r}: cannot create open_clip {self.arch!r} with "
                f"model.pretrained={self.pretrained!r} ({reason}). {hint}"
            ) from err
        pp = open_clip.get_model_preprocess_cfg(model)
        if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation") != "bicubic":
            raise ValueError(
                f"model {self.name!r}: preprocessing {pp} is not open_clip's shortest-side "
                "bicubic resize, which the benchmark's data cache assumes"
            )
        return ClipModel(
            model=model.eval(),
            tokenizer=open_clip.get_tokenizer(self.arch),
            preprocess=functools.partial(normalise, mean=tuple(pp["mean"]), std=tuple(pp["std"])),
            weights_id="open_clip:" + ":".join(identity),
        )

    def load(self, benchmark: Benchmark, tasks: Sequence[Task], env: Env) -> Experts:
        """theta_0 and the experts of ``tasks`` (image encoders, lazily read from the expert
        cache), scored on ``benchmark``; bad task names and missing experts fail before any
        download."""
        self.check_locations([t.name for t in tasks])
        if self.experts == "hf_transformers" and getattr(benchmark, "val_from", "train") == "train":
            warnings.warn(
                f"model {self.name!r}: the hf_transformers experts were fine-tuned on their "
                "datasets' whole train split, which holds the val split that selects "
                f"hyperparameters on benchmark {benchmark.name!r}: val accuracies are "
                "optimistic and selection may overfit. Hold val out of the test split instead "
                "with benchmark.val_from=test (test accuracy is then on the other 90% of test).",
                stacklevel=2,
            )
        clip = self.load_pretrained()
        expected = {k: v.detach().clone() for k, v in clip.model.visual.state_dict().items()}
        if self.experts == "hf_transformers":
            base = self._expert(None, expected, env.cache_dir)
            expected = {k: base[k] for k in expected}
            clip.model.visual.load_state_dict(expected)
        experts = {
            t.name: self._expert(t.name, expected, env.cache_dir, base=expected)
            for t in tqdm(tasks, desc=f"{self.name} experts", disable=not env.progress)
        }
        return clip.experts(expected, experts, benchmark)

    def check_locations(self, tasks: Sequence[str]) -> None:
        """Raise ``ValueError`` naming the key unless every task in ``tasks`` gets an expert
        location of its own: ``model.expert_sources`` names known tasks, the ``folder``
        template has only known placeholders and holds ``{task}`` (unless every task is
        given in ``expert_sources``), and no two tasks resolve to one file location."""
        unknown = sorted(set(self.expert_sources) - set(DATASETS))
        if unknown:
            raise ValueError(
                f"model.expert_sources names unknown task {unknown[0]!r}; valid: "
                f"{', '.join(DATASETS)}"
            )
        if self.experts == "tall_masks":
            folder = self.tall_masks.folder
            fields = {f for _, f, _, _ in string.Formatter().parse(folder) if f is not None}
            if bad := sorted(fields - set(FOLDER_FIELDS)):
                raise ValueError(
                    f"model.tall_masks.folder={folder!r} has unknown placeholder {{{bad[0]}}}; "
                    f"valid: {', '.join('{' + f + '}' for f in FOLDER_FIELDS)}"
                )
            generated = [t for t in tasks if not self.expert_sources.get(t)]
            if "task" not in fields and generated:
                raise ValueError(
                    f"model.tall_masks.folder={folder!r} has no {{task}}, so every task would "
                    f"read the same expert ({', '.join(generated)}); write it as a template "
                    "with {task} (default '{arch}/{task}Val'), or give each task's expert in "
                    "model.expert_sources.<task>"
                )
        seen: dict[tuple, str] = {}
        for task in tasks:
            repo, files, revision = self._location(task)
            local = Path(repo).expanduser()
            key = (str(local.resolve()) if local.exists() else repo, files, revision)
            if key in seen:
                raise ValueError(
                    f"tasks {seen[key]} and {task} would read the same expert ({repo}, "
                    f"{files[0]}): check model.expert_sources and model.{self.experts}"
                )
            seen[key] = task

    def _location(self, task: str | None) -> tuple[str, tuple[str, ...], str | None]:
        """(repo or local path, candidate files in it, revision) of ``task``'s expert; ``task``
        ``None`` is the base model of the hf_transformers family."""
        override = self.expert_sources.get(task) if task else None
        if self.experts == "tall_masks":
            source = self.tall_masks
            names = tuple(source.files)
            if override:
                return str(override), names, source.revision
            folder = source.folder.format(arch=self.arch, task=task)
            return source.repo, tuple(f"{folder}/{name}" for name in names), source.revision
        source = self.hf_transformers
        name = source.name or HF_NAMES.get(self.arch)
        if not name:
            raise ValueError(
                f"model {self.name!r}: no transformers name for arch {self.arch!r}; set "
                f"model.hf_transformers.name (known: {HF_NAMES})"
            )
        if task is None:
            return f"{source.base_owner}/{name}", HF_FILES, source.revision
        slug = dataset_spec(task).hf_slug
        if override:
            return str(override), HF_FILES, source.revision
        if slug is None:
            raise ValueError(
                f"model {self.name!r}: the hf_transformers family has no expert for task "
                f"{task!r}; use model.experts=tall_masks, model.expert_sources.{task}=<id or "
                "path>, or a benchmark without it (the tanganke experts use EMNISTLetters for "
                "EMNIST)"
            )
        return f"{source.owner}/{name}_{slug}", HF_FILES, source.revision

    def _expert(
        self,
        task: str | None,
        expected: Mapping[str, Tensor],
        cache_dir: Path,
        base: Mapping[str, Tensor] | None = None,
    ) -> LazySafetensors:
        """``task``'s expert image encoder (``None``: the hf_transformers base model) in
        open_clip visual keys, read once into the expert cache and then lazily from there."""
        repo, files, revision = self._location(task)
        what = f"model {self.name!r} {self.experts} " + (
            "base model" if task is None else f"expert {task}"
        )
        local = Path(repo).expanduser()
        source = local if local.is_file() else None
        if local.is_dir():
            source = resolve_file(str(local), files, what=what)
        identity = {
            "repo": repo, "files": files, "revision": revision,
            "file": _file_identity(source) if source else None,
            "shapes": {k: list(v.shape) for k, v in expected.items()},
        }  # fmt: skip
        root = Path(cache_dir) / "clip_experts" / self.arch / self.experts
        name = f"{task or 'base'}-{json_digest(identity)[:16]}.safetensors"
        with locked(root):
            manifest = Manifest(root, {"version": EXPERT_CACHE_VERSION}, "CLIP expert")
            if not manifest.trusted(name):
                source = source or resolve_file(repo, files, revision, what)
                convert = (
                    visual_from_open_clip
                    if self.experts == "tall_masks"
                    else functools.partial(_from_hf, base=base, where=what)
                )
                state = load_visual(source, expected, convert, self.allow_pickle, what)
                with manifest.writing(name, task=task, repo=repo, revision=revision) as tmp:
                    save_file(state, str(tmp))
        return LazySafetensors(root / name)
