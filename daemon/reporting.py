"""What the daemon reports: `status`, `stats` and `config` on the control endpoint, and the
same counters to Prometheus (metrics.py reads them through this object).

Read from the asyncio thread while the data thread writes: plain counters are read without a
lock (atomic under the GIL; a figure a microsecond stale is fine), and containers the data
thread may resize are copied (list(...)) before being iterated."""

from __future__ import annotations

import os
import resource
import time
import weakref

from neurowire.wire import feed_topic, topic_for

from .budget import memory_bound
from .sockets import ingest_limits


STATS_MAX_AGE_S = 0.25


class Reporter:
    def __init__(self, config, version: str, epoch: int, table, sockets, rejected: dict):
        self.config = config
        self.version = version
        self.epoch = epoch
        self.table = table
        self.sockets = sockets
        self.rejected = rejected
        self.started_monotonic = time.monotonic()
        self.data = None  # the DataPath, once made
        self.control_answered = 0  # control requests answered with what they asked for
        # StreamState -> (when, slow_stats()); weak, so expired streams leave with it
        self._slow: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.slow_computed = 0

    @property
    def streams(self) -> dict:
        return self.table.by_name

    def _live_matching(self, topic: bytes) -> int:
        return sum(count for prefix, count in list(self.data.live_subscriptions.items())
                   if topic.startswith(prefix))

    def subscriber_counts(self, stream_id: str) -> tuple[int, int]:
        return (self._live_matching(topic_for(stream_id)),
                self.data.lossless.count_for(stream_id))

    def feed_subscribers(self, stream_id: str, feed: str) -> int:
        return self._live_matching(feed_topic(stream_id, feed))

    def _stream_stats(self, stream_id: str, state) -> dict:
        reply = state.stats(sum(self.subscriber_counts(stream_id)), self._slow_stats(state))
        if state.feeds:
            feeds = reply["feeds"] = state.feed_stats()
            for name, entry in feeds.items():
                entry["subscribers"] = self.feed_subscribers(stream_id, name)
        return reply

    def status(self) -> dict:
        return {"state": "running", "version": self.version, "pid": os.getpid(),
                "epoch": self.epoch, "uptime_s": time.monotonic() - self.started_monotonic,
                "streams": sorted(list(self.table.by_name)),
                "endpoints": dict(self.sockets.endpoints),
                "lossless_subscribers": len(self.data.lossless.subscribers),
                "live_subscriptions": sum(list(self.data.live_subscriptions.values())),
                "data_path": dict(self.data.granted),
                # worst case, one implant connection and one live subscriber (budget.py)
                "memory_bound_bytes": memory_bound(self.config)["total"],
                # streams sent faster than their coding here sustains (streams.py)
                "overloaded": self.table.overloaded()}

    def _slow_stats(self, state) -> dict:
        """A stream's percentiles and per-channel ratios, computed at most once per
        STATS_MAX_AGE_S whoever asks: they hold the GIL the data thread needs, so a client
        polling back to back (or many clients) must not make the daemon compute them at its
        pace. The counters beside them are read fresh on every request."""
        now = time.monotonic()
        cached = self._slow.get(state)
        if cached is None or now - cached[0] >= STATS_MAX_AGE_S:
            cached = self._slow[state] = (now, state.slow_stats())
            self.slow_computed += 1
        return cached[1]

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        feeds = self.sockets.feeds
        return {"version": self.version, "uptime_s": time.monotonic() - self.started_monotonic,
                "time_ns": time.time_ns(), "rejected": dict(self.rejected),
                "streams": {stream_id: self._stream_stats(stream_id, state)
                            for stream_id, state in list(self.table.by_name.items())},
                "process": {"pid": os.getpid(), "cpu_user_s": usage.ru_utime,
                            "cpu_system_s": usage.ru_stime, "max_rss_kb": usage.ru_maxrss},
                "lossless": self.data.lossless.snapshot(),
                # requests taken (bad ones are under "rejected"): every request is one or other
                "requests": {"control": self.control_answered,
                             "lossless": self.data.lossless.requests_taken},
                # additions to the contract's keys:
                "ingest_connections": dict(self.data.ingest_connections),
                "ingest_limits": dict(zip(("daemon_bytes", "libzmq_bytes"),
                                          ingest_limits(self.config))),
                "data_thread_age_s": time.monotonic() - self.data.heartbeat,
                "feeds": {"enabled": list(self.config.feeds),
                          "queued": feeds.queued() if feeds else 0,
                          "pid": feeds.process.pid if feeds and feeds.process else None,
                          "error": feeds.error if feeds else None}}

    def config_reply(self) -> dict:
        reply = self.config.to_dict()
        reply["security"] = {"curve": self.config.security.curve}  # no key paths on the wire
        reply["bound"] = dict(self.sockets.endpoints)
        return reply
