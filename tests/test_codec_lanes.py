"""The lane block format (version 2): channels side by side, interleaved range coders.

Every code path (scalar C, SSE2, the AVX2 and AVX-512 builds) must write the same bytes and decode them
exactly; streams of either version decode with one StreamDecoder; damaged lane blocks are
refused with the right error. Speed is measured by `neurowire bench codec`, not here.
"""
import glob
from pathlib import Path

import numpy as np
import pytest

from neurowire import codec

LANES = codec.LANE_FORMAT_VERSION
V1 = codec.FORMAT_VERSION
DATA = Path(__file__).resolve().parent / "data"
CHALLENGE = sorted(glob.glob(str(DATA.parents[2] / "shared" / "data" / "challenge" / "*.wav")))


def simd_levels():
    levels = []
    for level in ("scalar", "sse2", "avx2", "avx512"):   # those this CPU has
        try:
            codec.set_simd(level)
            levels.append(level)
        except ValueError:
            pass
    codec.set_simd("auto")
    return levels


LEVELS = simd_levels()


@pytest.fixture(autouse=True)
def restore_simd():
    yield
    codec.set_simd("auto")


def grid_walk(rng, n, channels, offgrid=0.0):
    """Random walks on the ADC grid (what the recordings look like to the model), with a
    fraction of values nudged off it (escapes) and a few spikes (big residuals)."""
    grid = codec.grid_values()
    steps = rng.integers(-4, 5, size=(n, channels))
    steps[rng.random((n, channels)) < 0.01] *= 60
    codes = np.clip(np.cumsum(steps, axis=0) + rng.integers(300, 700, channels), 0, 1023)
    samples = grid[codes].astype(np.int16)
    off = rng.random((n, channels)) < offgrid
    samples[off] += 1
    return samples


def encode_stream(samples, lengths, keyframes, max_error=0, level="auto", version=LANES):
    codec.set_simd(level)
    enc = codec.StreamEncoder(samples.shape[1], max_error=max_error, format_version=version)
    blocks, start = [], 0
    for length, key in zip(lengths, keyframes):
        blocks.append(enc.encode(samples[start:start + length], keyframe=key))
        start += length
    return blocks, enc


def decode_stream(blocks, channels, level="auto"):
    codec.set_simd(level)
    dec = codec.StreamDecoder(channels)
    return np.concatenate([dec.decode(b) for b in blocks])


def assert_every_level_matches_scalar(samples, lengths, keyframes):
    """Lossless streams: every SIMD level writes the scalar code's bytes and decodes them."""
    reference, _ = encode_stream(samples, lengths, keyframes, level="scalar")
    for level in LEVELS:
        blocks, _ = encode_stream(samples, lengths, keyframes, level=level)
        assert blocks == reference, level
        np.testing.assert_array_equal(decode_stream(reference, samples.shape[1], level), samples)


def random_plan(rng, total):
    lengths = []
    while sum(lengths) < total:
        lengths.append(int(min(rng.integers(1, 25), total - sum(lengths))))
    keyframes = [i == 0 or bool(rng.random() < 0.2) for i in range(len(lengths))]
    return lengths, keyframes


# 32, 33 and 100 channels too: rows of 64, 66 and 200 bytes, around the shortest that the
# AVX2 level's folding CRC takes
@pytest.mark.parametrize("channels", [1, 7, 8, 9, 15, 16, 17, 32, 33, 100, 1023, 1024, 4096])
def test_every_simd_level_writes_the_same_bytes(channels):
    rng = np.random.default_rng(channels)
    n = 60 if channels <= 1024 else 12
    samples = grid_walk(rng, n, channels, offgrid=0.002)
    if channels > 2:   # one channel off the grid: the linear domain, in a group of grid ones
        samples[:, 2] = rng.integers(-3000, 3000, n)
    lengths, keyframes = random_plan(rng, n)
    reference, _ = encode_stream(samples, lengths, keyframes, level="scalar")
    assert all(b[2] == LANES for b in reference)
    for level in LEVELS:
        blocks, _ = encode_stream(samples, lengths, keyframes, level=level)
        assert blocks == reference, level
        np.testing.assert_array_equal(decode_stream(reference, channels, level), samples)


