"""brainwire.encode: compress(path) -> bytes."""
from __future__ import annotations

import os

import numpy as np

from ._format import pack_spikes_blob, wav_samples


def compress(path, spikes: bool = False, *, threshold: float | None = None,
             snippet_ms: float | None = None) -> bytes:
    """The WAV file at `path`, compressed.

    spikes=False: lossless, the same bytes as neurowire's ./encode.
    spikes=True: only detected spikes (neurowire.feeds' detector over the whole recording,
    events at its very end included): their channel, sample index and `snippet_ms` of
    original samples.  threshold is in noise sigmas (MAD of the band-passed signal / 0.6745),
    negative-going."""
    from neurowire.codec import compress as compress_file

    path = os.fspath(path)
    if not spikes:
        if threshold is not None or snippet_ms is not None:
            raise ValueError("threshold and snippet_ms apply only with spikes=True")
        return compress_file(path)
    from neurowire.feeds.detect import DetectorConfig
    from neurowire.feeds.spikes import pack_spikes

    samples, rate = wav_samples(path)
    options = {}
    if threshold is not None:
        options["threshold"] = threshold
    if snippet_ms is not None:
        options["snippet_ms"] = snippet_ms
    config = DetectorConfig(**options)  # checks each value's type and range
    events = detect_all(samples, rate, config)
    message = pack_spikes(events, 0, max(len(samples), 1), channels=samples.shape[1],
                          rate=rate)
    return pack_spikes_blob(len(samples), message)


def detect_all(samples, rate, config):
    """Events of the whole recording, its first and last samples included.  The streaming
    detector ignores its first `warmup` samples (its filter and noise estimate settle) and
    cannot finish snippets past the end: offline, the recording's start mirrored in front
    lets it settle before sample 0, and a flush takes the end."""
    from neurowire.feeds.detect import Events, Geometry, detect

    warmup = Geometry.of(config, rate).warmup
    padded = np.pad(samples, ((warmup, 0), (0, 0)), mode="symmetric")
    events = detect(padded, rate, config, flush=True)
    real = events.sample >= warmup
    return Events(events.sample[real] - warmup, events.channel[real], events.snippets[real],
                  events.pre)
