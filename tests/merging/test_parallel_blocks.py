"""``merging.streaming.parallel_blocks``: every block once, each worker a contiguous run,
errors raised."""

import os
import signal
import threading
import time

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


def test_a_worker_error_is_raised_once_every_worker_stopped() -> None:
    done: list[int] = []

    def work(b: slice, w: int) -> None:
        if w == 0:
            raise ValueError("block failed")
        time.sleep(0.05)  # worker 1 still running when worker 0 fails
        done.append(b.start)

    with pytest.raises(ValueError, match="block failed"):
        parallel_blocks(4 * 4096, work, 2, size=4096)
    assert done == [2 * 4096, 3 * 4096]  # finished before the error came back


def test_called_from_a_worker_it_runs_there_as_that_worker() -> None:
    inner: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def work(b: slice, w: int) -> None:
        def inner_work(c: slice, v: int) -> None:
            with lock:
                inner.append((w, v, threading.current_thread().name))

        parallel_blocks(2 * 4096, inner_work, 2, size=4096)  # would wait on a busy pool

    parallel_blocks(2 * 4096, work, 2, size=4096)
    assert sorted((w, v) for w, v, _ in inner) == [(0, 0), (0, 0), (1, 1), (1, 1)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool() -> None:
    # the parent's pool, both threads started (each block waits) and then idle
    parallel_blocks(4 * 4096, lambda b, w: time.sleep(0.05), 2, size=4096)
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool threads do not exist here
        status = 1
        try:
            signal.alarm(20)  # a child left waiting on them would hang the suite
            done: list[slice] = []
            parallel_blocks(4 * 4096, lambda b, w: done.append(b), 2, size=4096)
            status = 0 if len(done) == 4 else 1
        finally:
            os._exit(status)  # never back into pytest
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
