"""The data thread: ingest -> compress -> publish, on sockets it alone uses.

    implant PUSH --> [ingest PULL] -> check header -> per-stream backlog -> GroupEncoder
        -> [publish XPUB]     live subscribers: compressed once, libzmq fans out
        -> [lossless ROUTER]  held per subscriber, sent against credit (lossless.py)
        -> feed process       offered after publishing, when `feeds` is on (feedbridge.py)

Why a thread with blocking sockets and not coroutines: at 2000 packets/s every future,
wake-up and loop turn per message costs a visible share of a core. The loop drains every
packet waiting before compressing, so the implant side is never back-pressured: if
compression falls behind, the backlog grows past `max_backlog_packets` and whole packets are
dropped (oldest first) and counted. Live sends never block (past a subscriber's high-water
mark libzmq drops for that subscriber, who sees the gap in `seq`).

The common packet (a known stream, the next in its session) is taken, encoded and published
by the C data path (fastpath.py, daemon/src/nw_fastpath.c) when it loads: one call per
wake-up drains every packet waiting. Everything else it hands back here, to the same Python
path that serves every packet where the C one cannot load: headers are fixed structs
(neurowire.wire), frames are sent one `send` at a time with integer flags (pyzmq's
send_multipart and its flag enums cost several times more), and counters live in each
stream's `hot` array, which the control side reads without a lock.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from neurowire import checksum
from neurowire.wire import Rejected, pack_block, parse_ingest, topic_for

from .fastpath import FRAMES, PACKET, FastPath
from .lossless import LosslessRouter
from .scheduling import setup_data_thread

log = logging.getLogger("neurowire.daemon")

_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
# How often the data thread looks at its sockets other than ingest (subscriptions, credit,
# connection events, feeds, the stop signal); credit is granted every 256 blocks or so, so
# a few milliseconds never leave a lossless subscriber waiting.
SIDE_CHECK_S = 0.002
# The C data path waits for packets and for the side sockets itself (nwfp_run), so it
# returns to Python when one of those has a message, or at the latest after this: the
# encoders' locks are held meanwhile, so a status request's per-channel ratios may wait
# this long.
FAST_RUN_S = 0.01
IDLE_WAIT_S = 0.01  # with no packets: how long a receive waits before the side sockets


class DataPath:
    def __init__(self, config, sockets, table, epoch: int, reject):
        self.config = config
        self.sockets = sockets
        self.table = table
        self.epoch = epoch
        self.reject = reject
        self.feeds = None  # the feed bridge, if `feeds` is on: made with the sockets
        self.fast: FastPath | None = None  # the C data path, made by the thread
        self.fast_calls = 0  # returns from it to Python (the tests count them)
        self.lossless = LosslessRouter(sockets, config, reject, self.keyframe_soon)
        self.live_subscriptions: dict[bytes, int] = {}
        self.ingest_connections = {"accepted": 0, "disconnected": 0}
        self.heartbeat = time.monotonic()  # last sign of life (the watchdog reads it)
        self.granted: dict = {}  # scheduling the thread got (status reports it)
        self.stopping = False
        self.error: BaseException | None = None
        self._max_payload = config.max_channels * config.max_packet_samples * 2
        self._curve = config.security.curve

    # ---- the thread ------------------------------------------------------------------------

    def main(self, on_exit) -> None:
        self.feeds = self.sockets.feeds
        try:
            self.table.team, self.granted = setup_data_thread(self.config)
            self.fast = FastPath.load(self.config, self.sockets)
            self.granted["fast_path"] = self.fast is not None
            self.granted["block_format"] = self.config.block_format
            self._loop()
            self._flush()
        except BaseException as error:
            self.error = error
            log.error("data path failed", exc_info=True)
        finally:
            self.sockets.close_data()
            on_exit()

    def _loop(self) -> None:
        """Wait in a blocking receive on the ingest socket (libzmq sleeps on one file
        descriptor), and look at the other sockets at most every SIDE_CHECK_S (IDLE_WAIT_S
        when no packet comes): a zmq_poll over all of them per packet cost more than the
        rest of the packet's Python. The C data path, once a packet came, polls them all
        itself between packets (in C that is cheap) and returns as soon as one has a
        message, or after FAST_RUN_S."""
        sockets = self.sockets
        side = [(sockets.publisher, self._on_subscriptions),
                (sockets.router, self.lossless.on_requests),
                (sockets.ingest_monitor, self._on_ingest_event),
                (sockets.wake_rx, self._on_wake)]
        if self.feeds is not None:
            side.append((self.feeds.rx, self._on_feed_messages))
        side_poll = [(sock, zmq.POLLIN) for sock, _ in side]
        side_handlers = dict(side)
        ingest = sockets.ingest
        ingest.rcvtimeo = round(1000 * IDLE_WAIT_S)
        recv, monotonic, poll = ingest.recv, time.monotonic, zmq.zmq_poll
        next_side = next_housekeeping = 0.0
        fast = self.fast
        if fast is not None:
            fast.set_side([sock for sock, _ in side])
        monotonic_ns = time.monotonic_ns
        while not self.stopping:
            if fast is not None:
                # packets as they come, in C, until a side socket has a message
                self._fast_ingest(wait=True, until_ns=monotonic_ns() + round(FAST_RUN_S * 1e9))
                if fast.call.side_ready:
                    next_side = 0.0
            else:
                try:
                    head = recv(0, copy=False)
                except zmq.Again:
                    head = None
                if head is not None:
                    self._on_ingest(first=head)
            now = self.heartbeat = monotonic()
            if now >= next_side:
                for sock, _ in poll(side_poll, 0):
                    side_handlers[sock]()
                next_side = now + SIDE_CHECK_S
            if now >= next_housekeeping:
                self._housekeeping(now)
                next_housekeeping = now + 0.1

    def _housekeeping(self, now: float) -> None:
        if self.feeds is not None:
            self.feeds.check()
        self.lossless.housekeeping(now)
        self.table.expire(now)
        self.table.check_capacity(now)

    def _flush(self) -> None:
        """On stop: compress what arrived, then give lossless subscribers time to take it."""
        if self.fast is not None:
            while self._fast_ingest(wait=False):
                pass
        else:
            self._on_ingest(limit=None)
        if self.feeds is not None and self.feeds.error is None:
            self.feeds.finish(self.table.by_name, self.sockets.publisher)
        self.lossless.flush(time.monotonic() + self.config.flush_timeout_s)

    # ---- ingest ----------------------------------------------------------------------------

    def _on_ingest(self, limit: int | None = -1, first=None) -> None:
        """Take everything already waiting before compressing anything: the backlog is what
        tells the daemon it is behind. Bounded so the other sockets get a turn. `first`: a
        header frame already received."""
        recv = self.sockets.ingest.recv
        time_ns = time.time_ns
        count = self.config.max_backlog_packets * 4 if limit == -1 else limit
        now_s = time.monotonic()  # one reading per batch: admit's bounds are in seconds
        head = first
        while count is None or count > 0:
            if count is not None:
                count -= 1
            if head is None:
                try:
                    head = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    break
            received_ns = time_ns()
            if not head.more:
                self._reject_frames(1)
                head = None
                continue
            payload = recv(_NOBLOCK, copy=False)
            if payload.more:
                frames = 3
                while recv(_NOBLOCK, copy=False).more:  # a message arrives whole
                    frames += 1
                self._reject_frames(frames)
            else:
                # With CURVE a stream is bound to its sender's key too (ZAP's user id).
                owner_key = (head.get("User-Id") or "") if self._curve else ""
                self._accept(head.bytes, owner_key, payload.buffer, received_ns, now_s)
            head = None
        self._process_backlogs()

    def _fast_ingest(self, wait: bool, until_ns: int | None = None) -> int:
        """One call of the C data path (until `until_ns`, time.monotonic_ns, when given: see
        FastPath.drain), then what it handed back: blocks for lossless subscribers, a packet
        for the Python path, a message of the wrong shape. Returns the packets it
        received."""
        fast = self.fast
        fast.update(self.table, self.lossless)
        handback = fast.drain(wait, bool(self.live_subscriptions), until_ns)
        self.fast_calls += 1
        call = fast.call
        if call.n_blocks:
            for state, frames, subscribers in fast.kept_blocks():
                self.lossless.offer(state, frames, subscribers)
        if call.dropped:
            for state in fast.states:
                if state.drops_backlog:
                    log.warning("stream %s behind: %d packets dropped so far",
                                state.stream_id, state.drops_backlog)
        if handback == PACKET:
            head, payload = fast.held_packet()
            self._accept(head, "", memoryview(payload), call.received_ns, time.monotonic())
            self._process_backlogs()
        elif handback == FRAMES:
            self._reject_frames(call.frames)
        return call.packets

    def _reject_frames(self, frames: int) -> None:
        self.reject(Rejected("frames", f"{frames} frame{'s' if frames > 1 else ''}, "
                                       "expected 2"))

    def _accept(self, head: bytes, owner_key: str, payload: memoryview, received_ns: int,
                now_s: float) -> None:
        config = self.config
        table = self.table
        try:
            if payload.nbytes > self._max_payload:
                raise Rejected("oversized", f"{payload.nbytes} byte payload")
            header = parse_ingest(head, payload.nbytes, config.max_channels,
                                  config.max_packet_samples)
            state = table.for_packet(header, now_s, owner_key)
            if state is None:  # a new session of the source: what the old one sent goes first
                self._drain(table.by_wire[header.stream])
                state = table.replace(header, now_s, owner_key)
            state.admit(header, now_s)
        except Rejected as rejection:
            self.reject(rejection)
            return
        backlog = state.backlog
        backlog.append((header, payload, received_ns))
        state.backlog_bytes += payload.nbytes
        while (len(backlog) > config.max_backlog_packets
               or state.backlog_bytes > config.max_backlog_bytes) and len(backlog) > 1:
            dropped, dropped_payload, _ = backlog.popleft()
            state.backlog_bytes -= dropped_payload.nbytes
            state.drops_backlog += 1
            if state.drops_backlog <= 10 or state.drops_backlog % 1000 == 0:
                log.warning("stream %s behind: dropped packet seq %d (samples %d..%d), %d so far",
                            state.stream_id, dropped.seq, dropped.first,
                            dropped.first + dropped.n_samples - 1, state.drops_backlog)

    def _drain(self, state) -> None:
        backlog = state.backlog
        while backlog:
            header, payload, received_ns = backlog.popleft()
            state.backlog_bytes -= payload.nbytes
            self._compress_and_publish(state, header, payload, received_ns)

    def _process_backlogs(self) -> None:
        done = 0
        for state in self.table.states():
            backlog = state.backlog
            while backlog:
                header, payload, received_ns = backlog.popleft()
                state.backlog_bytes -= payload.nbytes
                self._compress_and_publish(state, header, payload, received_ns)
                done += 1
                if done % 16 == 0:
                    self.heartbeat = time.monotonic()
                    if self.lossless:
                        # A long backlog takes seconds on a starved machine: credit read
                        # only after it would leave lossless subscribers idle.
                        self.lossless.on_requests()

    def _compress_and_publish(self, state, header, payload, received_ns: int) -> None:
        # A view of the bytes still inside the zmq frame: no copy on the way to the codec.
        samples = np.frombuffer(payload, dtype="<i2").reshape(header.n_samples, header.channels)
        keyframe = state.keyframe_due(header.first)
        started = time.perf_counter_ns()
        blobs = state.encoder.encode(samples, keyframe)
        compress_ns = time.perf_counter_ns() - started
        compressed_ns = time.time_ns()
        acquired_ns = header.acquired_ns
        head = pack_block(header.channels, header.n_samples, len(blobs), keyframe,
                          state.seq_out, state.epoch, header.first, header.rate,
                          state.codec_version, checksum.crc32(payload), acquired_ns, received_ns,
                          compressed_ns, compress_ns, state.drops, compressed_ns,
                          state.groups_suffix)
        # Counted before sending, so that whoever has the block also sees it in the stats.
        state.seq_out += 1
        state.packets_in += 1
        state.samples_in += header.n_samples
        state.bytes_in += payload.nbytes
        state.bytes_out += sum(map(len, blobs))
        state.blocks_out += 1
        state.keyframes += keyframe
        latency = state.latency
        latency["ingest"].add_ns(received_ns - acquired_ns)
        latency["compress"].add_ns(compress_ns)
        state.compress_ns_total += compress_ns
        latency["publish"].add_ns(compressed_ns - acquired_ns)
        if self.live_subscriptions:  # else libzmq would drop it: not worth the calls
            send = self.sockets.publisher.send
            send(state.topic, _MORE)
            send(head, _MORE)
            last = len(blobs) - 1
            for index, blob in enumerate(blobs):
                send(blob, _NOBLOCK if index == last else _MORE)
        if self.lossless:
            self.lossless.offer(state, (state.topic, head, *blobs))
        if self.feeds is not None and self.feeds.error is None:
            self.feeds.offer(state, header, payload)

    # ---- live subscriptions, events, wake-ups ------------------------------------------------

    def _on_subscriptions(self) -> None:
        publisher = self.sockets.publisher
        while True:
            try:
                message = publisher.recv(_NOBLOCK)
            except zmq.Again:
                return
            if not message:
                continue
            prefix = bytes(message[1:])
            if message[0] == 1:
                self.live_subscriptions[prefix] = self.live_subscriptions.get(prefix, 0) + 1
                self.keyframe_soon(lambda stream_id: topic_for(stream_id).startswith(prefix))
                if self.feeds is not None and b"/" in prefix:
                    self.feeds.key_soon(prefix)
            elif message[0] == 0 and self.live_subscriptions.get(prefix, 0) > 0:
                self.live_subscriptions[prefix] -= 1
                if not self.live_subscriptions[prefix]:
                    del self.live_subscriptions[prefix]

    def keyframe_soon(self, wanted) -> None:
        """A new subscriber decodes from the next block instead of waiting up to a keyframe
        interval; the extra keyframe costs one block's worth of ratio."""
        for state in self.table.states():
            if wanted(state.stream_id):
                state.force_keyframe = True

    def _on_feed_messages(self) -> None:
        self.feeds.on_messages(self.table.by_name, self.sockets.publisher)

    def _on_wake(self) -> None:
        while True:
            try:
                self.sockets.wake_rx.recv(_NOBLOCK)
            except zmq.Again:
                return

    def _on_ingest_event(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.sockets.ingest_monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.ingest_connections["accepted"] += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.ingest_connections["disconnected"] += 1
                log.info("an implant connection closed (%d so far)",
                         self.ingest_connections["disconnected"])
