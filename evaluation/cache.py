"""mergelab's cache and result files: one home for the cache root, atomic writes, digests,
checksum manifests and build locks.

A cached artefact is trusted only as a :class:`Manifest` records it: files are written
through a temporary file and a rename, then their SHA-256 is recorded, both in a sidecar
beside the file (``<name>.record.json``) and in the directory's ``manifest.json``; a file
that is unrecorded (left by an interrupted build) or fails its checksum is rebuilt, with a
warning naming it. A lost or corrupt ``manifest.json`` is rebuilt from the sidecars of the
files that still match them, so intact files are kept. A complete cache can be used
read-only (no lock, nothing written).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporary files of :func:`atomic_path` in ``directory`` whose writing process
    is gone (killed mid-write); those of live processes are left alone."""
    for tmp in Path(directory).glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 3 else ""
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.<name>.<pid>.<random>.tmp``); rename it to
    ``path`` only on success, with the permissions the umask gives new files (mkstemp
    alone would leave them 0600). Stale temporaries of killed writers are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def cache_root(path: str | os.PathLike | None = None) -> Path:
    """mergelab's cache directory: ``path`` if given, else $MERGELAB_CACHE_DIR, else
    $XDG_CACHE_HOME/mergelab, else ~/.cache/mergelab."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("MERGELAB_CACHE_DIR"):
        return Path(os.environ["MERGELAB_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "mergelab"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def source_identity(source: str) -> str:
    """What a cache key records of a data or model source: a hub id as is; a local path
    with the names, sizes and modification times of its files (so a changed local copy
    gets a new key)."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in files]  # fmt: skip
    return f"{path.resolve()}:{json_digest(stats)[:16]}"


@contextlib.contextmanager
def locked(root: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on directory ``root`` so concurrent builds do not interleave;
    say so when waiting for another process's lock. A read-only cache directory is used
    without a lock (nothing can be built there anyway)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = open(root / ".lock", "a")
    except OSError:
        if root.is_dir() and not os.access(root, os.W_OK):
            yield
            return
        raise
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {root}: another process is building it", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


SIDECAR = ".record.json"  # <name>.record.json: a file's own record, beside it


class Manifest:
    """``<root>/manifest.json``: the recipe a cache directory was built from and the SHA-256
    of every file in it, plus per-file records (e.g. a model's test accuracy). Each record
    is also kept beside its file (``<name>.record.json``, with a digest of the recipe), so
    that a lost or corrupt manifest is rebuilt from the files that still match theirs.

    A manifest written for another recipe trusts nothing of it (warning); files whose
    sidecars carry this recipe are still recovered.
    """

    def __init__(self, root: str | os.PathLike, recipe: Mapping[str, Any], what: str) -> None:
        self.root, self.recipe, self.what = Path(root), json.loads(json.dumps(recipe)), what
        self.path = self.root / "manifest.json"
        self.recipe_digest = json_digest(self.recipe)
        self.files: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return self._recover(None)
        try:
            manifest = json.loads(self.path.read_text())
            if manifest["recipe"] != self.recipe:
                problem = "was written for another recipe"
            elif not all(isinstance(v.get("sha256"), str) for v in manifest["files"].values()):
                problem = "has malformed checksums"
            else:
                return dict(manifest["files"])
        except Exception as exc:  # an unreadable manifest trusts nothing of its own
            problem = f"is unreadable ({type(exc).__name__}: {exc})"
        return self._recover(problem)

    def _sidecar(self, name: str) -> Path:
        return self.root / (name + SIDECAR)

    def _sidecar_record(self, name: str) -> dict[str, Any] | None:
        """The record in file ``name``'s sidecar, if it is readable and of this recipe."""
        try:
            side = json.loads(self._sidecar(name).read_text())
            record = side["record"]
            if side["recipe"] == self.recipe_digest and isinstance(record["sha256"], str):
                return dict(record)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _recover(self, problem: str | None) -> dict[str, dict[str, Any]]:
        """Records of the files whose sidecars are of this recipe and that match them (each
        file is hashed); the manifest is rewritten from them when the directory is
        writable. ``problem``: what is wrong with the manifest (None: there is none)."""
        files = {}
        if self.root.is_dir():
            for side in sorted(self.root.rglob("*" + SIDECAR)):
                name = str(side.relative_to(self.root))[: -len(SIDECAR)]
                record = self._sidecar_record(name)
                path = self.root / name
                if record and path.is_file() and file_sha256(path) == record["sha256"]:
                    files[name] = record
        if problem is not None:
            kept = (
                f"recovered {len(files)} intact file(s) from their records, rebuilding the rest"
                if files
                else "rebuilding"
            )
            warnings.warn(f"{self.what} manifest {self.path} {problem}; {kept}", stacklevel=4)
        if files and os.access(self.root, os.W_OK):
            self.files = files
            with contextlib.suppress(OSError):  # best effort: the records are in memory
                self._write_manifest()
        return files

    def _write_manifest(self) -> None:
        manifest = {"recipe": self.recipe, "files": self.files}
        atomic_write_text(self.path, json.dumps(manifest, indent=1, sort_keys=True))

    def trusted(self, name: str) -> bool:
        """Whether file ``name`` exists, is recorded (in the manifest, or in its sidecar when
        a build was interrupted before the manifest was updated) and matches its checksum
        (a warning names the file otherwise, unless it was simply never built)."""
        path = self.root / name
        if not path.exists():
            if name in self.files:
                warnings.warn(f"{self.what} cache file {path} is missing; rebuilding", stacklevel=2)
            return False
        record = self.files.get(name) or self._sidecar_record(name)
        if record is None:
            problem = "is not recorded in the manifest (left by an interrupted build?)"
        elif file_sha256(path) != record["sha256"]:
            problem = "fails its checksum"
        else:
            self.files[name] = record
            return True
        warnings.warn(f"{self.what} cache file {path} {problem}; rebuilding", stacklevel=2)
        return False

    @contextlib.contextmanager
    def writing(self, name: str, **record: Any) -> Iterator[Path]:
        """Yield a temporary path for file ``name``; on success rename it into place and
        record its checksum (and ``record``) in its sidecar and in the manifest. A
        read-only cache directory raises ``PermissionError`` naming the file."""
        path = self.root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writable = os.access(path.parent, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            raise PermissionError(
                f"{self.what} cache file {path} must be built, but {path.parent} is not "
                "writable: a read-only cache must be complete (build it once with write "
                "access, or point cache_dir / $MERGELAB_CACHE_DIR at a writable directory)"
            )
        with atomic_path(path) as tmp:
            yield tmp
            digest = file_sha256(tmp)
        self.files[name] = {**record, "sha256": digest}
        side = {"recipe": self.recipe_digest, "record": self.files[name]}
        atomic_write_text(self._sidecar(name), json.dumps(side, indent=1, sort_keys=True))
        self._write_manifest()
