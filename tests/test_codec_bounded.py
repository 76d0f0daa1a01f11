"""Bounded-error coding (max_error=k): every decoded sample within k of the original."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurowire.codec import (MAX_ERROR_LIMIT, CorruptStreamError, StreamDecoder, StreamEncoder,
                             block_info, grid_values)

GRID = grid_values().astype(np.int64)
CODE_OF = {int(v): k for k, v in enumerate(GRID)}


def within_bound(original, decoded, k):
    """The documented guarantee: k ADC codes for on-grid samples coded on the grid, k units
    of the value otherwise (off-grid channels; escaped samples come back exact)."""
    original = original.astype(np.int64).ravel()
    decoded = decoded.astype(np.int64).ravel()
    for o, d in zip(original, decoded):
        if abs(o - d) <= k:
            continue
        if o in CODE_OF and d in CODE_OF and abs(CODE_OF[o] - CODE_OF[d]) <= k:
            continue
        return False
    return True


def roundtrip(blocks, k, keyframes=()):
    enc, dec = StreamEncoder(blocks[0].shape[1], max_error=k), StreamDecoder(blocks[0].shape[1])
    out = []
    for i, block in enumerate(blocks):
        blob = enc.encode(block, keyframe=i in keyframes)
        assert block_info(blob).max_error == k
        out.append(dec.decode(blob))
    return np.concatenate(out)


def grid_walk(rng, n, channels, spread=40):
    codes = 512 + np.cumsum(rng.integers(-3, 4, size=(n, channels)), axis=0)
    codes = np.clip(codes + rng.integers(-spread, spread + 1, size=(n, channels)), 0, 1023)
    return GRID[codes].astype(np.int16)


@pytest.mark.parametrize("k", [1, 2, 4, 17, MAX_ERROR_LIMIT])
def test_grid_signal_error_in_codes_never_exceeds_k(k):
    rng = np.random.default_rng(k)
    samples = grid_walk(rng, 3000, 3)
    blocks = np.array_split(samples, 7)
    decoded = roundtrip(blocks, k, keyframes={3})
    codes = np.vectorize(CODE_OF.get)
    error = codes(decoded.astype(np.int64)) - codes(samples.astype(np.int64))
    assert np.abs(error).max() <= k
    assert np.abs(error).max() > 0          # it is really lossy, not lossless in disguise


def test_bounded_error_pays_and_lossless_is_unchanged():
    rng = np.random.default_rng(1)
    samples = grid_walk(rng, 20000, 2)
    sizes = {}
    for k in (0, 1, 4):
        enc = StreamEncoder(2, max_error=k)
        sizes[k] = len(enc.encode(samples))
    assert sizes[4] < sizes[1] < sizes[0]
    np.testing.assert_array_equal(roundtrip([samples], 0), samples)


def test_stored_bounded_block_decodes_exactly():
    # Full-scale noise never codes smaller than raw: the block is stored, hence exact.
    samples = np.random.default_rng(2).integers(-32768, 32768, size=(500, 4)).astype(np.int16)
    enc, dec = StreamEncoder(4, max_error=1), StreamDecoder(4)
    blob = enc.encode(samples)
    if block_info(blob).stored:
        np.testing.assert_array_equal(dec.decode(blob), samples)
    else:
        assert within_bound(samples, dec.decode(blob), 1)


def test_corrupt_bounded_block_is_reported():
    samples = grid_walk(np.random.default_rng(3), 2000, 1)
    blob = bytearray(StreamEncoder(1, max_error=2).encode(samples))
    blob[len(blob) // 2] ^= 0x10
    with pytest.raises(CorruptStreamError):
        StreamDecoder(1).decode(bytes(blob))


@pytest.mark.parametrize("bad", [-1, MAX_ERROR_LIMIT + 1, 1.5, True])
def test_max_error_argument_checked(bad):
    with pytest.raises((ValueError, TypeError)):
        StreamEncoder(1, max_error=bad)


values = st.one_of(
    st.integers(-32768, 32767),
    st.sampled_from([int(v) for v in GRID]),
)


@settings(deadline=None)
@given(data=st.data(), k=st.integers(0, MAX_ERROR_LIMIT), channels=st.integers(1, 6),
       n=st.integers(1, 200))
def test_error_bound_holds_for_any_signal_split_and_keyframes(data, k, channels, n):
    flat = data.draw(st.lists(values, min_size=n * channels, max_size=n * channels))
    samples = np.array(flat, dtype=np.int16).reshape(n, channels)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4)))
    blocks = [b for b in np.split(samples, cuts) if len(b)]
    keyframes = data.draw(st.sets(st.integers(0, len(blocks) - 1), max_size=2))
    decoded = roundtrip(blocks, k, keyframes)
    assert decoded.shape == samples.shape
    assert within_bound(samples, decoded, k)
