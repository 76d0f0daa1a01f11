"""Lossless subscribers: blocks held per subscriber on the ROUTER socket, sent against credit.

Used by the data thread only (it owns the ROUTER socket). A subscriber says hello with the
streams it wants and an initial credit, grants more as it reads, and is forgotten after
`lossless_timeout_s` of silence; past `lossless_max_messages` or `lossless_max_bytes` held,
its oldest block is dropped and counted (`overflow`). Credit never exceeds
`lossless_max_messages` (a grant tops it up to there, it does not add without bound), and at
most `lossless_max_subscribers` are served at once: what the daemon holds for them is bounded
in bytes."""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import zmq

from neurowire.wire import Rejected

from .requests import unpack_small_map

log = logging.getLogger("neurowire.daemon")

_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
MAX_CREDIT = 1_000_000


class LosslessSubscriber:
    """`credit` and `sent` live in `counts` (int64), which the C data path (fastpath.py)
    updates in place when it sends a block itself: while nothing is held for the subscriber
    here, it is served there."""

    __slots__ = ("identity", "streams", "counts", "queue", "last_seen", "overflow",
                 "held_bytes")
    CREDIT, SENT = range(2)  # counts slots (nw_fastpath.h: nwfp_counts)

    def __init__(self, identity: bytes, streams, credit: int):
        self.identity = identity
        self.streams = streams
        self.counts = np.zeros(2, dtype=np.int64)
        self.credit = credit
        self.queue: collections.deque = collections.deque()
        self.last_seen = time.monotonic()
        self.overflow = 0
        self.held_bytes = 0

    @property
    def credit(self) -> int:
        return int(self.counts[self.CREDIT])

    @credit.setter
    def credit(self, value: int) -> None:
        self.counts[self.CREDIT] = value

    @property
    def sent(self) -> int:
        return int(self.counts[self.SENT])

    @sent.setter
    def sent(self, value: int) -> None:
        self.counts[self.SENT] = value

    def wants(self, stream_id: str) -> bool:
        return self.streams is None or stream_id in self.streams


