"""Client for the daemon's control endpoint (REQ/REP, msgpack) that survives a dead daemon."""
from __future__ import annotations

import asyncio
import time

import msgpack
import zmq
import zmq.asyncio

from neurowire.wire import apply_curve


def load_curve(server_key_file: str, client_cert_file: str) -> dict:
    """Keys from zmq.auth certificate files: the daemon's public one, and ours with secret."""
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(server_key_file)
    public, secret = zmq.auth.load_certificate(client_cert_file)
    if not secret:
        raise ValueError(f"{client_cert_file} holds no secret key")
    return {"server_public": server_public, "public": public, "secret": secret}


class ControlError(Exception):
    """The daemon did not answer in time, or answered with an error."""


class ControlClient:
    """One outstanding request at a time, each with a deadline.

    A REQ socket whose request got no reply refuses to send again (its state machine waits
    for the reply forever), so after any failure the socket is thrown away (linger 0, so the
    unsent request dies with it) and the next request starts on a fresh one.
    """

    def __init__(self, endpoint: str, timeout_s: float = 1.0,
                 context: zmq.asyncio.Context | None = None, curve: dict | None = None):
        self.endpoint = endpoint
        self.curve = curve
        self.timeout_s = timeout_s
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self.recreated = 0
        self.last_rtt_s: float | None = None

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            # Reconnect quickly: the page should recover within a second of the daemon's return.
            s.setsockopt(zmq.RECONNECT_IVL, 100)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            apply_curve(s, self.curve)
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def _discard(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self.recreated += 1

    async def request(self, cmd: str, **fields) -> dict:
        sock = self._socket()
        t0 = time.monotonic()
        try:
            await sock.send(msgpack.packb({"cmd": cmd, **fields}, use_bin_type=True),
                            flags=zmq.NOBLOCK)
            try:
                raw = await asyncio.wait_for(sock.recv(), self.timeout_s)
            except asyncio.TimeoutError:
                raise ControlError(
                    f"no reply from {self.endpoint} within {self.timeout_s:g} s") from None
        except ControlError:
            self._discard()
            raise
        except zmq.ZMQError as e:
            self._discard()
            raise ControlError(f"{self.endpoint}: {e}") from e
        self.last_rtt_s = time.monotonic() - t0
        try:
            reply = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as e:  # noqa: BLE001 - any undecodable reply is the daemon's fault
            raise ControlError(f"undecodable reply: {e}") from e
        if not isinstance(reply, dict):
            raise ControlError(f"reply is not a map: {type(reply).__name__}")
        if "error" in reply:
            raise ControlError(f"daemon: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
