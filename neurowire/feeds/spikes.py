"""The spike and spike-band power feeds: messages, and decoding them back.

A spike message is one msgpack map, self-contained (no decoder state carries between
messages, so a subscriber can join or lose messages anywhere and still decode every message
it has).  Power messages are a codec stream like the lossless feed (per-channel prediction
over time, a keyframe every second): per-message coding would either cost 8 bits a value or,
with a dictionary coder, profit from the duplicated channels of a cycled test set and so
report a figure no real array would reach.

    spikes [2, stream, seq, ch, rate, pre, len,     # a msgpack ARRAY, fields by position:
            a, b - a,              # every crossing at a <= t < b is in this message
            tw,                    # 1 | 2 | 4 bytes per time step below
            t,                     # LE steps: first event - a, then event - previous event
            c,                     # channels, ceil(log2(ch)) bits each, packed LSB first
            snip]                  # codec keyframe block: the snippets end to end as one
                                   # channel (b"" with no events; nil for events only)
    power  {"v": 1, "kind": "power", "stream", "seq", "ch", "rate",
            "width": samples per bin, "n": bins,
            "bin": index of the first bin, "origin": stream sample index where bin 0 starts,
            "key": bool,           # a codec keyframe: decoding can start here
            "q": bytes}            # codec block (n, ch) of round(8 * log2(1 + power))
    bounded {"v": 1, "kind": "bounded", "stream", "seq", "ch", "rate",
            "first": stream sample index of row 0, "n": samples, "k": max_error,
            "key": bool,           # a codec keyframe: decoding can start here
            "blob": bytes}         # codec block (n, ch) coded with max_error=k: every decoded
                                   # sample within k ADC codes of the original (codec docs)

Snippets are the original int16 samples; the codec codes them losslessly (one keyframe block
per message with the snippets end to end: the codec's predictor carries across snippets,
which costs less than a channel per snippet).  Spike-band power is quantised to 1/8 octave
(0.375 dB); it is a derived feature, not samples, and is the one lossy thing here.
A power decoder that misses a message (a gap in "seq") waits for the next keyframe.

Spike messages are cut at multiples of `batch` samples of absolute index, so the same data gives
the same messages whether it arrives in one array or packet by packet.  A batch without events
is not sent on its own: it joins the next message (whose `a` then reaches back), which goes
out with the next event or once `idle_ms` of signal has passed without one.  Events are never
held back; only the news that nothing happened is.  The per-message header is ~20 bytes
(positional fields, the rate as an integer when it is one), so one quiet channel costs a
couple of messages a second, not fifty 88-byte maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import numpy as np

from .detect import DetectorConfig, Events, PowerBins, SpikeDetector

FEED_VERSION = 1
SPIKES_VERSION = 2     # the positional spike message (first element of its array)
POWER_STEPS_PER_OCTAVE = 8


def _codec():
    from neurowire import codec

    return codec


class SpikeFeedEncoder:
    """Detector + message packing for one stream.

    feed(samples) -> list of message bytes (spike messages, then power messages)."""

    def __init__(self, channels: int, rate: float, config: DetectorConfig | None = None, *,
                 stream: str = "", batch_ms: float = 20.0, snippets: bool = True,
                 origin: int = 0, idle_ms: float = 500.0):
        self.detector = SpikeDetector(channels, rate, config)
        self.channels = channels
        self.rate = float(rate)
        self.stream = stream
        # Stream sample index of the detector's sample 0 (a subscriber-side or daemon-side
        # detector starts wherever the stream is): added to every index on the wire.
        self.origin = int(origin)
        self.snippets = snippets
        self.batch = max(1, int(round(batch_ms * 1e-3 * rate)))
        g = self.detector.geometry
        # A crossing at t is emitted once sample t - pre + len - 1 has arrived.
        self.lag = g.length - g.pre - 1
        self.covered = 0           # crossings before this index are all known
        self.unsent = 0            # start of the batches not yet sent (all without events)
        self.idle = max(self.batch, int(round(idle_ms * 1e-3 * rate)))
        self.held: list[Events] = []
        self.seq = 0
        self.power_seq = 0
        self.power_codec = None
        self.power_key_every = 1
        self.power_key_soon = False  # a subscriber just joined: let it decode from the next bin
        if self.detector.geometry.power_bin:
            self.power_codec = _codec().StreamEncoder(channels)
            self.power_key_every = max(1, round(rate / self.detector.geometry.power_bin))
        self.bytes_spikes = self.bytes_power = 0
        self.events = self.messages = 0

    def feed(self, samples: np.ndarray) -> list[bytes]:
        return [message for _, message in self.feed_tagged(samples)]

    def feed_tagged(self, samples: np.ndarray) -> list[tuple[str, bytes]]:
        """As feed(), each message with its kind ("spikes" or "power")."""
        events, power = self.detector.process_all(samples)
        if len(events):
            self.held.append(events)
        out = []
        # All crossings below `ready` are known now.  One message per batch interval and
        # one per power bin, however much arrived at once: the messages do not depend on
        # how the samples were packetised.
        ready = max(0, self.detector.position - self.lag)
        while self.covered + self.batch <= ready:
            stop = self.covered + self.batch
            if stop - self.unsent >= self.idle or any(
                    len(held) and held.sample[0] < stop for held in self.held):
                out.append(("spikes", self._spike_message(self.unsent, stop)))
                self.unsent = stop
            self.covered = stop
        if power is not None:
            for row in range(len(power.power)):
                out.append(("power", self._power_message(PowerBins(
                    power.first_bin + row, power.width, power.power[row:row + 1]))))
        return out

    def _spike_message(self, start: int, stop: int) -> bytes:
        g = self.detector.geometry
        held = Events.concat(self.held, g.length, g.pre)
        take = held.sample < stop
        events = Events(held.sample[take] + self.origin, held.channel[take],
                        held.snippets[take], g.pre)
        rest = Events(held.sample[~take], held.channel[~take], held.snippets[~take], g.pre)
        self.held = [rest] if len(rest) else []
        message = pack_spikes(events, start + self.origin, stop + self.origin,
                              stream=self.stream, seq=self.seq,
                              channels=self.channels, rate=self.rate,
                              snippets=self.snippets)
        self.seq += 1
        self.events += len(events)
        self.messages += 1
        self.bytes_spikes += len(message)
        return message

    def _power_message(self, power: PowerBins) -> bytes:
        key = self.power_seq % self.power_key_every == 0 or self.power_key_soon
        self.power_key_soon = False
        quantised = quantise_power(power.power).astype(np.int16)
        message = msgpack.packb({
            "v": FEED_VERSION, "kind": "power", "stream": self.stream, "seq": self.power_seq,
            "ch": self.channels, "rate": self.rate, "width": power.width,
            "bin": power.first_bin, "origin": self.origin, "n": quantised.shape[0], "key": key,
            "q": self.power_codec.encode(quantised, keyframe=key)})
        self.power_seq += 1
        self.bytes_power += len(message)
        return message


def pack_spikes(events: Events, start: int, stop: int, *, stream: str = "", seq: int = 0,
                channels: int, rate: float, snippets: bool = True) -> bytes:
    if len(events) and (events.sample.min() < start or events.sample.max() >= stop):
        raise ValueError("events outside [start, stop)")
    # Events are in time order, so steps between them are small: most fit one byte.
    steps = np.diff(events.sample, prepend=start)
    top = int(steps.max()) if len(steps) else 0
    width = 1 if top < 256 else 2 if top < 65536 else 4
    snip = None
    if snippets:
        snip = (b"" if not len(events) else _codec().StreamEncoder(1).encode(
            np.ascontiguousarray(events.snippets.reshape(-1, 1)), keyframe=True))
    rate = int(rate) if float(rate).is_integer() else float(rate)
    return msgpack.packb([SPIKES_VERSION, stream, seq, channels, rate, events.pre,
                          events.snippets.shape[1], int(start), int(stop - start), width,
                          steps.astype(f"<u{width}").tobytes(),
                          pack_bits(events.channel, channel_bits(channels)), snip])


def without_snippets(message: bytes) -> bytes:
    """The same spike message, events only (what the feed costs without snippets)."""
    fields = msgpack.unpackb(message, raw=False)
    fields[-1] = None
    return msgpack.packb(fields)


_SPIKE_FIELDS = ("stream", "seq", "ch", "rate", "pre", "len", "from", "n", "tw", "t", "c",
                 "snip")


def channel_bits(channels: int) -> int:
    return max(1, int(channels - 1).bit_length())


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    values = np.asarray(values, np.uint32)
    planes = ((values[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(np.frombuffer(data, np.uint8), count=count * bits,
                           bitorder="little").reshape(count, bits).astype(np.uint32)
    return planes @ (np.uint32(1) << np.arange(bits, dtype=np.uint32))


def quantise_power(power: np.ndarray) -> np.ndarray:
    return np.clip(np.round(POWER_STEPS_PER_OCTAVE * np.log2(1.0 + power)), 0, 32767).astype(np.int16)


def dequantise_power(quantised: np.ndarray) -> np.ndarray:
    return np.exp2(quantised.astype(np.float64) / POWER_STEPS_PER_OCTAVE) - 1.0


# ---- decoding ------------------------------------------------------------------------------

class MalformedMessage(ValueError):
    """Bytes that are not a feed message this version can read (the message says why)."""


def unpack(message: bytes) -> dict:
    """One feed message -> dict; spike messages get "events" (Events, snippets decoded).
    Power messages need a PowerDecoder (they are a stream).  Anything malformed raises
    MalformedMessage (a ValueError), whatever part of it is wrong."""
    try:
        return _unpack(message)
    except MalformedMessage:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError,
            msgpack.UnpackException, _codec().CodecError) as err:
        raise MalformedMessage(f"malformed feed message ({len(message)} bytes): "
                               f"{type(err).__name__}: {err}") from err


def _unpack(message: bytes) -> dict:
    m = msgpack.unpackb(message, raw=False)
    if isinstance(m, list):
        if not m or m[0] != SPIKES_VERSION or len(m) != len(_SPIKE_FIELDS) + 1:
            raise MalformedMessage(f"spike message version {m[0] if m else None!r} with {len(m)} "
                             f"fields, expected {SPIKES_VERSION} with {len(_SPIKE_FIELDS) + 1}")
        m = dict(zip(_SPIKE_FIELDS, m[1:]), v=SPIKES_VERSION, kind="spikes")
        m["to"] = m["from"] + m.pop("n")
        if m["snip"] is None:
            del m["snip"]
    elif not isinstance(m, dict) or m.get("v") != FEED_VERSION:
        raise MalformedMessage(f"feed message version {m.get('v')!r}, expected {FEED_VERSION}"
                         if isinstance(m, dict) else "not a feed message")
    if m["kind"] == "spikes":
        t = np.cumsum(np.frombuffer(m["t"], f"<u{m['tw']}").astype(np.int64)) + m["from"]
        c = unpack_bits(m["c"], channel_bits(m["ch"]), len(t)).astype(np.int32)
        length = m["len"]
        if m.get("snip"):
            flat = _codec().StreamDecoder(1).decode(m["snip"])
            if flat.size != len(t) * length:
                raise MalformedMessage(f"{flat.size} snippet samples for {len(t)} events "
                                       f"of {length}")
            snippets = flat.reshape(len(t), length)
        else:
            snippets = np.zeros((len(t), length if "snip" in m else 0), np.int16)
        m["events"] = Events(t, c, snippets, m["pre"])
    elif m["kind"] not in ("power", "bounded"):
        raise MalformedMessage(f"unknown feed message kind {m['kind']!r}")
    return m


class _SequencedBlocks:
    """Codec blocks carried one per numbered feed message: after a gap in "seq" or a damaged
    block, nothing is decoded until the next keyframe."""

    def __init__(self):
        self.decoder: _Decoder | None = None
        self.next_seq: int | None = None

    def _decode(self, message, field: str):
        """(the unpacked message, its block decoded, or None while out of sync)."""
        m = unpack(message) if isinstance(message, (bytes, bytearray, memoryview)) else message
        if self.decoder is None or self.decoder.channels != m["ch"]:
            self.decoder = _Decoder(m["ch"])
        if self.next_seq is not None and m["seq"] != self.next_seq:
            self.decoder.reset()
        self.next_seq = m["seq"] + 1
        if not self.decoder.synced and not m["key"]:
            return m, None
        try:
            return m, self.decoder.decode(m[field])
        except _codec().CodecError:
            self.decoder.reset()
            return m, None


class PowerDecoder(_SequencedBlocks):
    """Power messages of one stream, in order -> PowerBins (None until a keyframe)."""

    def decode(self, message) -> PowerBins | None:
        m, q = self._decode(message, "q")
        return None if q is None else PowerBins(m["bin"], m["width"], dequantise_power(q))


class BoundedEncoder:
    """The bounded-error feed of one stream: each call's samples as one codec block coded
    with max_error=k, a keyframe every second of signal and after any restart."""

    def __init__(self, channels: int, rate: float, max_error: int, *, stream: str = "",
                 keyframe_s: float = 1.0):
        self.channels = channels
        self.rate = float(rate)
        self.max_error = int(max_error)
        self.stream = stream
        self.codec = _codec().StreamEncoder(channels, max_error=self.max_error)
        self.key_every = max(1, round(keyframe_s * rate))
        self.next_key: int | None = None
        self.seq = 0

    def key_soon(self) -> None:
        """A subscriber just joined: make the next block a keyframe."""
        self.next_key = None

    def encode(self, first_sample: int, samples: np.ndarray, *, restart: bool = False) -> bytes:
        key = restart or self.next_key is None or first_sample >= self.next_key
        if key:
            self.next_key = first_sample + self.key_every
        message = msgpack.packb({
            "v": FEED_VERSION, "kind": "bounded", "stream": self.stream, "seq": self.seq,
            "ch": self.channels, "rate": self.rate, "first": int(first_sample),
            "n": int(samples.shape[0]), "k": self.max_error, "key": key,
            "blob": self.codec.encode(np.ascontiguousarray(samples), keyframe=key)})
        self.seq += 1
        return message


class BoundedDecoder(_SequencedBlocks):
    """Bounded-error messages of one stream, in order -> int16 (n, ch), None until a
    keyframe (and again after a gap in "seq", until the next one)."""

    def decode(self, message) -> np.ndarray | None:
        return self._decode(message, "blob")[1]


class _Decoder:
    def __init__(self, channels: int):
        self.channels = channels
        self.codec = _codec().StreamDecoder(channels)
        self.synced = False

    def reset(self) -> None:
        self.codec.reset()
        self.synced = False

    def decode(self, blob) -> np.ndarray:
        out = self.codec.decode(blob)
        self.synced = True
        return out


@dataclass
class SpikeData:
    """What the spike feed delivers: brainwire's (rate, int16 array) plus the events."""
    rate: float
    first: int                 # sample index of row 0 of `samples`
    samples: np.ndarray        # int16 (n, channels): snippet samples in place, zeros elsewhere
    events: Events
    covered: list = field(default_factory=list)  # [(from, to)] crossing ranges received

    def __iter__(self):  # rate, samples = decode_spikes(...) as with brainwire
        return iter((self.rate, self.samples))


