"""Synthetic electrode signals that look like the real recordings, made once and looped.

The real recordings are 10-bit samples scaled into int16: every value sits on a grid of 1024
levels spaced 65535/1023 (~64.06) apart from -32768, truncated toward zero.  On top of that
grid we draw correlated noise, slow (local field) potentials and spikes, per channel.

A recording is a table (loop_samples x channels) built from a seed; the same seed gives the
same table in any process, which is how a subscriber checks every decoded sample against what
the simulator sent without the samples travelling twice.
"""

from __future__ import annotations

import glob
import os

import numpy as np

LEVELS = 1024
LEVEL_STEP = 65535 / (LEVELS - 1)


def level_grid() -> np.ndarray:
    """The 1024 int16 values the recordings use (the codec's own grid when it has one)."""
    try:
        from neurowire import codec

        grid = getattr(codec, "LEVELS", None)
        if grid is not None and len(grid) == LEVELS:
            return np.asarray(grid, dtype=np.int16)
    except ImportError:
        pass
    return np.trunc(-32768 + np.arange(LEVELS) * LEVEL_STEP).astype(np.int16)


def quantize(signal: np.ndarray) -> np.ndarray:
    """Snap float int16-scale values to the nearest 10-bit level."""
    grid = level_grid()
    index = np.clip(np.rint((signal + 32768) / LEVEL_STEP), 0, LEVELS - 1).astype(np.intp)
    return grid[index]


# The table is built in memory before the first packet (simulator) or block (a subscriber's
# check): past this it would take the machine's memory, or minutes, instead of saying so.
MAX_TABLE_SAMPLES = 1 << 29


def table_problem(channels: int, loop_samples: int) -> str | None:
    """Why a synthetic table of this size is refused (None when it is not)."""
    if channels < 1 or loop_samples < 1:
        return f"a table needs at least one channel and one sample, not {channels} x {loop_samples}"
    if channels * loop_samples > MAX_TABLE_SAMPLES:
        return (f"a table of {channels} channels x {loop_samples} samples is more than "
                f"{MAX_TABLE_SAMPLES} samples (1 GiB)")
    return None


def synthesize(channels: int = 1024, rate: float = 20000.0, loop_samples: int = 15000,
               seed: int = 1, chunk: int = 64) -> np.ndarray:
    """(loop_samples, channels) int16 that repeats seamlessly enough to be looped."""
    problem = table_problem(channels, loop_samples)
    if problem:
        raise ValueError(problem)
    table = np.empty((loop_samples, channels), dtype=np.int16)
    rng_master = np.random.default_rng(seed)
    t = np.arange(loop_samples, dtype=np.float32) / np.float32(rate)
    period = loop_samples / rate
    # Spike shape: a fast negative trough and a slower positive rebound, ~1.5 ms long.
    spike_t = np.arange(int(rate * 0.0015)) / rate
    spike_shape = (-np.exp(-((spike_t - 0.0003) / 0.00015) ** 2)
                   + 0.35 * np.exp(-((spike_t - 0.0008) / 0.0003) ** 2)).astype(np.float32)
    for start in range(0, channels, chunk):
        count = min(chunk, channels - start)
        rng = np.random.default_rng(rng_master.integers(1 << 62))
        # Background noise, low-passed so neighbouring samples correlate as in the recordings.
        white = rng.standard_normal((loop_samples, count)).astype(np.float32)
        spectrum = np.fft.rfft(white, axis=0)
        freqs = np.fft.rfftfreq(loop_samples, 1 / rate).astype(np.float32)
        corner = rng.uniform(1500, 4000, count).astype(np.float32)
        spectrum /= np.sqrt(1 + (freqs[:, None] / corner[None, :]) ** 2)
        noise = np.fft.irfft(spectrum, n=loop_samples, axis=0)
        noise *= (rng.uniform(150, 600, count) / noise.std(axis=0)).astype(np.float32)
        # Slow potentials: whole cycles per loop so the loop seam does not jump.
        slow = np.zeros((loop_samples, count), dtype=np.float32)
        for _ in range(3):
            cycles = rng.integers(1, 12, count)
            amplitude = rng.uniform(100, 900, count).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
            slow += amplitude * np.sin(2 * np.pi * (cycles / period)[None, :] * t[:, None]
                                       + phase)
        signal = noise + slow + rng.uniform(-1500, 1500, count).astype(np.float32)
        # Spikes: a few units per channel firing at 2-30 Hz.
        for column in range(count):
            n_spikes = rng.poisson(rng.uniform(2, 30) * period)
            if not n_spikes or loop_samples <= len(spike_shape):  # no room for a spike
                continue
            times = rng.integers(0, loop_samples - len(spike_shape), n_spikes)
            amplitudes = rng.uniform(800, 4000, n_spikes).astype(np.float32)
            for when, amplitude in zip(times, amplitudes):
                signal[when:when + len(spike_shape), column] += amplitude * spike_shape
        table[:, start:start + count] = quantize(signal)
    return table


def load_wav_dir(directory: str, channels: int, loop_seconds: float = 2.0):
    """Real recordings as a (loop, channels) table, one file per channel, cycled when there
    are more channels than files (each reuse shifted in time so channels differ)."""
    paths = sorted(glob.glob(os.path.join(directory, "*.wav")))
    if not paths:
        raise FileNotFoundError(f"no .wav files in {directory}")
    recordings, rate = [], None
    from neurowire.codec import read_samples  # the strict reader: a bad file is named

    for path in paths[:channels]:
        read = read_samples(path)
        if read.samples.shape[1] != 1:
            raise ValueError(f"{path}: expected mono 16-bit PCM, not {read.samples.shape[1]} "
                             "channels")
        if rate is not None and read.rate != rate:
            raise ValueError(f"{path}: recorded at {read.rate} Hz, the others at {rate} Hz")
        rate = read.rate
        recordings.append(read.samples[:, 0])
        if not len(recordings[-1]):
            raise ValueError(f"{path}: no samples in it")
    loop = min(min(len(r) for r in recordings), int(loop_seconds * rate))
    table = np.empty((loop, channels), dtype=np.int16)
    for channel in range(channels):
        recording = recordings[channel % len(recordings)]
        shift = (channel // len(recordings)) * 997 % len(recording)
        table[:, channel] = np.roll(recording, -shift)[:loop]
    return table, float(rate)


class LoopingSource:
    """Hands out consecutive packets from a table, wrapping around; sample index grows."""

    def __init__(self, table: np.ndarray):
        self.table = table
        self.loop = table.shape[0]

    def samples(self, first_sample: int, n_samples: int) -> np.ndarray:
        start = first_sample % self.loop
        stop = start + n_samples
        if stop <= self.loop:
            return self.table[start:stop]  # a view: no copy on the way to the socket
        if n_samples <= self.loop:
            return np.concatenate([self.table[start:], self.table[:stop - self.loop]])
        return self.table[np.arange(start, stop) % self.loop]  # around the loop more than once
