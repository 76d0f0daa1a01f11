"""Helpers for the dashboard's tests and screenshot: a fake daemon, free ports, processes.

The fake daemon answers ``stats`` and ``config`` like the real one (docs/CONTRACTS.md) and
publishes block headers made by neurowire.wire, so the page and the server can be
exercised without the codec or the daemon; the browser test itself uses the real daemon.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

from neurowire.wire import group_suffix, pack_block

from ..ports import free_loopback_port


def free_port() -> int:
    return free_loopback_port()


class FakeDaemon(threading.Thread):
    def __init__(self, control: str, publish: str, streams=("imp0", "imp1"), channels=1024,
                 rate=20000.0, packet_samples=10, publish_hz=200.0):
        super().__init__(name="fake-daemon", daemon=True)
        self.control = control
        self.publish = publish
        self.streams = list(streams)
        self.channels = channels
        self.rate = rate
        self.packet_samples = packet_samples
        self.publish_hz = publish_hz
        self.requests = 0
        self._stop_evt = threading.Event()
        self._ready = threading.Event()
        self._t0 = time.monotonic()
        self._seq = {s: 0 for s in self.streams}
        self.skip_every = 0  # >0: leave out one message in that many, to make gaps

    def start(self):
        super().start()
        if not self._ready.wait(5):
            raise RuntimeError("fake daemon did not start")
        return self

    def stop(self):
        self._stop_evt.set()
        self.join(5)

    def stats(self) -> dict:
        up = time.monotonic() - self._t0
        out = {}
        for i, sid in enumerate(self.streams):
            packets = int(up * self.rate / self.packet_samples)
            bytes_in = packets * self.packet_samples * self.channels * 2
            ratio = 3.4 + 0.1 * i
            out[sid] = {
                "channels": self.channels, "rate": self.rate, "packets_in": packets,
                "samples_in": packets * self.packet_samples, "bytes_in": bytes_in,
                "bytes_out": int(bytes_in / ratio), "ratio": ratio, "drops": 0,
                "keyframes": int(up), "subscribers": 1,
                "latency_us": {
                    "ingest": {"p50": 80 + random.random() * 20, "p99": 300.0, "max": 900.0,
                               "count": packets},
                    "compress": {"p50": 120.0, "p99": 250 + random.random() * 50,
                                 "max": 700.0, "count": packets},
                    "publish": {"p50": 260.0, "p99": 700.0,
                                "max": 1500 + random.random() * 500, "count": packets}},
                "channel_ratio": [ratio + 0.5 * ((c * 7919) % 97) / 97 - 0.25
                                  + random.random() * 0.01 for c in range(self.channels)],
            }
        return {"version": "fake", "uptime_s": up, "time_ns": time.time_ns(), "rejected": {},
                "streams": out}

    def run(self):
        ctx = zmq.Context()
        rep = ctx.socket(zmq.REP)
        rep.setsockopt(zmq.LINGER, 0)
        rep.bind(self.control)
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.publish)
        self._ready.set()
        next_pub = time.monotonic()
        n = 0
        try:
            while not self._stop_evt.is_set():
                if rep.poll(1):
                    req = msgpack.unpackb(rep.recv(), raw=False)
                    self.requests += 1
                    cmd = req.get("cmd")
                    if cmd == "stats":
                        reply = self.stats()
                    elif cmd == "config":
                        reply = {"publish": self.publish, "control": self.control}
                    elif cmd == "status":
                        reply = {"ok": True}
                    else:
                        reply = {"error": f"unknown cmd {cmd!r}"}
                    rep.send(msgpack.packb(reply, use_bin_type=True))
                if time.monotonic() >= next_pub:
                    next_pub += 1 / self.publish_hz
                    for sid in self.streams:
                        seq = self._seq[sid]
                        self._seq[sid] += 1
                        n += 1
                        if self.skip_every and seq % self.skip_every == self.skip_every - 1:
                            continue
                        header = pack_block(
                            self.channels, self.packet_samples, 1,
                            seq % int(self.publish_hz) == 0, seq, 1,
                            seq * self.packet_samples, self.rate, 0, 0,
                            time.time_ns() - 300_000, 0, 0, 0, 0, 0,
                            group_suffix([self.channels]))
                        pub.send_multipart([sid.encode() + b"\0", header, b"\0" * 64])
        finally:
            rep.close(0)
            pub.close(0)
            ctx.term()


def python_env(extra_path: str | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def start_process(args: list[str], log_path: str | None = None, env=None,
                  cwd: str | None = None) -> subprocess.Popen:
    """A Python child in its own session, so a signal to the test does not reach it.

    It runs outside the source tree by default: from the repository root, ``python -m``
    would import the bare ``neurowire/`` folder instead of the installed package.
    """
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    if cwd is None:
        cwd = os.path.dirname(log_path) if log_path else tempfile.gettempdir()
    try:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env or python_env(), cwd=cwd, start_new_session=True)
    finally:
        if log_path:
            out.close()


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_for_line(path: str, needle: str, timeout: float, proc=None) -> str:
    """Wait until a child's log holds a line containing needle; returns that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if needle in line:
                        return line.strip()
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = open(path, errors="replace").read()[-2000:] if os.path.exists(path) else ""
    raise TimeoutError(f"no {needle!r} in {path} within {timeout} s; log ends:\n{tail}")


CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium under Playwright: no sandbox (root in a container), and nothing that
# would reach for the network on its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync"]


class Pipeline:
    """Daemon, simulator and dashboard as separate processes on free loopback ports."""

    def __init__(self, workdir, stream: str = "implant0", channels: int = 1024,
                 rate: float = 20000.0, interval: float = 0.2, timeout: float = 1.0,
                 fake: bool = False, workers: int | None = None, feeds=(),
                 packet_samples: int | None = None, link_mbps: float | None = None):
        # fake: the FakeDaemon below in place of daemon and simulator, to work on the page
        # while the real ones are unavailable; tests that claim the real thing never set it.
        self.fake = fake
        self.workers = workers
        self.feeds = list(feeds)
        self.packet_samples = packet_samples
        self.link_mbps = link_mbps
        self.dir = os.fspath(workdir)
        self.stream, self.channels, self.rate = stream, channels, rate
        self.interval, self.timeout = interval, timeout
        self.ep = {k: f"tcp://127.0.0.1:{free_port()}"
                   for k in ("ingest", "publish", "lossless", "control")}
        self.metrics = f"127.0.0.1:{free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.daemon_starts = 0
        self.url: str | None = None

    def _log(self, name: str) -> str:
        return os.path.join(self.dir, name + ".log")

    def start_daemon(self, ready_timeout: float = 60.0) -> None:
        from neurowire.wire import wait_ready

        self.daemon_starts += 1
        if self.fake:
            args = ["-m", "neurowire.clients.dashboard.testing", self.ep["control"],
                    self.ep["publish"], self.stream]
        else:
            args = ["-m", "neurowire.cli", "daemon", "--metrics", self.metrics]
            for k in ("ingest", "publish", "lossless", "control"):
                args += [f"--{k}", self.ep[k]]
            if self.workers:
                args += ["--workers", str(self.workers)]
            if self.feeds:
                args += ["--feeds", ",".join(self.feeds)]
        log = self._log(f"daemon{self.daemon_starts}")
        proc = self.procs["daemon"] = start_process(args, log)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                wait_ready(self.ep["control"], timeout=1.0)
                return
            except TimeoutError:
                # A daemon that died (a port taken meanwhile, an import error) will never
                # answer: say why now rather than at the deadline.
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(log, errors="replace") as f:
                        tail = f.read()[-2000:]
                    raise RuntimeError(f"daemon not ready (exit code {proc.poll()}):\n{tail}")

    def start(self) -> "Pipeline":
        self.start_daemon()
        if not self.fake:
            self.procs["sim"] = start_process(
                ["-m", "neurowire.cli", "simulate", "--connect", self.ep["ingest"],
                 "--stream", self.stream, "--channels", str(self.channels),
                 "--rate", str(self.rate), "--quiet",
                 *(["--packet-samples", str(self.packet_samples)] if self.packet_samples
                   else [])], self._log("sim"))
        self.procs["dash"] = start_process(
            ["-m", "neurowire.cli", "dashboard", "--control", self.ep["control"],
             "--port", "0", "--interval", str(self.interval), "--timeout", str(self.timeout),
             *(["--link-mbps", str(self.link_mbps)] if self.link_mbps is not None else [])],
            self._log("dashboard"))
        line = wait_for_line(self._log("dashboard"), "dashboard: http://", 30,
                             self.procs["dash"])
        self.url = line.split()[1]
        return self

    def stop(self) -> None:
        for name in ("dash", "sim", "daemon"):
            if name in self.procs:
                stop_process(self.procs[name])

    def logs(self, tail: int = 1500) -> str:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append(f"--- {name}\n{f.read()[-tail:]}")
        return "\n".join(out)


if __name__ == "__main__":
    # python -m neurowire.clients.dashboard.testing CONTROL PUBLISH [STREAM...]: a fake
    # daemon in its own process, so that it can be killed like the real one.
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    fake = FakeDaemon(sys.argv[1], sys.argv[2], streams=sys.argv[3:] or ("imp0",)).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    fake.stop()
