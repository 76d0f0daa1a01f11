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

import logging
import time

import numpy as np
import zmq

from .detect import DetectorConfig
from .spikes import (BoundedDecoder, BoundedEncoder, MalformedMessage, PowerDecoder,
                     SpikeFeedEncoder, unpack)

log = logging.getLogger("neurowire.feeds")

FEEDS = ("spikes", "power", "bounded")


def feed_topic(stream: str, feed: str) -> bytes:
    if feed not in FEEDS:
        raise ValueError(f"feed {feed!r}: one of {FEEDS}")
    return f"{stream}/{feed}\0".encode()


class FeedTap:
    """Per-stream feed encoders, run once per packet whoever subscribes.

    `feeds` picks which kinds on_packet returns; after each call `last_events` holds the
    number of spike events in the spike messages it returned (the daemon counts them)."""

    def __init__(self, config: DetectorConfig | None = None, *, batch_ms: float = 20.0,
                 feeds=("spikes", "power"), max_error: int = 2):
        self.config = config or DetectorConfig()
        self.batch_ms = batch_ms
        self.feeds = tuple(feeds)
        for feed in self.feeds:
            feed_topic("", feed)  # an unknown feed fails here, not at the first packet
        self.max_error = max_error
        self.detecting = "spikes" in self.feeds or "power" in self.feeds
        self.encoders: dict[str, tuple[SpikeFeedEncoder | None, int]] = {}
        self.bounded: dict[str, BoundedEncoder] = {}
        self.last_events = 0
        self.restarts = 0

    def key_soon(self, stream: str, feed: str) -> None:
        """A subscriber joined `feed` of `stream`: the next power bin or bounded block is a
        keyframe, so it decodes from there instead of up to a second later."""
        if feed == "bounded" and stream in self.bounded:
            self.bounded[stream].key_soon()
        elif feed == "power" and stream in self.encoders:
            self.encoders[stream][0].power_key_soon = True

    def on_packet(self, stream: str, rate: float, first_sample: int,
                  samples: np.ndarray) -> list[tuple[bytes, bytes]]:
        entry = self.encoders.get(stream)
        channels = samples.shape[1]
        # A new stream, a restarted implant or a gap starts a fresh detector: its sample
        # indices must be the implant's, and it must not filter across missing samples.
        fresh = (entry is None or entry[1] != first_sample or entry[0].channels != channels
                 or entry[0].rate != rate)
        out: list[tuple[bytes, bytes]] = []
        if "bounded" in self.feeds:
            bounded = self.bounded.get(stream)
            if bounded is None or bounded.channels != channels:
                bounded = self.bounded[stream] = BoundedEncoder(
                    channels, rate, self.max_error, stream=stream)
            # After a gap the next block is a keyframe: a decoder cannot bridge the hole.
            message = bounded.encode(first_sample, samples, restart=fresh)
            out.append((feed_topic(stream, "bounded"), message))
        if fresh:
            # Without the spike feed its messages are still cut (they carry nothing a power
            # subscriber sees), so snippets, the costly part, are skipped.
            encoder = SpikeFeedEncoder(channels, rate, self.config, stream=stream,
                                       batch_ms=self.batch_ms, origin=first_sample,
                                       snippets="spikes" in self.feeds)
            self.restarts += entry is not None
        else:
            encoder = entry[0]
        self.encoders[stream] = (encoder, first_sample + samples.shape[0])
        self.last_events = 0
        if not self.detecting:
            return out
        events_before = encoder.events
        tagged = encoder.feed_tagged(samples)
        self.last_events = encoder.events - events_before if "spikes" in self.feeds else 0
        out.extend((feed_topic(stream, kind), message) for kind, message in tagged
                   if kind in self.feeds)
        return out


class FeedSubscription:
    """Iterator over one feed's decoded messages (dicts; power ones carry "power").

    `stream` is one stream id or a list of them; sequence gaps (`lost`) and power decoding
    are kept per stream.  `bytes` counts the message bytes received."""

    def __init__(self, endpoint: str, stream, *, feed: str = "spikes",
                 context: zmq.Context | None = None, idle_timeout: float | None = None,
                 curve: dict | None = None, hwm: int = 100_000):
        self.feed = feed
        self.streams = [stream] if isinstance(stream, str) else list(stream)
        if not self.streams:
            raise ValueError("a feed subscription needs at least one stream id")
        self.idle_timeout = idle_timeout
        self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = hwm
        if curve:
            self.sock.curve_serverkey = curve["server_public"]
            self.sock.curve_publickey = curve["public"]
            self.sock.curve_secretkey = curve["secret"]
        for name in self.streams:
            self.sock.subscribe(feed_topic(name, feed))
        self.sock.connect(endpoint)
        self.decoders: dict[str, PowerDecoder | BoundedDecoder] = {}
        self.next_seqs: dict[str, int] = {}
        self.lost = 0
        self.rejected = 0  # malformed messages, skipped and logged
        self.messages = self.bytes = 0

    @property
    def power(self) -> PowerDecoder:
        """The first stream's power decoder (single-stream use)."""
        return self.decoders.setdefault(self.streams[0], PowerDecoder())

    def receive(self, timeout: float | None = None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int(1000 * (deadline - time.monotonic())))
            if not self.sock.poll(wait):
                return None
            frames = self.sock.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                message = unpack(frames[1])
            except MalformedMessage as err:
                self.rejected += 1
                log.warning("feed %s: rejected message %d: %s", self.feed, self.rejected, err)
                continue
            self.messages += 1
            self.bytes += len(frames[1])
            stream = message.get("stream", "")
            expected = self.next_seqs.get(stream)
            if expected is not None and message["seq"] > expected:
                self.lost += message["seq"] - expected
            self.next_seqs[stream] = message["seq"] + 1
            if message["kind"] == "bounded":
                decoder = self.decoders.setdefault(stream, BoundedDecoder())
                message["samples"] = decoder.decode(message)
                if message["samples"] is None:
                    continue  # waiting for a keyframe
            elif message["kind"] == "power":
                decoder = self.decoders.setdefault(stream, PowerDecoder())
                message["power"] = decoder.decode(message)
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
