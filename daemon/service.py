"""The daemon: asyncio + zmq.asyncio, one coroutine per socket, one data path.

    implant PUSH --> [ingest PULL] -> validate -> per-stream backlog -> StreamEncoder
                         -> [publish XPUB]   live subscribers: compress once, libzmq fans out
                         -> [lossless ROUTER] held per subscriber, sent against credit
    [control REP] status / stats / config            /metrics (Prometheus, own thread)

The ingest coroutine drains every packet the socket holds before compressing, so the implant
side is never back-pressured: if compression falls behind, the backlog grows past
`max_backlog_packets` and whole packets are dropped (oldest first) and counted.  Sends use
NOBLOCK: a slow live subscriber loses messages at its own high-water mark and sees the gap in
sequence numbers; a lossless subscriber's blocks wait in the daemon until it grants credit.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import resource
import signal
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


def _codec():
    # Imported late so that config errors and --help work even where the C core is not built.
    from neurowire import codec

    return codec


def _send_now(sock, frames) -> None:
    """NOBLOCK send on an asyncio socket: completes (or fails) before returning."""
    error = sock.send_multipart(frames, flags=zmq.NOBLOCK).exception()
    if error is not None:
        raise error


class StreamState:
    """Everything the daemon keeps for one implant stream."""

    def __init__(self, stream_id: str, channels: int, rate: float, config: DaemonConfig):
        codec = _codec()
        self.stream_id = stream_id
        self.topic = topic_for(stream_id)
        self.channels = channels
        self.rate = rate
        self.codec_version = int(getattr(codec, "FORMAT_VERSION", 0))
        groups = max(1, min(config.workers, channels))
        edges = np.linspace(0, channels, groups + 1).round().astype(int)
        self.group_bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        self.group_channels = [b - a for a, b in self.group_bounds]
        self.encoders = [codec.StreamEncoder(count) for count in self.group_channels]
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
        spent = np.concatenate([enc.channel_bytes() for enc in self.encoders]).astype(np.float64)
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
                "workers": len(self.encoders)}


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
        self.metrics_server: MetricsServer | None = None
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._pool = (concurrent.futures.ThreadPoolExecutor(config.workers - 1,
                                                            thread_name_prefix="nw-encode")
                      if config.workers > 1 else None)
        self._reject_logged: dict[str, int] = {}

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
            self._open_sockets()
            if self.config.metrics:
                self.metrics_server = MetricsServer(self, self.config.metrics)
                self.endpoints["metrics"] = (
                    f"{self.config.metrics.rsplit(':', 1)[0]}:{self.metrics_server.port}")
            log.info("neurowire daemon %s listening: %s", self.version,
                     ", ".join(f"{k}={v}" for k, v in self.endpoints.items()))
            sd.notify("READY=1\nSTATUS=listening on " + self.endpoints["ingest"])
            self.ready.set()
            ingest_task = asyncio.create_task(self._ingest_loop(), name="ingest")
            other_tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in (
                ("control", self._control_loop()), ("xpub", self._subscription_loop()),
                ("lossless", self._lossless_loop()), ("housekeeping", self._housekeeping()))]
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait([ingest_task, stop_task, *other_tasks],
                               return_when=asyncio.FIRST_COMPLETED)
            for task in (ingest_task, *other_tasks):
                if task.done() and task.exception() is not None:
                    log.error("task %s failed", task.get_name(), exc_info=task.exception())
            sd.notify("STOPPING=1")
            log.info("stopping: flushing what was received")
            ingest_task.cancel()
            await asyncio.gather(ingest_task, return_exceptions=True)
            self._flush_ingest()
            await self._flush_lossless()
            stop_task.cancel()
            for task in other_tasks:
                task.cancel()
            await asyncio.gather(stop_task, *other_tasks, return_exceptions=True)
        finally:
            self.ready.set()
            self._close()
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

    def _open_sockets(self) -> None:
        config = self.config
        if config.security.curve:
            self._authenticator = zmq.auth.thread.ThreadAuthenticator(
                zmq.Context.shadow(self.context.underlying), log=log.getChild("auth"))
            self._authenticator.start()
            self._authenticator.configure_curve(domain="*", location=config.security.client_keys_dir)
        self.ingest = self.context.socket(zmq.PULL)
        # Headroom for a burst: the daemon, not libzmq, decides what to drop, and counts it.
        self.ingest.rcvhwm = 100_000
        self.ingest.maxmsgsize = config.max_packet_bytes() + 65536
        self.ingest.linger = 0
        self._bind(self.ingest, "ingest", config.ingest)
        self.publisher = self.context.socket(zmq.XPUB)
        self.publisher.sndhwm = config.live_hwm
        self.publisher.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe: we count them
        self.publisher.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.publisher, "publish", config.publish)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error, not silence
        self.router.sndhwm = 100_000  # credit, not the HWM, bounds what is in flight
        self.router.maxmsgsize = 4096
        self.router.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.router, "lossless", config.lossless)
        self.control = self.context.socket(zmq.REP)
        self.control.maxmsgsize = 4096
        self.control.linger = 0
        self._bind(self.control, "control", config.control)
        # A synchronous view of the ingest socket drains it without a future per packet.  Only
        # for ingest: its coroutine is not waiting while the drain runs, and an awaited recv
        # checks EVENTS first, so no edge-triggered wake-up is lost.  XPUB and ROUTER have a
        # recv pending while we send, so they send through the asyncio socket, which re-arms it.
        self._ingest_sync = zmq.Socket.shadow(self.ingest.underlying)

    def _close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        for name in ("ingest", "publisher", "router", "control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.term()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # ---- ingest -> compress -> publish ---------------------------------------------------

    async def _ingest_loop(self) -> None:
        drain_limit = self.config.max_backlog_packets * 4
        while True:
            frames = await self.ingest.recv_multipart(copy=False)
            self._accept(frames)
            # Take everything already waiting before compressing anything: the backlog is
            # what tells the daemon it is behind.  Bounded so control requests get a turn.
            for _ in range(drain_limit):
                try:
                    frames = self._ingest_sync.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._accept(frames)
            self._process_backlogs()
            # An awaited recv that finds a message ready does not yield to the loop, so under
            # steady load this coroutine would starve control and lossless credit: yield here.
            await asyncio.sleep(0)

    def _flush_ingest(self) -> None:
        while True:
            try:
                frames = self._ingest_sync.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._accept(frames)
        self._process_backlogs()

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
                state = StreamState(packet.stream, packet.channels, packet.rate, config)
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
        for state in self.streams.values():
            backlog = state.backlog
            while backlog:
                self._compress_and_publish(state, backlog.popleft())

    def _encode(self, state: StreamState, samples: np.ndarray, keyframe: bool) -> list[bytes]:
        if len(state.encoders) == 1:
            return [state.encoders[0].encode(samples, keyframe=keyframe)]
        futures = [self._pool.submit(encoder.encode, samples[:, a:b], keyframe)
                   for encoder, (a, b) in zip(state.encoders[1:], state.group_bounds[1:])]
        a, b = state.group_bounds[0]
        first = state.encoders[0].encode(samples[:, a:b], keyframe=keyframe)
        return [first, *(future.result() for future in futures)]

    def _compress_and_publish(self, state: StreamState, packet: Packet) -> None:
        samples = np.frombuffer(packet.samples, dtype="<i2").reshape(packet.n_samples,
                                                                     packet.channels)
        keyframe = state.keyframe_due(packet.first_sample)
        started = time.perf_counter_ns()
        blobs = self._encode(state, samples, keyframe)
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
        _send_now(self.publisher, frames)
        for subscriber in self.lossless_subscribers.values():
            if subscriber.wants(state.stream_id):
                subscriber.queue.append(frames)
                if len(subscriber.queue) > self.config.lossless_max_messages:
                    subscriber.queue.popleft()
                    subscriber.overflow += 1
                    state.lossless_overflow += 1
                self._pump(subscriber)

    # ---- lossless subscribers -----------------------------------------------------------

    def _pump(self, subscriber: LosslessSubscriber) -> None:
        queue = subscriber.queue
        while subscriber.credit > 0 and queue:
            try:
                _send_now(self.router, [subscriber.identity, *queue[0]])
            except zmq.Again:
                return
            except zmq.ZMQError as error:
                if error.errno == zmq.EHOSTUNREACH:
                    return  # disconnected for now: keep holding until it returns or times out
                raise
            queue.popleft()
            subscriber.credit -= 1
            subscriber.sent += 1

    async def _lossless_loop(self) -> None:
        while True:
            identity, *rest = await self.router.recv_multipart()
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
                    continue
                else:
                    raise Rejected("lossless_request", f"unknown command {command!r}")
            except Rejected as rejection:
                self._reject(rejection)
                continue
            subscriber.last_seen = time.monotonic()
            self._pump(subscriber)

    async def _flush_lossless(self) -> None:
        deadline = time.monotonic() + self.config.flush_timeout_s
        while time.monotonic() < deadline and any(
                subscriber.queue for subscriber in self.lossless_subscribers.values()):
            for subscriber in self.lossless_subscribers.values():
                self._pump(subscriber)
            await asyncio.sleep(0.005)
        held = sum(len(s.queue) for s in self.lossless_subscribers.values())
        if held:
            log.warning("stopping with %d blocks still held for lossless subscribers", held)

    # ---- live subscriptions, control, housekeeping -----------------------------------------

    async def _subscription_loop(self) -> None:
        while True:
            message = await self.publisher.recv()
            if not message:
                continue
            prefix = bytes(message[1:])
            if message[0] == 1:
                self.live_subscriptions[prefix] = self.live_subscriptions.get(prefix, 0) + 1
                self._keyframe_soon(lambda stream_id: topic_for(stream_id).startswith(prefix))
            elif message[0] == 0 and self.live_subscriptions.get(prefix, 0) > 0:
                self.live_subscriptions[prefix] -= 1
                if not self.live_subscriptions[prefix]:
                    del self.live_subscriptions[prefix]

    def _keyframe_soon(self, wanted) -> None:
        """A new subscriber decodes from the next block instead of waiting up to a keyframe
        interval; the extra keyframe costs one block's worth of ratio."""
        for stream_id, state in self.streams.items():
            if wanted(stream_id):
                state.force_keyframe = True

    def subscriber_counts(self, stream_id: str) -> tuple[int, int]:
        topic = topic_for(stream_id)
        live = sum(count for prefix, count in self.live_subscriptions.items()
                   if topic.startswith(prefix))
        lossless = sum(1 for s in self.lossless_subscribers.values() if s.wants(stream_id))
        return live, lossless

    def status(self) -> dict:
        return {"state": "running", "version": self.version, "pid": os.getpid(),
                "epoch": self.epoch, "uptime_s": time.monotonic() - self.started_monotonic,
                "streams": sorted(self.streams), "endpoints": dict(self.endpoints),
                "lossless_subscribers": len(self.lossless_subscribers),
                "live_subscriptions": sum(self.live_subscriptions.values())}

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"version": self.version, "uptime_s": time.monotonic() - self.started_monotonic,
                "time_ns": time.time_ns(), "rejected": dict(self.rejected),
                "streams": {stream_id: state.stats(sum(self.subscriber_counts(stream_id)))
                            for stream_id, state in self.streams.items()},
                "process": {"pid": os.getpid(), "cpu_user_s": usage.ru_utime,
                            "cpu_system_s": usage.ru_stime, "max_rss_kb": usage.ru_maxrss},
                "lossless": [{"id": s.identity.hex(), "held": len(s.queue), "sent": s.sent,
                              "credit": s.credit, "overflow": s.overflow}
                             for s in self.lossless_subscribers.values()]}

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

    async def _housekeeping(self) -> None:
        watchdog_s = sd.watchdog_interval_s()
        next_watchdog = 0.0
        while True:
            now = time.monotonic()
            if watchdog_s is not None and now >= next_watchdog:
                # The ping comes from the same loop that moves the data, so a wedged loop
                # stops it and systemd restarts the daemon.
                sd.notify("WATCHDOG=1")
                next_watchdog = now + watchdog_s
            for identity, subscriber in list(self.lossless_subscribers.items()):
                if now - subscriber.last_seen > self.config.lossless_timeout_s:
                    del self.lossless_subscribers[identity]
                    log.warning("lossless subscriber %s silent for %.0f s: released %d held "
                                "blocks", identity.hex(), now - subscriber.last_seen,
                                len(subscriber.queue))
                else:
                    self._pump(subscriber)
            await asyncio.sleep(0.1 if watchdog_s is None else min(0.1, watchdog_s))


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
