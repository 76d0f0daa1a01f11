"""The feed bridge: packets offered to the feeds' own process, its messages published back.

Config `feeds` (docs/FEEDS.md): spike / power / bounded feeds are computed in a process of
their own (neurowire.feeds.worker) from packets the data thread offers after publishing
(non-blocking, bounded: skipped and counted when behind); its messages come back over
loopback to the data thread, the only user of the XPUB socket, which publishes them under
"<stream>/<feed>\\0"."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

log = logging.getLogger("neurowire.daemon")


class FeedWorker:
    """The feeds' own process (neurowire.feeds.worker), fed packets over loopback.

    The data thread offers each packet after its lossless block is out, with a non-blocking
    send: past `feed_queue_packets` waiting, the packet is skipped for the feeds and counted,
    and the stream's detector restarts at the next one.  A process and not a thread: detection
    is numpy driven from Python, and a thread doing it made the data thread wait for the GIL
    (the lossless compress and publish p99 grew several-fold on a 2-core machine)."""

    def __init__(self, config, sync):
        self.config = config
        # ipc in a folder only this user can enter (mkdtemp: mode 0700), not tcp: no other
        # local process can read the raw samples, forge feed messages or stop the daemon.
        self.runtime_dir = tempfile.mkdtemp(prefix="neurowire-feeds-")
        self.tx = sync.socket(zmq.PUSH)
        self.tx.sndhwm = config.feed_queue_packets
        self.tx.linger = 0
        self.rx = sync.socket(zmq.PULL)
        self.rx.rcvhwm = 0  # feed messages are small and few; none is lost on the way back
        self.rx.linger = 0
        self.rx.maxmsgsize = 64 * 2**20
        self.endpoints = (f"ipc://{self.runtime_dir}/packets",
                          f"ipc://{self.runtime_dir}/messages")
        self.tx.bind(self.endpoints[0])
        self.rx.bind(self.endpoints[1])
        self.bad_messages = 0  # from the feed process, and not what it sends: counted, skipped
        self.process: subprocess.Popen | None = None
        self.error: str | None = None
        self.offered = self.reported = 0  # packets; the difference is what waits
        self.done = False

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it listens (packets sent before would be lost).
        Called before the data thread runs, which owns both sockets afterwards."""
        settings = {"feeds": list(self.config.feeds), "threshold": self.config.feed_threshold,
                    "snippet_ms": self.config.feed_snippet_ms,
                    "power_bin_ms": self.config.feed_power_bin_ms,
                    "batch_ms": self.config.feed_batch_ms,
                    "max_error": self.config.feed_max_error,
                    "queue": self.config.feed_queue_packets}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "neurowire.feeds.worker", *self.endpoints,
             json.dumps(settings)], stdin=subprocess.DEVNULL)
        if self.rx.poll(int(timeout * 1000)) and self.rx.recv_multipart() == [b"", b"ready"]:
            log.info("feed process %d serving %s", self.process.pid,
                     ", ".join(self.config.feeds))
            return
        self.error = f"feed process did not start within {timeout:g} s"
        log.error("%s; feeds off, lossless unaffected", self.error)

    def queued(self) -> int:
        return self.offered - self.reported

    def offer(self, state, header, payload) -> None:
        try:
            self.tx.send_multipart(
                [state.topic[:-1], msgpack.packb({"first": header.first, "rate": header.rate,
                                                  "ch": header.channels}),
                 payload], zmq.NOBLOCK, copy=False)
            self.offered += 1
        except zmq.Again:
            for counters in state.feeds.values():
                counters.drops += 1

    def key_soon(self, prefix: bytes) -> None:
        """A feed subscriber joined: its power / bounded feed starts at the next keyframe, so
        have one made now (best effort: a full queue leaves it to the regular one)."""
        stream, _, feed = prefix.rstrip(b"\0").partition(b"/")
        if feed in (b"power", b"bounded"):
            try:
                self.tx.send_multipart([b"/key", stream, feed], zmq.NOBLOCK)
            except zmq.Again:
                pass

    def check(self) -> None:
        if self.process is not None and self.error is None and not self.done:
            code = self.process.poll()
            if code is not None:
                self.error = f"feed process exited with code {code}"
                log.error("%s; feeds stopped, lossless unaffected", self.error)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for sock in (self.tx, self.rx):
            if not sock.closed:
                sock.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def on_messages(self, streams: dict, publisher) -> None:
        """Publish what the feed process sent back (the data thread's XPUB), and count it."""
        feeds = self
        receive, send = feeds.rx.recv_multipart, publisher.send_multipart
        while True:
            try:
                frames = receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_message(frames, streams, send)
            except Exception as error:  # msgpack alone raises several unrelated types
                self.bad_messages += 1
                if self.bad_messages <= 10:
                    log.warning("feed process sent a malformed message (%s); skipped", error)

    def _on_message(self, frames, streams: dict, send) -> None:
        """One message of the feed process, checked before anything is published: a feed
        topic of a known stream and feed, or a report with integer counts."""
        if len(frames) != 2:
            raise ValueError(f"{len(frames)} frames, expected 2")
        topic, message = frames
        if topic:
            stream, slash, feed = topic[:-1].decode().rpartition("/")
            state = streams.get(stream)
            if not topic.endswith(b"\0") or not slash or state is None or feed not in state.feeds:
                raise ValueError(f"topic {topic[:80]!r} is no feed of a stream")
            # Counted before sending, like the lossless blocks.
            state.feeds[feed].messages += 1
            state.feeds[feed].bytes += len(message)
            send([topic, message], zmq.NOBLOCK)
        elif message == b"done":
            self.done = True
        elif message != b"ready":
            report = msgpack.unpackb(message, raw=False, max_bin_len=0, max_array_len=0,
                                     max_map_len=16, max_str_len=256)
            counts = [report["packets"], report["samples"], report["events"]]
            if not all(isinstance(count, int) and 0 <= count < 2**53 for count in counts):
                raise ValueError(f"report counts {counts!r:.80}")
            state = streams.get(report["stream"])
            self.reported += report["packets"]
            if state is not None:
                state.feed_samples += report["samples"]
                if "spikes" in state.feeds:
                    state.feeds["spikes"].events += report["events"]

    def finish(self, streams: dict, publisher) -> None:
        """On stop: let the feed process work through what it was sent, and publish it."""
        feeds = self
        deadline = time.monotonic() + self.config.flush_timeout_s
        if feeds.error is not None:
            return
        while True:
            try:
                feeds.tx.send(b"", zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.monotonic() > deadline:
                    return
                self.on_messages(streams, publisher)
                feeds.rx.poll(5)
        while not feeds.done and time.monotonic() < deadline:
            if feeds.rx.poll(20):
                self.on_messages(streams, publisher)
            feeds.check()
            if feeds.error is not None:
                return
