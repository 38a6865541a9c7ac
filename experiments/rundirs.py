"""Run directories are never shared: a run claims its directory atomically
(:func:`claim`, called by :class:`experiments.callbacks.ClaimRunDir` before Hydra writes
there) and gives it back only when its own checks refused it (:func:`release`).

Light: no Hydra, no torch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path

CLAIM = ".mergelab_claim.json"  # in a claimed run directory: pid, host, time, command


class Refused(SystemExit):
    """A run or sweep refused before it starts; the message names the key at fault."""


def claim(directory: str | os.PathLike, key: str, hint: str = "") -> Path:
    """Create ``directory`` if needed and claim it for this process: its claim file
    (:data:`CLAIM`: pid, host, time, command, whether the claim created the directory) is
    created atomically (``O_EXCL``), so of two runs started together one wins. Returns the
    claim file. :class:`Refused`, naming ``key``, the directory and ``hint``, if the
    directory is claimed already, holds anything (a run's from before claims:
    ``results.csv`` without a claim file) or cannot be created."""
    path = Path(directory).expanduser().resolve()
    why = None
    try:
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if not any(path.iterdir()):  # new or empty; a run claiming it now makes O_EXCL fail
            fd = os.open(path / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            now = datetime.now().astimezone().isoformat(timespec="seconds")
            record = {"pid": os.getpid(), "host": socket.gethostname(), "time": now,
                      "command": sys.argv, "created": created}  # fmt: skip
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            return path / CLAIM
    except FileExistsError:
        if not path.is_dir():
            why = "it is not a directory"
    except OSError as e:
        why = f"it cannot be created or written ({e})"
    raise Refused(
        f"{key}={path}: {why or _owner(path)}. A run never shares its directory (the second "
        f"would mix or replace the first's files): pass a new directory, or leave {key} "
        f"unset (the default is unique per process).{hint}"
    )


def release(directory: str | os.PathLike) -> bool:
    """Undo :func:`claim` for a run that its own checks refused (bad input), before it
    wrote anything: if this process claimed ``directory`` and it holds only the claim file
    and what Hydra writes first (``.hydra/``, the job's ``.log``), remove those (and the
    directory if the claim created it), so that the corrected command can use it. Returns
    whether the claim was given back."""
    path = Path(directory).expanduser().resolve()
    try:
        record = json.loads((path / CLAIM).read_text())
        ours = record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        names = {p.name for p in path.iterdir()}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    logs = {n for n in names if n.endswith(".log")}
    if not ours or not names <= {CLAIM, ".hydra"} | logs:
        return False
    shutil.rmtree(path / ".hydra", ignore_errors=True)
    for name in logs:
        (path / name).unlink(missing_ok=True)
    (path / CLAIM).unlink()
    if record.get("created"):
        with contextlib.suppress(OSError):  # not empty (another writer): keep it
            path.rmdir()
    return True


def _owner(path: Path) -> str:
    """Who holds the directory ``path``, in words."""
    try:
        record = json.loads((path / CLAIM).read_text())
        return (f"it is the run directory of pid {record['pid']} on {record['host']}, "
                f"started {record['time']} ({' '.join(record['command'])})")  # fmt: skip
    except FileNotFoundError:
        names = sorted(p.name for p in path.iterdir())
        return f"it holds files of an earlier run or others ({', '.join(names[:4])}" + (
            ", ...)" if len(names) > 4 else ")"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return f"another run claimed it ({CLAIM} unreadable or being written)"
