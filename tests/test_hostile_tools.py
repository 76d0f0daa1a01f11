"""./encode and ./decode on every odd WAV an adversary (or an odd recorder) makes: each one
round-trips byte for byte, the same bytes as the Python API writes; a 16-bit PCM recording in
WAVE_FORMAT_EXTENSIBLE or stereo is coded as such (it compresses like its plain PCM twin)."""
import struct

import numpy as np
import pytest

from conftest import EXCERPTS
from test_tools import roundtrip

pytestmark = pytest.mark.timeout(120)

EXTENSIBLE_PCM = bytes.fromhex("0100000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM


def fmt(channels=1, rate=19531, bits=16, tag=1, extension=b""):
    block = channels * max(bits, 8) // 8
    body = struct.pack("<HHIIHH", tag, channels & 0xFFFF, rate, (rate * block) & 0xFFFFFFFF,
                       block & 0xFFFF, bits) + extension
    return b"fmt " + struct.pack("<I", len(body)) + body


def chunk(chunk_id, body, size=None):
    return (chunk_id + struct.pack("<I", len(body) if size is None else size) + body
            + b"\0" * (len(body) & 1))


def riff(*chunks, size=None):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def extensible(channels=1):
    return fmt(channels, tag=0xFFFE, extension=struct.pack("<HHI", 22, 16, 0) + EXTENSIBLE_PCM)


def recording(channels=1):
    """A second of real samples (the bundled excerpt), channels side by side."""
    from neurowire.codec import read_samples

    mono = read_samples(str(EXCERPTS[0])).samples[:, 0] if EXCERPTS else (
        np.random.default_rng(0).integers(-40, 40, 19531) * 64).astype(np.int16)
    return np.stack([np.roll(mono, 97 * k) for k in range(channels)], axis=1).astype("<i2")


PCM = recording().tobytes()

ODD = {
    "extensible": riff(extensible(), chunk(b"data", PCM)),
    "extensible stereo": riff(extensible(2), chunk(b"data", recording(2).tobytes())),
    "stereo": riff(fmt(2), chunk(b"data", recording(2).tobytes())),
    "8-bit": riff(fmt(bits=8), chunk(b"data", bytes(range(256)) * 8)),
    "8-bit odd size": riff(fmt(bits=8), chunk(b"data", bytes(range(255)))),
    "24-bit": riff(fmt(bits=24), chunk(b"data", bytes(range(240)))),
    "float": riff(fmt(bits=32, tag=3), chunk(b"data", np.ones(50, "<f4").tobytes())),
    "0 frames": riff(fmt(), chunk(b"data", b"")),
    "0 frames, chunk after": riff(fmt(), chunk(b"data", b""), chunk(b"LIST", b"INFOx" * 3)),
    "1 frame": riff(fmt(), chunk(b"data", PCM[:2])),
    "half a frame": riff(fmt(), chunk(b"data", PCM[:201])),
    "chunks around": riff(chunk(b"fact", b"\0" * 4), fmt(), chunk(b"LIST", b"INFOabcd"),
                          chunk(b"data", PCM), chunk(b"id3 ", b"xyz")),
    "trailing garbage": riff(fmt(), chunk(b"data", PCM)) + b"garbage!",
    "RIFF size wrong": riff(fmt(), chunk(b"data", PCM), size=12345678),
    "data size 0": riff(fmt(), chunk(b"data", PCM, size=0)),
    "data size 0xFFFFFFFF": riff(fmt(), chunk(b"data", PCM, size=0xFFFFFFFF)),
    "data past the end": riff(fmt(), chunk(b"data", PCM, size=10**6)),
    "0 channels": riff(fmt(0), chunk(b"data", PCM[:200])),
    "rate 0": riff(fmt(rate=0), chunk(b"data", PCM[:200])),
    "65535 channels": riff(fmt(65535), chunk(b"data", bytes(2 * 65535))),
    "fmt too short": riff(b"fmt " + struct.pack("<I", 8) + b"\1\0\1\0\0\0\0\0",
                          chunk(b"data", PCM[:20])),
    "no data chunk": riff(fmt()),
    "no fmt chunk": riff(chunk(b"data", PCM[:100])),
    "RIFF without WAVE": b"RIFF\x04\0\0\0AVI ",
}


@pytest.mark.parametrize("name", ODD)
def test_every_odd_wav_round_trips_byte_exact(tools, tmp_path, name):
    roundtrip(tools, tmp_path, ODD[name], name="odd.wav")


@pytest.mark.parametrize("name, twin", [("extensible", riff(fmt(), chunk(b"data", PCM))),
                                        ("extensible stereo",
                                         riff(fmt(2), chunk(b"data", recording(2).tobytes())))])
def test_extensible_pcm_is_coded_as_pcm(tools, tmp_path, name, twin):
    odd = roundtrip(tools, tmp_path, ODD[name], name="odd.wav")
    plain = roundtrip(tools, tmp_path, twin, name="plain.wav")
    assert len(odd) < len(ODD[name]) / 2
    assert abs(len(odd) - len(plain)) < 200  # the 24 extra header bytes, not raw storage
