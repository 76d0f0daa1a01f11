"""Latency bookkeeping and the Prometheus /metrics endpoint.

The hot path only appends to plain Python counters and a numpy ring per stage; Prometheus
reads them at scrape time through a custom collector, so metric values are by construction the
daemon's own counters (the same numbers `stats` on the control endpoint reports) and a packet
costs no lock or label lookup.  Each daemon registers into its own CollectorRegistry, so
several daemons (and tests) can live in one process.

Metric names (label `stream` is the stream id):

| name | type | labels | meaning |
|---|---|---|---|
| `neurowire_up` | gauge | | 1 while the daemon runs |
| `neurowire_uptime_seconds` | gauge | | seconds since the daemon started |
| `neurowire_packets_received_total` | counter | stream | ingest packets accepted |
| `neurowire_samples_received_total` | counter | stream | time steps accepted (per channel row) |
| `neurowire_bytes_received_total` | counter | stream | raw sample bytes accepted |
| `neurowire_bytes_published_total` | counter | stream | compressed bytes published (once per block, not per subscriber) |
| `neurowire_blocks_published_total` | counter | stream | compressed blocks published |
| `neurowire_keyframes_total` | counter | stream | blocks sent as keyframes |
| `neurowire_packets_dropped_total` | counter | stream, reason | whole packets lost: `backlog` (daemon behind) or `sequence_gap` (never reached the daemon) |
| `neurowire_lossless_overflow_total` | counter | stream | blocks dropped for a lossless subscriber past its hold limit |
| `neurowire_messages_rejected_total` | counter | reason | malformed, oversized or wrong-version input messages |
| `neurowire_requests_total` | counter | endpoint | good requests: `control` answered, `lossless` taken (bad ones are rejected messages) |
| `neurowire_compression_ratio` | gauge | stream | raw bytes / compressed bytes so far |
| `neurowire_subscribers` | gauge | stream, mode | connected subscribers, mode `live` or `lossless` |
| `neurowire_feed_messages_total` | counter | stream, feed | feed messages published (`spikes`, `power`; config `feeds`) |
| `neurowire_feed_bytes_total` | counter | stream, feed | feed message bytes published (once per message, not per subscriber) |
| `neurowire_feed_events_total` | counter | stream, feed | spike events in the published spike messages (0 for `power`) |
| `neurowire_feed_drops_total` | counter | stream, feed | packets the feed skipped because its queue was full (the lossless path went on) |
| `neurowire_feed_bits_per_second` | gauge | stream, feed | feed bytes x 8 / seconds of signal the feed has processed (compare with the link) |
| `neurowire_feed_subscribers` | gauge | stream, feed | live subscriptions matching the feed's topic |
| `neurowire_stage_latency_seconds` | histogram | stream, stage | `ingest` (acquired -> received), `compress` (codec time), `publish` (acquired -> sent); buckets 10 us .. 10 ms (+ 50 ms, 0.1 s) |
"""

from __future__ import annotations

import bisect
import time

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Microsecond-to-millisecond resolution: prometheus-client's defaults start at 5 ms.
LATENCY_BUCKETS_S = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 2e-3, 5e-3, 1e-2,
                     5e-2, 1e-1)
STAGES = ("ingest", "compress", "publish")


class LatencyStage:
    """Recent values in a ring (for percentiles) plus cumulative histogram buckets.

    Held in two numpy arrays, so the C data path (daemon/src/nw_fastpath.c) adds to them in
    place as add_ns does: `ring` (float64 ns, the recent window), `tally` (int64: ring
    position, count, then one count per bucket) and `total_s` (float64: the sum, seconds)."""

    __slots__ = ("ring", "tally", "total_s", "_bounds_ns")
    POSITION, COUNT, BUCKETS = range(3)  # tally slots (nw_fastpath.h: nwfp_tally)
    BOUNDS_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS_S)

    def __init__(self, window: int):
        self.ring = np.zeros(window, dtype=np.float64)
        self.tally = np.zeros(self.BUCKETS + len(LATENCY_BUCKETS_S) + 1, dtype=np.int64)
        self.total_s = np.zeros(1, dtype=np.float64)
        self._bounds_ns = self.BOUNDS_NS

    @property
    def count(self) -> int:
        return int(self.tally[self.COUNT])

    @property
    def sum_s(self) -> float:
        return float(self.total_s[0])

    @property
    def bucket_counts(self) -> list[int]:
        return self.tally[self.BUCKETS:].tolist()

    def add_ns(self, value_ns: int) -> None:
        tally = self.tally
        position = int(tally[self.POSITION])
        self.ring[position] = value_ns
        tally[self.POSITION] = (position + 1) % len(self.ring)
        tally[self.COUNT] += 1
        self.total_s[0] += value_ns * 1e-9
        tally[self.BUCKETS + bisect.bisect_left(self._bounds_ns, value_ns)] += 1

    def summary_us(self) -> dict:
        """p50/p99/max over the recent window, in microseconds; count is all-time."""
        count = self.count
        filled = min(count, len(self.ring))
        if filled == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
        recent = self.ring[:filled]
        p50, p99 = np.percentile(recent, (50, 99))
        return {"p50": float(p50) / 1e3, "p99": float(p99) / 1e3,
                "max": float(recent.max()) / 1e3, "count": count}

    def prometheus_buckets(self) -> list[tuple[str, float]]:
        cumulative, total = [], 0
        counts = self.bucket_counts  # one reading: the data thread may add meanwhile
        for bound, count in zip(LATENCY_BUCKETS_S, counts):
            total += count
            cumulative.append((repr(bound), total))
        cumulative.append(("+Inf", total + counts[-1]))
        return cumulative


