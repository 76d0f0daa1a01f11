"""The daemon: a data thread with blocking sockets moves the samples; asyncio runs the rest.

    implant PUSH --> [ingest PULL] -> validate -> per-stream backlog -> StreamEncoder(s)
                         -> [publish XPUB]   live subscribers: compress once, libzmq fans out
                         -> [lossless ROUTER] held per subscriber, sent against credit
    data thread:  ingest, XPUB (sends and subscriptions), ROUTER (sends and credit), monitor
    encode threads: channel groups 1.. of each block (the C codec runs without the GIL)
    asyncio loop: [control REP] status / stats / config, watchdog, signals, shutdown
    /metrics (Prometheus, own thread)
    feed process (config `feeds`, neurowire.feeds.worker): spike / power / bounded feeds from
        packets the data thread offers after publishing (non-blocking, bounded: skipped and
        counted when behind); its messages come back over loopback to the data thread, the
        only user of the XPUB socket, which publishes them under "<stream>/<feed>\\0"

Why a thread and not coroutines for the data: at 2000 packets/s every future, wake-up and
loop turn per message costs a visible share of a core that the codec needs, and a lossless
subscriber multiplied that per block.  Plain sockets polled by one thread cost a syscall each.

The data thread drains every packet the socket holds before compressing, so the implant side is
never back-pressured: if compression falls behind, the backlog grows past `max_backlog_packets`
and whole packets are dropped (oldest first) and counted.  Sends use NOBLOCK: a slow live
subscriber loses messages at its own high-water mark and sees the gap in sequence numbers; a
lossless subscriber's blocks wait in the daemon until it grants credit.

The control side reads the data thread's plain counters without a lock: each read is atomic
under the GIL, and a statistic a microsecond stale is fine.  Containers the data thread may
resize are copied (list(...)) before being iterated from another thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import json
import signal
import subprocess
import sys
import threading
import time
import zlib

import msgpack
import numpy as np
import zmq
import zmq.asyncio
import zmq.auth
import zmq.auth.thread

from . import notify as sd
from .config import DaemonConfig
from .metrics import STAGES, LatencyStage, MetricsServer
from .protocol import Packet, Rejected, parse_ingest, publish_header, topic_for, unpack_small_map

log = logging.getLogger("neurowire.daemon")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("neurowire")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


def _set_realtime(priority: int, warn: bool = True) -> bool:
    """The calling thread SCHED_FIFO at `priority` (threads it starts inherit that)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, AttributeError) as error:
        if warn:
            log.warning("realtime_priority %d refused (%s): the data path runs at ordinary "
                        "priority (grant it with CAP_SYS_NICE or LimitRTPRIO=)", priority, error)
        return False


@contextlib.contextmanager
def _scheduled(priority: int):
    """Threads started inside run SCHED_FIFO at `priority` (0: no change)."""
    if not priority or not _set_realtime(priority, warn=False):  # the data thread warns
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _codec():
    # Imported late so that config errors and --help work even where the C core is not built.
    from neurowire import codec

    return codec


