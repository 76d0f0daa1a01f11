"""The feed bridge: packets offered to the feeds' own process, its messages published back.

Config `feeds` (docs/FEEDS.md): spike / power / bounded feeds are computed in a process of
their own (neurowire.feeds.worker) from packets the data thread offers after publishing
(non-blocking, bounded: skipped and counted when behind); its messages come back over
loopback to the data thread, the only user of the XPUB socket, which publishes them under
"<stream>/<feed>\\0"."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
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
        self.tx = sync.socket(zmq.PUSH)
        self.tx.sndhwm = config.feed_queue_packets
        self.tx.linger = 0
        in_port = self.tx.bind_to_random_port("tcp://127.0.0.1")
        self.rx = sync.socket(zmq.PULL)
        self.rx.rcvhwm = 0  # feed messages are small and few; none is lost on the way back
        self.rx.linger = 0
        out_port = self.rx.bind_to_random_port("tcp://127.0.0.1")
        self.endpoints = (f"tcp://127.0.0.1:{in_port}", f"tcp://127.0.0.1:{out_port}")
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

    def on_messages(self, streams: dict, publisher) -> None:
        """Publish what the feed process sent back (the data thread's XPUB), and count it."""
        feeds = self
        receive, send = feeds.rx.recv_multipart, publisher.send_multipart
        while True:
            try:
                topic, message = receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            if topic:
                stream, feed = topic[:-1].decode().rsplit("/", 1)
                state = streams.get(stream)
                if state is not None and feed in state.feeds:
                    # Counted before sending, like the lossless blocks.
                    state.feeds[feed].messages += 1
                    state.feeds[feed].bytes += len(message)
                send([topic, message], zmq.NOBLOCK)
            elif message == b"done":
                feeds.done = True
            elif message != b"ready":
                report = msgpack.unpackb(message)
                state = streams.get(report["stream"])
                feeds.reported += report["packets"]
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
