"""Daemon configuration: a TOML file read with tomllib into frozen dataclasses.

Every key is optional; an unknown key, a wrong type or an unsafe endpoint is a ConfigError
that names the file, the table and the key, so an operator reading journald sees what to fix.

    [daemon]
    ingest = "tcp://127.0.0.1:7340"      # implants PUSH packets here
    publish = "tcp://127.0.0.1:7341"     # live subscribers (SUB, topic = stream id)
    lossless = "tcp://127.0.0.1:7342"    # lossless subscribers (DEALER with credit)
    control = "tcp://127.0.0.1:7343"     # REQ/REP status, stats, config
    metrics = "127.0.0.1:7344"           # Prometheus /metrics; "" turns it off
    keyframe_interval_s = 1.0
    feeds = ["spikes", "power", "bounded"]  # beyond lossless (docs/FEEDS.md); default none
    block_format = 0                     # 0: the lane format (LANE_FORMAT_VERSION); 1: version 1
    ...
    [security]
    curve = false                         # forced on for any non-loopback endpoint
    server_secret_key = "/etc/neurowire/server.key_secret"
    client_keys_dir = "/etc/neurowire/clients"
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from neurowire.cpus import usable_cpus
from neurowire.feeds.detect import DETECTOR_RANGES
from neurowire.options import endpoint_problem, http_address_problem, range_words, within
from neurowire.wire import (DEFAULT_CONTROL, DEFAULT_INGEST, DEFAULT_LOSSLESS,
                            DEFAULT_PUBLISH, FEEDS)


class ConfigError(ValueError):
    """A configuration the daemon refuses to start with; the message says which key."""


@dataclass(frozen=True)
class SecurityConfig:
    curve: bool = False
    server_secret_key: str = ""
    client_keys_dir: str = ""


@dataclass(frozen=True)
class DaemonConfig:
    ingest: str = DEFAULT_INGEST
    publish: str = DEFAULT_PUBLISH
    lossless: str = DEFAULT_LOSSLESS
    control: str = DEFAULT_CONTROL
    metrics: str = "127.0.0.1:7344"
    # /metrics is plain HTTP, which CURVE cannot cover: an address beyond loopback needs this
    # explicit opt-in (the counters then show to anyone who reaches the port; no samples).
    metrics_beyond_loopback: bool = False
    keyframe_interval_s: float = 1.0
    # Whole packets waiting in the daemon beyond this are dropped (oldest first) and counted:
    # 200 packets is 100 ms of 0.5 ms packets, far beyond any healthy backlog.
    max_backlog_packets: int = 200
    # ... and beyond this many bytes per stream (the packets' samples), whichever comes first.
    max_backlog_bytes: int = 16 * 2**20
    max_channels: int = 4096
    max_packet_samples: int = 4096
    max_streams: int = 64
    # A stream silent this long is forgotten (its id, slot and codec state freed); until then
    # it belongs to the session that made it, and no other sender can take it over.
    stream_idle_timeout_s: float = 5.0
    # Per live subscriber; a slow one loses messages (and sees the gap), the others do not wait.
    live_hwm: int = 4000
    lossless_max_messages: int = 20000
    # ... and bytes held per lossless subscriber; at most this many lossless subscribers.
    lossless_max_bytes: int = 64 * 2**20
    lossless_max_subscribers: int = 8
    # Ingest messages libzmq queues per implant connection before it stops reading that
    # connection (TCP then holds the sender back): with the packet size, a bound in bytes.
    ingest_hwm: int = 1000
    lossless_timeout_s: float = 30.0
    # Channel groups encoded in parallel threads (C threads of the codec, no GIL); 0: one per
    # CPU the daemon may use (neurowire.cpus.usable_cpus), up to max_channels / 64 (a group has at
    # least 64 channels) and 64; `--print-config` shows what it came to.
    workers: int = 0
    # With workers > 1 and at least that many CPUs allowed: the data thread and each encoder
    # thread get a CPU of their own (see neurowire.codec.team_cpus).
    pin_threads: bool = True
    # 1..99: the data thread, the encoder threads and libzmq's I/O threads run SCHED_FIFO at
    # this priority, ahead of every ordinary process (needs CAP_SYS_NICE or an RLIMIT_RTPRIO
    # allowance); 0: ordinary scheduling.
    realtime_priority: int = 0
    # With workers > 1: how long (microseconds) each encoder thread polls for the next block
    # before it sleeps. Waking a sleeping thread costs tens of microseconds per block (more on
    # a VM); polling saves that but keeps the encoder CPUs busy: for CPUs given to the daemon.
    spin_us: int = 0
    flush_timeout_s: float = 2.0
    # The common packet (a known stream, next in its session) taken, encoded and published
    # in C (daemon/src/nw_fastpath.c); false, or where it cannot load: all in Python.
    fast_path: bool = True
    # The codec block format of every stream: 0 = the lane format (neurowire.codec.
    # LANE_FORMAT_VERSION, channels side by side: the cheapest to encode and decode), 1 = the
    # channel-at-a-time format (FORMAT_VERSION) for subscribers built before the lane format
    # existed. Subscribers follow the version in each block, so either decodes anywhere.
    block_format: int = 0
    # Control requests per second per client (a burst of one second's worth; four times
    # that for all clients together); beyond it the reply is an error and the request is counted under
    # rejected "control_rate". Reporting holds the GIL the data thread needs.
    control_rate: float = 20.0
    latency_window: int = 8192
    log_level: str = "INFO"
    # Feeds beyond lossless, computed once per stream in a process of their own and published
    # on the publish socket under "<stream>/<feed>" topics (docs/FEEDS.md).
    feeds: tuple = ()
    feed_threshold: float = 4.5
    feed_snippet_ms: float = 1.6
    feed_power_bin_ms: float = 20.0
    feed_batch_ms: float = 20.0
    # The bounded feed: every decoded sample within this many ADC codes of the original.
    feed_max_error: int = 2
    # Packets waiting for the feed process; past this the feeds skip packets (counted as the
    # feeds' drops) rather than slow the lossless path.
    feed_queue_packets: int = 2000
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def max_packet_bytes(self) -> int:
        return self.max_channels * self.max_packet_samples * 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_ENDPOINT_KEYS = ("ingest", "publish", "lossless", "control")


class Range(NamedTuple):
    low: float
    high: float
    low_open: bool = False  # True: the value must be above `low`, not equal to it
    note: str = ""          # what the ends mean, for the message


# Every numeric [daemon] key and the values it may take (a test walks the dataclass to keep
# this table complete). The highs are far beyond any real use: they refuse typos (a
# keyframe every 36000 s, 10**9 streams) before they become an hour-long wait or an
# allocation that takes the machine down.
GiB = 2**30
RANGES = {
    "keyframe_interval_s": Range(0, 3600, note="seconds; 0: every block is a keyframe"),
    "max_backlog_packets": Range(1, 10_000_000),
    "max_backlog_bytes": Range(1, 64 * GiB),
    "max_channels": Range(1, 4096, note="the codec's limit"),
    "max_packet_samples": Range(1, 65536),
    "max_streams": Range(1, 4096),
    "stream_idle_timeout_s": Range(0, 86400, low_open=True, note="seconds"),
    "live_hwm": Range(1, 10_000_000),
    "lossless_max_messages": Range(1, 10_000_000),
    "lossless_max_bytes": Range(1, 64 * GiB),
    "lossless_max_subscribers": Range(1, 1024),
    "ingest_hwm": Range(1, 10_000_000),
    "lossless_timeout_s": Range(0, 86400, low_open=True, note="seconds"),
    "workers": Range(0, 64, note="0: one per CPU"),
    "realtime_priority": Range(0, 99, note="0: off, 1..99: SCHED_FIFO priority"),
    "spin_us": Range(0, 1_000_000, note="0: sleep at once; microseconds up to 1000000"),
    "flush_timeout_s": Range(0, 3600, note="seconds"),
    "block_format": Range(0, 255, note="0: the lane format"),
    "control_rate": Range(0, 10_000, low_open=True, note="requests/s"),
    "latency_window": Range(1, 1 << 24),
    "feed_threshold": Range(*DETECTOR_RANGES["threshold"], note="noise sigmas"),
    "feed_snippet_ms": Range(*DETECTOR_RANGES["snippet_ms"]),
    "feed_power_bin_ms": Range(*DETECTOR_RANGES["power_bin_ms"],
                               note="above 0 with the power feed"),
    "feed_batch_ms": Range(0, 60_000, low_open=True),
    "feed_max_error": Range(1, 63, note="ADC codes; 0 is the lossless stream itself"),
    "feed_queue_packets": Range(1, 10_000_000),
}


def range_problem(key: str, value: float) -> str | None:
    """Why `value` cannot be [daemon] `key` (None when it can)."""
    allowed = RANGES[key]
    if within(value, allowed.low, allowed.high, allowed.low_open):
        return None
    if not math.isfinite(value):  # an infinite timeout never fires; NaN passes every bound
        return f"'{key}' must be a finite number, not {value}"
    note = f" ({allowed.note})" if allowed.note else ""
    return (f"'{key}' = {value!r} is out of range: it must be "
            f"{range_words(allowed.low, allowed.high, allowed.low_open)}{note}")


def _check_type(where: str, key: str, value: Any, expected: type) -> Any:
    if expected is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str)
                                                           for item in value):
            raise ConfigError(f"{where}: '{key}' must be a list of strings, not {value!r}")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be an integer, not {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(
            f"{where}: '{key}' must be {expected.__name__}, not {type(value).__name__} {value!r}")
    return value


def _build(cls, table: dict, where: str, nested: dict[str, Any] | None = None):
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known or (nested and key in nested):
            names = sorted(k for k in known if not (nested and k in nested))
            if isinstance(value, dict):  # [daemon.x] or x = {...}: no key holds a table
                raise ConfigError(f"{where}: '{key}' is a table; this table holds keys only "
                                  f"({', '.join(names)})")
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{where}: unknown key '{key}' ({hint}known keys: "
                              f"{', '.join(names)})")
        default = known[key].default
        values[key] = _check_type(where, key, value, type(default))
    if nested:
        values.update(nested)
    return cls(**values)


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc://, and tcp:// on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or wildcard reaches beyond this machine


def is_local_http(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(config: DaemonConfig, where: str = "config") -> DaemonConfig:
    for key in _ENDPOINT_KEYS:
        endpoint = getattr(config, key)
        problem = endpoint_problem(endpoint)
        if problem:
            raise ConfigError(f"{where}: '{key}' = {endpoint!r}: {problem}")
    # The daemon's endpoints are for other processes: one of its own threads is all that
    # could reach an inproc:// one, so a daemon bound there would run and never hear a client.
    inproc = [key for key in _ENDPOINT_KEYS if getattr(config, key).startswith("inproc://")]
    if inproc:
        raise ConfigError(f"{where}: '{inproc[0]}' = {getattr(config, inproc[0])!r}: inproc:// "
                          "reaches only the daemon's own threads; use tcp:// or ipc://")
    bound: dict[str, str] = {}
    for key in _ENDPOINT_KEYS:
        endpoint = getattr(config, key)
        if endpoint in bound and not endpoint.endswith(":*") and not endpoint.endswith(":0"):
            raise ConfigError(f"{where}: '{bound[endpoint]}' and '{key}' are both {endpoint!r}: "
                              "each endpoint needs an address of its own")
        bound[endpoint] = key
    if config.metrics and http_address_problem(config.metrics):
        raise ConfigError(f"{where}: 'metrics' = {config.metrics!r} must be HOST:PORT or empty "
                          f"({http_address_problem(config.metrics)})")
    if config.metrics and not is_local_http(config.metrics) and not config.metrics_beyond_loopback:
        raise ConfigError(f"{where}: 'metrics' = {config.metrics!r} is beyond loopback: /metrics "
                          "is plain HTTP that CURVE cannot protect; serve it on 127.0.0.1 (and "
                          "reach it through a proxy) or set metrics_beyond_loopback = true")
    for key in RANGES:
        problem = range_problem(key, getattr(config, key))
        if problem:
            raise ConfigError(f"{where}: {problem}")
    if config.workers == 0:
        config = dataclasses.replace(config, workers=default_workers(config.max_channels))
    config = dataclasses.replace(config, block_format=resolve_block_format(
        config.block_format, where))
    remote = [key for key in _ENDPOINT_KEYS if not is_local_endpoint(getattr(config, key))]
    security = config.security
    if remote and not security.curve:
        raise ConfigError(
            f"{where}: {', '.join(remote)} bind beyond loopback; set [security] curve = true "
            "with server_secret_key and client_keys_dir (plain text on a network is refused)")
    if security.curve:
        if not security.server_secret_key or not os.path.isfile(security.server_secret_key):
            raise ConfigError(f"{where}: [security] server_secret_key "
                              f"{security.server_secret_key!r} is not a readable file "
                              "(make one with `python -m zmq.auth.certs` / zmq.auth.create_certificates)")
        if not security.client_keys_dir or not os.path.isdir(security.client_keys_dir):
            raise ConfigError(f"{where}: [security] client_keys_dir "
                              f"{security.client_keys_dir!r} is not a directory of allowed "
                              "client public keys")
    for feed in config.feeds:
        if feed not in FEEDS:
            raise ConfigError(f"{where}: 'feeds' has {feed!r}; known feeds: "
                              f"{', '.join(FEEDS)}")
    if len(set(config.feeds)) != len(config.feeds):
        raise ConfigError(f"{where}: 'feeds' names a feed twice: {list(config.feeds)}")
    if "power" in config.feeds and not config.feed_power_bin_ms > 0:
        raise ConfigError(f"{where}: 'feed_power_bin_ms' must be positive with the power feed")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{where}: 'log_level' must be DEBUG, INFO, WARNING or ERROR")
    return config


def resolve_block_format(value: int, where: str = "config") -> int:
    """The codec block format version `block_format` names (0: the lane format), checked
    against what this build's codec writes."""
    from neurowire import codec

    version = codec.LANE_FORMAT_VERSION if value == 0 else value
    try:
        codec.StreamEncoder(1, format_version=version)
    except ValueError:
        raise ConfigError(
            f"{where}: 'block_format' = {value} is not a block format this codec writes: use "
            f"0 (the lane format, now version {codec.LANE_FORMAT_VERSION}), "
            f"{codec.LANE_FORMAT_VERSION} or {codec.FORMAT_VERSION} (one channel at a time, "
            "for subscribers older than the lane format)") from None
    return version


