"""neurowire.brainwire, the drop-in for the brainwire package: lossless blobs are ./encode's
bytes and decode to the WAV's samples; spike blobs decode to the input's length with raw
samples inside detected spikes, zero elsewhere, the recording's end included."""
import numpy as np
import pytest

from neurowire import codec
from neurowire.brainwire import Recording, decode, encode
from neurowire.brainwire.encode import detect_all
from neurowire.feeds.detect import DetectorConfig, detect

from conftest import CHALLENGE, DATA, read_wav, wav_bytes

EXCERPTS = sorted(DATA.glob("excerpt_*.wav"))


def spike_mask(samples, rate, events):
    """True where a snippet of `events` covers the (n,) recording."""
    mask = np.zeros(len(samples), bool)
    for t in events.sample:
        mask[max(0, t - events.pre):t - events.pre + events.snippets.shape[1]] = True
    return mask


def check_spike_blob(path):
    expected, rate = read_wav(path)
    expected = expected[:, 0]
    blob = encode.compress(path, spikes=True)
    got_rate, got = decode.decompress(blob)
    assert got_rate == rate
    assert got.dtype == np.int16 and got.shape == expected.shape
    events = detect_all(expected[:, None], rate, DetectorConfig())
    mask = spike_mask(expected, rate, events)
    np.testing.assert_array_equal(got, np.where(mask, expected, 0))
    return blob, events


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_lossless_is_encode_and_decodes_to_the_wav_samples(path):
    blob = encode.compress(path)
    assert blob == codec.compress(str(path))
    recording = decode.decompress(blob)
    expected, rate = read_wav(path)
    rate_first, samples = recording  # brainwire's order
    assert isinstance(recording, Recording)
    assert rate_first == recording.rate == rate
    assert samples.dtype == np.int16 and samples.ndim == 1
    np.testing.assert_array_equal(samples, expected[:, 0])


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_spike_blob_is_smaller_and_keeps_raw_samples_in_spikes(path):
    blob, _ = check_spike_blob(path)
    assert len(blob) < len(encode.compress(path))


def test_spike_at_the_very_end_is_kept(tmp_path):
    """The last samples are examined: a spike 3 samples before the end comes back."""
    rng = np.random.default_rng(5)
    rate = 19531
    samples = rng.normal(0, 30, rate).round().astype(np.int16)
    samples[-3:] = [-2000, -3000, -1500]
    path = tmp_path / "tail.wav"
    path.write_bytes(wav_bytes(samples, rate))
    _, events = check_spike_blob(path)
    assert events.sample.max() >= len(samples) - 3
    got = decode.decompress(encode.compress(path, spikes=True)).samples
    np.testing.assert_array_equal(got[-3:], samples[-3:])


def test_spike_at_the_very_start_is_kept(tmp_path):
    """The first samples too: the streaming detector's warm-up (0.1 s) is not skipped."""
    rng = np.random.default_rng(6)
    rate = 19531
    samples = rng.normal(0, 30, rate).round().astype(np.int16)
    samples[100:103] = [-2000, -3000, -1500]
    path = tmp_path / "head.wav"
    path.write_bytes(wav_bytes(samples, rate))
    assert not (detect(samples, rate).sample < 1000).any()  # the plain one is warming up
    _, events = check_spike_blob(path)
    assert 95 <= events.sample.min() <= 103
    got = decode.decompress(encode.compress(path, spikes=True)).samples
    np.testing.assert_array_equal(got[100:103], samples[100:103])


def test_options_and_errors(tmp_path):
    path = EXCERPTS[0]
    loose = encode.compress(path, spikes=True, threshold=3.0)
    strict = encode.compress(path, spikes=True, threshold=8.0)
    assert len(loose) > len(strict)
    with pytest.raises(ValueError, match="spikes=True"):
        encode.compress(path, threshold=3.0)
    with pytest.raises(FileNotFoundError):
        encode.compress(tmp_path / "missing.wav")
    blob = encode.compress(path, spikes=True)
    with pytest.raises(ValueError, match="header"):
        decode.decompress(blob[:7])
    with pytest.raises(ValueError, match="version"):
        decode.decompress(blob[:4] + b"\x09" + blob[5:])
    with pytest.raises(ValueError, match="CRC"):
        decode.decompress(blob[:len(blob) // 2])
    for position in range(17, len(blob), max(1, len(blob) // 40)):  # any flipped byte
        damaged = bytearray(blob)
        damaged[position] ^= 0x20
        with pytest.raises(ValueError, match="CRC"):
            decode.decompress(bytes(damaged))
    with pytest.raises(codec.CodecError):
        decode.decompress(encode.compress(path)[:-10])


@pytest.mark.challenge
@pytest.mark.slow
def test_challenge_recordings():
    paths = sorted(CHALLENGE.glob("*.wav"))
    if not paths:
        pytest.skip("challenge recordings not present")
    lossless = spikes = 0
    for i, path in enumerate(paths):
        blob = encode.compress(path)
        rate, samples = decode.decompress(blob)
        expected, expected_rate = read_wav(path)
        assert rate == expected_rate
        np.testing.assert_array_equal(samples, expected[:, 0])
        lossless += len(blob)
        if i % 10 == 0:  # the spike path on every tenth recording
            spike_blob, _ = check_spike_blob(path)
            spikes += len(spike_blob)
    assert spikes < lossless / 10
