"""Feeds on the wire: what a publisher adds per packet, and what a subscriber reads.

Topics sit beside the lossless stream's: "<stream>\\0" is lossless (the daemon's), and
"<stream>/spikes\\0" and "<stream>/power\\0" are the feeds ('/' cannot occur in a stream id,
and the trailing NUL stops "imp1/spikes" from matching "imp1/spikes2").  Each feed message is
two frames: topic, msgpack message (see spikes.py).

    tap = FeedTap(DetectorConfig(power_bin_ms=20))
    for topic, message in tap.on_packet(stream, rate, first_sample, samples):
        pub.send_multipart([topic, message])

    with FeedSubscription("tcp://127.0.0.1:7341", "imp1", feed="spikes") as feed:
        for message in feed:              # dicts from spikes.unpack (events decoded)
            ...
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from .detect import DetectorConfig
from .spikes import PowerDecoder, SpikeFeedEncoder, unpack

FEEDS = ("spikes", "power")


def feed_topic(stream: str, feed: str) -> bytes:
    if feed not in FEEDS:
        raise ValueError(f"feed {feed!r}: one of {FEEDS}")
    return f"{stream}/{feed}\0".encode()


class FeedTap:
    """Per-stream feed encoders, run once per packet whoever subscribes."""

    def __init__(self, config: DetectorConfig | None = None, *, batch_ms: float = 20.0):
        self.config = config or DetectorConfig()
        self.batch_ms = batch_ms
        self.encoders: dict[str, tuple[SpikeFeedEncoder, int]] = {}

    def on_packet(self, stream: str, rate: float, first_sample: int,
                  samples: np.ndarray) -> list[tuple[bytes, bytes]]:
        entry = self.encoders.get(stream)
        channels = samples.shape[1]
        # A new stream, a restarted implant or a gap starts a fresh detector: its sample
        # indices must be the implant's, and it must not filter across missing samples.
        if (entry is None or entry[1] != first_sample or entry[0].channels != channels
                or entry[0].rate != rate):
            encoder = SpikeFeedEncoder(channels, rate, self.config, stream=stream,
                                       batch_ms=self.batch_ms, origin=first_sample)
        else:
            encoder = entry[0]
        tagged = encoder.feed_tagged(samples)
        self.encoders[stream] = (encoder, first_sample + samples.shape[0])
        out = [(feed_topic(stream, kind), message) for kind, message in tagged]
        return out


class FeedSubscription:
    """Iterator over one feed's decoded messages (dicts; power ones carry "power")."""

    def __init__(self, endpoint: str, stream: str, *, feed: str = "spikes",
                 context: zmq.Context | None = None, idle_timeout: float | None = None):
        self.feed = feed
        self.idle_timeout = idle_timeout
        self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.subscribe(feed_topic(stream, feed))
        self.sock.connect(endpoint)
        self.power = PowerDecoder()
        self.next_seq: int | None = None
        self.lost = 0

    def receive(self, timeout: float | None = None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int(1000 * (deadline - time.monotonic())))
            if not self.sock.poll(wait):
                return None
            frames = self.sock.recv_multipart()
            if len(frames) != 2:
                continue
            message = unpack(frames[1])
            if self.next_seq is not None and message["seq"] > self.next_seq:
                self.lost += message["seq"] - self.next_seq
            self.next_seq = message["seq"] + 1
            if message["kind"] == "power":
                message["power"] = self.power.decode(message)
                if message["power"] is None:
                    continue  # waiting for a keyframe
            return message

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        message = self.receive(self.idle_timeout)
        if message is None:
            raise StopIteration
        return message

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
