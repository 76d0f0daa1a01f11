"""Per-stage latency histograms of the daemon, from its Prometheus /metrics.

The control endpoint's ``stats`` gives percentiles only; the daemon's /metrics endpoint has
the full histogram per stream and stage (cumulative since start). Differencing two scrapes
about ``span_s`` apart gives the histogram of just that window.
"""
from __future__ import annotations

import math
from collections import deque

from prometheus_client.parser import text_string_to_metric_families

FAMILY = "neurowire_stage_latency_seconds"


def parse_stage_buckets(text: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{stream: {stage: [(upper bound s, cumulative count), ...] sorted}} from a scrape."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            labels = sample.labels
            le = float(labels.get("le", "nan"))
            if math.isnan(le) or "stream" not in labels or "stage" not in labels:
                continue
            out.setdefault(labels["stream"], {}).setdefault(labels["stage"], []).append(
                (le, float(sample.value)))
    for stages in out.values():
        for buckets in stages.values():
            buckets.sort()
    return out


class StageHistograms:
    def __init__(self, span_s: float = 10.0):
        self.span_s = span_s
        self._scrapes: deque = deque()  # (t, parsed), oldest first

    def add(self, parsed: dict, now: float) -> None:
        if self._scrapes and _went_back(self._scrapes[-1][1], parsed):
            self._scrapes.clear()  # the daemon restarted: its counters began again
        self._scrapes.append((now, parsed))
        # Keep one scrape older than the span as the base of the difference.
        while len(self._scrapes) > 2 and now - self._scrapes[1][0] >= self.span_s:
            self._scrapes.popleft()

    def window(self, stream: str) -> dict | None:
        if len(self._scrapes) < 2:
            return None
        (t0, old), (t1, new) = self._scrapes[0], self._scrapes[-1]
        stages_new = new.get(stream)
        if not stages_new:
            return None
        bounds = None
        stages = {}
        for stage, buckets in stages_new.items():
            base = dict((old.get(stream) or {}).get(stage) or [])
            cum = [c - base.get(le, 0.0) for le, c in buckets]
            counts = [max(0.0, b - a) for a, b in zip([0.0] + cum[:-1], cum)]
            stages[stage] = counts
            bounds = [le * 1e6 for le, _ in buckets]
        return {"span_s": t1 - t0, "bounds_us": [b if math.isfinite(b) else None
                                                 for b in bounds], "stages": stages}


def _went_back(old: dict, new: dict) -> bool:
    for stream, stages in new.items():
        for stage, buckets in stages.items():
            prev = dict((old.get(stream) or {}).get(stage) or [])
            if any(c < prev.get(le, 0.0) for le, c in buckets):
                return True
    return False