def default_workers(max_channels: int) -> int:
    """One encoder thread per CPU this process may run on, no more than the widest stream
    has channel groups (64 channels each), at most 64."""
    return max(1, min(usable_cpus(), max_channels // 64, 64))


def config_from_dict(document: dict, where: str = "config") -> DaemonConfig:
    unknown = set(document) - {"daemon", "security"}
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {sorted(unknown)}; "
                          "expected [daemon] and [security]")
    daemon_table = document.get("daemon", {})
    security_table = document.get("security", {})
    if not isinstance(daemon_table, dict) or not isinstance(security_table, dict):
        raise ConfigError(f"{where}: [daemon] and [security] must be tables")
    security = _build(SecurityConfig, security_table, f"{where} [security]")
    config = _build(DaemonConfig, daemon_table, f"{where} [daemon]",
                    nested={"security": security})
    return validate(config, where)


# A config is a few KiB; past this the path is something else (/dev/zero, a recording).
MAX_CONFIG_BYTES = 1 << 20
# How long a pipe (`--config <(...)`) may take to deliver its config.
PIPE_WAIT_S = 10.0


def _read_config_text(path, where: str) -> str:
    """The config file's text, read with bounds: a FIFO nobody writes to or a device that
    never ends is refused in a line instead of hanging the daemon's start (or filling its
    memory). A file opened without blocking; a pipe waited for up to PIPE_WAIT_S."""
    import select
    import stat
    import time

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", os.fspath(path))
        regular = stat.S_ISREG(mode)
        deadline = time.monotonic() + PIPE_WAIT_S
        chunks, size = [], 0
        while size <= MAX_CONFIG_BYTES:
            if not regular:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise ConfigError(f"{where}: nothing complete to read within "
                                      f"{PIPE_WAIT_S:g} s (a pipe nobody finishes writing?)")
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: more than {MAX_CONFIG_BYTES} bytes: not a config file")
        if not regular and not size:
            raise ConfigError(f"{where}: nothing to read (a pipe with no writer, or a device "
                              "that is empty): give a config file")
        return b"".join(chunks).decode("utf-8")
    finally:
        os.close(fd)


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> DaemonConfig:
    """Read `path` (None: all defaults), then apply keyword overrides of [daemon] keys."""
    document: dict = {}
    where = "defaults"
    if path is not None:
        where = os.fspath(path)
        try:
            document = tomllib.loads(_read_config_text(path, where))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except OSError as error:  # a directory, no permission, an I/O error
            raise ConfigError(f"{where}: cannot read: {error.strerror or error}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: not valid TOML: {error}") from None
    if overrides:
        document = dict(document)
        document["daemon"] = {**document.get("daemon", {}), **overrides}
    return config_from_dict(document, where)