class StreamState:
    """Everything the daemon keeps for one implant stream."""

    def __init__(self, stream_id: str, channels: int, rate: float, config: DaemonConfig,
                 team=None):
        codec = _codec()
        self.stream_id = stream_id
        self.topic = topic_for(stream_id)
        self.channels = channels
        self.rate = rate
        self.codec_version = int(getattr(codec, "FORMAT_VERSION", 0))
        groups = max(1, min(config.workers, channels))
        edges = np.linspace(0, channels, groups + 1).round().astype(int)
        self.group_channels = [int(b - a) for a, b in zip(edges[:-1], edges[1:])]
        # Each group is a block stream of its own; the team codes a block's groups at once.
        self.encoder = codec.GroupEncoder(self.group_channels, team=team)
        if config.keyframe_interval_s > 0:
            self.keyframe_every = max(1, round(config.keyframe_interval_s * rate))
        elif config.keyframe_interval_s == 0:
            self.keyframe_every = 1
        else:
            self.keyframe_every = None  # only the first block
        self.next_keyframe_sample: int | None = None
        self.force_keyframe = False  # a subscriber just joined: let it decode from the next block
        self.last_first_sample = -1
        self.next_ingest_seq: int | None = None
        self.seq_out = 0
        self.backlog: collections.deque[Packet] = collections.deque()
        self.packets_in = self.samples_in = self.bytes_in = 0
        self.bytes_out = self.blocks_out = self.keyframes = 0
        self.drops_backlog = self.drops_sequence = 0
        self.lossless_overflow = 0
        self.latency = {stage: LatencyStage(config.latency_window) for stage in STAGES}
        self.feeds = {name: FeedCounters() for name in config.feeds}
        self.feed_samples = 0  # time steps the feed process has reported

    @property
    def drops(self) -> int:
        return self.drops_backlog + self.drops_sequence

    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0

    def keyframe_due(self, first_sample: int) -> bool:
        restarted = first_sample <= self.last_first_sample  # the implant started over
        self.last_first_sample = first_sample
        if self.next_keyframe_sample is None or restarted or self.force_keyframe:
            due = True
            self.force_keyframe = False
        elif self.keyframe_every is None:
            due = False
        else:
            due = first_sample >= self.next_keyframe_sample
        if due and self.keyframe_every is not None:
            self.next_keyframe_sample = first_sample + self.keyframe_every
        elif due:
            self.next_keyframe_sample = first_sample
        return due

    def channel_ratio(self) -> list[float]:
        spent = self.encoder.channel_bytes().astype(np.float64)
        raw = float(self.samples_in * 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(spent > 0, raw / spent, 0.0)
        return [round(float(r), 4) for r in ratios]

    def stats(self, subscribers: int) -> dict:
        return {"channels": self.channels, "rate": self.rate, "packets_in": self.packets_in,
                "samples_in": self.samples_in, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "ratio": self.ratio(), "drops": self.drops,
                "keyframes": self.keyframes, "subscribers": subscribers,
                "latency_us": {name: stage.summary_us() for name, stage in self.latency.items()},
                "channel_ratio": self.channel_ratio(),
                # additions to the contract's keys:
                "blocks_out": self.blocks_out, "drops_backlog": self.drops_backlog,
                "drops_sequence": self.drops_sequence,
                "lossless_overflow": self.lossless_overflow, "seq": self.seq_out,
                "workers": len(self.group_channels)}

    def feed_stats(self) -> dict:
        # Bits per second of signal (not wall clock), so the figure compares with the link
        # whether the daemon is keeping up or catching up.
        seconds = self.feed_samples / self.rate if self.rate > 0 else 0.0
        return {name: {"messages": c.messages, "bytes": c.bytes, "events": c.events,
                       "drops": c.drops, "seconds": seconds,
                       "bits_per_s": 8 * c.bytes / seconds if seconds > 0 else 0.0}
                for name, c in list(self.feeds.items())}


class FeedCounters:
    """One feed of one stream; `drops` counts packets the feed skipped (its queue was full)."""
    __slots__ = ("messages", "bytes", "events", "drops")

    def __init__(self):
        self.messages = self.bytes = self.events = self.drops = 0


class FeedWorker:
    """The feeds' own process (neurowire.feeds.worker), fed packets over loopback.

    The data thread offers each packet after its lossless block is out, with a non-blocking
    send: past `feed_queue_packets` waiting, the packet is skipped for the feeds and counted,
    and the stream's detector restarts at the next one.  A process and not a thread: detection
    is numpy driven from Python, and a thread doing it made the data thread wait for the GIL
    (the lossless compress and publish p99 grew several-fold on a 2-core machine)."""

    def __init__(self, config: DaemonConfig, sync):
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

    def offer(self, state: StreamState, packet: Packet) -> None:
        try:
            self.tx.send_multipart(
                [state.topic[:-1], msgpack.packb({"first": packet.first_sample,
                                                  "rate": packet.rate, "ch": packet.channels}),
                 packet.samples], zmq.NOBLOCK, copy=False)
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


class LosslessSubscriber:
    __slots__ = ("identity", "streams", "credit", "queue", "last_seen", "sent", "overflow")

    def __init__(self, identity: bytes, streams, credit: int):
        self.identity = identity
        self.streams = streams
        self.credit = credit
        self.queue: collections.deque = collections.deque()
        self.last_seen = time.monotonic()
        self.sent = 0
        self.overflow = 0

    def wants(self, stream_id: str) -> bool:
        return self.streams is None or stream_id in self.streams


class Daemon:
    def __init__(self, config: DaemonConfig, *, install_signal_handlers: bool = False):
        self.config = config
        self.install_signal_handlers = install_signal_handlers
        self.version = package_version()
        self.epoch = time.time_ns()  # tells subscribers that a restarted daemon began anew
        self.started_monotonic = time.monotonic()
        self.streams: dict[str, StreamState] = {}
        self.rejected: dict[str, int] = {}
        self.live_subscriptions: dict[bytes, int] = {}
        self.lossless_subscribers: dict[bytes, LosslessSubscriber] = {}
        self.endpoints: dict[str, str] = {}
        self.ingest_connections = {"accepted": 0, "disconnected": 0}
        self.metrics_server: MetricsServer | None = None
        self.ready = threading.Event()
        self.heartbeat = time.monotonic()  # the data thread's last sign of life (watchdog)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._data_thread: threading.Thread | None = None
        self._data_error: BaseException | None = None
        self._team = None  # the encoder threads, made by the data thread as it starts
        self.data_path: dict = {}  # how the data thread and encoder threads are scheduled
        self._feeds: FeedWorker | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from any thread and from signal handlers: only wakes the loop."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._stop.set)
        self.context = zmq.asyncio.Context()
        self._authenticator = None
        try:
            # libzmq's I/O threads, started with the first sockets, carry every packet: they
            # inherit realtime_priority from this thread, which then goes back to ordinary.
            with _scheduled(self.config.realtime_priority):
                self._open_sockets()
            if self.config.metrics:
                self.metrics_server = MetricsServer(self, self.config.metrics)
                self.endpoints["metrics"] = (
                    f"{self.config.metrics.rsplit(':', 1)[0]}:{self.metrics_server.port}")
            log.info("neurowire daemon %s listening: %s (%d encoder thread(s))", self.version,
                     ", ".join(f"{k}={v}" for k, v in self.endpoints.items()),
                     self.config.workers)
            if self._feeds is not None:
                await self._loop.run_in_executor(None, self._feeds.start)
            self._data_thread = threading.Thread(target=self._data_main, name="nw-data",
                                                 daemon=True)
            self._data_thread.start()
            sd.notify("READY=1\nSTATUS=listening on " + self.endpoints["ingest"])
            self.ready.set()
            tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in (
                ("control", self._control_loop()), ("watchdog", self._watchdog()))]
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    log.error("task %s failed", task.get_name(), exc_info=task.exception())
            sd.notify("STOPPING=1")
            log.info("stopping: flushing what was received")
            self._stopping.set()
            self._wake_data_thread()
            await self._loop.run_in_executor(None, self._data_thread.join)
            stop_task.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(stop_task, *tasks, return_exceptions=True)
        finally:
            self._stopping.set()
            if self._data_thread is not None and self._data_thread.is_alive():
                self._wake_data_thread()
                self._data_thread.join(self.config.flush_timeout_s + 5)
            self.ready.set()
            self._close()
        if self._data_error is not None:
            raise self._data_error
        log.info("stopped")

    def _secure(self, sock) -> None:
        if self.config.security.curve:
            public, secret = zmq.auth.load_certificate(self.config.security.server_secret_key)
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True

    def _bind(self, sock, name: str, endpoint: str) -> None:
        self._secure(sock)
        sock.bind(endpoint)
        self.endpoints[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def ingest_limits(self) -> tuple[int, int]:
        """(payload bytes the daemon accepts, frame bytes libzmq lets through).

        libzmq drops a frame over MAXMSGSIZE by cutting the connection, which its monitor
        cannot tell from an ordinary hang-up; so libzmq's limit sits well above the daemon's,
        and anything in between reaches parse_ingest, which counts it as "oversized"."""
        accepted = self.config.max_packet_bytes()
        return accepted, 2 * accepted + 65536

    def _open_sockets(self) -> None:
        config = self.config
        if config.security.curve:
            self._authenticator = zmq.auth.thread.ThreadAuthenticator(
                zmq.Context.shadow(self.context.underlying), log=log.getChild("auth"))
            self._authenticator.start()
            self._authenticator.configure_curve(domain="*", location=config.security.client_keys_dir)
        # Data sockets are plain (blocking-capable) sockets on the same libzmq context; they
        # are created and bound here so that a bad endpoint fails the start, then handed to
        # the data thread, which is their only user from then on.
        sync = zmq.Context.shadow(self.context.underlying)
        self.ingest = sync.socket(zmq.PULL)
        # Headroom for a burst: the daemon, not libzmq, decides what to drop, and counts it.
        self.ingest.rcvhwm = 100_000
        self.ingest.maxmsgsize = self.ingest_limits()[1]
        self.ingest.linger = 0
        self._ingest_monitor = self.ingest.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._bind(self.ingest, "ingest", config.ingest)
        self.publisher = sync.socket(zmq.XPUB)
        self.publisher.sndhwm = config.live_hwm
        self.publisher.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe: we count them
        self.publisher.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.publisher, "publish", config.publish)
        self.router = sync.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error, not silence
        self.router.sndhwm = 100_000  # credit, not the HWM, bounds what is in flight
        self.router.maxmsgsize = 4096
        self.router.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.router, "lossless", config.lossless)
        if config.feeds:
            self._feeds = FeedWorker(config, sync)
        wake = f"inproc://neurowire-wake-{id(self):x}"
        self._wake_rx = sync.socket(zmq.PULL)
        self._wake_rx.bind(wake)
        self._wake_tx = sync.socket(zmq.PUSH)
        self._wake_tx.linger = 0
        self._wake_tx.connect(wake)
        self.control = self.context.socket(zmq.REP)
        self.control.maxmsgsize = 4096
        self.control.linger = 0
        self._bind(self.control, "control", config.control)

    def _wake_data_thread(self) -> None:
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except (zmq.ZMQError, AttributeError):
            pass  # never opened, or already woken: the poll timeout catches it anyway

    def _close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        if getattr(self, "ingest", None) is not None and not self.ingest.closed:
            self.ingest.disable_monitor()
        if self._feeds is not None:
            self._feeds.stop()
        for name in ("_ingest_monitor", "ingest", "publisher", "router", "_wake_rx", "_wake_tx",
                     "control"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.term()

    # ---- the data thread -----------------------------------------------------------------

    def _setup_data_thread(self) -> None:
        """Scheduling of this thread, then the encoder threads, which inherit it."""
        config = self.config
        codec = _codec()
        cpus = codec.team_cpus(config.workers) if config.pin_threads else None
        if cpus is not None:
            try:
                os.sched_setaffinity(0, {cpus[0]})  # this thread's alone (Linux threads)
            except OSError as error:
                log.warning("pin_threads: CPU affinity refused (%s); threads left to the "
                            "scheduler", error)
                cpus = None
        priority = config.realtime_priority
        if priority and not _set_realtime(priority):
            priority = 0
        self._team = codec.CodecTeam(config.workers, cpus, spin_us=config.spin_us)
        spin_us = config.spin_us if self._team.threads > 1 else 0
        self.data_path = {"encoder_threads": self._team.threads, "cpus": cpus,
                          "realtime_priority": priority, "spin_us": spin_us}
        log.info("data path: %d encoder thread(s)%s%s%s", self._team.threads,
                 f" on CPUs {cpus}" if cpus else "",
                 f", SCHED_FIFO priority {priority}" if priority else "",
                 f", polling {spin_us} us between blocks" if spin_us else "")

    def _data_main(self) -> None:
        try:
            self._setup_data_thread()
            self._data_loop()
            self._flush()
        except BaseException as error:
            self._data_error = error
            log.error("data path failed", exc_info=True)
        finally:
            # Closed here, by their only user; the publishers linger to deliver what is queued.
            if not self.ingest.closed:
                self.ingest.disable_monitor()
            if self._feeds is not None:
                self._feeds.stop()
            for sock in (self._ingest_monitor, self.ingest, self.publisher, self.router,
                         self._wake_rx):
                sock.close()
            self.request_stop()

    def _data_loop(self) -> None:
        poller = zmq.Poller()
        handlers = {self.ingest: self._on_ingest, self.publisher: self._on_subscriptions,
                    self.router: self._on_lossless_requests,
                    self._ingest_monitor: self._on_ingest_event, self._wake_rx: self._on_wake}
        if self._feeds is not None:
            handlers[self._feeds.rx] = self._on_feed_messages
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        next_housekeeping = 0.0
        while not self._stopping.is_set():
            for sock, _ in poller.poll(50):
                handlers[sock]()
            now = self.heartbeat = time.monotonic()
            if now >= next_housekeeping:
                self._housekeeping(now)
                next_housekeeping = now + 0.1

    def _on_feed_messages(self) -> None:
        feeds = self._feeds
        receive, send = feeds.rx.recv_multipart, self.publisher.send_multipart
        while True:
            try:
                topic, message = receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            if topic:
                stream, feed = topic[:-1].decode().rsplit("/", 1)
                state = self.streams.get(stream)
                if state is not None and feed in state.feeds:
                    # Counted before sending, like the lossless blocks.
                    state.feeds[feed].messages += 1
                    state.feeds[feed].bytes += len(message)
                send([topic, message], zmq.NOBLOCK)
            elif message == b"done":
                feeds.done = True
            elif message != b"ready":
                report = msgpack.unpackb(message)
                state = self.streams.get(report["stream"])
                feeds.reported += report["packets"]
                if state is not None:
                    state.feed_samples += report["samples"]
                    if "spikes" in state.feeds:
                        state.feeds["spikes"].events += report["events"]

    def _finish_feeds(self) -> None:
        """On stop: let the feed process work through what it was sent, and publish it."""
        feeds = self._feeds
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
                self._on_feed_messages()
                feeds.rx.poll(5)
        while not feeds.done and time.monotonic() < deadline:
            if feeds.rx.poll(20):
                self._on_feed_messages()
            feeds.check()
            if feeds.error is not None:
                return

    def _on_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _on_ingest(self) -> None:
        # Take everything already waiting before compressing anything: the backlog is what
        # tells the daemon it is behind.  Bounded so the other sockets get a turn.
        receive = self.ingest.recv_multipart
        for _ in range(self.config.max_backlog_packets * 4):
            try:
                frames = receive(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._accept(frames)
        self._process_backlogs()

    def _on_ingest_event(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._ingest_monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.ingest_connections["accepted"] += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.ingest_connections["disconnected"] += 1
                log.info("an implant connection closed (%d so far); libzmq also ends a "
                         "connection this way on a frame over %d bytes",
                         self.ingest_connections["disconnected"], self.ingest_limits()[1])

    def _flush(self) -> None:
        """On stop: compress what arrived, then give lossless subscribers time to take it."""
        while True:
            try:
                frames = self.ingest.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._accept(frames)
        self._process_backlogs()
        if self._feeds is not None:
            self._finish_feeds()
        deadline = time.monotonic() + self.config.flush_timeout_s
        while time.monotonic() < deadline and any(
                subscriber.queue for subscriber in self.lossless_subscribers.values()):
            if self.router.poll(5):
                self._on_lossless_requests()
            for subscriber in list(self.lossless_subscribers.values()):
                self._pump(subscriber)
        held = sum(len(s.queue) for s in self.lossless_subscribers.values())
        if held:
            log.warning("stopping with %d blocks still held for lossless subscribers", held)

    # ---- ingest -> compress -> publish ---------------------------------------------------

    def _reject(self, rejection: Rejected) -> None:
        count = self.rejected.get(rejection.reason, 0) + 1
        self.rejected[rejection.reason] = count
        if count <= 10 or count % 1000 == 0:  # log, but never flood journald
            log.warning("rejected message (%s, #%d): %s", rejection.reason, count,
                        rejection.detail)

    def _accept(self, frames) -> None:
        config = self.config
        try:
            packet = parse_ingest(frames, time.time_ns(), config.max_channels,
                                  config.max_packet_samples)
            state = self.streams.get(packet.stream)
            if state is None:
                if len(self.streams) >= config.max_streams:
                    raise Rejected("too_many_streams", packet.stream)
                state = StreamState(packet.stream, packet.channels, packet.rate, config,
                                    self._team)
                self.streams[packet.stream] = state
                log.info("new stream %s: %d channels at %g Hz", packet.stream, packet.channels,
                         packet.rate)
            elif packet.channels != state.channels:
                raise Rejected("channels", f"stream {packet.stream} has {state.channels} "
                                           f"channels, packet has {packet.channels}")
        except Rejected as rejection:
            self._reject(rejection)
            return
        expected = state.next_ingest_seq
        if expected is not None and packet.seq != expected:
            if packet.seq > expected:
                state.drops_sequence += packet.seq - expected
                log.warning("stream %s: packets %d..%d never arrived", state.stream_id,
                            expected, packet.seq - 1)
            else:
                log.info("stream %s: sequence restarted at %d", state.stream_id, packet.seq)
        state.next_ingest_seq = packet.seq + 1
        state.backlog.append(packet)
        if len(state.backlog) > config.max_backlog_packets:
            dropped = state.backlog.popleft()
            state.drops_backlog += 1
            if state.drops_backlog <= 10 or state.drops_backlog % 1000 == 0:
                log.warning("stream %s behind: dropped packet seq %d (samples %d..%d), %d so far",
                            state.stream_id, dropped.seq, dropped.first_sample,
                            dropped.first_sample + dropped.n_samples - 1, state.drops_backlog)

    def _process_backlogs(self) -> None:
        done = 0
        for state in list(self.streams.values()):
            backlog = state.backlog
            while backlog:
                self._compress_and_publish(state, backlog.popleft())
                self.heartbeat = time.monotonic()
                done += 1
                if done % 16 == 0 and self.lossless_subscribers:
                    # A long backlog takes seconds on a starved machine: credit read only
                    # after it would leave lossless subscribers with nothing, idle.
                    self._on_lossless_requests()

    def _compress_and_publish(self, state: StreamState, packet: Packet) -> None:
        # A view of the bytes still inside the zmq frame: no copy on the way to the codec.
        samples = np.frombuffer(packet.samples, dtype="<i2").reshape(packet.n_samples,
                                                                     packet.channels)
        keyframe = state.keyframe_due(packet.first_sample)
        started = time.perf_counter_ns()
        blobs = state.encoder.encode(samples, keyframe)
        compress_ns = time.perf_counter_ns() - started
        header = publish_header(packet, seq=state.seq_out, epoch=self.epoch, keyframe=keyframe,
                                codec_version=state.codec_version,
                                crc32=zlib.crc32(packet.samples), compress_ns=compress_ns,
                                compressed_ns=time.time_ns(),
                                group_channels=state.group_channels, dropped=state.drops)
        header["t_pub"] = published_ns = time.time_ns()
        frames = [state.topic, msgpack.packb(header), *blobs]
        # Counted before sending, so that whoever has the block also sees it in the stats.
        state.seq_out += 1
        state.packets_in += 1
        state.samples_in += packet.n_samples
        state.bytes_in += packet.samples.nbytes
        state.bytes_out += sum(len(blob) for blob in blobs)
        state.blocks_out += 1
        state.keyframes += keyframe
        latency = state.latency
        latency["ingest"].add_ns(packet.received_ns - packet.acquired_ns)
        latency["compress"].add_ns(compress_ns)
        latency["publish"].add_ns(published_ns - packet.acquired_ns)
        # XPUB never blocks: past a subscriber's HWM libzmq drops for that subscriber only.
        self.publisher.send_multipart(frames, zmq.NOBLOCK)
        if self.lossless_subscribers:
            for subscriber in list(self.lossless_subscribers.values()):
                if subscriber.wants(state.stream_id):
                    subscriber.queue.append(frames)
                    if len(subscriber.queue) > self.config.lossless_max_messages:
                        subscriber.queue.popleft()
                        subscriber.overflow += 1
                        state.lossless_overflow += 1
                    self._pump(subscriber)
        if self._feeds is not None and self._feeds.error is None:
            self._feeds.offer(state, packet)

    # ---- lossless subscribers -----------------------------------------------------------

    def _pump(self, subscriber: LosslessSubscriber) -> None:
        queue_ = subscriber.queue
        send = self.router.send_multipart
        while subscriber.credit > 0 and queue_:
            try:
                send([subscriber.identity, *queue_[0]], zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as error:
                if error.errno == zmq.EHOSTUNREACH:
                    return  # disconnected for now: keep holding until it returns or times out
                raise
            queue_.popleft()
            subscriber.credit -= 1
            subscriber.sent += 1

    def _on_lossless_requests(self) -> None:
        while True:
            try:
                identity, *rest = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._lossless_request(identity, rest)

    def _lossless_request(self, identity: bytes, rest: list) -> None:
        try:
            if len(rest) != 1:
                raise Rejected("lossless_request", f"{len(rest)} frames")
            request = unpack_small_map(rest[0])
            command = request.get("cmd")
            subscriber = self.lossless_subscribers.get(identity)
            if command == "hello":
                streams = request.get("streams")
                if streams is not None and (not isinstance(streams, list) or
                                            not all(isinstance(s, str) for s in streams)):
                    raise Rejected("lossless_request", "'streams' must be a list of ids")
                credit = request.get("credit", 64)
                if not isinstance(credit, int) or not 0 <= credit <= 1_000_000:
                    raise Rejected("lossless_request", f"credit {credit!r}")
                if subscriber is None:
                    subscriber = LosslessSubscriber(
                        identity, None if streams is None else set(streams), credit)
                    self.lossless_subscribers[identity] = subscriber
                    log.info("lossless subscriber %s joined (streams %s)", identity.hex(),
                             streams or "all")
                else:  # it reconnected or re-announced itself: its window starts afresh
                    subscriber.credit = credit
                self._keyframe_soon(lambda stream_id: subscriber.wants(stream_id))
            elif subscriber is None:
                raise Rejected("lossless_request", f"{command!r} before hello")
            elif command == "credit":
                grant = request.get("n", 0)
                if not isinstance(grant, int) or not 0 <= grant <= 1_000_000:
                    raise Rejected("lossless_request", f"credit {grant!r}")
                subscriber.credit += grant
            elif command == "bye":
                del self.lossless_subscribers[identity]
                log.info("lossless subscriber %s left", identity.hex())
                return
            else:
                raise Rejected("lossless_request", f"unknown command {command!r}")
        except Rejected as rejection:
            self._reject(rejection)
            return
        subscriber.last_seen = time.monotonic()
        self._pump(subscriber)

    # ---- live subscriptions, control, housekeeping -----------------------------------------

    def _on_subscriptions(self) -> None:
        while True:
            try:
                message = self.publisher.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not message:
                continue
            prefix = bytes(message[1:])
            if message[0] == 1:
                self.live_subscriptions[prefix] = self.live_subscriptions.get(prefix, 0) + 1
                self._keyframe_soon(lambda stream_id: topic_for(stream_id).startswith(prefix))
                if self._feeds is not None and b"/" in prefix:
                    self._feeds.key_soon(prefix)
            elif message[0] == 0 and self.live_subscriptions.get(prefix, 0) > 0:
                self.live_subscriptions[prefix] -= 1
                if not self.live_subscriptions[prefix]:
                    del self.live_subscriptions[prefix]

    def _keyframe_soon(self, wanted) -> None:
        """A new subscriber decodes from the next block instead of waiting up to a keyframe
        interval; the extra keyframe costs one block's worth of ratio."""
        for stream_id, state in list(self.streams.items()):
            if wanted(stream_id):
                state.force_keyframe = True

    def _housekeeping(self, now: float) -> None:
        if self._feeds is not None:
            self._feeds.check()
        for identity, subscriber in list(self.lossless_subscribers.items()):
            if now - subscriber.last_seen > self.config.lossless_timeout_s:
                del self.lossless_subscribers[identity]
                log.warning("lossless subscriber %s silent for %.0f s: released %d held "
                            "blocks", identity.hex(), now - subscriber.last_seen,
                            len(subscriber.queue))
            else:
                self._pump(subscriber)

    def subscriber_counts(self, stream_id: str) -> tuple[int, int]:
        topic = topic_for(stream_id)
        live = sum(count for prefix, count in list(self.live_subscriptions.items())
                   if topic.startswith(prefix))
        lossless = sum(1 for s in list(self.lossless_subscribers.values())
                       if s.wants(stream_id))
        return live, lossless

    def feed_subscribers(self, stream_id: str, feed: str) -> int:
        from neurowire.feeds.serve import feed_topic

        topic = feed_topic(stream_id, feed)
        return sum(count for prefix, count in list(self.live_subscriptions.items())
                   if topic.startswith(prefix))

    def _stream_stats(self, stream_id: str, state: StreamState) -> dict:
        reply = state.stats(sum(self.subscriber_counts(stream_id)))
        if state.feeds:
            feeds = reply["feeds"] = state.feed_stats()
            for name, entry in feeds.items():
                entry["subscribers"] = self.feed_subscribers(stream_id, name)
        return reply

    def status(self) -> dict:
        return {"state": "running", "version": self.version, "pid": os.getpid(),
                "epoch": self.epoch, "uptime_s": time.monotonic() - self.started_monotonic,
                "streams": sorted(list(self.streams)), "endpoints": dict(self.endpoints),
                "lossless_subscribers": len(self.lossless_subscribers),
                "live_subscriptions": sum(list(self.live_subscriptions.values())),
                "data_path": dict(self.data_path)}

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"version": self.version, "uptime_s": time.monotonic() - self.started_monotonic,
                "time_ns": time.time_ns(), "rejected": dict(self.rejected),
                "streams": {stream_id: self._stream_stats(stream_id, state)
                            for stream_id, state in list(self.streams.items())},
                "process": {"pid": os.getpid(), "cpu_user_s": usage.ru_utime,
                            "cpu_system_s": usage.ru_stime, "max_rss_kb": usage.ru_maxrss},
                "lossless": [{"id": s.identity.hex(), "held": len(s.queue), "sent": s.sent,
                              "credit": s.credit, "overflow": s.overflow}
                             for s in list(self.lossless_subscribers.values())],
                # additions to the contract's keys:
                "ingest_connections": dict(self.ingest_connections),
                "ingest_limits": dict(zip(("daemon_bytes", "libzmq_bytes"),
                                          self.ingest_limits())),
                "data_thread_age_s": time.monotonic() - self.heartbeat,
                "feeds": {"enabled": list(self.config.feeds),
                          "queued": self._feeds.queued() if self._feeds else 0,
                          "pid": (self._feeds.process.pid
                                  if self._feeds and self._feeds.process else None),
                          "error": self._feeds.error if self._feeds else None}}

    def config_reply(self) -> dict:
        reply = self.config.to_dict()
        reply["security"] = {"curve": self.config.security.curve}  # no key paths on the wire
        reply["bound"] = dict(self.endpoints)
        return reply

    async def _control_loop(self) -> None:
        handlers = {"status": self.status, "stats": self.stats, "config": self.config_reply}
        while True:
            request_bytes = await self.control.recv()
            try:
                request = unpack_small_map(request_bytes)
                handler = handlers.get(request.get("cmd"))
                if handler is None:
                    raise Rejected("control", f"unknown command {request.get('cmd')!r}")
                reply = handler()
            except Rejected as rejection:
                self._reject(rejection)
                reply = {"error": f"{rejection.detail or rejection.reason}; commands: "
                                  f"{', '.join(handlers)}"}
            await self.control.send(msgpack.packb(reply))

    async def _watchdog(self) -> None:
        watchdog_s = sd.watchdog_interval_s()
        if watchdog_s is None:
            await asyncio.Future()  # nothing to ping; stays pending like the other tasks
        while True:
            # Pinged only while the data thread shows signs of life (it beats at least every
            # poll timeout, and per block while it works), so a wedged data path stops the
            # pings and systemd restarts the daemon.
            if time.monotonic() - self.heartbeat < 2 * watchdog_s:
                sd.notify("WATCHDOG=1")
            await asyncio.sleep(min(0.1, watchdog_s))


class DaemonThread:
    """A daemon on a thread of its own (tests, notebooks): start(), .daemon, stop()."""

    def __init__(self, config: DaemonConfig):
        self.daemon = Daemon(config)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="neurowire-daemon", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.daemon.run())
        except BaseException as error:  # handed to the starting thread
            self.error = error
            self.daemon.ready.set()

    def start(self, timeout: float = 10.0) -> "DaemonThread":
        self.thread.start()
        if not self.daemon.ready.wait(timeout):
            raise TimeoutError("daemon did not become ready")
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.daemon.request_stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("daemon did not stop")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