@pytest.mark.parametrize("channels", [1, 7, 8, 9, 15, 16, 17, 1023, 1024])
def test_every_simd_level_matches_scalar_at_random_plans(channels):
    """Random block lengths, keyframes and max_error (0 most often: the whole-group steps of
    the AVX2 and AVX-512 builds) for each channel count; one block longer than the AVX2
    predictor's ring of tap pairs holds between two moves (pair_ring, 48 time steps)."""
    rng = np.random.default_rng(1000 + channels)
    n = 140 if channels <= 17 else 40
    samples = grid_walk(rng, n, channels, offgrid=0.003)
    long = 100 if channels <= 17 else 0
    lengths, keyframes = random_plan(rng, n - long)
    if long:
        lengths, keyframes = [long] + lengths, [True] + keyframes
    max_error = int(rng.choice([0, 0, 1, 2]))
    reference, _ = encode_stream(samples, lengths, keyframes, max_error, level="scalar")
    rebuilt = decode_stream(reference, channels, "scalar")
    for level in LEVELS:
        blocks, _ = encode_stream(samples, lengths, keyframes, max_error, level=level)
        assert blocks == reference, (level, max_error)
        np.testing.assert_array_equal(decode_stream(reference, channels, level), rebuilt)


# spikes 1.0: every code at random, big residuals on most samples
@pytest.mark.parametrize("offgrid, spikes", [(0.0, 0.0), (0.05, 0.0), (0.0, 0.2), (0.02, 0.05), (0.0, 1.0)])
def test_whole_grid_groups_write_the_same_bytes_on_every_level(offgrid, spikes):
    """Groups of eight grid channels, where the AVX2 build codes a time step with the model's
    lane-wise part for all eight at once: escapes, big residuals, the grid's first and last
    codes and quiet channels (the lowest contexts) in them must change nothing."""
    rng = np.random.default_rng(int(100 * offgrid + 10 * spikes))
    channels, n = 64, 90
    samples = grid_walk(rng, n, channels, offgrid=offgrid)
    grid = codec.grid_values()
    big = rng.random((n, channels)) < spikes
    samples[big] = grid[rng.integers(0, 1024, big.sum())]
    samples[:, 8] = grid[0]
    samples[::3, 9] = grid[-1]
    samples[:, 10] = grid[512]
    lengths, keyframes = random_plan(rng, n)
    assert_every_level_matches_scalar(samples, lengths, keyframes)


def test_every_activity_context_in_whole_grid_steps_on_every_level():
    """The grid steps of the AVX2 and AVX-512 builds carry each lane's activity from one
    time step to the next and find its context by comparing it with the contexts' bounds:
    channels whose steps range from none to ±40 codes sweep the activity across all twelve
    contexts, up and down, in whole groups."""
    rng = np.random.default_rng(12)
    channels, n = 48, 400
    grid = codec.grid_values()
    amplitude = np.arange(channels) % 41
    # each channel's amplitude rises and falls along the stream, so its activity passes
    # every bound in both directions
    swing = (np.sin(np.linspace(0, 3 * np.pi, n))[:, None] ** 2 * amplitude[None, :]).round().astype(int)
    steps = rng.integers(-1, 2, size=(n, channels)) * swing
    codes = np.clip(512 + np.cumsum(steps, axis=0), 0, 1023)
    samples = grid[codes].astype(np.int16)
    lengths, keyframes = random_plan(rng, n)
    assert_every_level_matches_scalar(samples, lengths, keyframes)


def test_counts_halved_inside_whole_grid_steps_on_every_level():
    """A context's counts are halved once their total passes the model's limit (60000, 12 a
    sample): after ~5000 samples of a channel that stays in one context. Quiet grid channels
    stay in the lowest one, so 12000 time steps of two whole groups halve every channel's
    counts twice inside the grid steps (the AVX-512 build counts a step's lanes at once, and
    halves the rows that pass the limit after it); a few escapes and spikes in one group
    send some of its lanes through the model's general path in the same steps."""
    rng = np.random.default_rng(11)
    channels, n = 16, 12000
    grid = codec.grid_values()
    codes = 500 + np.cumsum(rng.integers(-1, 2, size=(n, channels)) * (rng.random((n, channels)) < 0.05), axis=0)
    samples = grid[np.clip(codes, 0, 1023)].astype(np.int16)
    samples[:, 0:8:3] = grid[300]                       # constant: residual 0 on every sample
    odd = rng.random((n, 8)) < 0.002
    samples[:, 8:][odd] += 1                            # escapes
    samples[::997, 12] = grid[1000]                     # big residuals
    lengths, keyframes = random_plan(rng, n)
    keyframes = [i == 0 for i in range(len(lengths))]   # one state for the whole stream
    assert_every_level_matches_scalar(samples, lengths, keyframes)


