"""Wall time and peak memory of a block of code, for the cost columns of result tables.

Peak memory is the resident set size (RSS) of the process sampled every ``interval``
seconds by a thread while the block runs, minus the RSS when it started: the extra memory
the block held at its peak (MiB), to within one sampling interval. Linux only
(``/proc/self/statm``); elsewhere the peak is NaN.
"""

from __future__ import annotations

import math
import os
import threading
import time
from types import TracebackType

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> float:
    """The process's resident set size in bytes (NaN where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return math.nan


class Measured:
    """``with Measured() as m: ...`` then ``m.seconds`` (wall) and ``m.peak_mib``."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.seconds, self.peak_mib = interval, math.nan, math.nan
        self._stop = threading.Event()

    def __enter__(self) -> Measured:
        self._start_rss = self._peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_bytes())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, rss_bytes())
        self.peak_mib = (self._peak - self._start_rss) / 2**20
