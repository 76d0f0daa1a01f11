"""The dashboard's web server: polls the daemon, keeps bounded history, streams it by SSE."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from pathlib import Path

import zmq
from aiohttp import web
from aiohttp_sse import sse_response

from .control import ControlClient, ControlError
from .noise import NoiseFloor
from .stagehist import StageHistograms, parse_stage_buckets
from .tap import Tap
from .window import HIST_EDGES_US

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DAEMON_STAGES = ("ingest", "compress", "publish")
TAP_STAGES = ("received", "decoded")
# A tap nobody looks at costs CPU on a shared machine; keep it a little while so that
# switching streams back and forth does not restart it every time.
TAP_IDLE_S = 15.0


def _finite(x):
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _triplet(summary):
    if not summary:
        return [None, None, None]
    return [_finite(summary.get("p50")), _finite(summary.get("p99")), _finite(summary.get("max"))]


def _metrics_url_from_config(cfg: dict) -> str | None:
    """The daemon's Prometheus endpoint (HOST:PORT in its config; "" when turned off)."""
    bound = cfg.get("bound")
    addr = bound.get("metrics") if isinstance(bound, dict) else None
    if not isinstance(addr, str) or not addr:
        addr = cfg.get("metrics")
    if not isinstance(addr, str) or ":" not in addr:
        return None
    host, port = addr.rsplit(":", 1)
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/metrics"


def _data_endpoint_from_config(cfg: dict) -> str | None:
    """The daemon's publish endpoint from its ``config`` reply.

    ``bound`` holds what the daemon really bound (a configured wildcard port becomes a real
    one there); the top-level keys are the configuration as written.
    """
    bound = cfg.get("bound")
    if isinstance(bound, dict) and isinstance(bound.get("publish"), str):
        return bound["publish"]
    for key in ("publish", "pub", "publish_endpoint", "pub_endpoint", "data", "out"):
        v = cfg.get(key)
        if isinstance(v, str) and "://" in v:
            return v
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], str):
            return v[0]
    for v in cfg.values():
        if isinstance(v, dict):
            found = _data_endpoint_from_config(v)
            if found:
                return found
    return None


