"""Damaged, truncated and forged input: always a CodecError subclass, never a crash and
never wrong samples; after an error the decoder waits for a keyframe."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tile_channels, wav_bytes
from neurowire import codec

CHANNELS = 4


@pytest.fixture(scope="module")
def stream(excerpts):
    """(samples, [blobs]) of 6 blocks of 20 time steps; block 3 is a keyframe."""
    samples = tile_channels(list(excerpts.values()), CHANNELS, 120)
    enc = codec.StreamEncoder(CHANNELS)
    blobs = [enc.encode(samples[i * 20:(i + 1) * 20], keyframe=(i == 3)) for i in range(6)]
    return samples, blobs


@pytest.fixture(scope="module")
def packed_file(excerpts):
    raw = wav_bytes(excerpts["excerpt_medium"][:3000])
    return raw, codec.compress_bytes(raw)


def decode_fresh(blob, channels=CHANNELS):
    return codec.StreamDecoder(channels).decode(blob)


def test_every_truncation_of_a_block_fails(stream):
    samples, blobs = stream
    for cut in range(len(blobs[0])):
        with pytest.raises(codec.CorruptStreamError):
            decode_fresh(blobs[0][:cut])
        if cut < codec.BLOCK_HEADER_BYTES:
            with pytest.raises(codec.CorruptStreamError):
                codec.block_info(blobs[0][:cut])


def test_every_bit_flip_of_a_block_is_caught(stream):
    samples, blobs = stream
    blob = blobs[0]
    for bit in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            out = decode_fresh(bytes(bad))
        except codec.CodecError:
            continue
        # Only a bit the format ignores may pass, and then the samples must be right.
        np.testing.assert_array_equal(out, samples[:20], err_msg=f"bit {bit}")


def test_trailing_bytes_after_a_block(stream):
    samples, blobs = stream
    try:
        out = decode_fresh(blobs[0] + b"\0")
    except codec.CorruptStreamError:
        return
    np.testing.assert_array_equal(out, samples[:20])


def test_error_classes(stream):
    samples, blobs = stream
    blob = blobs[0]
    with pytest.raises(codec.CorruptStreamError) as err:
        decode_fresh(b"XX" + blob[2:])
    assert err.value.status < 0 and str(err.value)
    with pytest.raises(codec.VersionError):   # versions 1 and 2 exist; 3 does not
        decode_fresh(blob[:2] + bytes([codec.LANE_FORMAT_VERSION + 1]) + blob[3:])
    with pytest.raises(codec.VersionError):
        codec.block_info(blob[:2] + b"\xff" + blob[3:])
    with pytest.raises(codec.CorruptStreamError) as err:
        decode_fresh(blob, channels=CHANNELS + 1)
    with pytest.raises(codec.NeedKeyframeError):
        decode_fresh(blobs[1])
    for cls in (codec.CorruptStreamError, codec.VersionError, codec.NeedKeyframeError,
                codec.SequenceError):
        assert issubclass(cls, codec.CodecError)


def test_error_messages_come_from_the_c_side(stream):
    _, blobs = stream
    messages = set()
    for bad in (b"", b"XXXX" * 10, blobs[0][:-1], blobs[1]):
        with pytest.raises(codec.CodecError) as err:
            decode_fresh(bad)
        messages.add(str(err.value))
    assert len(messages) >= 3  # distinct causes, distinct messages


def test_after_an_error_the_decoder_needs_a_keyframe(stream):
    samples, blobs = stream
    dec = codec.StreamDecoder(CHANNELS)
    np.testing.assert_array_equal(dec.decode(blobs[0]), samples[:20])
    bad = bytearray(blobs[1])
    bad[18] ^= 0x01  # in the CRC: certain to be caught, whatever the payload coder does
    with pytest.raises(codec.CorruptStreamError):
        dec.decode(bytes(bad))
    with pytest.raises(codec.NeedKeyframeError):
        dec.decode(blobs[2])  # intact, but its predecessor was lost
    np.testing.assert_array_equal(dec.decode(blobs[3]), samples[60:80])  # keyframe
    np.testing.assert_array_equal(dec.decode(blobs[4]), samples[80:100])


def test_garbage_header_also_resets_the_decoder(stream):
    samples, blobs = stream
    dec = codec.StreamDecoder(CHANNELS)
    dec.decode(blobs[0])
    with pytest.raises(codec.CorruptStreamError):
        dec.decode(b"not a block at all")
    with pytest.raises(codec.NeedKeyframeError):
        dec.decode(blobs[1])


def test_skipped_and_repeated_blocks_raise_sequence_error(stream):
    samples, blobs = stream
    dec = codec.StreamDecoder(CHANNELS)
    dec.decode(blobs[0])
    with pytest.raises(codec.SequenceError):
        dec.decode(blobs[2])  # blobs[1] skipped
    dec = codec.StreamDecoder(CHANNELS)
    dec.decode(blobs[0])
    dec.decode(blobs[1])
    with pytest.raises(codec.SequenceError):
        dec.decode(blobs[1])  # replayed


def test_reset_requires_a_keyframe(stream):
    samples, blobs = stream
    dec = codec.StreamDecoder(CHANNELS)
    dec.decode(blobs[0])
    dec.reset()
    with pytest.raises(codec.NeedKeyframeError):
        dec.decode(blobs[1])
    np.testing.assert_array_equal(dec.decode(blobs[3]), samples[60:80])


@given(st.binary(max_size=400))
def test_random_bytes_as_block(data):
    with pytest.raises(codec.CodecError):
        decode_fresh(data)


@given(st.binary(min_size=0, max_size=300), st.integers(1, 8), st.integers(1, 50))
def test_random_payload_behind_a_valid_header(payload, channels, n):
    """Forged headers that pass the cheap checks drive the payload decoder itself."""
    enc = codec.StreamEncoder(channels)
    blob = enc.encode(np.zeros((n, channels), np.int16))
    header = bytearray(blob[:codec.BLOCK_HEADER_BYTES])
    header[14:18] = len(payload).to_bytes(4, "little")
    for flags in (0x01, 0x03):  # coded keyframe, stored keyframe
        header[3] = flags
        try:
            out = decode_fresh(bytes(header) + payload, channels)
        except codec.CodecError:
            continue
        assert out.shape == (n, channels)  # the CRC made it through: the samples are real


def test_file_truncations_fail(packed_file):
    raw, packed = packed_file
    for cut in list(range(0, 64)) + list(range(64, len(packed), 97)) + [len(packed) - 1]:
        with pytest.raises(codec.CodecError):
            codec.decompress(packed[:cut])


def test_file_bit_flips_fail_or_are_harmless(packed_file):
    raw, packed = packed_file
    rng = np.random.default_rng(7)
    bits = list(range(min(len(packed), 64) * 8)) + list(rng.integers(0, len(packed) * 8, 400))
    for bit in bits:
        bad = bytearray(packed)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            out = codec.decompress(bytes(bad))
        except codec.CodecError:
            continue
        assert out == raw, f"bit {bit} gave different bytes without an error"


def test_file_appended_bytes_fail(packed_file):
    raw, packed = packed_file
    with pytest.raises(codec.CodecError):
        codec.decompress(packed + b"\0")


def test_file_claiming_a_huge_size_fails(packed_file):
    raw, packed = packed_file
    # Kind byte, then the LEB128 size: make it claim ~2^63 bytes.
    forged = packed[:5] + b"\xff" * 8 + b"\x7f" + packed[5 + 3:]
    with pytest.raises(codec.CodecError):
        codec.decompress(forged)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_as_file(data):
    with pytest.raises(codec.CodecError):
        codec.decompress(b"NWF\x01" + data)
    with pytest.raises(codec.CodecError):
        codec.decompress(data if data[:3] != b"NWF" else b"x" + data)
    with pytest.raises(codec.CodecError):
        codec.read_samples(b"NWF\x01" + data)
