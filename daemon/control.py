"""Client side of the control endpoint (REQ/REP, msgpack): `query(endpoint, "stats")`."""

from __future__ import annotations

import msgpack
import zmq


class ControlTimeout(TimeoutError):
    """The daemon did not answer in time (stopped, or unreachable)."""


def query(endpoint: str, command: str = "stats", *, timeout: float = 2.0,
          context: zmq.Context | None = None, curve: dict | None = None) -> dict:
    """One request on a fresh REQ socket, so a lost reply never wedges the next call.

    `curve`: {"server_public": bytes, "public": bytes, "secret": bytes} for a CURVE daemon.
    """
    context = context or zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    try:
        if curve:
            sock.curve_serverkey = curve["server_public"]
            sock.curve_publickey = curve["public"]
            sock.curve_secretkey = curve["secret"]
        sock.connect(endpoint)
        sock.send(msgpack.packb({"cmd": command}))
        if not sock.poll(int(timeout * 1000)):
            raise ControlTimeout(f"no reply from {endpoint} within {timeout} s")
        return msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
    finally:
        sock.close()


def wait_ready(endpoint: str, timeout: float = 10.0, **kwargs) -> dict:
    """Poll `status` until the daemon answers; ControlTimeout after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return query(endpoint, "status", timeout=0.5, **kwargs)
        except ControlTimeout:
            if time.monotonic() > deadline:
                raise
