"""Per-stage timings of a node's hot path, for logs and the benchmark (bench/pipeline.py)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from contextlib import contextmanager

import numpy as np

KEEP = 20_000  # samples per stage (a bounded window: memory stays flat on long runs)


class StageTimes:
    def __init__(self) -> None:
        self._samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=KEEP))

    def add(self, stage: str, seconds: float) -> None:
        self._samples[stage].append(seconds)

    @contextmanager
    def measure(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._samples[stage].append(time.perf_counter() - t0)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        # list() copies in one step under the GIL: a scrape from another thread may run this
        # while the hot path appends
        for stage, samples in list(self._samples.items()):
            ms = np.asarray(list(samples)) * 1000
            if not ms.size:
                continue
            out[stage] = {
                "n": int(ms.size),
                "mean_ms": float(ms.mean()),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
        return out


class NullTimes(StageTimes):
    """Collects nothing (the default when nobody asked for timings)."""

    def add(self, stage: str, seconds: float) -> None:
        pass

    @contextmanager
    def measure(self, stage: str):
        yield