class LosslessRouter:
    def __init__(self, sockets, config, reject, on_join):
        """`reject(Rejected)` counts a bad request; `on_join(wanted)` asks for keyframes on
        the streams `wanted(stream_id)` selects, so a newcomer decodes from the next block."""
        self.sockets = sockets  # .router is opened after this is made
        self.config = config
        self.reject = reject
        self.on_join = on_join
        self.subscribers: dict[bytes, LosslessSubscriber] = {}
        self.generation = 0  # +1 whenever a subscriber comes or goes (the C data path's cue)
        self.requests_taken = 0  # good requests (bad ones are counted as rejected)

    @property
    def router(self):
        return self.sockets.router

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def offer(self, state, frames, subscribers=None) -> None:
        """A block just published: held for, and sent to, every subscriber that wants it (of
        `subscribers`, when given: those the C data path did not serve)."""
        limit, limit_bytes = self.config.lossless_max_messages, self.config.lossless_max_bytes
        size = None
        for subscriber in list(self.subscribers.values()) if subscribers is None else subscribers:
            if subscriber.wants(state.stream_id):
                if size is None:
                    size = sum(map(len, frames))
                queue = subscriber.queue
                queue.append((frames, size))
                subscriber.held_bytes += size
                while len(queue) > limit or subscriber.held_bytes > limit_bytes:
                    subscriber.held_bytes -= queue.popleft()[1]
                    subscriber.overflow += 1
                    state.lossless_overflow += 1
                self.pump(subscriber)

    def pump(self, subscriber: LosslessSubscriber) -> None:
        queue = subscriber.queue
        send = self.router.send
        while subscriber.credit > 0 and queue:
            frames, size = queue[0]
            try:
                # The identity frame decides: once it is taken, libzmq takes the rest.
                send(subscriber.identity, _MORE)
            except zmq.Again:
                return
            except zmq.ZMQError as error:
                if error.errno == zmq.EHOSTUNREACH:
                    return  # disconnected for now: keep holding until it returns or times out
                raise
            last = len(frames) - 1
            for index, frame in enumerate(frames):
                send(frame, _NOBLOCK if index == last else _MORE)
            queue.popleft()
            subscriber.held_bytes -= size
            subscriber.credit -= 1
            subscriber.sent += 1

    def pump_all(self) -> None:
        for subscriber in list(self.subscribers.values()):
            self.pump(subscriber)

    def held(self) -> int:
        return sum(len(s.queue) for s in list(self.subscribers.values()))

    def on_requests(self) -> None:
        while True:
            try:
                identity, *rest = self.router.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            self.request(identity, rest)

    def request(self, identity: bytes, rest: list) -> None:
        try:
            if len(rest) != 1:
                raise Rejected("lossless_request", f"{len(rest)} frames")
            request = unpack_small_map(rest[0])
            command = request.get("cmd")
            subscriber = self.subscribers.get(identity)
            if command == "hello":
                streams = request.get("streams")
                if streams is not None and (not isinstance(streams, list) or
                                            not all(isinstance(s, str) for s in streams)):
                    raise Rejected("lossless_request", "'streams' must be a list of ids")
                credit = request.get("credit", 64)
                if (not isinstance(credit, int) or isinstance(credit, bool)
                        or not 0 <= credit <= MAX_CREDIT):
                    raise Rejected("lossless_request", f"credit {credit!r:.40}")
                credit = min(credit, self.config.lossless_max_messages)
                if subscriber is None and (len(self.subscribers)
                                           >= self.config.lossless_max_subscribers):
                    raise Rejected("lossless_full", f"{len(self.subscribers)} lossless "
                                                    "subscribers already, the limit")
                if subscriber is None:
                    subscriber = LosslessSubscriber(
                        identity, None if streams is None else set(streams), credit)
                    self.subscribers[identity] = subscriber
                    self.generation += 1
                    log.info("lossless subscriber %s joined (streams %s)", identity.hex(),
                             streams or "all")
                else:  # it reconnected or re-announced itself: its window starts afresh
                    subscriber.credit = credit
                self.on_join(subscriber.wants)
            elif subscriber is None:
                raise Rejected("lossless_request", f"{command!r} before hello")
            elif command == "credit":
                grant = request.get("n", 0)
                if (not isinstance(grant, int) or isinstance(grant, bool)
                        or not 0 <= grant <= MAX_CREDIT):
                    raise Rejected("lossless_request", f"credit {grant!r:.40}")
                subscriber.credit = min(subscriber.credit + grant,
                                        self.config.lossless_max_messages)
            elif command == "bye":
                del self.subscribers[identity]
                self.generation += 1
                self.requests_taken += 1
                log.info("lossless subscriber %s left", identity.hex())
                return
            else:
                raise Rejected("lossless_request", f"unknown command {command!r:.40}")
        except Rejected as rejection:
            self.reject(rejection)
            return
        self.requests_taken += 1
        subscriber.last_seen = time.monotonic()
        self.pump(subscriber)

    def housekeeping(self, now: float) -> None:
        for identity, subscriber in list(self.subscribers.items()):
            if now - subscriber.last_seen > self.config.lossless_timeout_s:
                del self.subscribers[identity]
                self.generation += 1
                log.warning("lossless subscriber %s silent for %.0f s: released %d held "
                            "blocks", identity.hex(), now - subscriber.last_seen,
                            len(subscriber.queue))
            else:
                self.pump(subscriber)

    def flush(self, deadline: float) -> None:
        """On stop: give subscribers until `deadline` to take what is held."""
        while time.monotonic() < deadline and any(
                subscriber.queue for subscriber in self.subscribers.values()):
            if self.router.poll(5):
                self.on_requests()
            self.pump_all()
        held = self.held()
        if held:
            log.warning("stopping with %d blocks still held for lossless subscribers", held)

    def count_for(self, stream_id: str) -> int:
        return sum(1 for s in list(self.subscribers.values()) if s.wants(stream_id))

    def snapshot(self) -> list[dict]:
        return [{"id": s.identity.hex(), "held": len(s.queue), "held_bytes": s.held_bytes,
                 "sent": s.sent,
                 "credit": s.credit, "overflow": s.overflow}
                for s in list(self.subscribers.values())]
