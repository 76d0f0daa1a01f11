"""The daemon's lifecycle: start, run until asked to stop, flush, close; plus control and the
watchdog on the asyncio loop.

    data thread (datapath.py)  ingest, XPUB, ROUTER, ingest monitor, feed bridge
    encoder threads            channel groups of each block (C, no GIL; scheduling.py)
    asyncio loop (here)        [control REP] status / stats / config, watchdog, signals
    /metrics                   Prometheus, its own thread (metrics.py)

Each part has its file: sockets.py (sockets and CURVE), streams.py (the stream table),
lossless.py (credit), feedbridge.py (feeds), reporting.py (status, stats, /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import msgpack
import zmq

from neurowire.wire import Rejected

from . import notify as sd
from .config import DaemonConfig
from .datapath import DataPath
from .metrics import MetricsServer
from .reporting import Reporter
from .requests import RateLimit, unpack_small_map
from .scheduling import scheduled
from .sockets import DaemonSockets, ingest_limits
from .streams import StreamTable

log = logging.getLogger("neurowire.daemon")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("neurowire")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


class InternalError(RuntimeError):
    """A fault of the daemon itself (never bad input, which is answered and counted): the
    daemon stops with a non-zero status, so systemd's Restart=on-failure starts it again."""


class Daemon:
    def __init__(self, config: DaemonConfig, *, install_signal_handlers: bool = False):
        self.config = config
        self.install_signal_handlers = install_signal_handlers
        self.version = package_version()
        self.epoch = time.time_ns()  # tells subscribers that a restarted daemon began anew
        self.rejected: dict[str, int] = {}
        self.table = StreamTable(config)
        self.sockets = DaemonSockets(config, id(self))
        self.data = DataPath(config, self.sockets, self.table, self.epoch, self.reject)
        self.reporter = Reporter(config, self.version, self.epoch, self.table, self.sockets,
                                 self.rejected)
        self.reporter.data = self.data
        self.metrics_server: MetricsServer | None = None
        self.control_limit = RateLimit(config.control_rate)
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._data_thread: threading.Thread | None = None

    # What tests and tools read of a running daemon.
    streams = property(lambda self: self.table.by_name)
    endpoints = property(lambda self: self.sockets.endpoints)
    live_subscriptions = property(lambda self: self.data.live_subscriptions)
    lossless_subscribers = property(lambda self: self.data.lossless.subscribers)
    ingest_connections = property(lambda self: self.data.ingest_connections)
    data_path = property(lambda self: self.data.granted)
    _feeds = property(lambda self: self.sockets.feeds)
    status = property(lambda self: self.reporter.status)
    stats = property(lambda self: self.reporter.stats)

    def ingest_limits(self) -> tuple[int, int]:
        return ingest_limits(self.config)

    def reject(self, rejection: Rejected) -> None:
        """Count a message the daemon will not use, under its reason (and log the first)."""
        count = self.rejected.get(rejection.reason, 0) + 1
        self.rejected[rejection.reason] = count
        if count <= 10 or count % 1000 == 0:  # log, but never flood journald
            log.warning("rejected message (%s, #%d): %s", rejection.reason, count,
                        rejection.detail)

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
        sockets = self.sockets
        failed: BaseException | None = None  # a task's own fault: the daemon exits non-zero
        try:
            # libzmq's I/O threads, started with the first sockets, carry every packet: they
            # inherit realtime_priority from this thread, which then goes back to ordinary.
            with scheduled(self.config.realtime_priority):
                sockets.open()
            if self.config.metrics:
                self.metrics_server = MetricsServer(self.reporter, self.config.metrics)
                sockets.endpoints["metrics"] = (
                    f"{self.config.metrics.rsplit(':', 1)[0]}:{self.metrics_server.port}")
            log.info("neurowire daemon %s listening: %s (%d encoder thread(s))", self.version,
                     ", ".join(f"{k}={v}" for k, v in sockets.endpoints.items()),
                     self.config.workers)
            if sockets.feeds is not None:
                await self._loop.run_in_executor(None, sockets.feeds.start)
            self._data_thread = threading.Thread(target=self.data.main, args=(self.request_stop,),
                                                 name="nw-data", daemon=True)
            self._data_thread.start()
            sd.notify("READY=1\nSTATUS=listening on " + sockets.endpoints["ingest"])
            self.ready.set()
            tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in (
                ("control", self._control_loop()), ("watchdog", self._watchdog()))]
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    log.error("task %s failed", task.get_name(), exc_info=task.exception())
                    failed = failed or task.exception()
            sd.notify("STOPPING=1")
            log.info("stopping: flushing what was received")
            self.data.stopping = True
            sockets.wake_data_thread()
            await self._loop.run_in_executor(None, self._data_thread.join)
            stop_task.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(stop_task, *tasks, return_exceptions=True)
        finally:
            self.data.stopping = True
            if self._data_thread is not None and self._data_thread.is_alive():
                sockets.wake_data_thread()
                self._data_thread.join(self.config.flush_timeout_s + 5)
            self.ready.set()
            if self.metrics_server is not None:
                self.metrics_server.close()
            sockets.close()
        if self.data.error is not None:
            raise self.data.error
        if failed is not None:
            raise InternalError(f"the {failed!r} fault stopped the daemon") from failed
        log.info("stopped")

    async def _control_loop(self) -> None:
        """Every request gets a reply: a bad one an error map and a counted rejection. Only a
        fault of the daemon's own ends this task, and then the daemon, with a non-zero exit.
        A ROUTER and not a REP socket: its routing id tells clients apart for the rate
        limit, and REQ clients see no difference."""
        reporter = self.reporter
        handlers = {"status": reporter.status, "stats": reporter.stats,
                    "config": reporter.config_reply}
        control = self.sockets.control
        while True:
            frames = await control.recv_multipart(copy=True)
            peer, envelope_ok = frames[0], len(frames) >= 2 and frames[1] == b""
            try:
                if not envelope_ok:
                    raise Rejected("control", "no REQ envelope (use a REQ socket)")
                reply = self._control_reply(handlers, peer, frames[2:])
                self.reporter.control_answered += 1
            except Rejected as rejection:
                self.reject(rejection)
                reply = {"error": f"{rejection.detail or rejection.reason}; commands: "
                                  f"{', '.join(handlers)}"}
            envelope = [peer, b""] if envelope_ok else [peer]
            try:
                await control.send_multipart([*envelope, msgpack.packb(reply)],
                                             flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # a client that does not read its replies loses them, nobody else

    def _control_reply(self, handlers: dict, peer: bytes, frames: list) -> dict:
        if len(frames) != 1:
            raise Rejected("control", f"{len(frames)} frames, a request is one msgpack map")
        request = unpack_small_map(frames[0])
        command = request.get("cmd")
        if not isinstance(command, str) or command not in handlers:
            raise Rejected("control", f"unknown command {command!r:.80}")
        if not self.control_limit.allow(peer):
            raise Rejected("control_rate", f"over {self.config.control_rate:g} requests/s; "
                                           "ask less often")
        return handlers[command]()

    async def _watchdog(self) -> None:
        watchdog_s = sd.watchdog_interval_s()
        if watchdog_s is None:
            await asyncio.Future()  # nothing to ping; stays pending like the other tasks
        while True:
            # Pinged only while the data thread shows signs of life (it beats at least every
            # poll timeout, and per block while it works), so a wedged data path stops the
            # pings and systemd restarts the daemon.
            if time.monotonic() - self.data.heartbeat < 2 * watchdog_s:
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
