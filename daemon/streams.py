"""The stream table: one StreamState per implant stream, found by the id bytes on the wire."""

from __future__ import annotations

import collections
import logging
import time

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


# What the data path changes on every packet, held in one uint64 array per stream (`hot`) so
# the C data path (daemon/src/nw_fastpath.c, enum nwfp_hot: same order, checked when it
# loads) updates it in place; the attributes of the same names read and write it.
HOT_FIELDS = ("next_ingest_seq", "next_first", "last_packet_ns", "seq_out",
              "next_keyframe_sample", "force_keyframe", "packets_in", "samples_in", "bytes_in",
              "bytes_out", "blocks_out", "keyframes", "drops_backlog", "drops_sequence",
              "compress_ns_total")
_NONE = 2**64 - 1  # next_ingest_seq, next_keyframe_sample: none yet (both are < 2**63 + 2**32)


def _hot_int(slot: int):
    def get(self) -> int:
        return int(self.hot[slot])

    def set(self, value: int) -> None:
        self.hot[slot] = value

    return property(get, set)


def _hot_flag(slot: int):
    def get(self) -> bool:
        return bool(self.hot[slot])

    def set(self, value: bool) -> None:
        self.hot[slot] = bool(value)

    return property(get, set)


def _hot_optional(slot: int):
    def get(self) -> int | None:
        value = int(self.hot[slot])
        return None if value == _NONE else value

    def set(self, value: int | None) -> None:
        self.hot[slot] = _NONE if value is None else value

    return property(get, set)


