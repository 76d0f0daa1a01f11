"""Round trips on real recordings: block streams and whole files, byte-exact."""
import numpy as np
import pytest

from conftest import EXCERPTS, challenge_paths, read_wav, tile_channels
from neurowire import codec


def stream_roundtrip(samples, block, keyframe_every=0):
    """Encodes `samples` (n, channels) in blocks of `block` time steps, decodes them with
    a separate decoder, and returns (decoded, total compressed bytes)."""
    channels = samples.shape[1]
    enc, dec = codec.StreamEncoder(channels), codec.StreamDecoder(channels)
    out = np.empty_like(samples)
    total = 0
    for i, start in enumerate(range(0, len(samples), block)):
        part = samples[start:start + block]
        key = keyframe_every > 0 and i % keyframe_every == 0
        blob = enc.encode(part, keyframe=key)
        info = codec.block_info(blob)
        assert (info.channels, info.n_samples, info.block_bytes) == (channels, len(part), len(blob))
        assert info.keyframe == (key or i == 0)
        if not keyframe_every:
            assert info.index == i
        total += len(blob)
        out[start:start + len(part)] = dec.decode(blob)
    return out, total


@pytest.mark.parametrize("block", [10, 20])
def test_excerpts_as_channels_stream(excerpts, block):
    # 3 excerpts tiled into 96 channels: a small multi-channel stream of real data.
    samples = tile_channels(list(excerpts.values()), 96, 4000)
    decoded, total = stream_roundtrip(samples, block)
    np.testing.assert_array_equal(decoded, samples)
    assert total < samples.nbytes  # real data must compress, even in tiny blocks


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_excerpt_single_channel_with_keyframes(path):
    samples = read_wav(path)[0]
    decoded, _ = stream_roundtrip(samples, 250, keyframe_every=7)
    np.testing.assert_array_equal(decoded, samples)


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_excerpt_file_roundtrip(path):
    raw = path.read_bytes()
    packed = codec.compress(path)
    assert packed == codec.compress_bytes(raw)
    assert codec.decompress(packed) == raw
    assert len(packed) < len(raw)
    read = codec.read_samples(packed)
    samples, rate = read.samples, read.rate
    expected, expected_rate = read_wav(path)
    assert rate == expected_rate == 19531
    assert samples.dtype == np.int16 and samples.shape == expected.shape
    np.testing.assert_array_equal(samples, expected)
    # read_samples takes a path too, of a compressed or a plain WAV file.
    np.testing.assert_array_equal(codec.read_samples(path).samples, expected)


# ---- the whole challenge set, when ../shared/data/challenge is there -------------------

@pytest.mark.challenge
@pytest.mark.parametrize("block", [10, 20])
def test_challenge_stack_stream(challenge_stack, block):
    decoded, total = stream_roundtrip(challenge_stack, block)
    np.testing.assert_array_equal(decoded, challenge_stack)
    assert total < challenge_stack.nbytes / 2


@pytest.mark.challenge
def test_challenge_1024_channels(challenge_stack):
    recs = [challenge_stack[:, c] for c in range(challenge_stack.shape[1])]
    samples = tile_channels(recs, 1024, 2000, seed=1)
    for block in (10, 20):
        decoded, _ = stream_roundtrip(samples, block)
        np.testing.assert_array_equal(decoded, samples)


@pytest.mark.challenge
def test_challenge_files_roundtrip(challenge_files):
    total_raw = total_packed = 0
    for path in challenge_files:
        raw = path.read_bytes()
        packed = codec.compress_bytes(raw)
        assert codec.decompress(packed) == raw, path.name
        total_raw += len(raw)
        total_packed += len(packed)
    assert total_packed < total_raw / 2


def test_challenge_skips_cleanly_when_absent(monkeypatch, tmp_path):
    # The suite must pass on a clone without ../shared: the fixture then finds nothing.
    import conftest
    monkeypatch.setattr(conftest, "CHALLENGE", tmp_path / "absent")
    assert challenge_paths() == []
