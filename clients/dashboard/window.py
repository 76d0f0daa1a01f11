"""Bounded, thread-safe windows of latency samples: percentiles and a log histogram."""
from __future__ import annotations

import threading
import time

import numpy as np

# 10 bins per decade from 10 us to 10 s, plus one bin below and one above: healthy latencies
# span 10 us to a few ms, and a daemon that falls behind reaches seconds; linear bins would
# put everything in one or two bars.
HIST_EDGES_US = [round(10 ** (1 + i / 10), 3) for i in range(61)]
_EDGES = np.array(HIST_EDGES_US)


class LatencyWindow:
    """Ring buffer of (time, microseconds) pairs.

    Fixed capacity so that memory and the cost of a summary stay flat however long the
    dashboard runs; a summary only looks at samples younger than its span.
    """

    def __init__(self, capacity: int = 32768):
        self._t = np.zeros(capacity)
        self._v = np.zeros(capacity)
        self._n = 0
        self._cap = capacity
        self._lock = threading.Lock()

    def add(self, value_us: float, now: float | None = None) -> None:
        if now is None:
            now = time.monotonic()
        with self._lock:
            i = self._n % self._cap
            self._t[i] = now
            self._v[i] = value_us
            self._n += 1

    def _recent(self, span_s: float, now: float) -> np.ndarray:
        with self._lock:
            n = min(self._n, self._cap)
            t = self._t[:n].copy()
            v = self._v[:n].copy()
        return v[t > now - span_s]

    def summary(self, span_s: float = 1.0, now: float | None = None) -> dict | None:
        if now is None:
            now = time.monotonic()
        v = self._recent(span_s, now)
        if v.size == 0:
            return None
        p50, p99 = np.percentile(v, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(v.max()), "count": int(v.size)}

    def histogram(self, span_s: float = 10.0, now: float | None = None) -> list[int]:
        """Counts per bin: [< 10 us, the 60 log bins, >= 10 s]."""
        if now is None:
            now = time.monotonic()
        v = self._recent(span_s, now)
        idx = np.searchsorted(_EDGES, v, side="right")
        return np.bincount(idx, minlength=len(_EDGES) + 1).tolist()