@pytest.mark.parametrize("max_error", [1, 3])
def test_bounded_error_is_the_same_on_every_level_and_within_k(max_error):
    rng = np.random.default_rng(max_error)
    channels, n = 21, 80
    samples = grid_walk(rng, n, channels, offgrid=0.01)
    samples[:, 5] = rng.integers(-20000, 20000, n)    # linear domain: k units of the value
    lengths, keyframes = random_plan(rng, n)
    reference, _ = encode_stream(samples, lengths, keyframes, max_error, level="scalar")
    grid = codec.grid_values().astype(np.int64)
    for level in LEVELS:
        blocks, _ = encode_stream(samples, lengths, keyframes, max_error, level=level)
        assert blocks == reference, level
        decoded = decode_stream(blocks, channels, level)
        # Channel 5 is in the linear domain (k units of the value); the others are on the
        # grid (k codes, escapes exact) unless a short keyframe block with an escape put
        # them in the linear domain too: each sample must satisfy one of the two.
        original, back = samples.astype(np.int64), decoded.astype(np.int64)
        within_units = np.abs(back - original) <= max_error
        assert within_units[:, 5].all()
        codes_apart = np.abs(np.searchsorted(grid, back) - np.searchsorted(grid, original))
        on_grid = np.isin(original, grid)
        within_codes = np.where(on_grid, codes_apart <= max_error, back == original)
        assert (within_units | within_codes).all()


@pytest.mark.skipif(not CHALLENGE, reason="challenge recordings not present")
def test_real_recordings_round_trip_and_keep_their_ratio():
    from neurowire.codec import read_samples
    signals = [read_samples(path).samples[:, 0] for path in CHALLENGE[:48]]
    n = min(len(s) for s in signals[:48])
    samples = np.stack([signals[c % len(signals)][:n][:400] for c in range(96)], axis=1)
    lengths, keyframes = [10] * 40, [True] + [False] * 39
    sizes = {}
    for version in (V1, LANES):
        blocks, _ = encode_stream(samples, lengths, keyframes, version=version)
        np.testing.assert_array_equal(decode_stream(blocks, 96), samples)
        sizes[version] = sum(map(len, blocks))
    # the budget of issue 11: the lane format within 0.2 % of version 1's size
    assert sizes[LANES] <= sizes[V1] * 1.002


def test_noise_is_stored_and_silence_costs_what_version_1_does():
    rng = np.random.default_rng(3)
    noise = rng.integers(-32768, 32768, size=(10, 9), dtype=np.int16)
    blocks, _ = encode_stream(np.concatenate([noise, noise]), [10, 10], [True, False])
    assert codec.block_info(blocks[0]).stored and codec.block_info(blocks[1]).stored
    assert len(blocks[0]) == codec.BLOCK_HEADER_BYTES + 2 + noise.nbytes
    np.testing.assert_array_equal(decode_stream(blocks, 9), np.concatenate([noise, noise]))
    silence = np.zeros((20, 64), np.int16)
    blocks, _ = encode_stream(silence, [20], [True])
    v1_blocks, _ = encode_stream(silence, [20], [True], version=V1)
    assert not codec.block_info(blocks[0]).stored
    # the same model: only the coders' flushes differ (and the lane one has no delayed update)
    assert abs(len(blocks[0]) - len(v1_blocks[0])) <= 4 * codec.LANE_CODERS
    np.testing.assert_array_equal(decode_stream(blocks, 64), silence)


def test_channel_bytes_add_up_to_the_coded_bytes():
    rng = np.random.default_rng(4)
    samples = grid_walk(rng, 200, 24)
    blocks, enc = encode_stream(samples, [20] * 10, [True] + [False] * 9)
    per_channel = enc.channel_bytes()
    payload = sum(len(b) - codec.BLOCK_HEADER_BYTES for b in blocks) - 3   # keyframe bitmap
    assert per_channel.shape == (24,) and (per_channel > 0).all()
    # each coder's 4 flush bytes per block are nobody's (and some trailing zeros are dropped)
    assert payload - 4 * codec.LANE_CODERS * len(blocks) <= per_channel.sum() <= payload