class Monitor:
    def __init__(self, control_endpoint: str, interval_s: float = 0.2, timeout_s: float = 1.0,
                 data_endpoint: str | None = None, tap: bool = True, decode_ms: float = 25.0,
                 history_s: float = 120.0, curve: dict | None = None,
                 link_mbps: float = 1.0):
        self.control = ControlClient(control_endpoint, timeout_s, curve=curve)
        self.curve = curve
        self.interval_s = interval_s
        self.link_mbps = link_mbps
        self._feed_counters: dict[tuple[str, str], deque] = {}
        self.data_endpoint = data_endpoint
        self._data_endpoint_given = data_endpoint is not None
        self.tap_enabled = tap
        self.decode_ms = decode_ms
        self.history_len = max(10, int(history_s / interval_s))
        self.noise = NoiseFloor()
        self.taps: dict[str, Tap] = {}
        self._tap_wanted: dict[str, float] = {}
        self.seq = 0
        self._tick = asyncio.Event()
        self.stats: dict | None = None
        self.daemon = {"up": False, "endpoint": control_endpoint, "error": "not contacted yet",
                       "down_since": time.time(), "last_ok": None, "version": None,
                       "uptime_s": None, "rtt_ms": None, "failures": 0}
        self._counters: dict[str, deque] = {}
        self.derived: dict[str, dict] = {}
        self.history: dict[str, deque] = {}
        self._payload_cache: dict[str | None, tuple[int, str]] = {}
        self._noise_rec = [None, None, None]
        self._cpu_hist: deque = deque(maxlen=64)
        self.daemon_cpu_pct: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._config_needed = True
        self.metrics_url: str | None = None
        self.metrics_state = "unknown"
        self.stage_hist = StageHistograms(span_s=10.0)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.noise.start()
        loop = asyncio.get_running_loop()
        # Polling and ticking are separate: a daemon that answers slowly (busy, or a shared
        # machine) must not slow the page below its update rate; the page then shows the
        # latest reply until a request actually fails.
        self._tasks = [loop.create_task(self._poll_loop(), name="poll"),
                       loop.create_task(self._tick_loop(), name="tick"),
                       loop.create_task(self._scrape_loop(), name="scrape")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for tap in self.taps.values():
            tap.stop()
        for tap in self.taps.values():
            tap.join(timeout=1)
        self.noise.stop()
        self.control.close()

    async def _poll_loop(self) -> None:
        while True:
            started = time.monotonic()
            await self._poll_once()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def _scrape_loop(self, period_s: float = 1.0) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(1.0, self.control.timeout_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(period_s)
                url = self.metrics_url
                if url is None or not self.daemon["up"]:
                    continue
                try:
                    async with session.get(url) as r:
                        text = await r.text()
                    parsed = parse_stage_buckets(text)
                except Exception as e:  # noqa: BLE001 - metrics are optional; say why
                    self.metrics_state = f"unavailable ({type(e).__name__})"
                    continue
                self.metrics_state = "ok"
                self.stage_hist.add(parsed, time.monotonic())

    async def _tick_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self._manage_taps()
            self._record_tick()
            self.seq += 1
            self._tick.set()
            self._tick = asyncio.Event()
            # Fixed-rate ticks, but never a burst of catch-up ticks after a stall.
            next_at = max(next_at + self.interval_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def wait_tick(self, seen: int, timeout: float) -> int:
        if self.seq == seen:
            try:
                await asyncio.wait_for(self._tick.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.seq

    # -- polling -----------------------------------------------------------------------
    async def _poll_once(self) -> None:
        d = self.daemon
        try:
            stats = await self.control.request("stats")
            if self._config_needed:
                try:
                    cfg = await self.control.request("config")
                except ControlError as e:
                    log.debug("config: %s", e)
                else:
                    self._config_needed = False
                    if not self._data_endpoint_given:
                        self.data_endpoint = _data_endpoint_from_config(cfg)
                    self.metrics_url = _metrics_url_from_config(cfg)
                    self.metrics_state = "ok" if self.metrics_url else "turned off in the daemon"
        except ControlError as e:
            if d["up"]:
                log.warning("daemon unreachable: %s", e)
                d["down_since"] = time.time()
            d.update(up=False, error=str(e), failures=d["failures"] + 1, rtt_ms=None)
            # A restarted daemon may publish elsewhere; ask again when it is back.
            self._config_needed = True
            if not self._data_endpoint_given:
                self.data_endpoint = None
            return
        if not d["up"]:
            log.info("daemon reachable at %s", self.control.endpoint)
        now = time.time()
        d.update(up=True, error=None, down_since=None, last_ok=now,
                 version=stats.get("version"), uptime_s=_finite(stats.get("uptime_s")),
                 rtt_ms=None if self.control.last_rtt_s is None
                 else self.control.last_rtt_s * 1000)
        self.stats = stats
        t_ns = stats.get("time_ns")
        t = t_ns / 1e9 if isinstance(t_ns, int) else time.monotonic()
        self._derive_process(t, stats.get("process") or {})
        streams = stats.get("streams") or {}
        for sid, s in streams.items():
            sid = str(sid)
            self.derived[sid] = self._derive(sid, t, s)
        for sid in list(self.derived):
            if sid not in {str(k) for k in streams}:
                self.derived.pop(sid)
                self._counters.pop(sid, None)

    def _derive_process(self, t: float, proc: dict) -> None:
        """The daemon's CPU use over about a second, from its cumulative rusage times.

        Over a single 0.2 s poll the kernel's tick accounting makes the figure jump.
        """
        cpu = (proc.get("cpu_user_s") or 0.0) + (proc.get("cpu_system_s") or 0.0)
        hist = self._cpu_hist
        if hist and (hist[-1][2] != proc.get("pid") or cpu < hist[-1][1]):
            hist.clear()  # another daemon process
        hist.append((t, cpu, proc.get("pid")))
        while len(hist) > 2 and t - hist[1][0] >= 1.0:
            hist.popleft()
        t0, cpu0, _ = hist[0]
        self.daemon_cpu_pct = 100.0 * (cpu - cpu0) / (t - t0) if t > t0 else None

    def _derive(self, sid: str, t: float, s: dict) -> dict:
        """Rates over the last second from the daemon's cumulative counters."""
        keys = ("bytes_in", "bytes_out", "packets_in", "keyframes", "drops")
        now = (t, *[int(s.get(k) or 0) for k in keys])
        hist = self._counters.setdefault(sid, deque(maxlen=64))
        if hist and (now[1] < hist[-1][1] or t <= hist[-1][0]):
            hist.clear()  # daemon restarted: counters went back to zero
        hist.append(now)
        base = hist[0]
        for old in hist:
            if t - old[0] >= 1.0:
                base = old
            else:
                break
        while len(hist) > 1 and t - hist[0][0] > 2.0:
            hist.popleft()
        dt = t - base[0]
        if dt <= 0:
            return {"mbps_in": None, "mbps_out": None, "pps": None, "ratio_now": None,
                    "keyframes_per_s": None, "drops_per_s": None}
        d_in, d_out, d_pk, d_kf, d_dr = (now[i] - base[i] for i in range(1, 6))
        return {"mbps_in": d_in * 8 / dt / 1e6, "mbps_out": d_out * 8 / dt / 1e6,
                "pps": d_pk / dt, "ratio_now": (d_in / d_out) if d_out else None,
                "keyframes_per_s": d_kf / dt, "drops_per_s": d_dr / dt}

    # -- taps --------------------------------------------------------------------------
    def want_tap(self, sid: str | None) -> None:
        if sid is not None:
            self._tap_wanted[sid] = time.monotonic()

    def _manage_taps(self) -> None:
        now = time.monotonic()
        for sid, tap in list(self.taps.items()):
            stale = now - self._tap_wanted.get(sid, 0) > TAP_IDLE_S
            moved = tap.endpoint != self.data_endpoint and self.data_endpoint is not None
            if stale or moved or not tap.is_alive():
                tap.stop()
                del self.taps[sid]
        if not self.tap_enabled or self.data_endpoint is None:
            return
        for sid, at in self._tap_wanted.items():
            if now - at <= TAP_IDLE_S and sid not in self.taps and sid in self.derived:
                tap = Tap(self.data_endpoint, sid, zmq.Context.instance(), self.decode_ms,
                          curve=self.curve)
                tap.start()
                self.taps[sid] = tap

    # -- history and payloads ----------------------------------------------------------
    def _record_tick(self) -> None:
        now_wall = time.time()
        now = time.monotonic()
        noise = _triplet(self.noise.window.summary(1.0, now))
        streams = (self.stats or {}).get("streams") or {}
        up = self.daemon["up"]
        for sid in set(self.history) | {str(k) for k in streams}:
            s = streams.get(sid) if up else None
            if s is None and up:
                s = next((v for k, v in streams.items() if str(k) == sid), None)
            lat = (s or {}).get("latency_us") or {}
            der = self.derived.get(sid, {}) if s else {}
            tap = self.taps.get(sid)
            tap_lat = {}
            if tap is not None:
                tap_lat = {"received": tap.received.summary(1.0, now),
                           "decoded": tap.decoded.summary(1.0, now)}
            rec = {"t": now_wall, "up": up,
                   "lat": {st: _triplet(lat.get(st)) for st in DAEMON_STAGES}
                   | {st: _triplet(tap_lat.get(st)) for st in TAP_STAGES},
                   "noise": noise,
                   "mbps_in": der.get("mbps_in"), "mbps_out": der.get("mbps_out"),
                   "ratio": _finite((s or {}).get("ratio")), "ratio_now": der.get("ratio_now")}
            self.history.setdefault(sid, deque(maxlen=self.history_len)).append(rec)
        # Streams that vanished long ago are forgotten, so history cannot grow without bound.
        for sid in list(self.history):
            if sid not in streams and self.history[sid][-1]["t"] < now_wall - 3600:
                del self.history[sid]
        self._noise_rec = noise
        self._payload_cache.clear()

    def choose(self, sid: str | None) -> str | None:
        ids = self.stream_ids()
        if sid in ids or (sid and sid in self.history):
            return sid
        return ids[0] if ids else sid

    def stream_ids(self) -> list[str]:
        return sorted(str(k) for k in ((self.stats or {}).get("streams") or {}))

    def history_for(self, sid: str | None) -> list[dict]:
        return list(self.history.get(sid, ())) if sid else []

    def payload(self, sid: str | None) -> str:
        cached = self._payload_cache.get(sid)
        if cached and cached[0] == self.seq:
            return cached[1]
        text = json.dumps(self._payload(sid), separators=(",", ":"), allow_nan=False,
                          default=str)
        self._payload_cache[sid] = (self.seq, text)
        return text

    def _payload(self, sid: str | None) -> dict:
        now = time.monotonic()
        streams = (self.stats or {}).get("streams") or {}
        up = self.daemon["up"]
        s = None
        if up and sid is not None:
            s = next((v for k, v in streams.items() if str(k) == sid), None)
        detail = None
        if s is not None:
            cr = s.get("channel_ratio") or []
            detail = {k: s.get(k) for k in ("channels", "rate", "packets_in", "samples_in",
                                            "bytes_in", "bytes_out", "drops", "keyframes",
                                            "subscribers")}
            detail["ratio"] = _finite(s.get("ratio"))
            detail["latency"] = {st: {k: (v if k == "count" else _finite(v))
                                      for k, v in (summ or {}).items()}
                                 for st, summ in (s.get("latency_us") or {}).items()}
            detail["channel_ratio"] = [round(_finite(x) or 0.0, 3) for x in cr]
            detail.update(self.derived.get(sid, {}))
            # Anything else the daemon reports per stream (e.g. per-subscriber losses) is
            # passed through so the page can show it without a dashboard release.
            extra = {k: v for k, v in s.items() if k not in detail and k not in
                     ("latency_us", "channel_ratio", "feeds")}
            detail["feeds"] = self._feeds(sid, detail, s.get("feeds") or {})
            detail["extra"] = extra
        tap = self.taps.get(sid) if sid else None
        if tap is not None:
            tap_info = {"state": "running", **tap.snapshot(now)}
        elif not self.tap_enabled:
            tap_info = {"state": "disabled"}
        elif self.data_endpoint is None:
            tap_info = {"state": "no publish endpoint known"}
        else:
            tap_info = {"state": "starting"}
        hist = {"noise": self.noise.window.histogram(10.0, now),
                "stages": self.stage_hist.window(sid) if (up and sid) else None,
                "metrics": self.metrics_state}
        if tap is not None:
            hist["received"] = tap.received.histogram(10.0, now)
            hist["decoded"] = tap.decoded.histogram(10.0, now)
        tick = self.history[sid][-1] if sid in self.history else {
            "t": time.time(), "up": up, "lat": {}, "noise": self._noise_rec}
        return {
            "seq": self.seq, "t": time.time(), "interval_s": self.interval_s,
            "daemon": {**self.daemon, "age_s": None if self.daemon["last_ok"] is None
                       else max(0.0, time.time() - self.daemon["last_ok"])},
            "streams": [{"id": str(k), "channels": v.get("channels"), "rate": v.get("rate"),
                         "subscribers": v.get("subscribers")}
                        for k, v in sorted(streams.items(), key=lambda kv: str(kv[0]))]
            if up else [{"id": k} for k in sorted(self.history)],
            "stream": sid, "s": detail, "tap": tap_info,
            "rejected": (self.stats or {}).get("rejected") if up else None,
            "lossless": (self.stats or {}).get("lossless") if up else None,
            "process": {**((self.stats or {}).get("process") or {}),
                        "cpu_pct": self.daemon_cpu_pct} if up else None,
            "hist": hist, "tick": tick, "link_mbps": self.link_mbps,
            "feeds_enabled": ((self.stats or {}).get("feeds") or {}).get("enabled")
            if up else None,
        }

    def _feeds(self, sid: str, detail: dict, feeds: dict) -> list[dict]:
        """Each feed's bandwidth against the link, the lossless feed first for scale.

        `kbps` is over the daemon's seconds of signal so far (steady, comparable with
        `neurowire bench feeds`); `kbps_now` over the last second of wall clock."""
        link_bps = self.link_mbps * 1e6
        mbps_out = detail.get("mbps_out")
        rows = [{"feed": "lossless", "kbps": None,
                 "kbps_now": None if mbps_out is None else mbps_out * 1e3,
                 "messages": None, "events": None, "drops": detail.get("drops"),
                 "subscribers": detail.get("subscribers")}]
        t = time.monotonic()
        for name in sorted(feeds):
            entry = feeds[name] or {}
            hist = self._feed_counters.setdefault((sid, name), deque(maxlen=64))
            now = (t, int(entry.get("bytes") or 0))
            if hist and now[1] < hist[-1][1]:
                hist.clear()  # the daemon restarted
            hist.append(now)
            while len(hist) > 2 and t - hist[1][0] >= 1.0:
                hist.popleft()
            dt = t - hist[0][0]
            rows.append({"feed": name, "kbps": _finite(entry.get("bits_per_s", 0.0) / 1e3),
                         "kbps_now": (now[1] - hist[0][1]) * 8 / dt / 1e3 if dt > 0 else None,
                         "messages": entry.get("messages"),
                         "events": entry.get("events") if name == "spikes" else None,
                         "drops": entry.get("drops"), "subscribers": entry.get("subscribers")})
        for row in rows:
            rate = row["kbps"] if row["kbps"] is not None else row["kbps_now"]
            row["of_link"] = None if rate is None or link_bps <= 0 else rate * 1e3 / link_bps
            row["fits"] = None if row["of_link"] is None else row["of_link"] <= 1.0
        return rows


# -- HTTP --------------------------------------------------------------------------------
MONITOR = web.AppKey("monitor", Monitor)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def snapshot(request: web.Request) -> web.Response:
    mon = request.app[MONITOR]
    sid = mon.choose(request.query.get("stream") or None)
    mon.want_tap(sid)
    return web.Response(text=mon.payload(sid), content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    mon = request.app[MONITOR]
    wanted = request.query.get("stream") or None
    # A stalled browser tab must not hold a send forever; it reconnects by itself.
    async with sse_response(request, send_timeout=5, ping_interval=10) as resp:
        try:
            sid = mon.choose(wanted)
            mon.want_tap(sid)
            hello = {"edges_us": HIST_EDGES_US, "interval_s": mon.interval_s,
                     "history_len": mon.history_len, "daemon_stages": DAEMON_STAGES,
                     "tap_stages": TAP_STAGES, "stream": sid, "history": mon.history_for(sid)}
            await resp.send(json.dumps(hello, separators=(",", ":"), allow_nan=False),
                            event="hello")
            seen = mon.seq
            while resp.is_connected():
                seen = await mon.wait_tick(seen, timeout=5 * mon.interval_s + 1)
                if wanted is None:
                    sid = mon.choose(None)  # follow the first stream until the user picks
                mon.want_tap(sid)
                await resp.send(mon.payload(sid), event="tick")
        except (ConnectionResetError, asyncio.TimeoutError):
            pass  # the page went away or stalled: the normal end of an event stream
    return resp


def make_app(monitor: Monitor) -> web.Application:
    app = web.Application()
    app[MONITOR] = monitor

    async def on_startup(app):
        monitor.start()

    async def on_cleanup(app):
        await monitor.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/", index)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/events", events)
    app.router.add_static("/static", STATIC, append_version=False)
    return app
