"""Checks shared by the commands' options and the daemon's config, so a bad value is refused
where it is typed, in one line, instead of surfacing later as a traceback from ZeroMQ, a
socket or a division (a NaN interval, a port beyond 65535, an endpoint ZeroMQ cannot parse)."""

from __future__ import annotations

import argparse
import math


def within(value, low, high=None, low_open=False) -> bool:
    """True when `value` is finite and within low..high (above low when low_open); a NaN
    compares false with every bound, so it is refused here by name."""
    return math.isfinite(value) and not (
        (value <= low if low_open else value < low) or (high is not None and value > high))


def range_words(low, high=None, low_open=False) -> str:
    """'above 0 and at most 3600', 'at least 1': the range in words, for messages."""
    words = f"above {low:g}" if low_open else f"at least {low:g}"
    if high is not None:
        words += f" and at most {high:d}" if isinstance(high, int) else f" and at most {high:g}"
    return words


def bounded(kind, low, high=None, low_open=False, what="it"):
    """An argparse type: a finite `kind` within low..high (above low when low_open), or a
    clear error naming the bound."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if not within(value, low, high, low_open):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: {what} must be {range_words(low, high, low_open)}")
        return value
    # Kept on the type so a test can hold every option to a finite upper bound.
    parse.kind, parse.low, parse.high = kind, low, high
    return parse


def _port_problem(port: str, wildcard: bool) -> str | None:
    if wildcard and port == "*":
        return None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"port {port!r} is not a number 0..65535"
    return None


def _host_problem(host: str) -> str | None:
    if not host:
        return "no host before the port"
    parts = host.split(".")
    # A dotted quad must be a real IPv4 address; anything else (a name, an interface,
    # '*', [::1]) is left for ZeroMQ to resolve when it binds or connects.
    if len(parts) == 4 and all(p.isdigit() for p in parts) and any(int(p) > 255 for p in parts):
        return f"{host!r} is not an IPv4 address"
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """Why ZeroMQ could not use `endpoint` (None when it looks usable): a transport it
    knows, a non-empty address, and for tcp a host and a port 0..65535 (or '*')."""
    if any(not char.isprintable() for char in endpoint):
        # libzmq stops at a NUL: "ipc:///tmp/a\0b" would bind /tmp/a without a word.
        return "it holds a control character (NUL, newline, ...)"
    transport, sep, address = endpoint.partition("://")
    if not sep or transport not in ("tcp", "ipc", "inproc"):
        return "not a tcp://, ipc:// or inproc:// endpoint"
    if not address:
        return f"no address after {transport}://"
    if transport != "tcp":
        return None
    address = address.rpartition(";")[2]  # tcp://source;host:port connects from `source`
    host, colon, port = address.rpartition(":")
    if not colon:
        return "a tcp endpoint needs HOST:PORT"
    return _host_problem(host.strip("[]")) or _port_problem(port, wildcard=True)


def http_address_problem(address: str) -> str | None:
    """Why HOST:PORT cannot be served on (None when it looks usable)."""
    host, colon, port = address.rpartition(":")
    if not colon:
        return "must be HOST:PORT"
    return _host_problem(host.strip("[]")) or _port_problem(port, wildcard=False)


def endpoint(text: str) -> str:
    """An argparse type for a ZeroMQ endpoint; '' passes (it means 'none' where allowed).
    inproc:// is refused: it reaches only the command's own process, never a daemon."""
    if text:
        problem = endpoint_problem(text)
        if not problem and text.startswith("inproc://"):
            problem = "inproc:// reaches only this process; use tcp:// or ipc://"
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


# Types shared by many commands' options, so one range holds everywhere. Every numeric
# option has an upper bound (tests/test_hostile_cli.py walks the parsers): a typo of a few
# digits must not start a run that outlives anyone watching it.
MAX_SECONDS = 86400  # one day: longer runs are 0 ("until interrupted") where that is offered
channels = bounded(int, 1, 4096, what="channels")
seconds = bounded(float, 0, MAX_SECONDS, low_open=True, what="the duration")
# A duration or timeout where 0 means "no limit".
duration = bounded(float, 0, MAX_SECONDS, what="the duration")
workers = bounded(int, 1, 64, what="the workers")
seed = bounded(int, 0, 2**63 - 1, what="a seed")  # numpy's generators take none below 0


def stream_id(text: str) -> str:
    """An argparse type for a stream id, as the wire protocol allows it (neurowire.wire
    STREAM_ID): a subscriber asking for an id no stream can have would wait for ever."""
    from neurowire.wire import STREAM_ID

    if not STREAM_ID.match(text.encode()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a stream id is 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


def path(text: str) -> str:
    """An argparse type for a file or folder name: an empty one (an unset shell variable)
    is refused here, where it would otherwise mean 'not given' or the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


def output_file(text: str) -> str:
    """An argparse type for a file a command writes when it ends: a folder given for it is
    refused now, not after a run whose samples could then not be written."""
    import os

    if os.path.isdir(path(text)):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    return text


def output_folder(text: str) -> str:
    """An argparse type for a folder a command writes files into (made if missing)."""
    import os

    if os.path.lexists(path(text)) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


# A TCP port to listen on (0: any free one).
port = bounded(int, 0, 65535, what="a port")
