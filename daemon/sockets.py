"""The daemon's sockets: made, secured (CURVE) and bound at start, so a bad endpoint fails the
start; the data sockets are then handed to the data thread, their only user."""

from __future__ import annotations

import logging

import zmq
import zmq.asyncio
import zmq.auth
import zmq.auth.thread

from .budget import LOSSLESS_IN_FLIGHT
from .feedbridge import FeedWorker
from .requests import REQUEST_FRAME_LIMIT

log = logging.getLogger("neurowire.daemon")


def ingest_limits(config) -> tuple[int, int]:
    """(payload bytes the daemon accepts, frame bytes libzmq lets through).

    libzmq drops a frame over MAXMSGSIZE by cutting the connection, which its monitor
    cannot tell from an ordinary hang-up; so libzmq's limit sits well above the daemon's,
    and anything in between reaches the daemon, which counts it as "oversized"."""
    accepted = config.max_packet_bytes()
    return accepted, 2 * accepted + 65536


class EndpointInUse(OSError):
    """Another process listens on one of the daemon's ipc paths."""


def refuse_live_ipc(endpoints) -> None:
    """Before binding anything: an ipc path whose socket file answers a connect belongs to
    a running process, whose file libzmq's bind would silently replace (leaving it running
    but unreachable). A file that refuses the connect is stale and may be replaced."""
    import socket

    for endpoint in endpoints:
        if not endpoint.startswith("ipc://"):
            continue
        path = endpoint[len("ipc://"):]
        if path.startswith("@"):  # abstract namespace: bind itself fails when taken
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            continue
        except OSError as error:
            raise EndpointInUse(f"{endpoint}: cannot check whether it is in use ({error})")
        finally:
            probe.close()
        raise EndpointInUse(f"{endpoint} is in use: another daemon (or process) listens there; "
                            "stop it or choose other endpoints")


class DaemonSockets:
    """Every socket of one daemon on one libzmq context; `endpoints` holds what was bound."""

    def __init__(self, config, owner_id: int):
        self.config = config
        self.endpoints: dict[str, str] = {}
        self.context = zmq.asyncio.Context()
        self.authenticator = None
        self.feeds: FeedWorker | None = None
        self._wake_endpoint = f"inproc://neurowire-wake-{owner_id:x}"
        self.ingest = self.ingest_monitor = self.publisher = self.router = None
        self.wake_rx = self.wake_tx = self.control = None

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

    def open(self) -> None:
        config = self.config
        refuse_live_ipc([config.ingest, config.publish, config.lossless, config.control])
        if config.security.curve:
            self.authenticator = zmq.auth.thread.ThreadAuthenticator(
                zmq.Context.shadow(self.context.underlying), log=log.getChild("auth"))
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*",
                                               location=config.security.client_keys_dir)
        # Data sockets are plain (blocking-capable) sockets on the same libzmq context.
        sync = zmq.Context.shadow(self.context.underlying)
        self.ingest = sync.socket(zmq.PULL)
        # Headroom for a burst, bounded: the data thread takes packets into its own backlog
        # (bounded in bytes, dropping and counting) faster than they arrive, so this queue
        # fills only while it is stalled; full, libzmq stops reading the connection.
        self.ingest.rcvhwm = config.ingest_hwm
        self.ingest.maxmsgsize = ingest_limits(config)[1]
        self.ingest.linger = 0
        self.ingest_monitor = self.ingest.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._bind(self.ingest, "ingest", config.ingest)
        self.publisher = sync.socket(zmq.XPUB)
        self.publisher.sndhwm = config.live_hwm
        self.publisher.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe: we count them
        self.publisher.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.publisher, "publish", config.publish)
        self.router = sync.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error
        # Credit bounds what a subscriber is sent; this bounds what libzmq holds for one
        # that does not read (a full pipe leaves the rest held, counted, in lossless.py).
        self.router.sndhwm = LOSSLESS_IN_FLIGHT
        self.router.maxmsgsize = REQUEST_FRAME_LIMIT
        self.router.linger = int(config.flush_timeout_s * 1000)
        self._bind(self.router, "lossless", config.lossless)
        if config.feeds:
            self.feeds = FeedWorker(config, sync)
        self.wake_rx = sync.socket(zmq.PULL)
        self.wake_rx.bind(self._wake_endpoint)
        self.wake_tx = sync.socket(zmq.PUSH)
        self.wake_tx.linger = 0
        self.wake_tx.connect(self._wake_endpoint)
        self.control = self.context.socket(zmq.ROUTER)  # REQ clients; ids for the rate limit
        self.control.maxmsgsize = REQUEST_FRAME_LIMIT
        self.control.linger = 0
        self._bind(self.control, "control", config.control)

    def wake_data_thread(self) -> None:
        try:
            self.wake_tx.send(b"", zmq.NOBLOCK)
        except (zmq.ZMQError, AttributeError):
            pass  # never opened, or already woken: the poll timeout catches it anyway

    def close_data(self) -> None:
        """By the data thread, their only user; the publishers linger to deliver what is
        queued."""
        if self.ingest is not None and not self.ingest.closed:
            self.ingest.disable_monitor()
        if self.feeds is not None:
            self.feeds.stop()
        for sock in (self.ingest_monitor, self.ingest, self.publisher, self.router,
                     self.wake_rx):
            if sock is not None and not sock.closed:
                sock.close()

    def close(self) -> None:
        self.close_data()  # again, if the data thread never ran
        for sock in (self.wake_tx, self.control):
            if sock is not None and not sock.closed:
                sock.close()
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()
