"""The subscriber library: `Subscription` and the `neurowire.subscribe(...)` iterator.

    for block in neurowire.subscribe("tcp://127.0.0.1:7341"):
        block.samples          # int16 (n_samples, channels), exactly what the implant sent
        block.first_sample     # index of its first time step in the stream
        block.gaps             # sample ranges missed just before this block, if any

Live delivery (default) subscribes to the daemon's PUB socket; a subscriber that cannot keep
up loses blocks and reports them.  `lossless=True` talks to the daemon's lossless endpoint,
which holds blocks until this subscriber grants credit for them.

Every block is checked: the daemon's CRC-32 of the raw packet against the decoded samples.
Gaps are exact sample ranges (tracker.py). The constructor does no network I/O: the socket
is opened by `open()`, `with`, or the first receive.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
import resource
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import msgpack
import numpy as np
import zmq

from neurowire import checksum
from neurowire.codec import CodecError, CorruptStreamError
from neurowire.cpus import usable_cpus
from neurowire.wire import FEEDS as WIRE_FEEDS
from neurowire.wire import (DEFAULT_LOSSLESS, DEFAULT_PUBLISH, Rejected, apply_curve,
                            bound_endpoint, is_feed_topic, parse_block, stream_ids,
                            topic_for)

from . import fastsub
from .liveness import ConnectionWatch
from .tracker import Gap, SequenceTracker

log = logging.getLogger("neurowire.subscribe")

_NOBLOCK = int(zmq.NOBLOCK)
# Streams of fewer channels decode on the receiving thread alone: at 16 channels a block
# decodes in ~10 us, less than waking a helper thread costs on a VM.
PARALLEL_DECODE_CHANNELS = 256
LATENCY_STAGES = ("ingest", "queue_compress", "publish", "delivery", "decode", "end_to_end")
RECORDED_STAGES = (*LATENCY_STAGES, "compress")  # Block.latency_ns and latency_summary_us
FEEDS = ("lossless", *WIRE_FEEDS)  # what `feed=` takes

__all__ = ["Block", "Gap", "Run", "Subscription", "subscribe", "feed_subscription"]


@dataclass(slots=True)
class Block:
    stream: str
    first_sample: int
    samples: np.ndarray
    rate: float
    seq: int
    keyframe: bool
    latency_ns: dict
    gaps: list = field(default_factory=list)

    @property
    def stop_sample(self) -> int:
        return self.first_sample + self.samples.shape[0]


@dataclass(slots=True)
class Run:
    """Consecutive blocks of one stream in one array, as `Subscription.receive_batch` hands
    them out: rows are samples first_sample .. stop_sample - 1 with nothing missing between
    the blocks; `gaps` are the ranges missed just before the first. Writers take a Run
    wherever they take a Block; `blocks()` gives the Blocks themselves."""
    stream: str
    first_sample: int
    samples: np.ndarray
    rate: float
    gaps: list
    _blocks: list | None = None  # made already (a run of one block from the general path)
    _seq: int = 0                # else, what makes them: the first block's seq,
    _rows: np.ndarray | None = None      # each block's rows,
    _keyframes: np.ndarray | None = None  # keyframe flags
    _stages: np.ndarray | None = None     # and latencies (RECORDED_STAGES order)

    @property
    def stop_sample(self) -> int:
        return self.first_sample + self.samples.shape[0]

    @classmethod
    def of(cls, block: Block) -> "Run":
        return cls(block.stream, block.first_sample, block.samples, block.rate, block.gaps,
                   [block])

    def blocks(self) -> list[Block]:
        if self._blocks is None:
            starts = np.concatenate(([0], np.cumsum(self._rows, dtype=np.int64))).tolist()
            self._blocks = [
                Block(self.stream, self.first_sample + start, self.samples[start:stop],
                      self.rate, self._seq + k, bool(key),
                      dict(zip(RECORDED_STAGES, stages)), self.gaps if k == 0 else [])
                for k, (start, stop, key, stages) in enumerate(zip(
                    starts, starts[1:], self._keyframes.tolist(), self._stages.tolist()))]
        return self._blocks


def _same_samples(samples: np.ndarray, expected) -> bool:
    """np.array_equal, by bytes when both are int16 arrays of one shape (a tenth of the
    time at 16 channels, where the call itself was most of it), in place when both are
    C-contiguous."""
    if (type(expected) is np.ndarray and expected.dtype == samples.dtype
            and expected.shape == samples.shape):
        if samples.flags.c_contiguous and expected.flags.c_contiguous:
            same = fastsub.same_bytes(samples, expected)
            if same is not None:
                return same
        return samples.tobytes() == expected.tobytes()
    return np.array_equal(samples, expected)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rest_of_message(recv, frame) -> list:
    """A message's frames, from its first (a pyzmq Frame) on: libzmq delivers a message's
    frames together, so the rest are there already."""
    frames = [frame]
    while frame.more:
        frame = recv(0, copy=False)
        frames.append(frame)
    return frames


def _view(frame) -> memoryview:
    """A zmq Frame or any bytes-like object as a memoryview, without copying."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


