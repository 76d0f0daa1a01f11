"""A small RIFF/WAVE reader: the stdlib `wave` module rejects WAVE_FORMAT_EXTENSIBLE and
stops at some odd layouts, while recordings come with extra chunks and padding."""
import struct

import numpy as np

_PCM = 1
_EXTENSIBLE = 0xFFFE
# The first two bytes of the sub-format GUID hold the plain format tag.
_SUBFORMAT_OFFSET = 24


def parse_wav(data):
    """Returns (int16 array (n_frames, channels), sample_rate) of 16-bit PCM WAV bytes."""
    data = memoryview(data).cast("B")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt = None
    pcm = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = bytes(data[pos:pos + 4])
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8:pos + 8 + size]  # a truncated last chunk keeps what is there
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(body)
        elif chunk_id == b"data" and pcm is None:
            pcm = body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise ValueError("WAV file has no fmt chunk")
    if pcm is None:
        raise ValueError("WAV file has no data chunk")
    channels, rate = fmt
    frames = len(pcm) // (2 * channels)
    samples = np.frombuffer(pcm[:frames * 2 * channels], dtype="<i2")
    return samples.astype(np.int16).reshape(frames, channels), rate


def _parse_fmt(body):
    if len(body) < 16:
        raise ValueError("WAV fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= _SUBFORMAT_OFFSET + 2:
        (tag,) = struct.unpack_from("<H", body, _SUBFORMAT_OFFSET)
    if tag != _PCM or bits != 16:
        raise ValueError(f"only 16-bit PCM WAV is supported (format {tag}, {bits} bits)")
    if channels == 0:
        raise ValueError("WAV fmt chunk says 0 channels")
    return channels, rate
