"""Causal per-channel spike detection, the same code offline and packet by packet.

    det = SpikeDetector(channels, rate)            # DetectorConfig() defaults
    for packet in packets:                          # int16 (n_samples, channels), any n
        events = det.process(packet)                # Events completed by this packet
    events = detect(recording, rate)                # offline: the same detector, whole array

Signal path, per channel:
  * band-pass as a difference of two causal moving sums (short ~0.1 ms, long ~1 ms), in
    integers: field potentials and drifts cancel, and the result does not depend on how the
    samples were cut into packets;
  * noise = a tracked median of |band-passed| (MAD): once per noise bin (64 samples, aligned
    to absolute sample index 0) the estimate moves up or down geometrically by how far the
    fraction of samples above it was from one half.  A spike occupies a few samples of a bin,
    so it barely moves a median, unlike an RMS;
  * an event is a negative-going crossing of -threshold * STANDARD_SIGMA * noise / 0.6745
    (the MAD of Gaussian noise is 0.6745 sigma), at least `refractory_ms` after the
    channel's previous event, and not during the first `warmup_s` (the filter and the noise
    estimate are settling).  `threshold` is in the field's standard sigma: MAD / 0.6745 of
    the 300-6000 Hz Butterworth band-passed signal (neurowire/feeds/reference.py).  Our
    cheaper filter passes more noise above 6 kHz than that one, so a spike stands fewer of
    our sigmas above the noise: STANDARD_SIGMA, the ratio, was fitted on the development
    recordings (equal event counts at 4.5 sigma) and is checked by `neurowire bench feeds`;
  * its snippet is the ORIGINAL int16 samples [t - pre, t - pre + length); the event is
    emitted by the packet that completes it, so the detector keeps `length` samples of
    history per channel.  Events whose snippet is still incomplete when the data ends are
    never emitted, offline or streaming alike.

Optionally, spike-band power: mean of the squared band-passed signal per channel over bins of
`power_bin_ms`, aligned to sample index 0, emitted when a bin is complete.

Everything that decides an event is integer arithmetic, or float arithmetic done per channel
at bin boundaries that fall at the same sample indices however the input was packetised:
that, not tolerance, is why offline and streaming give identical events.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np

from neurowire.options import range_words, within

MAD_TO_SIGMA = 0.6745
# Our band-pass's sigma per standard sigma at a spike (see the module docstring): on the 137
# development recordings with a usable noise floor, this detector at 4.0 of its own sigma
# finds as many events (4,169) as the reference at 4.5 (4,343).
STANDARD_SIGMA = 0.89


# Each DetectorConfig field's values: (low, high, low_open: must be above low). The highs are
# far past any use; they refuse a typo before it becomes a filter of minutes or a snippet
# that fills memory. The daemon's feed_* keys take the same ranges.
DETECTOR_RANGES = {
    "threshold": (0, 1000, True),
    "refractory_ms": (0, 1000, False),
    "snippet_ms": (0, 1000, True),
    "pre_ms": (0, 1000, False),
    "short_ms": (0, 1000, True),
    "long_ms": (0, 10_000, True),
    "noise_bin": (1, 1 << 20, False),
    "noise_gain": (0, 16, True),
    "warmup_gain": (0, 16, True),
    "warmup_s": (0, 3600, False),
    "power_bin_ms": (0, 60_000, False),
}


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = 4.5          # multiples of the standard noise sigma, negative-going
    refractory_ms: float = 1.0
    snippet_ms: float = 1.6
    pre_ms: float = 0.5             # of the snippet, before the crossing sample
    short_ms: float = 0.1           # band-pass: short moving sum (removes the highest noise)
    long_ms: float = 1.0            # band-pass: long moving sum (removes field potentials)
    noise_bin: int = 64             # samples per noise-tracker update
    noise_gain: float = 0.02        # log2 step per bin at full imbalance, once settled
    warmup_gain: float = 0.25       # the same during warm-up, to converge from the first guess
    warmup_s: float = 0.1           # no detection before this (filter, noise estimate settle)
    power_bin_ms: float = 0.0       # spike-band power bins; 0 = off

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            integer = field.type == "int"
            kind = numbers.Integral if integer else numbers.Real
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"DetectorConfig.{field.name} must be "
                                f"{'an integer' if integer else 'a number'}, not "
                                f"{type(value).__name__} {value!r}")
            low, high, low_open = DETECTOR_RANGES[field.name]
            if not within(value, low, high, low_open):
                raise ValueError(f"DetectorConfig.{field.name} = {value!r} is out of range: "
                                 f"it must be {range_words(low, high, low_open)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Geometry:
    """The config turned into sample counts for one sample rate."""
    pre: int
    length: int
    refractory: int
    short: int
    long: int
    warmup: int
    power_bin: int

    @classmethod
    def of(cls, config: DetectorConfig, rate: float) -> "Geometry":
        def samples(ms: float) -> int:
            return int(round(ms * 1e-3 * rate))

        length = max(2, samples(config.snippet_ms))
        pre = min(max(0, samples(config.pre_ms)), length - 1)
        short = max(1, samples(config.short_ms))
        long = max(short + 1, samples(config.long_ms))
        if 2 * 32768 * short * long >= 2**31:
            raise ValueError("band-pass windows too long for int32 arithmetic")
        warmup = max(int(round(config.warmup_s * rate)), long + config.noise_bin, pre)
        return cls(pre=pre, length=length, refractory=max(1, samples(config.refractory_ms)),
                   short=short, long=long, warmup=warmup,
                   power_bin=samples(config.power_bin_ms) if config.power_bin_ms > 0 else 0)


@dataclass
class Events:
    """Detected events, ordered by (sample, channel)."""
    sample: np.ndarray    # int64 (k,) absolute index of the threshold crossing
    channel: np.ndarray   # int32 (k,)
    snippets: np.ndarray  # int16 (k, length): original samples from sample - pre
    pre: int

    @classmethod
    def empty(cls, length: int, pre: int) -> "Events":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32),
                   np.zeros((0, length), np.int16), pre)

    def __len__(self) -> int:
        return len(self.sample)

    @classmethod
    def concat(cls, parts: list["Events"], length: int, pre: int) -> "Events":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(length, pre)
        return cls(np.concatenate([p.sample for p in parts]),
                   np.concatenate([p.channel for p in parts]),
                   np.concatenate([p.snippets for p in parts]), pre)

    def equals(self, other: "Events") -> bool:
        return (self.pre == other.pre and np.array_equal(self.sample, other.sample)
                and np.array_equal(self.channel, other.channel)
                and np.array_equal(self.snippets, other.snippets))


@dataclass
class PowerBins:
    """Spike-band power: mean squared band-passed signal (ADC code units squared)."""
    first_bin: int        # index of the first bin (bin b covers [b*width, (b+1)*width))
    width: int            # samples per bin
    power: np.ndarray     # float64 (bins, channels)


class SpikeDetector:
    def __init__(self, channels: int, rate: float, config: DetectorConfig | None = None):
        if channels < 1:
            raise ValueError("channels must be at least 1")
        self.config = config = config or DetectorConfig()
        self.channels = channels
        self.rate = float(rate)
        self.geometry = g = Geometry.of(config, rate)
        self.bin = int(config.noise_bin)
        # Enough history for the long window and for a snippet started before this packet.
        self.history_len = max(g.long - 1, g.length)
        self.history: np.ndarray | None = None  # int32 (history_len, channels)
        self.position = 0                       # absolute index of the next sample
        self.noise = np.zeros(channels, np.float64)   # tracked median |band-passed|
        self.first_bin = np.zeros((self.bin, channels), np.int64)  # |bp| of bin 0, for the seed
        self.above = np.zeros(channels, np.int64)     # count above `noise` in the current bin
        self.below_prev = np.zeros(channels, bool)
        self.last_event = np.full(channels, -(1 << 62), np.int64)
        self.pending_t = np.zeros(0, np.int64)
        self.pending_c = np.zeros(0, np.int32)
        self.power_sum = np.zeros(channels, np.int64)
        self.scale = g.short * g.long  # band-passed values are in 1/scale ADC codes
        self.sum_short: np.ndarray | None = None  # window sums ending at the last sample
        self.sum_long: np.ndarray | None = None

    # ---- public --------------------------------------------------------------------------

    def process(self, samples: np.ndarray) -> Events:
        """Feed the next samples (n, channels); returns the events completed by them."""
        events, _ = self.process_all(samples)
        return events

    def process_all(self, samples: np.ndarray) -> tuple[Events, PowerBins | None]:
        """As process(), plus the spike-band power bins completed (None when off)."""
        samples = np.asarray(samples)
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ValueError(f"samples must be (n, {self.channels})")
        g = self.geometry
        n = samples.shape[0]
        if n == 0:
            return Events.empty(g.length, g.pre), self._no_power()
        x = samples.astype(np.int32)
        if self.history is None:
            # Start as if the signal had been flat at its first value: no step at sample 0.
            self.history = np.repeat(x[:1], self.history_len, axis=0)
        ext = np.concatenate([self.history, x])
        bp = self._bandpass(ext, n)
        start = self.position
        power = self._power(bp, start) if g.power_bin else None
        self._detect(bp, start)
        self.position = start + n
        events = self._complete(ext)
        self.history = ext[-self.history_len:]
        return events, power

    def flush(self) -> Events:
        """The events still waiting for the rest of their snippet, at the end of the data:
        their snippets run past the last sample, and those missing samples repeat the last
        one (a consumer that knows the data's length drops them, as decode_spikes does).
        A streaming consumer never calls this; an offline one calls it once, last."""
        g = self.geometry
        if not len(self.pending_t) or self.history is None:
            return Events.empty(g.length, g.pre)
        missing = int((self.pending_t - g.pre + g.length - self.position).max())
        pad = np.repeat(self.history[-1:], missing, axis=0)
        ext = np.concatenate([self.history, pad])
        end, self.position = self.position, self.position + missing
        try:
            return self._complete(ext)
        finally:
            self.position = end

    def params(self) -> dict:
        """What a consumer needs to interpret the events (goes into feed headers)."""
        g = self.geometry
        return {"rate": self.rate, "pre": g.pre, "length": g.length, **self.config.to_dict()}

    # ---- internals ---------------------------------------------------------------------------

    def _no_power(self):
        return None if not self.geometry.power_bin else PowerBins(
            self.position // self.geometry.power_bin, self.geometry.power_bin,
            np.zeros((0, self.channels)))

    def _bandpass(self, ext: np.ndarray, n: int) -> np.ndarray:
        """Band-passed values of the last n rows of ext (history + packet), int32."""
        g = self.geometry
        if self.sum_long is None:  # the flat history: window sums of the first value
            self.sum_short = ext[0] * np.int32(g.short)
            self.sum_long = ext[0] * np.int32(g.long)
        new = ext[-n:]
        short = _running_sum(new - ext[-n - g.short:ext.shape[0] - g.short], self.sum_short)
        long = _running_sum(new - ext[-n - g.long:ext.shape[0] - g.long], self.sum_long)
        self.sum_short, self.sum_long = short[-1], long[-1]
        # long * mean(short window) - short * mean(long window), scaled by short*long.
        return short * np.int32(g.long) - long * np.int32(g.short)

    def _power(self, bp: np.ndarray, start: int) -> PowerBins:
        width = self.geometry.power_bin
        sq = bp.astype(np.int64) ** 2
        rows = []
        offset = 0
        n = bp.shape[0]
        while offset < n:
            into = (start + offset) % width
            take = min(n - offset, width - into)
            self.power_sum += sq[offset:offset + take].sum(axis=0)
            offset += take
            if into + take == width:
                rows.append(self.power_sum / (width * float(self.scale) ** 2))
                self.power_sum = np.zeros(self.channels, np.int64)
        power = np.array(rows).reshape(len(rows), self.channels)
        return PowerBins((start + n) // width - len(rows), width, power)

    def _detect(self, bp: np.ndarray, start: int) -> None:
        g = self.geometry
        B = self.bin
        cfg = self.config
        factor = cfg.threshold * STANDARD_SIGMA / MAD_TO_SIGMA
        n = bp.shape[0]
        offset = 0
        found_t, found_c = [], []
        while offset < n:
            t0 = start + offset
            into = t0 % B
            take = min(n - offset, B - into)
            seg = bp[offset:offset + take]
            bin_index = t0 // B
            mag = np.abs(seg)
            if bin_index == 0:
                self.first_bin[into:into + take] = mag
            else:
                self.above += (mag > self.noise).sum(axis=0)
            if t0 + take > g.warmup and bin_index > 0:
                # Compared in float64, exactly as in every other packetisation.
                below = seg < -(factor * self.noise)
                if t0 < g.warmup:
                    below[:g.warmup - t0] = False
                crossing = below.copy()
                crossing[0] &= ~self.below_prev
                crossing[1:] &= ~below[:-1]
                if crossing.any():  # mostly not: skip the costlier nonzero
                    tt, cc = np.nonzero(crossing)
                    found_t.append(tt + t0)
                    found_c.append(cc)
                self.below_prev = below[-1].copy()
            if into + take == B:
                self._end_noise_bin(bin_index)
            offset += take
        if found_t:
            self._accept(np.concatenate(found_t), np.concatenate(found_c).astype(np.int32))

    def _end_noise_bin(self, bin_index: int) -> None:
        B = self.bin
        if bin_index == 0:
            # Seed: the exact median of the first bin, kept above zero so it can grow.
            self.noise = np.maximum(np.median(self.first_bin, axis=0), 1.0)
            self.first_bin = None
        else:
            settled = (bin_index + 1) * B > self.geometry.warmup
            gain = self.config.noise_gain if settled else self.config.warmup_gain
            imbalance = (2.0 * self.above - B) / B
            self.noise = np.maximum(self.noise * np.exp2(gain * imbalance), 1.0)
        self.above = np.zeros(self.channels, np.int64)

    def _accept(self, t: np.ndarray, c: np.ndarray) -> None:
        """Refractory filter over candidate crossings, in time order within each channel."""
        refractory = self.geometry.refractory
        order = np.lexsort((t, c))
        t, c = t[order], c[order]
        keep = np.ones(len(t), bool)
        repeated = np.zeros(len(t), bool)
        repeated[1:] = c[1:] == c[:-1]
        repeated[:-1] |= c[:-1] == c[1:]
        # A channel's lone candidate only needs comparing with its previous event.
        lone = ~repeated
        keep[lone] = t[lone] - self.last_event[c[lone]] >= refractory
        self.last_event[c[lone & keep]] = t[lone & keep]
        for i in np.flatnonzero(repeated):  # rare: several crossings in one packet
            if t[i] - self.last_event[c[i]] >= refractory:
                self.last_event[c[i]] = t[i]
            else:
                keep[i] = False
        t, c = t[keep], c[keep]
        self.pending_t = np.concatenate([self.pending_t, t])
        self.pending_c = np.concatenate([self.pending_c, c])

    def _complete(self, ext: np.ndarray) -> Events:
        g = self.geometry
        end = self.position
        if not len(self.pending_t):
            return Events.empty(g.length, g.pre)
        done = self.pending_t - g.pre + g.length <= end
        if not done.any():
            return Events.empty(g.length, g.pre)
        t, c = self.pending_t[done], self.pending_c[done]
        self.pending_t, self.pending_c = self.pending_t[~done], self.pending_c[~done]
        order = np.lexsort((c, t))
        t, c = t[order], c[order]
        ext_start = end - ext.shape[0]
        rows = (t - g.pre - ext_start)[:, None] + np.arange(g.length)[None, :]
        snippets = ext[rows, c[:, None]].astype(np.int16)
        return Events(t, c, snippets, g.pre)


def _running_sum(steps: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """previous + cumulative sum of steps over time, exact in int32 either way: numpy's
    cumsum costs ~13 ns per element, so a short packet of many channels goes row by row."""
    if steps.shape[0] <= 64 and steps.shape[1] >= 64:
        out = np.empty_like(steps)
        running = previous
        for row in range(steps.shape[0]):
            running = out[row] = running + steps[row]
        return out
    return np.cumsum(steps, axis=0, dtype=np.int32) + previous


def detect(samples: np.ndarray, rate: float, config: DetectorConfig | None = None, *,
           chunk: int = 8192, power: bool = False, flush: bool = False):
    """The streaming detector over a whole recording (n,) or (n, channels), in chunks only to
    bound memory.  Returns Events, or (Events, PowerBins) with power=True.  flush=True adds
    the events whose snippets the data's end cuts short (see SpikeDetector.flush)."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    detector = SpikeDetector(samples.shape[1], rate, config)
    g = detector.geometry
    parts, powers = [], []
    for start in range(0, samples.shape[0], chunk):
        events, bins = detector.process_all(samples[start:start + chunk])
        parts.append(events)
        if bins is not None:
            powers.append(bins.power)
    if flush:
        parts.append(detector.flush())
    events = Events.concat(parts, g.length, g.pre)
    if not power:
        return events
    if not g.power_bin:
        raise ValueError("power=True needs config.power_bin_ms > 0")
    stacked = (np.concatenate(powers) if powers else np.zeros((0, samples.shape[1])))
    return events, PowerBins(0, g.power_bin, stacked)
