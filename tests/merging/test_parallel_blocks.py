"""``merging.streaming.parallel_blocks``: every block once, each worker a contiguous run,
errors raised."""

import threading

import pytest

from merging.streaming import blocks, parallel_blocks


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_every_block_once_in_contiguous_runs(threads: int) -> None:
    n, size = 10 * 4096 + 5, 4096
    seen: list[tuple[int, slice, str]] = []
    lock = threading.Lock()

    def work(b: slice, w: int) -> None:
        with lock:
            seen.append((w, b, threading.current_thread().name))

    parallel_blocks(n, work, threads, size=size)
    expected = list(blocks(n, size))
    assert sorted((b.start, b.stop) for _, b, _ in seen) == [(b.start, b.stop) for b in expected]
    workers = sorted({w for w, _, _ in seen})
    assert workers == list(range(min(threads, len(expected))))
    for w in workers:  # one contiguous run per worker, in block order
        starts = [b.start for v, b, _ in seen if v == w]
        assert starts == sorted(starts)
        assert len(starts) == (starts[-1] - starts[0]) // size + 1
    if threads == 1:  # no pool: the caller's thread
        assert {name for _, _, name in seen} == {threading.current_thread().name}


def test_a_worker_error_is_raised() -> None:
    def work(b: slice, w: int) -> None:
        if w == 1:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        parallel_blocks(4 * 4096, work, 2, size=4096)