class _StreamState:
    """A stream's decoders (one per channel group of the daemon's) and its tracker."""

    def __init__(self, stream: str, header, team, tracker: SequenceTracker, native: bool,
                 topic: bytes, header_bytes: bytes):
        from neurowire import codec

        self.groups = list(header.groups)
        self.decoder = codec.GroupDecoder(self.groups, team=team)
        # The same decoders, called from C on frames a fastsub.Receiver holds: block by
        # block (native), or for a run of ordinary blocks at a time (fast).
        self.native = self.fast = None
        if native:
            self.native = fastsub.NativeGroupDecoder(self.decoder)
            self.fast = fastsub.FastStream(self.native, topic, header_bytes, header)
        self.block_rows = header.n_samples  # the last block's length: room for the next ones
        self.rate = header.rate
        self.tracker = tracker


class Subscription:
    """Iterator of decoded Blocks; use as a context manager or call close()."""

    def __init__(self, endpoint: str | None = None, *, streams=None, lossless: bool = False,
                 control: str | None = None, credit: int = 512, curve: dict | None = None,
                 idle_timeout: float | None = None, context: zmq.Context | None = None,
                 expected: Callable[[str, int, int], np.ndarray] | None = None,
                 record_latency: bool = False, live_hwm: int = 4000,
                 resume_from: dict | int | None = None, socket_options: dict | None = None,
                 decode_threads: int | None = None, native: bool | None = None):
        if isinstance(streams, str):
            streams = [streams]
        self.streams = list(streams) if streams else None
        self.lossless = lossless
        self.endpoint = endpoint
        self.control = control
        self.curve = curve
        self.credit_window = credit
        self.idle_timeout = idle_timeout
        self.expected = expected
        self.context = context or zmq.Context.instance()
        self.states: dict[str, _StreamState] = {}
        self.gaps: list[Gap] = []
        self.blocks = self.samples = self.bytes_in = 0
        self.verified_samples = 0
        self.crc_errors = self.mismatches = self.decode_errors = self.skipped_blocks = 0
        self.lost_blocks = 0
        self.duplicates = 0  # blocks dropped as seen already (tracker.py)
        self.feed_messages = 0  # other feeds' messages passed over (see receive_raw)
        self.record_latency = record_latency
        # Where an earlier run of this subscriber stopped ({stream: next sample index}, or one
        # index for every stream): what is missing since then is reported as a gap.
        self.resume_from = resume_from
        # Latencies in RECORDED_STAGES order: a tuple per block from the general path, an
        # array of rows per run from the fast path, in the order received.
        self._latency: list = []
        self._spent_decode = None  # (frame, status): a block the fast path failed to decode
        self._by_topic: dict[bytes, _StreamState] = {}  # the fast path's way to a stream
        self._last_fast: _StreamState | None = None  # the stream it took last
        self._live_hwm = live_hwm
        self._socket_options = dict(socket_options or {})
        self.sock = None  # opened by open(), or by the first receive
        self._watch = None
        self._ungranted = 0
        self._last_sent = 0.0
        self._last_hello = 0.0
        self._cpu_start = _cpu_s()  # what building a reference table cost is not ours
        # Channel groups (one per daemon encoder thread) decode in parallel up to the CPUs.
        self._decode_threads = usable_cpus() if decode_threads is None else decode_threads
        self._teams: dict[int, object] = {}  # codec.CodecTeam by thread count, as needed
        # receive() takes every waiting message per wake-up and decodes them in C
        # (fastsub.py) where that runs; native=False keeps it on pyzmq, block by block.
        self._native = fastsub.available() if native is None else native
        self._receiver = None
        self._ready: deque[Block] = deque()  # decoded, not yet returned by receive()
        self.spool_report = None  # spool_into's counters, once it ran
        self._spool_loop = None  # the loop spool_into runs, for stop_spooling()

    def open(self) -> "Subscription":
        """Connect (asking `control` for the endpoint first, if given); the first receive
        does this too. Kept out of the constructor, which does no network I/O."""
        if self.sock is not None:
            return self
        if self.endpoint is None and self.control is not None:
            self.endpoint = bound_endpoint(self.control, "lossless" if self.lossless
                                           else "publish", self.curve)
        self.endpoint = self.endpoint or (DEFAULT_LOSSLESS if self.lossless else DEFAULT_PUBLISH)
        sock = self.context.socket(zmq.DEALER if self.lossless else zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000 if self.lossless else self._live_hwm
        apply_curve(sock, self.curve)
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)
        if self.lossless:
            # A stable identity lets the daemon recognise us after a reconnect.
            sock.routing_id = uuid.uuid4().bytes
        else:
            for stream in self.streams or [""]:
                sock.subscribe(topic_for(stream) if stream else b"")
        self._watch = ConnectionWatch(sock)
        self._opened_at = time.monotonic()
        self._warned_silence = False
        sock.connect(self.endpoint)
        self.sock = sock
        self._poll_list = [(sock, zmq.POLLIN)]
        if self._native:
            self._receiver = fastsub.Receiver(sock)
        if self.lossless:
            self._hello()
        return self

    def _warn_if_nothing_answers(self) -> None:
        """Once, 3 s after opening with no peer reached: said in the log, not in silence."""
        if (not self._warned_silence and not self._watch.connected(0)
                and time.monotonic() - self._opened_at > 3.0):
            self._warned_silence = True
            log.warning("nothing answers at %s after 3 s (is the daemon running there?); "
                        "still waiting", self.endpoint)

    def answering(self, timeout: float = 3.0) -> bool:
        """Whether anything accepted our connection (waiting up to `timeout` seconds): a
        daemon that is not there, or a wrong endpoint, shows here instead of as silence."""
        self.open()
        return self._watch.connected(timeout)

    # ---- lossless credit -----------------------------------------------------------------

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(msgpack.packb(message), zmq.NOBLOCK)
            self._last_sent = time.monotonic()
        except zmq.Again:
            pass  # not connected yet: the next idle tick says hello again

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        self._ungranted = 0
        self._send({"cmd": "hello", "streams": self.streams, "credit": self.credit_window})

    def _grant(self, messages: int = 1) -> None:
        self._ungranted += messages
        if self._ungranted >= self.credit_window // 2:
            self._send({"cmd": "credit", "n": self._ungranted})
            self._ungranted = 0
        elif time.monotonic() - self._last_sent > 1.0:
            self._send({"cmd": "credit", "n": 0})  # keep-alive while the window is open

    # ---- receiving -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Block]:
        return self

    def __next__(self) -> Block:
        block = self.receive(self.idle_timeout)
        if block is None:
            raise StopIteration
        return block

    def receive(self, timeout: float | None = None) -> Block | None:
        """Next decoded block, or None after `timeout` seconds without one."""
        if not self._ready:
            for run in self.receive_batch(timeout):
                self._ready.extend(run.blocks())
        return self._ready.popleft() if self._ready else None

    def receive_batch(self, timeout: float | None = None, gather: float = 0.0) -> list[Run]:
        """Every block of the next wake-up (all messages waiting then), as Runs of blocks that
        follow on from each other; [] after `timeout` seconds without any. Cheaper per block
        than receive(), which hands out the same blocks one by one.

        gather: keep taking a stream's blocks as they come, for up to this many seconds,
        before handing them out (where the C fast path runs). Each is still decoded, checked
        and timed on arrival; what the wait saves is the caller's work per wake-up."""
        if self._ready:  # taken already, not yet handed out by receive()
            runs = [Run.of(block) for block in self._ready]
            self._ready.clear()
            return runs
        if self.sock is None:
            self.open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            if self._receiver is None:
                raw = self.receive_raw(remaining)
                if raw is None:
                    return []
                block = self._handle(*raw)
                if block is not None:
                    return [Run.of(block)]
                continue
            wait = 0.5 if remaining is None else min(0.5, remaining)
            state = self._gather_state() if gather > 0 else None
            if state is not None:
                runs = self._gather(state, min(gather, wait))
                if runs is None:
                    self._idle()
                elif runs:
                    return runs
                continue
            taken = self._receiver.drain(max(1, int(wait * 1000)))
            if not taken:
                self._idle()
                continue
            if self.lossless:
                self._grant(taken)
            runs = self._handle_batch(taken)
            if runs:
                return runs

    def _gather(self, state: _StreamState, seconds: float) -> list[Run] | None:
        """receive_batch's `gather`: the stream's blocks for up to `seconds` through the C
        fast path, then whatever it left alone; None when nothing came at all."""
        tracker = state.tracker
        # A lossless subscriber grants credit only after this returns: no more blocks than
        # it grants at a time, so the daemon never waits for us.
        max_blocks = max(1, self.credit_window // 2) if self.lossless else 1024
        # Room for twice the blocks the stream's rate brings in that time, not more: the
        # arrays are made for every call.
        max_blocks = min(max_blocks, 8 + int(2 * seconds * state.rate / state.block_rows))
        (accepted, status, samples, rows, keyframes, crc_bad, stages, leftover,
         drain_status) = state.fast.gather(self._receiver,
                                           time.monotonic_ns() + int(seconds * 1e9),
                                           max_blocks, state.block_rows, tracker.epoch,
                                           tracker.next_seq, tracker.next_sample)
        taken = self._receiver.messages
        if drain_status < 0 and -drain_status != errno.EINTR:
            raise zmq.ZMQError(-drain_status)
        if not accepted and leftover >= taken:
            return None
        if self.lossless:
            self._grant(accepted + taken - leftover)
        runs = [self._deliver_run(state, samples, rows, keyframes, crc_bad, stages)
                ] if accepted else []
        return runs + self._handle_batch(taken, leftover, status)

    def _gather_state(self) -> _StreamState | None:
        """The stream the fast path took last, if it may go on from where it stands."""
        state = self._last_fast
        if state is None or not state.tracker.synced or self.states.get(
                state.tracker.stream) is not state:
            return None
        return state

    def _handle_batch(self, taken: int, start: int = 0, spent: int = 0) -> list[Run]:
        """Messages start.. of the receiver's current batch: runs of a stream's ordinary
        blocks through the C fast path, every other message through the general one
        (_handle_taken), in order. `spent`: the codec's status for message `start`, which
        the fast path failed to decode already."""
        runs = []
        message = start
        while message < taken:
            state = None if spent else self._fast_state(message)
            if state is not None:
                tracker = state.tracker
                (accepted, spent, samples, rows, keyframes, crc_bad,
                 stages) = state.fast.run(self._receiver, message, taken - message,
                                          state.block_rows, tracker.epoch, tracker.next_seq,
                                          tracker.next_sample)
                if accepted:
                    runs.append(self._deliver_run(state, samples, rows, keyframes, crc_bad,
                                                  stages))
                    message += accepted
                if not spent and accepted:
                    continue
            if spent:
                self._spent_decode = (self._receiver.message_first[message] + 2, spent)
                spent = 0
            block = self._handle_taken(message)
            self._spent_decode = None
            if block is not None:
                runs.append(Run.of(block))
            message += 1
        return runs

    def _fast_state(self, message: int) -> _StreamState | None:
        """The state of message `message`'s stream if the fast path may take it from there:
        a stream seen before, its tracker in sync and following on."""
        receiver = self._receiver
        state = self._by_topic.get(receiver.frame(receiver.message_first[message]))
        if state is None or state.fast is None:
            return None
        tracker = state.tracker
        if not tracker.synced or tracker.next_seq is None or tracker.next_sample is None:
            return None
        return state

    def _deliver_run(self, state: _StreamState, samples, rows, keyframes, crc_bad,
                     stages) -> Run:
        """Counts, checks and records a run the fast path decoded; moves its tracker on."""
        tracker = state.tracker
        fast = state.fast.stream
        first_seq, first_sample = tracker.next_seq, tracker.next_sample
        tracker.advance(fast.next_seq, fast.next_sample, fast.dropped)
        self._last_fast = state
        self.blocks += len(rows)
        self.samples += samples.shape[0]
        self.bytes_in += fast.codec_bytes
        self.crc_errors += int(np.count_nonzero(crc_bad))
        state.block_rows = int(rows[-1])
        if self.expected is not None:
            self._verify_run(tracker.stream, first_sample, samples, rows)
        if self.record_latency:
            self._latency.append(stages)
        return Run(tracker.stream, first_sample, samples, state.rate, [], None, first_seq, rows,
                   keyframes, stages)

    def _verify_run(self, stream: str, first: int, samples, rows) -> None:
        """Compares a run with `expected` in one go; block by block only when it differs, so
        mismatches count blocks as on the general path."""
        if _same_samples(samples, self.expected(stream, first, samples.shape[0])):
            self.verified_samples += samples.size
            return
        start = 0
        for n in rows.tolist():
            block = samples[start:start + n]
            if _same_samples(block, self.expected(stream, first + start, n)):
                self.verified_samples += block.size
            else:
                self.mismatches += 1
            start += n

    def _idle(self) -> None:
        """Nothing came for a while: said once in the log if nothing ever answered; a
        lossless subscriber says hello again (the daemon may have restarted, forgetting us)."""
        self._warn_if_nothing_answers()
        if self.lossless and time.monotonic() - self._last_hello >= 1.0:
            self._hello()

    def receive_raw(self, timeout: float | None = None):
        """(frames, received_ns) of the next message, undecoded, or None after `timeout`.
        Pass them to `handle` later: decoding can then run after the stream, where a machine
        has no core to spare for decoding while the daemon encodes."""
        if self.sock is None:
            self.open()
        recv = self.sock.recv
        deadline = None
        while True:
            # A message already waiting is taken without polling (the common case when
            # behind); frame by frame with integer flags, cheaper than recv_multipart.
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                if deadline is None:
                    deadline = float("inf") if timeout is None else time.monotonic() + timeout
                wait = min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    return None
                if not zmq.zmq_poll(self._poll_list, max(1, int(wait * 1000))):
                    self._idle()
                continue
            received_ns = time.time_ns()
            frames = rest_of_message(recv, frame)
            if self.lossless:
                self._grant()
            elif self._other_feed(frames):
                continue
            return frames, received_ns

    def spool_into(self, spool, *, c_loop: bool | None = None, seconds: float = 0.0,
                   idle_timeout: float = 0.0, first_wait: float = 0.0, until_sample: int = 0,
                   note=None) -> dict:
        """Receives into `spool` (writers.Spool) until --seconds, the idle time-out,
        `until_sample` or KeyboardInterrupt, for `handle` to decode after the stream
        (neurowire.clients.spooling: its rules, limits and counters). c_loop: the C loop
        (default: where this subscription receives in C), else the Python one. Rejected
        messages go to decode_errors and feeds' to feed_messages, as decoding them would
        have. Returns the loop's counters, with "c_loop" and "ended_by" (None when
        interrupted)."""
        from . import spooling

        self.open()
        loop = self._spool_loop = spooling.spool_loop(
            self, spool, c_loop=self._native if c_loop is None else c_loop,
            until_sample=until_sample, resume_from=self.resume_from)
        ended_by = None
        try:
            ended_by = spooling.receive_into(self, loop, seconds=seconds,
                                             idle_timeout=idle_timeout, first_wait=first_wait,
                                             note=note)
        finally:
            counts = loop.counts()
            self.decode_errors += sum(counts["rejected"].values())
            self.feed_messages += counts["feed_messages"]
            self.spool_report = {"c_loop": loop.c_loop, "ended_by": ended_by, **counts}
            self._spool_loop = None
        return self.spool_report

    def stop_spooling(self) -> bool:
        """From another thread: ends a running spool_into within STOP_CHECK_S (its
        ended_by "stop"). False when none is running."""
        loop = self._spool_loop
        if loop is None:
            return False
        loop.stop()
        return True

    def _other_feed(self, frames) -> bool:
        # A feed topic ("<stream>/spikes"; '/' is never in a stream id), which an every-stream
        # subscription (prefix "") receives too: not ours to decode, and no error either.
        if frames and is_feed_topic(_view(frames[0]).tobytes()):
            self.feed_messages += 1
            return True
        return False

    def handle(self, frames, received_ns: int, deferred: bool = False) -> Block | None:
        """Decode and check frames from `receive_raw`.  `deferred`: they were received long
        ago, so the decoded time is taken as received + the decoding time measured now."""
        return self._handle(frames, received_ns, deferred)

    def _team_for(self, header):
        """The codec team that decodes a stream of these channel groups: one thread per
        group up to decode_threads, for streams wide enough to gain from it; one thread for
        narrow ones, where waking a helper would cost more than the helper saves."""
        from neurowire import codec

        threads = 1
        if header.channels >= PARALLEL_DECODE_CHANNELS:
            # No more threads than the daemon has channel groups (its `workers`).
            threads = max(1, min(self._decode_threads, len(header.groups)))
        team = self._teams.get(threads)
        if team is None:
            team = self._teams[threads] = codec.CodecTeam(threads)
        return team

    def _state_for(self, stream: str, header, topic: bytes, header_bytes: bytes) -> _StreamState:
        """The stream's state; new decoders for a new stream or a restarted daemon (new
        epoch: its channel groups may differ), the tracker carried across."""
        state = self.states.get(stream)
        if state is None or state.tracker.new_epoch(header):
            team = self._team_for(header)
            if state is not None:
                tracker = state.tracker
            else:
                resume = (self.resume_from.get(stream) if isinstance(self.resume_from, dict)
                          else self.resume_from)
                tracker = SequenceTracker(stream, resume)
            state = _StreamState(stream, header, team, tracker, self._receiver is not None,
                                 topic, header_bytes)
            self.states[stream] = self._by_topic[topic] = state
        return state

    def _handle(self, frames, received_ns: int, deferred: bool = False) -> Block | None:
        """A message as pyzmq frames (or any bytes-like objects)."""
        if len(frames) < 3:
            if not (frames and self._other_feed(frames)):
                self.decode_errors += 1
            return None
        blobs = frames[2:]
        return self._block(_view(frames[0]).tobytes(), _view(frames[1]).tobytes(), blobs,
                           len(blobs), sum(len(blob) for blob in blobs), received_ns,
                           deferred)

    def _handle_taken(self, message: int) -> Block | None:
        """Message `message` of the receiver's current batch: the same checks as _handle,
        its codec frames decoded where libzmq holds them."""
        receiver = self._receiver
        first = receiver.message_first[message]
        count = receiver.message_first[message + 1] - first
        if count < 3:
            if count and is_feed_topic(receiver.frame(first)):
                self.feed_messages += 1
            else:
                self.decode_errors += 1
            return None
        # Frames beyond the most a block can have were dropped in C: counted here, so the
        # header's check rejects the message as it would with them.
        return self._block(receiver.frame(first), receiver.frame(first + 1), first + 2,
                           count - 2 + receiver.excess[message], receiver.tail_bytes[message],
                           receiver.received_ns[message], False)

    def _decode(self, state: _StreamState, header, blobs, n_blobs: int):
        """(samples, CRC-32 of them); CodecError when the block does not decode. `blobs`:
        the codec frames, or the index of the first in the receiver's batch."""
        if isinstance(blobs, int):
            if self._spent_decode is not None and self._spent_decode[0] == blobs:
                # The fast path decoded it already and failed (the decoders are reset): the
                # same outcome, not a second try from another state.
                status, self._spent_decode = self._spent_decode[1], None
                raise fastsub.codec_error(status)
            if n_blobs != state.native.groups:
                state.decoder.reset()
                raise CorruptStreamError(f"{n_blobs} blocks for {state.native.groups} channel "
                                         "groups")
            return state.native.decode(self._receiver, blobs, header.n_samples)
        samples = state.decoder.decode([_view(blob) for blob in blobs])
        if samples.shape[0] != header.n_samples:
            # Rows the block header does not announce: the block is damaged as a whole.
            state.decoder.reset()
            raise CorruptStreamError(f"{samples.shape[0]} time steps decoded, the block header "
                                     f"says {header.n_samples}")
        return samples, checksum.crc32(samples)

    def _block(self, topic: bytes, header_bytes: bytes, blobs, n_blobs: int, blob_bytes: int,
               received_ns: int, deferred: bool) -> Block | None:
        if is_feed_topic(topic):
            self.feed_messages += 1
            return None
        try:
            header = parse_block(header_bytes, n_blobs)
            stream = topic[:-1].decode() if topic.endswith(b"\0") else None
            if not stream:
                raise Rejected("topic", f"{topic[:80]!r}")
            state = self._state_for(stream, header, topic, header_bytes)
        except (Rejected, UnicodeDecodeError, ValueError) as error:
            # A header that cannot be read: no stream to charge the block to. The next good
            # block's sequence number shows the gap.
            self.decode_errors += 1
            if self.decode_errors <= 10:
                log.warning("unreadable block header (%s); skipped", error)
            return None
        tracker = state.tracker
        lost = tracker.on_block(header)
        if lost < 0:  # a duplicate or rewind within the epoch: never delivered twice
            self.duplicates += 1
            return None
        if lost:
            self.lost_blocks += lost
            state.decoder.reset()
        self.bytes_in += blob_bytes
        if not tracker.can_decode(header):
            self.skipped_blocks += 1  # a keyframe is where decoding can resume
            return None
        if not tracker.synced:
            state.decoder.reset()  # a keyframe, after a loss or at the start
        decode_started = time.perf_counter_ns()
        try:
            samples, crc = self._decode(state, header, blobs, n_blobs)
        except CodecError:
            self.decode_errors += 1
            tracker.desync()
            return None
        if deferred:
            decoded_ns = received_ns + time.perf_counter_ns() - decode_started
        else:
            decoded_ns = time.time_ns()
        if crc != header.crc:
            self.crc_errors += 1
        first, n_samples = header.first, samples.shape[0]
        if self.expected is not None:
            if _same_samples(samples, self.expected(stream, first, n_samples)):
                self.verified_samples += samples.size
            else:
                self.mismatches += 1
        gap = tracker.delivered(header)
        gaps = [gap] if gap is not None else []
        self.gaps.extend(gaps)
        self.blocks += 1
        self.samples += n_samples
        acquired = header.acquired_ns
        # In RECORDED_STAGES order.
        stages = (header.received_ns - acquired, header.compressed_ns - header.received_ns,
                  header.published_ns - acquired, received_ns - header.published_ns,
                  decoded_ns - received_ns, decoded_ns - acquired, header.compress_ns)
        if self.record_latency:
            self._latency.append(stages)
        state.block_rows = n_samples
        latency = dict(zip(RECORDED_STAGES, stages))
        return Block(stream, first, samples, header.rate, header.seq, header.keyframe, latency,
                     gaps)

    # ---- reporting -------------------------------------------------------------------------

    def _latency_table(self, last: int | None = None) -> np.ndarray:
        """Recorded latencies as one (blocks, stages) int64 array; the last `last` only."""
        parts, rows, pending = [], 0, []
        for item in reversed(self._latency):
            if isinstance(item, tuple):
                pending.append(item)
                rows += 1
            else:
                if pending:
                    parts.append(np.asarray(pending[::-1], dtype=np.int64))
                    pending = []
                parts.append(item)
                rows += len(item)
            if last is not None and rows >= last:
                break
        if pending:
            parts.append(np.asarray(pending[::-1], dtype=np.int64))
        if not parts:
            return np.empty((0, len(RECORDED_STAGES)), dtype=np.int64)
        table = np.concatenate(parts[::-1])
        return table if last is None else table[-last:]

    @property
    def latency_ns(self) -> dict[str, list[int]]:
        """Every recorded block's latency by stage (ns), in the order received."""
        table = self._latency_table()
        return {stage: table[:, column].tolist() for column, stage in enumerate(RECORDED_STAGES)}

    def recent_latency_ns(self, stage: str, blocks: int) -> list[int]:
        """The last `blocks` recorded latencies of one stage (ns)."""
        return self._latency_table(blocks)[:, RECORDED_STAGES.index(stage)].tolist()

    def latency_summary_us(self) -> dict:
        summary = {}
        table = self._latency_table() / 1e3
        if not len(table):
            return summary
        for stage, data in zip(RECORDED_STAGES, table.T):
            summary[stage] = {"p50": float(np.percentile(data, 50)),
                              "p99": float(np.percentile(data, 99)),
                              "max": float(data.max()), "count": len(data)}
        return summary

    def report(self) -> dict:
        return {"blocks": self.blocks, "samples": self.samples, "bytes_in": self.bytes_in,
                "lost_blocks": self.lost_blocks, "skipped_blocks": self.skipped_blocks,
                "duplicates": self.duplicates,
                "decode_errors": self.decode_errors, "crc_errors": self.crc_errors,
                "mismatches": self.mismatches, "verified_samples": self.verified_samples,
                "gaps": [{"stream": g.stream, "start": g.start, "stop": g.stop,
                          "samples": g.samples, "reason": g.reason} for g in self.gaps],
                "streams": {name: {"joined_at": s.tracker.joined_at,
                                   "next_sample": s.tracker.next_sample}
                            for name, s in self.states.items()},
                "latency_us": self.latency_summary_us(),
                "cpu_s": _cpu_s() - self._cpu_start}

    def close(self) -> None:
        if self.sock is None:
            return
        if self._receiver is not None:
            self._receiver.release()  # the frames it holds, before their socket goes
        if self.lossless and not self.sock.closed:
            self._send({"cmd": "bye"})
        self._watch.close()
        self.sock.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()




def subscribe(endpoint: str | None = None, *, feed: str | None = None, **options):
    """`for block in neurowire.subscribe(...)`: see Subscription for the options.

    feed="spikes", "power" or "bounded" gives the daemon's feed of that name instead (config
    `feeds`): a neurowire.feeds.serve.FeedSubscription yielding decoded message dicts (spike
    ones carry "events", power ones "power", bounded ones "samples" and "first"); it needs `streams` (or `control`, which names them) and
    takes endpoint / control, streams, idle_timeout, curve and context."""
    if feed in (None, "lossless"):
        return Subscription(endpoint, **options).open()  # connected, as callers expect
    return feed_subscription(endpoint, feed=feed, **options)


def feed_subscription(endpoint: str | None = None, *, feed: str, streams=None,
                      control: str | None = None, curve: dict | None = None,
                      idle_timeout: float | None = None, context: zmq.Context | None = None):
    from neurowire.feeds.serve import FEEDS as SERVED, FeedSubscription

    if feed not in SERVED:
        raise ValueError(f"feed {feed!r}: one of {FEEDS}")
    if isinstance(streams, str):
        streams = [streams]
    if control is not None and (endpoint is None or not streams):
        if endpoint is None:
            endpoint = bound_endpoint(control, "publish", curve)
        if not streams:
            # Feed topics cannot be matched by a prefix common to all streams without
            # taking every lossless block too, so the streams are named one by one.
            streams = stream_ids(control, curve)
    if not streams:
        raise ValueError(f"the {feed} feed needs streams=[...] (or control= to list the "
                         "daemon's current streams)")
    return FeedSubscription(endpoint or DEFAULT_PUBLISH, streams, feed=feed, context=context,
                            idle_timeout=idle_timeout, curve=curve)