def place_snippets(events: Events, first: int, n_samples: int, channels: int) -> np.ndarray:
    """An int16 (n_samples, channels) array with each snippet at its true position."""
    out = np.zeros((n_samples, channels), np.int16)
    if not len(events) or not events.snippets.shape[1]:
        return out
    length = events.snippets.shape[1]
    rows = (events.sample - events.pre - first)[:, None] + np.arange(length)[None, :]
    cols = np.broadcast_to(events.channel[:, None], rows.shape)
    inside = (rows >= 0) & (rows < n_samples)
    # Overlapping snippets hold the same original samples, so the order of writes is moot.
    out[rows[inside], cols[inside]] = events.snippets[inside]
    return out


def decode_spikes(messages, *, first: int = 0, n_samples: int | None = None,
                  channels: int | None = None) -> SpikeData:
    """Spike feed messages (bytes, any order) -> SpikeData covering [first, first + n)."""
    parts, covered = [], []
    rate = None
    pre = length = 0
    for message in messages:
        m = unpack(message) if isinstance(message, (bytes, bytearray, memoryview)) else message
        if m["kind"] != "spikes":
            continue
        rate = m["rate"]
        channels = channels or m["ch"]
        pre, length = m["pre"], m["len"]
        parts.append(m["events"])
        covered.append((m["from"], m["to"]))
    events = Events.concat(parts, length, pre)
    order = np.lexsort((events.channel, events.sample))
    events = Events(events.sample[order], events.channel[order], events.snippets[order], pre)
    if n_samples is None:
        n_samples = max([to for _, to in covered], default=first) + length - pre - first
        n_samples = max(0, n_samples)
    samples = place_snippets(events, first, n_samples, channels or 1)
    return SpikeData(rate or 0.0, first, samples, events, sorted(covered))
