"""The dashboard's own light subscriber: latency after publish, losses, and decode time.

The daemon can only time what happens inside it; how late a block reaches a subscriber and
when it is decoded has to be seen from a subscriber. Decoding every block of 1024 channels
at 20 kHz would take most of a core, which the dashboard must not steal from the daemon it
watches, so decoding is duty-cycled: from each keyframe (where a decoder can start cold) the
tap decodes ``decode_ms`` of signal, then only reads headers until the next keyframe. Every
message is still counted, so losses and gaps are exact.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
import zmq

from neurowire import checksum
from neurowire.clients.tracker import SequenceTracker
from neurowire.wire import Rejected, apply_curve, parse_block, topic_for

from .window import LatencyWindow

log = logging.getLogger(__name__)

try:  # the codec may be absent from a checkout that has not been built
    from neurowire.codec import CodecError, StreamDecoder
except Exception:  # noqa: BLE001
    StreamDecoder = None
    CodecError = Exception


class Tap(threading.Thread):
    BEHIND_NS = 50_000_000
    def __init__(self, endpoint: str, stream_id: str, context: zmq.Context | None = None,
                 decode_ms: float = 25.0, curve: dict | None = None):
        super().__init__(name=f"tap-{stream_id}", daemon=True)
        self.endpoint = endpoint
        self.stream_id = stream_id
        self.decode_ms = decode_ms
        self.curve = curve
        self._ctx = context or zmq.Context.instance()
        self._stop_evt = threading.Event()
        self.received = LatencyWindow()   # acquired -> received here (us)
        self.decoded = LatencyWindow()    # acquired -> decoded here (us)
        self.decode_time = LatencyWindow()  # time in the decoder alone (us)
        self.messages = 0
        self.lost_packets = 0
        self.lost_samples = 0
        self.gaps = 0
        self.recent_gaps: deque = deque(maxlen=8)  # (first missing sample, end) pairs
        self.decoded_blocks = 0
        self.decode_errors = 0
        self.decode_skipped = 0
        self.verified_blocks = 0
        self.mismatched_blocks = 0
        self.keyframes_seen = 0
        self.last_message_at: float | None = None
        self.decode_available = StreamDecoder is not None
        self._tracker = SequenceTracker(stream_id)
        self._topic = topic_for(stream_id)

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10000)
        sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        apply_curve(sock, self.curve)
        sock.connect(self.endpoint)
        decoders = None
        decode_until_sample = -1
        try:
            while not self._stop_evt.is_set():
                if not sock.poll(200):
                    continue
                # Drain what is queued so a slow tick does not leave us permanently behind.
                while True:
                    try:
                        frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    decoders, decode_until_sample = self._handle(
                        frames, decoders, decode_until_sample)
        finally:
            sock.close(linger=0)

    def _handle(self, frames, decoders, decode_until_sample):
        """One published message: topic, block header (neurowire.wire), one codec block per
        channel group."""
        now_ns = time.time_ns()
        now = time.monotonic()
        if len(frames) < 3 or frames[0] != self._topic:
            return decoders, decode_until_sample
        blobs = frames[2:]
        try:
            header = parse_block(frames[1], len(blobs))
        except Rejected:  # a header we cannot read is skipped, not fatal
            return decoders, decode_until_sample
        first, acq = header.first, header.acquired_ns
        self.messages += 1
        self.last_message_at = now
        tracker = self._tracker
        if tracker.new_epoch(header):
            # The daemon restarted: the decoders' state is gone with it.
            decoders, decode_until_sample = None, -1
        lost = tracker.on_block(header)
        if lost < 0:  # seen already in this epoch: never counted twice
            return decoders, decode_until_sample
        if lost:
            self.lost_packets += lost
            # The decoders' state no longer matches the stream: wait for a keyframe.
            decoders, decode_until_sample = None, -1
        gap = tracker.delivered(header)  # the tap counts every block's samples
        if gap is not None:
            self._gap(gap.start, gap.stop)
        self.received.add((now_ns - acq) / 1000.0, now)
        keyframe = header.keyframe
        if keyframe:
            self.keyframes_seen += 1
        if not self.decode_available:
            return decoders, decode_until_sample
        sent = header.published_ns
        if sent > 0 and now_ns - sent > self.BEHIND_NS:
            # Behind the stream (a busy machine): drop decoding until caught up, so that the
            # dashboard never becomes the slow subscriber it is there to watch.
            self.decode_skipped += 1
            return None, -1
        if keyframe:
            groups = list(header.groups)
            if decoders is None or [d[0] for d in decoders] != groups:
                decoders = [(g, StreamDecoder(g)) for g in groups]
            else:
                for _, d in decoders:
                    d.reset()
            rate = header.rate
            decode_until_sample = first + int(rate * self.decode_ms / 1000.0)
        if decoders is not None and first < decode_until_sample:
            t0 = time.perf_counter_ns()
            try:
                parts = [d.decode(blob) for (_, d), blob in zip(decoders, blobs)]
            except CodecError:
                self.decode_errors += 1
                return None, -1
            t1 = time.perf_counter_ns()
            self.decoded_blocks += 1
            self.decode_time.add((t1 - t0) / 1000.0, now)
            self.decoded.add((now_ns + (t1 - t0) - acq) / 1000.0, now)
            # The daemon's CRC of the raw samples it received: the decoded block must be
            # those very samples, channel groups side by side.
            samples = parts[0] if len(parts) == 1 else np.hstack(parts)
            if checksum.crc32(np.ascontiguousarray(samples, dtype="<i2")) == header.crc:
                self.verified_blocks += 1
            else:
                self.mismatched_blocks += 1
        return decoders, decode_until_sample

    def _gap(self, start: int, end: int) -> None:
        self.gaps += 1
        self.lost_samples += max(0, end - start)
        self.recent_gaps.append((start, end))

    def snapshot(self, now: float | None = None) -> dict:
        if now is None:
            now = time.monotonic()
        return {
            "endpoint": self.endpoint,
            "messages": self.messages,
            "lost_packets": self.lost_packets,
            "lost_samples": self.lost_samples,
            "gaps": self.gaps,
            "recent_gaps": [list(g) for g in self.recent_gaps],
            "decoded_blocks": self.decoded_blocks,
            "decode_errors": self.decode_errors,
            "decode_skipped": self.decode_skipped,
            "verified_blocks": self.verified_blocks,
            "mismatched_blocks": self.mismatched_blocks,
            "decode_available": self.decode_available,
            "keyframes_seen": self.keyframes_seen,
            "idle_s": None if self.last_message_at is None else now - self.last_message_at,
            "latency": {
                "received": self.received.summary(1.0, now),
                "decoded": self.decoded.summary(1.0, now),
                "decode": self.decode_time.summary(1.0, now),
            },
        }
