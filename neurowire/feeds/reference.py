"""The offline reference the spike detector is scored against (`neurowire bench feeds`).

The field's standard, not ours: zero-phase 3rd-order Butterworth band-pass 300-6000 Hz
(scipy's sosfiltfilt), noise sigma = median(|band-passed|) / 0.6745 over the whole
recording, events = negative-going crossings of -threshold * sigma at least 1 ms apart.

Two figures, over recordings:
  kept  of the clear spikes (reference events at 6 sigma), the fraction with a detector
        event within +-0.5 ms;
  real  of the detector's events, the fraction within +-0.5 ms of a reference event at
        3.5 sigma (beneath that, noise crossings: any two detectors disagree there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 0.6745
CLEAR_SIGMA = 6.0
REAL_SIGMA = 3.5
TOLERANCE_MS = 0.5
REFRACTORY_MS = 1.0


def bandpass(samples: np.ndarray, rate: float, low: float = 300.0, high: float = 6000.0):
    """Zero-phase 3rd-order Butterworth band-pass of (n,) or (n, channels), float64."""
    from scipy import signal

    sos = signal.butter(3, [low, high], btype="bandpass", fs=rate, output="sos")
    return signal.sosfiltfilt(sos, np.asarray(samples, np.float64), axis=0)


def noise_sigma(filtered: np.ndarray) -> np.ndarray:
    return np.median(np.abs(filtered), axis=0) / MAD_TO_SIGMA


def crossings(filtered: np.ndarray, level: float, refractory: int) -> np.ndarray:
    """Sample indices where the 1-D signal first goes below -level, refractory apart."""
    below = filtered < -level
    starts = np.flatnonzero(below[1:] & ~below[:-1]) + 1
    if len(below) and below[0]:
        starts = np.concatenate([[0], starts])
    kept, last = [], None
    for t in starts:
        if last is None or t - last >= refractory:
            kept.append(t)
            last = t
    return np.asarray(kept, np.int64)


def reference_events(samples: np.ndarray, rate: float, threshold: float) -> np.ndarray:
    """Reference events of a 1-D recording at `threshold` sigma."""
    filtered = bandpass(samples, rate)
    return crossings(filtered, threshold * noise_sigma(filtered),
                     max(1, int(round(REFRACTORY_MS * 1e-3 * rate))))


def near(times: np.ndarray, targets: np.ndarray, tolerance: int) -> np.ndarray:
    """For each of `times`, whether some target lies within +-tolerance samples."""
    if not len(targets):
        return np.zeros(len(times), bool)
    i = np.clip(np.searchsorted(targets, times), 1, len(targets) - 1) if len(targets) > 1 \
        else np.zeros(len(times), np.int64)
    distance = np.abs(targets[i] - times)
    if len(targets) > 1:
        distance = np.minimum(distance, np.abs(targets[i - 1] - times))
    return distance <= tolerance


@dataclass
class Score:
    clear: int          # reference events at CLEAR_SIGMA
    clear_kept: int     # ... with a detector event near
    events: int         # detector events
    events_real: int    # ... near a reference event at REAL_SIGMA

    @property
    def kept(self) -> float:
        return self.clear_kept / self.clear if self.clear else float("nan")

    @property
    def real(self) -> float:
        return self.events_real / self.events if self.events else float("nan")

    def __add__(self, other: "Score") -> "Score":
        return Score(self.clear + other.clear, self.clear_kept + other.clear_kept,
                     self.events + other.events, self.events_real + other.events_real)


def score(detected: np.ndarray, samples: np.ndarray, rate: float, *, start: int = 0) -> Score:
    """Detector event samples of one 1-D recording, against the reference.  Reference
    events before `start` (a detector's warm-up) are not counted."""
    filtered = bandpass(samples, rate)
    sigma = noise_sigma(filtered)
    refractory = max(1, int(round(REFRACTORY_MS * 1e-3 * rate)))
    tolerance = int(round(TOLERANCE_MS * 1e-3 * rate))
    clear = crossings(filtered, CLEAR_SIGMA * sigma, refractory)
    real = crossings(filtered, REAL_SIGMA * sigma, refractory)
    clear = clear[clear >= start]
    detected = np.sort(np.asarray(detected, np.int64))
    return Score(len(clear), int(near(clear, detected, tolerance).sum()),
                 len(detected), int(near(detected, real, tolerance).sum()))


def score_recordings(paths, config=None) -> dict:
    """The detector (neurowire.feeds.detect, `config`) against the reference over one-channel
    recordings.  A recording whose reference noise is under one ADC code (pinned at a rail
    or flat most of the time, so that every wiggle is "6 sigma") has no meaningful sigma: it
    is scored apart and named."""
    from neurowire.brainwire._format import wav_samples

    from .detect import DetectorConfig, detect

    config = config or DetectorConfig()
    total = Score(0, 0, 0, 0)
    degenerate = []
    per_recording = []
    for path in paths:
        samples, rate = wav_samples(path)
        samples = samples[:, 0]
        if noise_sigma(bandpass(samples, rate)) < 1.0:
            degenerate.append(str(path))
            continue
        warmup = int(round(config.warmup_s * rate))
        one = score(detect(samples, rate, config).sample, samples, rate, start=warmup)
        total = total + one
        if one.clear:
            per_recording.append(one.kept)
    return {"recordings": len(paths) - len(degenerate), "clear_spikes": total.clear,
            "kept": total.kept, "events": total.events, "real": total.real,
            "kept_median_per_recording": float(np.median(per_recording)) if per_recording
            else float("nan"),
            "degenerate": degenerate, "clear_sigma": CLEAR_SIGMA, "real_sigma": REAL_SIGMA,
            "tolerance_ms": TOLERANCE_MS, "threshold": config.threshold}
