"""brainwire.encode: compress(path) -> bytes."""
from __future__ import annotations

import os

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
    from neurowire.feeds.detect import DetectorConfig, detect
    from neurowire.feeds.spikes import pack_spikes

    samples, rate = wav_samples(path)
    options = {}
    if threshold is not None:
        options["threshold"] = float(threshold)
    if snippet_ms is not None:
        options["snippet_ms"] = float(snippet_ms)
    config = DetectorConfig(**options)
    events = detect(samples, rate, config, flush=True)
    message = pack_spikes(events, 0, max(len(samples), 1), channels=samples.shape[1],
                          rate=rate)
    return pack_spikes_blob(len(samples), message)
