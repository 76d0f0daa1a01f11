"""brainwire.decode: decompress(data) -> (rate, samples)."""
from __future__ import annotations

from ._format import Recording, as_brainwire, is_spikes_blob, unpack_spikes_blob, wav_samples


def decompress(data) -> Recording:
    """(rate, samples) of a blob made by encode.compress: samples int16, 1-D for a mono
    recording.  A lossless blob gives the WAV's samples exactly; a spike blob an array of
    the input's length holding the original samples inside detected spikes, zero elsewhere.
    Damaged input raises neurowire.codec.CodecError or ValueError, never wrong samples."""
    data = bytes(data)
    if is_spikes_blob(data):
        from neurowire.feeds.spikes import decode_spikes

        n_samples, message = unpack_spikes_blob(data)
        try:
            spikes = decode_spikes([message], first=0, n_samples=n_samples)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            # Only a blob written wrongly gets here (the CRC matched): say so, plainly.
            raise ValueError(f"malformed spike blob: {type(err).__name__}: {err}") from err
        rate = int(spikes.rate) if float(spikes.rate).is_integer() else spikes.rate
        return Recording(rate, as_brainwire(spikes.samples))
    samples, rate = wav_samples(data)
    return Recording(rate, as_brainwire(samples))
