"""Whether anything answers at an endpoint a client connected to: libzmq connects in the
background and retries for ever, so without asking, a client pointed at nothing waits (or,
for a PUSH socket, queues its packets) in silence."""

from __future__ import annotations

import time

import zmq


class ConnectionWatch:
    """Watches one socket's connection events; make it before `connect`."""

    def __init__(self, sock):
        self._monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED |
                                                zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sock = sock
        self.seen = False

    def connected(self, timeout: float = 0.0) -> bool:
        """True once a peer was reached (waiting up to `timeout` seconds for it)."""
        from zmq.utils.monitor import recv_monitor_message

        deadline = time.monotonic() + timeout
        while not self.seen:
            remaining = deadline - time.monotonic()
            if not self._monitor.poll(max(0, int(remaining * 1000))):
                return False
            recv_monitor_message(self._monitor)
            self.seen = True
        return True

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.disable_monitor()
        self._monitor.close(linger=0)
