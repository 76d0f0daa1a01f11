"""The stream table: one StreamState per implant stream, found by the id bytes on the wire."""

from __future__ import annotations

import collections
import logging

import numpy as np

from neurowire.wire import Rejected, group_suffix, topic_for

from .metrics import STAGES, LatencyStage

log = logging.getLogger("neurowire.daemon")

# A channel group is a block stream coded on a thread of the team: below this many channels
# a group's coding costs less than waking the thread that would code it.
MIN_GROUP_CHANNELS = 64


def channel_groups(channels: int, workers: int) -> list[int]:
    groups = max(1, min(workers, channels // MIN_GROUP_CHANNELS))
    edges = np.linspace(0, channels, groups + 1).round().astype(int)
    return [int(b - a) for a, b in zip(edges[:-1], edges[1:])]


class FeedCounters:
    """One feed of one stream; `drops` counts packets the feed skipped (its queue was full)."""
    __slots__ = ("messages", "bytes", "events", "drops")

    def __init__(self):
        self.messages = self.bytes = self.events = self.drops = 0


class StreamState:
    """Everything the daemon keeps for one implant stream."""

    def __init__(self, stream_id: str, channels: int, rate: float, config, team=None):
        from neurowire import codec

        self.stream_id = stream_id
        self.topic = topic_for(stream_id)
        self.channels = channels
        self.rate = rate
        self.codec_version = int(getattr(codec, "FORMAT_VERSION", 0))
        self.group_channels = channel_groups(channels, config.workers)
        self.groups_suffix = group_suffix(self.group_channels)  # constant tail of each header
        # Each group is a block stream of its own; the team codes a block's groups at once.
        self.encoder = codec.GroupEncoder(self.group_channels, team=team)
        if config.keyframe_interval_s > 0:
            self.keyframe_every = max(1, round(config.keyframe_interval_s * rate))
        elif config.keyframe_interval_s == 0:
            self.keyframe_every = 1
        else:
            self.keyframe_every = None  # only the first block
        self.next_keyframe_sample: int | None = None
        self.force_keyframe = False  # a subscriber just joined: let it decode from the next block
        self.last_first_sample = -1
        self.next_ingest_seq: int | None = None
        self.seq_out = 0
        # (IngestHeader, payload bytes, received_ns) waiting to be compressed
        self.backlog: collections.deque = collections.deque()
        self.packets_in = self.samples_in = self.bytes_in = 0
        self.bytes_out = self.blocks_out = self.keyframes = 0
        self.drops_backlog = self.drops_sequence = 0
        self.lossless_overflow = 0
        self.latency = {stage: LatencyStage(config.latency_window) for stage in STAGES}
        self.feeds = {name: FeedCounters() for name in config.feeds}
        self.feed_samples = 0  # time steps the feed process has reported

    @property
    def drops(self) -> int:
        return self.drops_backlog + self.drops_sequence

    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0

    def keyframe_due(self, first_sample: int) -> bool:
        restarted = first_sample <= self.last_first_sample  # the implant started over
        self.last_first_sample = first_sample
        if self.next_keyframe_sample is None or restarted or self.force_keyframe:
            due = True
            self.force_keyframe = False
        elif self.keyframe_every is None:
            due = False
        else:
            due = first_sample >= self.next_keyframe_sample
        if due and self.keyframe_every is not None:
            self.next_keyframe_sample = first_sample + self.keyframe_every
        elif due:
            self.next_keyframe_sample = first_sample
        return due

    def track_sequence(self, seq: int) -> None:
        """Count packets that never reached the daemon (the one place ingest seq is read)."""
        expected = self.next_ingest_seq
        if expected is not None and seq != expected:
            if seq > expected:
                self.drops_sequence += seq - expected
                log.warning("stream %s: packets %d..%d never arrived", self.stream_id,
                            expected, seq - 1)
            else:
                log.info("stream %s: sequence restarted at %d", self.stream_id, seq)
        self.next_ingest_seq = seq + 1

    def channel_ratio(self) -> list[float]:
        spent = self.encoder.channel_bytes().astype(np.float64)
        raw = float(self.samples_in * 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(spent > 0, raw / spent, 0.0)
        return [round(float(r), 4) for r in ratios]

    def stats(self, subscribers: int) -> dict:
        return {"channels": self.channels, "rate": self.rate, "packets_in": self.packets_in,
                "samples_in": self.samples_in, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "ratio": self.ratio(), "drops": self.drops,
                "keyframes": self.keyframes, "subscribers": subscribers,
                "latency_us": {name: stage.summary_us() for name, stage in self.latency.items()},
                "channel_ratio": self.channel_ratio(),
                # additions to the contract's keys:
                "blocks_out": self.blocks_out, "drops_backlog": self.drops_backlog,
                "drops_sequence": self.drops_sequence,
                "lossless_overflow": self.lossless_overflow, "seq": self.seq_out,
                "workers": len(self.group_channels)}

    def feed_stats(self) -> dict:
        # Bits per second of signal (not wall clock), so the figure compares with the link
        # whether the daemon is keeping up or catching up.
        seconds = self.feed_samples / self.rate if self.rate > 0 else 0.0
        return {name: {"messages": c.messages, "bytes": c.bytes, "events": c.events,
                       "drops": c.drops, "seconds": seconds,
                       "bits_per_s": 8 * c.bytes / seconds if seconds > 0 else 0.0}
                for name, c in list(self.feeds.items())}


class StreamTable:
    """Streams by id: `by_name` (str) for reporting, `by_wire` (the header's bytes) for the
    data path, so a known stream costs one dict lookup and no decoding."""

    def __init__(self, config):
        self.config = config
        self.team = None  # the encoder team, set by the data thread before the first packet
        self.by_name: dict[str, StreamState] = {}
        self.by_wire: dict[bytes, StreamState] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    def for_packet(self, header) -> StreamState:
        """The stream a checked ingest header belongs to; made on its first packet.
        Rejected if the table is full or the channel count differs from the stream's."""
        state = self.by_wire.get(header.stream)
        if state is None:
            if len(self.by_name) >= self.config.max_streams:
                raise Rejected("too_many_streams", header.stream.decode())
            name = header.stream.decode()
            state = StreamState(name, header.channels, header.rate, self.config, self.team)
            self.by_name[name] = state
            self.by_wire[header.stream] = state
            log.info("new stream %s: %d channels at %g Hz", name, header.channels, header.rate)
        elif header.channels != state.channels:
            raise Rejected("channels", f"stream {state.stream_id} has {state.channels} "
                                       f"channels, packet has {header.channels}")
        return state

    def states(self) -> list[StreamState]:
        return list(self.by_name.values())
