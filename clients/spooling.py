"""Receiving into a spool (writers.Spool) while a stream runs, to decode after it: the loop
behind `neurowire subscribe --spool` and `neurowire bench stream --verify after`.

Two loops keep one set of rules: the C one (fastsub.SpoolLoop, clients/src/spool_loop.c),
and PythonSpoolLoop here, the reference and the fallback where the C extension cannot load
(`neurowire subscribe --python-loop` forces it, to compare). Each message is

- a feed's (its topic holds '/'): passed over and counted;
- rejected with the reason neurowire.wire.parse_block gives ("header", "version",
  "groups"), "frames" when it has fewer than three, or "topic" when its topic is not a
  stream id and '\\0' (neurowire.wire.STREAM_ID: the daemon takes no other ids): counted,
  not spooled, and charged to the subscriber's decode_errors as its decoding would have;
- or appended to the spool, and its stream's SequenceTracker moved on, so lost blocks, gaps
  and keyframe waits are known while streaming (decoding after the stream reports them
  again, from the same blocks).

Both loops take every waiting message per wake-up and come back to Python only at a
deadline (at most TICK_S away, sooner when --seconds or the idle time-out ends first, so
those end within a millisecond or so of their time), after a lossless subscriber's credit's
worth of messages, at stop() (within STOP_CHECK_S) or once --until-sample is reached.
"""

from __future__ import annotations

import logging
import time

import zmq

from neurowire.wire import STREAM_ID, Rejected, parse_block

from . import fastsub
from .subscription import rest_of_message
from .tracker import SequenceTracker

log = logging.getLogger("neurowire.subscribe")

REJECT_REASONS = ("frames", "header", "version", "groups", "topic")  # spool_loop.h's order
GAP_REASONS = ("delivery", "daemon_dropped", "source")
MAX_STREAMS = 256  # streams followed (NW_SPOOL_MAX_STREAMS); later ones spooled, untracked
TICK_S = 0.2  # longest stay in a loop before control comes back to Python
STOP_CHECK_S = 0.05  # longest wait before a loop looks at its stop flag (C: the same)

_NOBLOCK = int(zmq.NOBLOCK)


def _bytes(frame) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


class PythonSpoolLoop:
    """The spooling loop in Python, on a pyzmq socket: see the module's rules."""

    c_loop = False

    def __init__(self, sock, spool, *, until_sample: int = 0,
                 resume_from: dict | int | None = None):
        self._sock, self._spool = sock, spool
        self._poll = [(sock, zmq.POLLIN)]
        self._until_sample, self._resume_from = until_sample, resume_from
        self._trackers: dict[bytes, SequenceTracker] = {}
        self._stop = False
        self.reached = False
        self.taken = 0
        self.last_data_ns = 0
        self._counts = {"spooled": 0, "spooled_bytes": 0, "feed_messages": 0,
                        "rejected": dict.fromkeys(REJECT_REASONS, 0), "lost_blocks": 0,
                        "duplicates": 0, "keyframe_waits": 0, "untracked": 0,
                        "gaps": dict.fromkeys(GAP_REASONS, 0), "gap_samples": 0}

    def run(self, deadline_ns: int, max_messages: int) -> int:
        """As fastsub.SpoolLoop.run."""
        recv, monotonic_ns = self._sock.recv, time.monotonic_ns
        taken = 0
        while taken < max_messages and not self._stop and not self.reached:
            now = monotonic_ns()
            if now >= deadline_ns:
                break
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                wait_ms = min(STOP_CHECK_S * 1e3, (deadline_ns - now) / 1e6)
                zmq.zmq_poll(self._poll, max(1, int(wait_ms + 0.999)))
                continue
            received_ns = time.time_ns()
            frames = rest_of_message(recv, frame)
            taken += 1
            self.taken += 1
            self.last_data_ns = monotonic_ns()
            self.take(frames, received_ns)
        return taken

    def take(self, frames, received_ns: int) -> bool:
        """One message's fate (spool_loop.c's nw_spool_take): True when spooled."""
        counts = self._counts
        topic = _bytes(frames[0])
        if b"/" in topic:
            counts["feed_messages"] += 1
            return False
        if len(frames) < 3:
            counts["rejected"]["frames"] += 1
            return False
        try:
            header = parse_block(_bytes(frames[1]), len(frames) - 2)
            if not (topic.endswith(b"\0") and STREAM_ID.match(topic[:-1])):
                raise Rejected("topic", repr(topic[:80]))
        except Rejected as error:
            counts["rejected"][error.reason] += 1
            return False
        self._spool.write(frames, received_ns)
        counts["spooled"] += 1
        counts["spooled_bytes"] += sum(len(frame) for frame in frames)
        self._track(topic, header)
        if self._until_sample and header.first + header.n_samples >= self._until_sample:
            self.reached = True
        return True

    def _track(self, topic: bytes, header) -> None:
        counts = self._counts
        tracker = self._trackers.get(topic)
        if tracker is None:
            if len(self._trackers) == MAX_STREAMS:
                counts["untracked"] += 1
                return
            stream = topic[:-1].decode()
            resume = (self._resume_from.get(stream) if isinstance(self._resume_from, dict)
                      else self._resume_from)
            tracker = self._trackers[topic] = SequenceTracker(stream, resume)
        lost = tracker.on_block(header)
        if lost < 0:
            counts["duplicates"] += 1
            return
        counts["lost_blocks"] += lost
        if not tracker.can_decode(header):
            counts["keyframe_waits"] += 1
            return
        gap = tracker.delivered(header)
        if gap is not None:
            counts["gaps"][gap.reason] += 1
            counts["gap_samples"] += gap.samples

    def stop(self) -> None:
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def counts(self) -> dict:
        return {key: dict(value) if isinstance(value, dict) else value
                for key, value in self._counts.items()}


