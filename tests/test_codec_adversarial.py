"""Inputs no recording looks like: all must come back byte-exact, and no output may exceed
the input by more than the container's own header."""
import os

import numpy as np
import pytest

from conftest import wav_bytes
from neurowire import codec


def varint_len(n):
    return max(1, (n.bit_length() + 6) // 7)


def file_bound(raw_len):
    # docs/FORMAT.md: magic (3) + version (1) + kind (1) + varint size + CRC-32 (4); a WAV
    # that coding does not shrink is stored, so nothing more can be added.
    return raw_len + 3 + 1 + 1 + varint_len(raw_len) + 4


def block_bound(channels, n_samples):
    # Header, domain bitmap (keyframes), then the samples stored as they are.
    return codec.BLOCK_HEADER_BYTES + (channels + 7) // 8 + 2 * channels * n_samples


def roundtrip_file(raw):
    packed = codec.compress_bytes(raw)
    assert codec.decompress(packed) == raw
    assert len(packed) <= file_bound(len(raw)), (len(packed), len(raw))
    return packed


def roundtrip_blocks(samples, block):
    channels = samples.shape[1]
    enc, dec = codec.StreamEncoder(channels), codec.StreamDecoder(channels)
    for start in range(0, len(samples), block):
        part = samples[start:start + block]
        blob = enc.encode(part)
        assert len(blob) <= block_bound(channels, len(part))
        np.testing.assert_array_equal(dec.decode(blob), part)


rng = np.random.default_rng(1234)
NOISE = rng.integers(-32768, 32768, size=(20000, 1), dtype=np.int16)
GRID = np.load(__import__("conftest").DATA / "grid_values.npy").astype(np.int16)

SIGNALS = {
    "silence": np.zeros((20000, 1), np.int16),
    "full_scale_noise": NOISE,
    "min_max_square": np.tile(np.array([[-32768], [32767]], np.int16), (5000, 1)),
    "off_grid_ramp": (np.arange(20000) % 65536 - 32768).astype(np.int16)[:, None],
    "off_grid_plus_one": (GRID[rng.integers(0, len(GRID), 20000)] + 1).astype(np.int16)[:, None],
    "grid_extremes": GRID[rng.choice([0, len(GRID) - 1], 20000)][:, None],
    "one_sample": np.array([[-32768]], np.int16),
    "odd_length": rng.integers(-500, 500, size=(12345, 1)).astype(np.int16),
}


@pytest.mark.parametrize("name", SIGNALS)
def test_wav_signals_file(name):
    samples = SIGNALS[name]
    packed = roundtrip_file(wav_bytes(samples))
    got = codec.read_samples(packed).samples
    np.testing.assert_array_equal(got, samples)


@pytest.mark.parametrize("name", SIGNALS)
@pytest.mark.parametrize("block", [1, 10, 20, 4096])
def test_signals_blocks(name, block):
    # One-sample blocks cost a Python call each: a shorter run says as much.
    roundtrip_blocks(SIGNALS[name][:2000] if block == 1 else SIGNALS[name], block)


def test_noise_many_channels_blocks():
    roundtrip_blocks(rng.integers(-32768, 32768, size=(200, 512), dtype=np.int16), 20)


def test_silence_compresses_hard():
    raw = wav_bytes(np.zeros(100000, np.int16))
    assert len(roundtrip_file(raw)) < len(raw) / 50


def test_empty_file():
    assert codec.decompress(codec.compress_bytes(b"")) == b""
    roundtrip_file(b"")


@pytest.mark.parametrize("raw", [
    b"x", b"RIFF", b"RIFF\x00\x00\x00\x00WAVE", b"NWF", b"NWF\x01",
    b"hello world\n" * 1000, bytes(range(256)) * 64, os.urandom(5000),
], ids=lambda b: f"{len(b)}B")
def test_non_wav_bytes(raw):
    roundtrip_file(raw)


def grid_walk(n, channels=1):
    codes = np.clip(512 + np.cumsum(rng.integers(-3, 4, size=(n, channels)), axis=0), 0, len(GRID) - 1)
    return GRID[codes]


def test_wav_with_extra_chunks():
    samples = grid_walk(5000)
    extra = b"LIST" + (5).to_bytes(4, "little") + b"abcde\0" + b"junk" + (4).to_bytes(4, "little") + b"1234"
    raw = wav_bytes(samples, extra_chunks=extra) + b"id3 " + (3).to_bytes(4, "little") + b"xyz\0"
    packed = roundtrip_file(raw)
    assert len(packed) < len(raw) * 0.8  # the samples are still coded, not stored
    np.testing.assert_array_equal(codec.read_samples(packed).samples, samples)


def test_wav_odd_data_size():
    # 5001 bytes of "samples": half a frame at the end, then the pad byte.
    body = wav_bytes(np.arange(2500, dtype=np.int16))
    riff = bytearray(body[:40]) + (5001).to_bytes(4, "little") + body[44:] + b"\x7f\0"
    roundtrip_file(bytes(riff))


def test_wav_8bit_and_stereo_and_multichannel():
    roundtrip_file(wav_bytes(np.arange(1000) % 256, sampwidth=1))
    stereo = rng.integers(-2000, 2000, size=(3001, 2)).astype(np.int16)
    np.testing.assert_array_equal(codec.read_samples(roundtrip_file(wav_bytes(stereo))).samples, stereo)
    many = rng.integers(-2000, 2000, size=(300, 37)).astype(np.int16)
    np.testing.assert_array_equal(codec.read_samples(roundtrip_file(wav_bytes(many))).samples, many)


def test_wav_truncated_header_and_data():
    raw = wav_bytes(grid_walk(2000))
    for cut in list(range(0, 44)) + list(range(46, 60)) + [len(raw) - 1, len(raw) - 3]:
        roundtrip_file(raw[:cut])


def test_wav_header_without_frames_is_stored():
    raw = wav_bytes(grid_walk(2000))
    roundtrip_file(raw[:44])
    roundtrip_file(raw[:45])


def test_wav_lying_sizes():
    raw = bytearray(wav_bytes(rng.integers(-2000, 2000, size=2000).astype(np.int16)))
    for offset, value in [(4, 0xFFFFFFFF), (40, 0xFFFFFFFF), (40, 0), (22, 0), (34, 24), (24, 0)]:
        bad = bytearray(raw)
        bad[offset:offset + 4 if offset != 22 and offset != 34 else offset + 2] = \
            value.to_bytes(4 if offset not in (22, 34) else 2, "little")
        roundtrip_file(bytes(bad))


def test_real_file_with_trailing_garbage(excerpts):
    raw = wav_bytes(excerpts["excerpt_medium"]) + b"\x00garbage\xff" * 3
    roundtrip_file(raw)
