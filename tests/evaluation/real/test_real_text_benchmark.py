"""The real-text benchmark: tasks from the registry's order, splits drawn once and cached,
names that say what the benchmark holds, and errors naming the key at fault."""

from __future__ import annotations

import dataclasses

import pytest

from evaluation.real import benchmark as benchmark_module
from evaluation.real.benchmark import RealTextBenchmark
from evaluation.real.sources import SourceMissing
from evaluation.real.text_tasks import task_order

TASKS = ["part_of_speech", "verb_transitivity"]


def test_splits_are_drawn_once_and_cached(patched_sources, tmp_path, monkeypatch):
    bench = RealTextBenchmark(name="tiny", task_names=TASKS, n_train=12, n_test=8)
    assert [t.name for t in bench.tasks()] == TASKS
    assert bench.tasks()[0].classnames == ("noun", "verb", "adjective", "adverb")
    texts, labels = bench.load_split(bench.tasks()[0], "train", tmp_path)
    val, _ = bench.load_split(bench.tasks()[0], "val", tmp_path)
    test, test_labels = bench.load_split(bench.tasks()[0], "test", tmp_path)
    assert (
        len(texts) + len(val) == 12
        and len(test) == 8
        and sorted(test_labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    )
    assert not set(texts) & set(test) and labels.dtype.is_floating_point is False
    monkeypatch.setattr(benchmark_module, "draw", lambda *a: pytest.fail("drawn again"))
    again = RealTextBenchmark(name="tiny", task_names=TASKS, n_train=12, n_test=8)
    assert again.load_split(again.tasks()[0], "train", tmp_path)[0] == texts
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        again.load_split(again.tasks()[0], "dev", tmp_path)


def test_names_sizes_and_tasks_are_checked():
    assert [t.name for t in RealTextBenchmark(name="text_real3", num_tasks=3).tasks()] == (
        task_order()[:3]
    )
    with pytest.raises(ValueError, match="benchmark.name='text_real8' does not say what"):
        RealTextBenchmark(name="text_real8", num_tasks=3)
    with pytest.raises(ValueError, match=r"benchmark.num_tasks=9 but the benchmark's family has 8"):
        RealTextBenchmark(name="x", num_tasks=9)
    with pytest.raises(ValueError, match="benchmark.n_train=10 must be >= 24"):
        RealTextBenchmark(name="x", num_tasks=1, n_train=10)
    with pytest.raises(
        ValueError, match="unknown task 'sst2'; this benchmark has: noun_supersense"
    ):
        RealTextBenchmark(name="x", task_names=["sst2"])
    with pytest.raises(ValueError, match="give one of them"):
        RealTextBenchmark(name="x", task_names=TASKS, num_tasks=2)
    with pytest.raises(ValueError, match="benchmark.n_test"):
        RealTextBenchmark(name="x", num_tasks=1, n_test="many")


def test_a_missing_source_names_its_install_command(patched_sources, tmp_path, monkeypatch):
    gone = dataclasses.replace(patched_sources["wordnet"], root=str(tmp_path / "none"))
    monkeypatch.setitem(patched_sources, "wordnet", gone)
    bench = RealTextBenchmark(name="tiny", task_names=TASKS, n_train=12, n_test=8)
    with pytest.raises(SourceMissing, match="apt-get install -y wordnet-base"):
        bench.load_split(bench.tasks()[0], "test", tmp_path)