def test_one_decoder_reads_both_versions_and_switches_at_keyframes():
    rng = np.random.default_rng(5)
    samples = grid_walk(rng, 40, 12)
    v1_blocks, _ = encode_stream(samples[:20], [10, 10], [True, False], version=V1)
    lane_blocks, _ = encode_stream(samples[20:], [10, 10], [True, False])
    dec = codec.StreamDecoder(12)
    decoded = np.concatenate([dec.decode(b) for b in v1_blocks + lane_blocks])
    np.testing.assert_array_equal(decoded, samples)
    assert [codec.block_info(b).index for b in v1_blocks + lane_blocks] == [0, 1, 0, 1]
    # a non-keyframe of the other version cannot follow: its state is not there
    dec = codec.StreamDecoder(12)
    dec.decode(v1_blocks[0])
    with pytest.raises(codec.NeedKeyframeError):
        dec.decode(lane_blocks[1])


@pytest.fixture(scope="module")
def lane_stream():
    rng = np.random.default_rng(6)
    samples = grid_walk(rng, 60, 19, offgrid=0.01)
    blocks, _ = encode_stream(samples, [20, 20, 20], [True, False, False])
    return samples, blocks


def test_truncated_lane_blocks_are_refused(lane_stream):
    _, blocks = lane_stream
    for cut in range(len(blocks[0])):
        with pytest.raises(codec.CorruptStreamError):
            codec.StreamDecoder(19).decode(blocks[0][:cut])


def test_damaged_lane_blocks_are_refused_never_decoded_wrong(lane_stream):
    samples, blocks = lane_stream
    rng = np.random.default_rng(7)
    block = bytearray(blocks[0])
    for _ in range(300):
        damaged = bytearray(block)
        at = int(rng.integers(codec.BLOCK_HEADER_BYTES, len(block)))
        damaged[at] ^= 1 << int(rng.integers(0, 8))
        dec = codec.StreamDecoder(19)
        try:
            out = dec.decode(bytes(damaged))
        except codec.CodecError as err:
            assert isinstance(err, codec.CorruptStreamError), err
        else:   # only a flip the CRC cannot see may pass, and then the samples are right
            np.testing.assert_array_equal(out, samples[:20])


def test_bytes_after_the_coded_ones_are_damage(lane_stream):
    _, blocks = lane_stream
    block = bytearray(blocks[0] + b"\x00\x17")
    payload = int.from_bytes(block[14:18], "little") + 2
    block[14:18] = payload.to_bytes(4, "little")
    with pytest.raises(codec.CorruptStreamError):
        codec.StreamDecoder(19).decode(bytes(block))


def test_lane_blocks_in_sequence_only(lane_stream):
    _, blocks = lane_stream
    dec = codec.StreamDecoder(19)
    dec.decode(blocks[0])
    with pytest.raises(codec.SequenceError):
        dec.decode(blocks[2])
    with pytest.raises(codec.NeedKeyframeError):
        dec.decode(blocks[1])


def test_group_coders_use_the_lane_format():
    rng = np.random.default_rng(8)
    samples = grid_walk(rng, 40, 50)
    groups = [17, 33]
    with_team = codec.CodecTeam(2)
    enc = codec.GroupEncoder(groups, with_team, format_version=LANES)
    dec = codec.GroupDecoder(groups, with_team)
    for start in range(0, 40, 10):
        blobs = enc.encode(samples[start:start + 10], keyframe=start == 0)
        assert all(b[2] == LANES for b in blobs)
        np.testing.assert_array_equal(dec.decode(blobs), samples[start:start + 10])


def test_set_simd_names_the_level_in_use():
    assert codec.set_simd("scalar") == "scalar"
    assert codec.set_simd("auto") in LEVELS
    with pytest.raises(ValueError):
        codec.set_simd("neon")


def test_format_version_argument_is_checked():
    with pytest.raises(ValueError):
        codec.StreamEncoder(4, format_version=3)