class StreamState:
    """Everything the daemon keeps for one implant stream, for one session of its source."""

    _slot = HOT_FIELDS.index
    next_ingest_seq = _hot_optional(_slot("next_ingest_seq"))
    next_first = _hot_int(_slot("next_first"))  # samples below were taken in this session
    last_packet_ns = _hot_int(_slot("last_packet_ns"))  # CLOCK_MONOTONIC, as time.monotonic
    seq_out = _hot_int(_slot("seq_out"))
    next_keyframe_sample = _hot_optional(_slot("next_keyframe_sample"))
    force_keyframe = _hot_flag(_slot("force_keyframe"))
    packets_in = _hot_int(_slot("packets_in"))
    samples_in = _hot_int(_slot("samples_in"))
    bytes_in = _hot_int(_slot("bytes_in"))
    bytes_out = _hot_int(_slot("bytes_out"))
    blocks_out = _hot_int(_slot("blocks_out"))
    keyframes = _hot_int(_slot("keyframes"))
    drops_backlog = _hot_int(_slot("drops_backlog"))
    drops_sequence = _hot_int(_slot("drops_sequence"))
    compress_ns_total = _hot_int(_slot("compress_ns_total"))
    del _slot

    @property
    def last_packet_s(self) -> float:
        """time.monotonic() of the last packet taken."""
        return self.last_packet_ns / 1e9

    @last_packet_s.setter
    def last_packet_s(self, value: float) -> None:
        self.last_packet_ns = round(value * 1e9)

    def __init__(self, stream_id: str, channels: int, rate: float, config, team=None,
                 session: int = 1, owner_key: str = "", epoch: int = 0):
        from neurowire import codec

        self.stream_id = stream_id
        self.topic = topic_for(stream_id)
        self.channels = channels
        self.rate = rate
        # Who may send into it: the session token of the ingest header and, with CURVE, the
        # sender's public key; a new session takes over only after `stream_idle_timeout_s`
        # of silence, or at once when it comes with the owner's key.
        self.session = session
        self.owner_key = owner_key
        self.epoch = epoch  # published in every block header: a new one restarts seq
        # The block format the encoders write (the header's `codec` field says it; decoders
        # follow the version inside each codec block).
        self.codec_version = config.block_format
        self.group_channels = channel_groups(channels, config.workers)
        self.groups_suffix = group_suffix(self.group_channels)  # constant tail of each header
        # Each group is a block stream of its own; the team codes a block's groups at once.
        self.encoder = codec.GroupEncoder(self.group_channels, team=team,
                                          format_version=config.block_format)
        if config.keyframe_interval_s > 0:
            self.keyframe_every = max(1, round(config.keyframe_interval_s * rate))
        elif config.keyframe_interval_s == 0:
            self.keyframe_every = 1
        else:
            self.keyframe_every = None  # only the first block
        self.hot = np.zeros(len(HOT_FIELDS), dtype=np.uint64)
        self.next_keyframe_sample = None
        self.force_keyframe = False  # a subscriber just joined: let it decode from the next block
        self.next_ingest_seq = None
        # next_first: samples below this index were taken already in this session
        # (IngestHeader, payload bytes, received_ns) waiting to be compressed
        self.backlog: collections.deque = collections.deque()
        self.backlog_bytes = 0
        self.duplicates = self.resyncs = 0
        # compress_ns_total (hot): time in the codec, for the capacity check
        self.sustainable_rate: float | None = None  # set when `rate` exceeds it
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
        # Sample indices only rise within a session (admit), so no restart to detect here.
        if self.next_keyframe_sample is None or self.force_keyframe:
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

    def admit(self, header, now_s: float) -> None:
        """Check a packet's place in its session; Rejected if it has none. The one place the
        ingest seq and first are read.

        Within a session both only rise: a seq or a sample index already taken is a duplicate
        or a rewind, dropped and counted ("duplicate"). A forward jump in seq is packets that
        never arrived, counted as drops, but only up to what the source could have sent in
        the time since its last packet (twice its packet rate, plus 10 s): a larger jump in
        seq or first is not loss but a source out of step, taken as a resync (a keyframe, a
        "resyncs" count, no drops), so no single packet can inflate the drop counters."""
        expected = self.next_ingest_seq
        if expected is not None:
            if header.seq < expected or header.first < self.next_first:
                self.duplicates += 1
                raise Rejected("duplicate", f"stream {self.stream_id}: seq {header.seq} "
                                            f"(next {expected}), first {header.first} (next "
                                            f"{self.next_first}) already taken")
            jump = header.seq - expected
            skipped = header.first - self.next_first
            if jump or skipped:
                plausible_s = max(0.0, now_s - self.last_packet_s) + 10.0
                max_samples = 2 * plausible_s * self.rate
                if (jump * header.n_samples > max_samples + header.n_samples
                        or skipped > max_samples + header.n_samples):
                    self.resyncs += 1
                    self.force_keyframe = True
                    if self.resyncs <= 10:
                        log.warning("stream %s: seq %d / sample %d far beyond %d / %d: taken "
                                    "as a resync, not as loss", self.stream_id, header.seq,
                                    header.first, expected, self.next_first)
                elif jump:
                    self.drops_sequence += jump
                    log.warning("stream %s: packets %d..%d never arrived", self.stream_id,
                                expected, header.seq - 1)
        self.next_ingest_seq = header.seq + 1
        self.next_first = header.first + header.n_samples
        self.last_packet_s = now_s

    def channel_ratio(self) -> list[float]:
        spent = self.encoder.channel_bytes().astype(np.float64)
        raw = float(self.samples_in * 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(spent > 0, raw / spent, 0.0)
        return [round(float(r), 4) for r in ratios]

    def slow_stats(self) -> dict:
        """The parts of `stats` that cost (percentiles, per-channel ratios): reporting
        reuses them for a while (reporting.py)."""
        return {"latency_us": {name: stage.summary_us() for name, stage in self.latency.items()},
                "channel_ratio": self.channel_ratio()}

    def stats(self, subscribers: int, slow: dict | None = None) -> dict:
        slow = slow or self.slow_stats()
        # Percentiles may be a reused snapshot; the counts beside them are read now, so they
        # agree with packets_in in the same reply.
        latency = {name: {**summary, "count": self.latency[name].count}
                   for name, summary in slow["latency_us"].items()}
        return {"channels": self.channels, "rate": self.rate, "packets_in": self.packets_in,
                "samples_in": self.samples_in, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "ratio": self.ratio(), "drops": self.drops,
                "keyframes": self.keyframes, "subscribers": subscribers,
                **slow, "latency_us": latency,
                # additions to the contract's keys:
                "blocks_out": self.blocks_out, "drops_backlog": self.drops_backlog,
                "drops_sequence": self.drops_sequence, "duplicates": self.duplicates,
                "resyncs": self.resyncs, "epoch": self.epoch,
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
        self.expired = 0
        self.generation = 0  # +1 whenever a stream comes or goes (the C data path's cue)
        self._last_epoch = 0
        self._next_capacity_check = 0.0

    def __len__(self) -> int:
        return len(self.by_name)

    def _next_epoch(self) -> int:
        # Strictly rising, so a subscriber always tells one incarnation from the next.
        self._last_epoch = max(time.time_ns(), self._last_epoch + 1)
        return self._last_epoch

    def for_packet(self, header, now_s: float, owner_key: str = "") -> StreamState | None:
        """The stream a checked ingest header belongs to; made on its first packet. None:
        the packet starts a new session of a stream whose old one still has a backlog,
        which `replace` must see compressed first. Rejected if the table is full, another
        sender owns the stream, or the channel count differs from the stream's."""
        state = self.by_wire.get(header.stream)
        if state is None:
            if len(self.by_name) >= self.config.max_streams:
                self.expire(now_s)
                if len(self.by_name) >= self.config.max_streams:
                    raise Rejected("too_many_streams", header.stream.decode())
            return self._add(header, now_s, owner_key)
        if header.session != state.session:
            same_owner = bool(owner_key) and owner_key == state.owner_key
            if not same_owner and now_s - state.last_packet_s < self.config.stream_idle_timeout_s:
                raise Rejected("stream_owned", f"stream {state.stream_id} belongs to another "
                                               "session until it idles for "
                                               f"{self.config.stream_idle_timeout_s:g} s")
            return None
        if header.channels != state.channels:
            raise Rejected("channels", f"stream {state.stream_id} has {state.channels} "
                                       f"channels, packet has {header.channels}")
        return state

    def _add(self, header, now_s: float, owner_key: str) -> StreamState:
        name = header.stream.decode()
        state = StreamState(name, header.channels, header.rate, self.config, self.team,
                            header.session, owner_key, self._next_epoch())
        state.last_packet_s = now_s
        self.by_name[name] = state
        self.by_wire[header.stream] = state
        self.generation += 1
        log.info("new stream %s: %d channels at %g Hz", name, header.channels, header.rate)
        return state

    def replace(self, header, now_s: float, owner_key: str) -> StreamState:
        """A new session takes the stream over (its old backlog is compressed by now): a new
        epoch, fresh counters and codec state."""
        old = self.by_wire[header.stream]
        log.warning("stream %s: new session of its source (was idle %.1f s): a new epoch",
                    old.stream_id, now_s - old.last_packet_s)
        self._remove(old)
        return self._add(header, now_s, owner_key)

    def _remove(self, state: StreamState) -> None:
        self.by_name.pop(state.stream_id, None)
        self.by_wire.pop(state.stream_id.encode(), None)
        self.generation += 1

    def expire(self, now_s: float) -> None:
        """Forget streams silent for `stream_idle_timeout_s` with nothing left to compress:
        their slot, codec state and id are free again."""
        timeout = self.config.stream_idle_timeout_s
        for state in self.states():
            if not state.backlog and now_s - state.last_packet_s >= timeout:
                self._remove(state)
                self.expired += 1
                log.info("stream %s expired after %.1f s without a packet", state.stream_id,
                         now_s - state.last_packet_s)

    def check_capacity(self, now_s: float) -> None:
        """Every few seconds: the sample rate each stream's coding can sustain, measured
        from its own blocks; a stream sent faster than 90 % of that will fall behind and
        drop packets, so it is said (log, and `status` "overloaded") before it happens."""
        if now_s < self._next_capacity_check:
            return
        self._next_capacity_check = now_s + 2.0
        for state in self.states():
            if state.blocks_out < 200 or not state.compress_ns_total:
                continue
            sustainable = state.samples_in / (state.compress_ns_total / 1e9)
            overloaded = state.rate > 0.9 * sustainable
            if overloaded and state.sustainable_rate is None:
                log.warning("stream %s: %g samples/s, but its coding here sustains about %.0f "
                            "(%d channels, %d encoder thread(s)): expect drops; give the "
                            "daemon more CPUs (workers) or send fewer channels",
                            state.stream_id, state.rate, sustainable, state.channels,
                            len(state.group_channels))
            state.sustainable_rate = sustainable if overloaded else None

    def overloaded(self) -> dict:
        return {state.stream_id: {"rate": state.rate,
                                  "sustainable_rate": round(state.sustainable_rate)}
                for state in self.states() if state.sustainable_rate is not None}

    def states(self) -> list[StreamState]:
        return list(self.by_name.values())