class CSpoolLoop:
    """fastsub.SpoolLoop behind PythonSpoolLoop's interface: the spool's Python buffer is
    flushed first and its message count kept up."""

    c_loop = True

    def __init__(self, receiver, spool, **options):
        self._spool = spool
        self._loop = fastsub.SpoolLoop(receiver, spool.attach(), **options)

    def run(self, deadline_ns: int, max_messages: int) -> int:
        loop, before = self._loop, self._loop._state.counts.spooled
        try:
            return loop.run(deadline_ns, max_messages)
        finally:
            self._spool.appended(loop._state.counts.spooled - before)

    def stop(self) -> None:
        self._loop.stop()

    stopped = property(lambda self: self._loop.stopped)
    reached = property(lambda self: self._loop.reached)
    taken = property(lambda self: self._loop.taken)
    last_data_ns = property(lambda self: self._loop.last_data_ns)

    def counts(self) -> dict:
        return self._loop.counts(REJECT_REASONS, GAP_REASONS)


def spool_loop(subscription, spool, *, c_loop: bool = True, until_sample: int = 0,
               resume_from: dict | int | None = None):
    """The C loop when asked for and the subscription receives in C (its fastsub.Receiver),
    else the Python one; per-stream resume points (a dict) are the Python loop's alone. The
    subscription must be open."""
    options = {"until_sample": until_sample, "resume_from": resume_from}
    if c_loop and subscription._receiver is not None and not isinstance(resume_from, dict):
        return CSpoolLoop(subscription._receiver, spool, **options)
    return PythonSpoolLoop(subscription.sock, spool, **options)


def receive_into(subscription, loop, *, seconds: float = 0.0, idle_timeout: float = 0.0,
                 first_wait: float = 0.0, note=None) -> str:
    """Runs `loop` until --seconds (from now), the idle time-out (from the last message;
    before the first, at least `first_wait`), until_sample or stop(); grants a lossless
    subscription's credit and says hello on its idle ticks. `note(seconds)`: called every
    5 s while nothing has come. Returns what ended it: "seconds", "idle", "until_sample" or
    "stop"."""
    started = last_data = noted = time.monotonic_ns()
    end = started + int(seconds * 1e9) if seconds else None
    # A lossless daemon sends at most a credit window ahead: take half, grant, go on.
    max_messages = max(1, subscription.credit_window // 2) if subscription.lossless else 1 << 30
    received = False
    while True:
        now = time.monotonic_ns()
        deadline = now + int(TICK_S * 1e9)
        if end is not None:
            if now >= end:
                return "seconds"
            deadline = min(deadline, end)
        if idle_timeout:
            limit = idle_timeout if received else max(idle_timeout, first_wait)
            idle_end = last_data + int(limit * 1e9)
            if now >= idle_end:
                return "idle"
            deadline = min(deadline, idle_end)
        if not received and note is not None and now - noted >= 5e9:
            noted = now
            note((now - started) / 1e9)
        taken = loop.run(deadline, max_messages)
        if taken:
            received = True
            last_data = loop.last_data_ns
            if subscription.lossless:
                subscription._grant(taken)
        else:
            subscription._idle()
        if loop.reached:
            return "until_sample"
        if loop.stopped:
            return "stop"
