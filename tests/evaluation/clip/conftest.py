"""Fixtures of the CLIP family's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DROP = "-dac_override,-dac_read_search,-fowner"  # what lets root ignore file permissions


@pytest.fixture
def read_only() -> Iterator[Callable[[Path, str], subprocess.CompletedProcess]]:
    """``run(directory, code)``: make ``directory`` read-only (``chmod -R a-w``), run Python
    ``code`` in a child process that the permissions bind (as root: without the
    capabilities that override them, via setpriv) and return it; write access is restored
    afterwards."""
    made: list[Path] = []

    def run(directory: Path, code: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: cannot drop write access")
            command = [setpriv, "--bounding-set", DROP, "--inh-caps", DROP, *command]
        subprocess.run(["chmod", "-R", "a-w", str(directory)], check=True)
        made.append(directory)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    yield run
    for directory in made:
        subprocess.run(["chmod", "-R", "u+w", str(directory)], check=True)
