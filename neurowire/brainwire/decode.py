"""brainwire.decode: decompress(data) -> (rate, samples)."""
from __future__ import annotations

from ._format import Recording, as_brainwire, is_spikes_blob, unpack_spikes_blob, wav_samples

# What a WAV file can hold: a data chunk of at most 4 GiB, up to 65535 channels. A spike blob
# claiming more was not written by encode.compress, whatever its CRC says.
_MAX_WAV_BYTES = 2**32
_MAX_WAV_CHANNELS = 65535


def decompress(data) -> Recording:
    """(rate, samples) of a blob made by encode.compress: samples int16, 1-D for a mono
    recording.  A lossless blob gives the WAV's samples exactly; a spike blob an array of
    the input's length holding the original samples inside detected spikes, zero elsewhere.
    Damaged input raises neurowire.codec.CodecError or ValueError, never wrong samples;
    anything but a bytes-like object (str, int, None, a masked array) raises TypeError."""
    from neurowire.codec._codec import contiguous_bytes

    data = contiguous_bytes(data, "data")
    if is_spikes_blob(data):
        return _decompress_spikes(data)
    samples, rate = wav_samples(data)
    return Recording(rate, as_brainwire(samples))


def _decompress_spikes(data) -> Recording:
    from neurowire.feeds.spikes import MalformedMessage, decode_spikes, unpack

    n_samples, message = unpack_spikes_blob(data)
    try:
        fields = unpack(message)
    except MalformedMessage as err:
        # Only a blob written wrongly gets here (the CRC matched): say so, plainly.
        raise ValueError(f"malformed spike blob: {err}") from err
    if fields["kind"] != "spikes":
        raise ValueError(f"malformed spike blob: holds a {fields['kind']!r} message")
    # The header's n_samples is outside the CRC; the message's span [from, to) is inside it
    # and encode.compress writes [0, max(n_samples, 1)): they must agree before n_samples
    # sizes an allocation.
    span = (fields["from"], fields["to"])
    if span != (0, max(n_samples, 1)):
        raise ValueError(f"damaged spike blob: header says {n_samples} samples, its message "
                         f"covers samples {span[0]}..{span[1]}")
    channels, rate = fields["ch"], fields["rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
        raise ValueError(f"malformed spike blob: sample rate {rate!r}")
    if not 1 <= channels <= _MAX_WAV_CHANNELS or n_samples * channels * 2 > _MAX_WAV_BYTES:
        raise ValueError(f"malformed spike blob: {n_samples} samples x {channels} channels is "
                         "not a WAV recording")
    try:
        spikes = decode_spikes([fields], first=0, n_samples=n_samples)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"malformed spike blob: {type(err).__name__}: {err}") from err
    rate = int(rate) if float(rate).is_integer() else rate
    return Recording(rate, as_brainwire(spikes.samples))