class DaemonCollector:
    """Reads a Daemon's counters whenever Prometheus scrapes."""

    def __init__(self, daemon):
        self.daemon = daemon

    def describe(self):
        return []  # collected lazily; nothing to check at registration time

    def collect(self):
        daemon = self.daemon
        yield GaugeMetricFamily("neurowire_up", "1 while the daemon runs", value=1)
        yield GaugeMetricFamily("neurowire_uptime_seconds", "Seconds since the daemon started",
                                value=time.monotonic() - daemon.started_monotonic)
        families = {
            "packets_received": ("Ingest packets accepted", "packets_in"),
            "samples_received": ("Time steps accepted", "samples_in"),
            "bytes_received": ("Raw sample bytes accepted", "bytes_in"),
            "bytes_published": ("Compressed bytes published", "bytes_out"),
            "blocks_published": ("Compressed blocks published", "blocks_out"),
            "keyframes": ("Blocks sent as keyframes", "keyframes"),
            "lossless_overflow": ("Blocks dropped for a lossless subscriber past its limit",
                                  "lossless_overflow"),
        }
        streams = list(daemon.streams.values())
        for name, (help_text, attribute) in families.items():
            family = CounterMetricFamily(f"neurowire_{name}", help_text, labels=["stream"])
            for stream in streams:
                family.add_metric([stream.stream_id], getattr(stream, attribute))
            yield family
        dropped = CounterMetricFamily("neurowire_packets_dropped", "Whole packets lost",
                                      labels=["stream", "reason"])
        ratio = GaugeMetricFamily("neurowire_compression_ratio", "Raw bytes / compressed bytes",
                                  labels=["stream"])
        subscribers = GaugeMetricFamily("neurowire_subscribers", "Connected subscribers",
                                        labels=["stream", "mode"])
        latency = HistogramMetricFamily("neurowire_stage_latency_seconds",
                                        "Latency per pipeline stage",
                                        labels=["stream", "stage"])
        for stream in streams:
            dropped.add_metric([stream.stream_id, "backlog"], stream.drops_backlog)
            dropped.add_metric([stream.stream_id, "sequence_gap"], stream.drops_sequence)
            ratio.add_metric([stream.stream_id], stream.ratio())
            live, lossless = daemon.subscriber_counts(stream.stream_id)
            subscribers.add_metric([stream.stream_id, "live"], live)
            subscribers.add_metric([stream.stream_id, "lossless"], lossless)
            for stage_name, stage in stream.latency.items():
                latency.add_metric([stream.stream_id, stage_name], stage.prometheus_buckets(),
                                   stage.sum_s)
        yield from (dropped, ratio, subscribers, latency)
        yield from self._feeds(daemon, streams)
        rejected = CounterMetricFamily("neurowire_messages_rejected",
                                       "Input messages rejected", labels=["reason"])
        for reason, count in list(daemon.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        requests = CounterMetricFamily("neurowire_requests", "Good requests",
                                       labels=["endpoint"])
        requests.add_metric(["control"], daemon.control_answered)
        requests.add_metric(["lossless"], daemon.data.lossless.requests_taken)
        yield requests


    @staticmethod
    def _feeds(daemon, streams):
        if not daemon.config.feeds:
            return
        counters = {name: CounterMetricFamily(f"neurowire_feed_{name}", help_text,
                                              labels=["stream", "feed"])
                    for name, help_text in (("messages", "Feed messages published"),
                                            ("bytes", "Feed message bytes published"),
                                            ("events", "Spike events published"),
                                            ("drops", "Packets a feed skipped (queue full)"))}
        rate = GaugeMetricFamily("neurowire_feed_bits_per_second",
                                 "Feed bits per second of signal processed",
                                 labels=["stream", "feed"])
        listeners = GaugeMetricFamily("neurowire_feed_subscribers",
                                      "Live subscriptions to the feed",
                                      labels=["stream", "feed"])
        for stream in streams:
            for feed, entry in stream.feed_stats().items():
                labels = [stream.stream_id, feed]
                for name, family in counters.items():
                    family.add_metric(labels, entry[name])
                rate.add_metric(labels, entry["bits_per_s"])
                listeners.add_metric(labels, daemon.feed_subscribers(stream.stream_id, feed))
        yield from counters.values()
        yield from (rate, listeners)


class MetricsServer:
    """/metrics over HTTP on its own thread, with a registry of its own."""

    def __init__(self, daemon, address: str):
        from prometheus_client import start_http_server

        host, port = address.rsplit(":", 1)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        try:
            self.server, self.thread = start_http_server(int(port), addr=host.strip("[]"),
                                                         registry=self.registry)
        except OSError as error:  # say which address: the endpoints' errors name theirs
            raise OSError(error.errno, f"metrics {address}: {error.strerror}") from None
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
