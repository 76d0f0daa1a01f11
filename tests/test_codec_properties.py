"""Property tests: any shape, split and keyframe placement round-trips exactly.

Large arrays come from a seeded generator (hypothesis draws the seed and the kind of
signal) because drawing tens of thousands of elements one by one is slow and shrinks
poorly; small arrays are drawn element by element so failures shrink to a few values.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neurowire import codec

KINDS = ["uniform", "grid", "constant", "walk", "extremes", "grid_walk", "sparse_off_grid"]

GRID = np.load(__import__("conftest").DATA / "grid_values.npy").astype(np.int16)


def make_signal(kind, n, channels, seed):
    rng = np.random.default_rng(seed)
    shape = (n, channels)
    if kind == "uniform":
        return rng.integers(-32768, 32768, size=shape, dtype=np.int16)
    if kind == "grid":
        return GRID[rng.integers(0, len(GRID), size=shape)]
    if kind == "constant":
        return np.full(shape, rng.integers(-32768, 32768), dtype=np.int16)
    if kind == "walk":
        steps = rng.integers(-300, 301, size=shape)
        return np.clip(np.cumsum(steps, axis=0), -32768, 32767).astype(np.int16)
    if kind == "extremes":
        return rng.choice(np.array([-32768, 32767, 0, -1], dtype=np.int16), size=shape)
    if kind == "grid_walk":  # realistic: a slow walk over ADC codes
        codes = np.clip(512 + np.cumsum(rng.integers(-3, 4, size=shape), axis=0), 0, len(GRID) - 1)
        return GRID[codes]
    if kind == "sparse_off_grid":  # on the grid but for a few values, escaped one by one
        x = GRID[rng.integers(400, 600, size=shape)]
        mask = rng.random(shape) < 0.03
        x[mask] = rng.integers(-32768, 32768, size=int(mask.sum()), dtype=np.int16)
        return x
    raise AssertionError(kind)


@st.composite
def streams(draw, max_channels=64, max_block=300, max_blocks=6):
    """(samples (n, channels), [(start, stop, keyframe)]) covering all of the samples."""
    channels = draw(st.integers(1, max_channels))
    n_blocks = draw(st.integers(1, max_blocks))
    lengths = draw(st.lists(st.integers(1, max_block), min_size=n_blocks, max_size=n_blocks))
    n = sum(lengths)
    if n * channels <= 64 and draw(st.booleans()):
        samples = draw(hnp.arrays(np.int16, (n, channels)))
    else:
        kind = draw(st.sampled_from(KINDS))
        samples = make_signal(kind, n, channels, draw(st.integers(0, 2**32 - 1)))
    keys = draw(st.lists(st.booleans(), min_size=n_blocks, max_size=n_blocks))
    blocks, start = [], 0
    for length, key in zip(lengths, keys):
        blocks.append((start, start + length, key))
        start += length
    return samples, blocks


def check_stream(samples, blocks):
    channels = samples.shape[1]
    enc, dec = codec.StreamEncoder(channels), codec.StreamDecoder(channels)
    decoded = []
    for i, (start, stop, key) in enumerate(blocks):
        part = samples[start:stop]
        blob = enc.encode(part, keyframe=key)
        info = codec.block_info(blob)
        assert info.keyframe == (key or i == 0)
        assert info.n_samples == stop - start and info.channels == channels
        # Never worse than storing: header + domain bitmap on keyframes + raw samples.
        assert len(blob) <= codec.BLOCK_HEADER_BYTES + (channels + 7) // 8 + part.nbytes
        decoded.append(dec.decode(blob))
    np.testing.assert_array_equal(np.concatenate(decoded), samples)


@given(streams())
def test_stream_roundtrip(stream):
    check_stream(*stream)


@given(streams(max_channels=4, max_block=40, max_blocks=12))
def test_many_small_blocks_roundtrip(stream):
    check_stream(*stream)


@settings(max_examples=5)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1),
       block=st.sampled_from([1, 10, 20, 33]))
def test_1024_channels_roundtrip(kind, seed, block):
    samples = make_signal(kind, 3 * block, 1024, seed)
    check_stream(samples, [(0, block, False), (block, 2 * block, False),
                           (2 * block, 3 * block, True)])


@given(streams(max_channels=8, max_block=100, max_blocks=4), st.integers(0, 3))
def test_decoder_resumes_at_any_keyframe(stream, skip):
    """A late joiner that starts at a keyframe gets exactly the samples from there on."""
    samples, blocks = stream
    channels = samples.shape[1]
    enc = codec.StreamEncoder(channels)
    blobs = [enc.encode(samples[a:b], keyframe=k) for a, b, k in blocks]
    first = min(skip, len(blocks) - 1)
    keyed = [i for i in range(first, len(blocks)) if blocks[i][2] or i == 0]
    if not keyed:
        return
    start = keyed[0]
    dec = codec.StreamDecoder(channels)
    out = np.concatenate([dec.decode(b) for b in blobs[start:]])
    np.testing.assert_array_equal(out, samples[blocks[start][0]:])


@given(st.binary(max_size=3000))
def test_file_roundtrip_any_bytes(raw):
    packed = codec.compress_bytes(raw)
    assert codec.decompress(packed) == raw


@pytest.mark.parametrize("channels", [1, 2, 5])
@given(data=st.data())
def test_wav_file_roundtrip(channels, data):
    from conftest import wav_bytes
    n = data.draw(st.integers(0, 500))
    kind = data.draw(st.sampled_from(KINDS))
    samples = make_signal(kind, n, channels, data.draw(st.integers(0, 2**32 - 1)))
    raw = wav_bytes(samples)
    packed = codec.compress_bytes(raw)
    assert codec.decompress(packed) == raw
    read = codec.read_samples(packed)
    got, rate = read.samples, read.rate
    assert rate == 19531
    np.testing.assert_array_equal(got, samples.reshape(n, channels))


@pytest.mark.parametrize("kind", KINDS)
def test_long_wav_file_roundtrip(kind):
    """Past 2,048 frames file container version 4's second predictor joins in (in both
    domains, and on signals as wild as full-scale noise and rail-to-rail jumps): still exact."""
    from conftest import wav_bytes
    samples = make_signal(kind, 5000, 2, 7)
    raw = wav_bytes(samples)
    packed = codec.compress_bytes(raw)
    assert packed[3] == codec.FILE_FORMAT_VERSION
    assert codec.decompress(packed) == raw
