"""``benchmarks/gpu.py --tiny``: the GPU benchmark's parts run on the CPU with tiny shapes
(a check of the script, not figures), so a change that breaks it shows here rather than on a
lent GPU machine."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_tiny_runs_every_part(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "gpu.md").read_text()
    assert "failed" not in text, text
    for part in ("(a)", "(b)", "(c)", "(d)"):
        assert f"## {part}" in text
    # (d): the whole-model merge on the "device" (here the CPU) equals the CPU merge of block 0
    rows = [line for line in text.splitlines() if line.startswith(("| tsv", "| iso_c"))]
    assert len(rows) == 6  # three methods, two tables
    assert all(row.split("|")[6].strip() == "0.0e+00" for row in rows[:3])


def test_gpu_benchmark_parts_c_needs_a() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--parts", "c"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--parts: c (the projection) needs a" in done.stderr
