"""Hostile calls into the Python API (neurowire.codec and the brainwire drop-in): strided
buffers decode as their contiguous copies would; an int, None, float or str where bytes are
expected is a TypeError saying so (never `bytes(5)`'s five zero bytes); masked arrays are
refused; a spike blob's header must agree with its CRC-covered message; every
DetectorConfig field is range-checked."""
import math
import struct

import numpy as np
import pytest

pytest.importorskip("neurowire.codec")

from neurowire import codec  # noqa: E402
from neurowire.brainwire import decode, encode  # noqa: E402
from neurowire.brainwire._format import pack_spikes_blob  # noqa: E402
from neurowire.feeds.detect import DETECTOR_RANGES, DetectorConfig, Events  # noqa: E402
from neurowire.feeds.spikes import pack_spikes  # noqa: E402

from conftest import DATA, wav_bytes  # noqa: E402

EXCERPT = sorted(DATA.glob("*.wav"))[0]


@pytest.fixture(scope="module")
def wav():
    return EXCERPT.read_bytes()


@pytest.fixture(scope="module")
def blob(wav):
    return codec.compress_bytes(wav)


def strided_copies(data: bytes):
    """The same bytes as a stepped memoryview, a stepped array, a column of a 2-D array and
    a view walked backwards twice."""
    doubled = np.frombuffer(data, np.uint8).repeat(2)
    backwards = np.frombuffer(data[::-1], np.uint8).repeat(2)[::-2]
    return {"memoryview[::2]": memoryview(doubled)[::2], "ndarray[::2]": doubled[::2],
            "backwards": backwards,
            "2-D column": np.frombuffer(data, np.uint8).reshape(-1, 1).repeat(2, 1)[:, 0]}


@pytest.mark.parametrize("form", ["memoryview[::2]", "ndarray[::2]", "backwards", "2-D column"])
def test_strided_buffers_decode_like_their_bytes(wav, blob, form):
    view = strided_copies(blob)[form]
    assert codec.decompress(view) == wav
    expected = codec.read_samples(blob)
    got = codec.read_samples(view)
    np.testing.assert_array_equal(got.samples, expected.samples)
    recording = decode.decompress(view)
    np.testing.assert_array_equal(recording.samples, decode.decompress(blob).samples)
    assert codec.compress_bytes(strided_copies(wav)[form]) == blob
    np.testing.assert_array_equal(codec.read_samples(strided_copies(wav)[form]).samples,
                                  expected.samples)


def test_strided_stream_blocks_decode(blob):
    samples = (np.arange(4000, dtype=np.int16) % 97).reshape(-1, 4)
    block = codec.StreamEncoder(4).encode(samples, keyframe=True)
    doubled = np.frombuffer(block, np.uint8).repeat(2)[::2]
    np.testing.assert_array_equal(codec.StreamDecoder(4).decode(doubled), samples)
    assert codec.block_info(doubled) == codec.block_info(block)
    strided = np.repeat(samples, 2, axis=1)[:, ::2]
    assert codec.StreamEncoder(4).encode(strided, keyframe=True) == block


def test_an_int16_array_is_taken_as_its_bytes(wav, blob):
    # Any buffer is bytes: a wider item size must not make len() count items.
    assert len(wav) % 2 == 0
    as_int16 = np.frombuffer(wav, np.int16)
    assert codec.compress_bytes(as_int16) == blob
    assert codec.compress_bytes(np.repeat(as_int16, 2)[::2]) == blob  # stepped
    np.testing.assert_array_equal(codec.read_samples(as_int16).samples,
                                  codec.read_samples(wav).samples)


NOT_BYTES = [5, 0, None, 1.5, math.nan, "RIFF....WAVE", ["R", "I"], object(), np.int64(5),
             np.float32(1.5)]


@pytest.mark.parametrize("value", NOT_BYTES, ids=repr)
@pytest.mark.parametrize("call", [codec.decompress, codec.compress_bytes, codec.block_info,
                                  codec.read_samples, decode.decompress,
                                  lambda data: codec.StreamDecoder(1).decode(data)],
                         ids=["decompress", "compress_bytes", "block_info", "read_samples",
                              "brainwire.decompress", "StreamDecoder.decode"])
def test_non_bytes_are_a_type_error_naming_the_type(call, value):
    if call is codec.read_samples and isinstance(value, str):
        return  # read_samples takes a path as well: a str is one
    with pytest.raises(TypeError) as error:
        call(value)
    message = str(error.value)
    assert "bytes-like" in message or "path" in message
    assert type(value).__name__ in message


def test_masked_arrays_are_refused(wav):
    masked_bytes = np.ma.masked_array(np.frombuffer(wav, np.uint8), mask=False)
    for call in (codec.compress_bytes, codec.decompress, decode.decompress,
                 codec.read_samples):
        with pytest.raises(TypeError, match="masked array"):
            call(masked_bytes)
    samples = np.ma.masked_array(np.zeros((10, 2), np.int16), mask=False)
    with pytest.raises(TypeError, match="masked array"):
        codec.StreamEncoder(2).encode(samples)
    with pytest.raises(TypeError, match="masked array"):
        codec.GroupEncoder([2]).encode(samples)


def with_n_samples(blob: bytes, n_samples: int) -> bytes:
    """The blob with its header's n_samples (outside the CRC) replaced."""
    return blob[:5] + struct.pack("<Q", n_samples) + blob[13:]


@pytest.mark.parametrize("n_samples", [0, 1, 2**20, 2**40, 2**64 - 1])
def test_spike_blob_length_must_match_its_crc_covered_message(n_samples):
    blob = encode.compress(EXCERPT, spikes=True)
    true_n = struct.unpack_from("<Q", blob, 5)[0]
    if n_samples == true_n:
        return
    with pytest.raises(ValueError, match="header says"):
        decode.decompress(with_n_samples(blob, n_samples))
    assert len(decode.decompress(blob).samples) == true_n


@pytest.mark.parametrize("n_samples, channels, rate", [
    (2**40, 1, 20000), (1000, 10**6, 20000), (2**31, 4, 20000), (100, 1, 0), (100, 1, -5),
    (100, 1, math.nan)])
def test_a_well_formed_spike_blob_claiming_the_impossible_is_refused(n_samples, channels,
                                                                     rate):
    # The CRC is a check against damage, not forgery: the sizes are checked on their own.
    none = Events(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros((0, 32), np.int16),
                  10)
    message = pack_spikes(none, 0, n_samples, channels=channels, rate=20000)
    if rate != 20000:
        import msgpack
        fields = msgpack.unpackb(message)
        fields[4] = rate
        message = msgpack.packb(fields)
    with pytest.raises(ValueError, match="malformed spike blob"):
        decode.decompress(pack_spikes_blob(n_samples, message))


@pytest.mark.parametrize("name", sorted(DETECTOR_RANGES))
def test_every_detector_field_is_range_checked(name):
    low, high, low_open = DETECTOR_RANGES[name]
    integer = isinstance(getattr(DetectorConfig(), name), int)
    below = low if low_open else low - 1
    for value in (below, high + 1, -1e18, 1e18):
        value = int(value) if integer else float(value)
        with pytest.raises(ValueError, match=f"DetectorConfig.{name} = .* out of range"):
            DetectorConfig(**{name: value})
    if not integer:
        for value in (math.nan, math.inf):
            with pytest.raises(ValueError, match=f"DetectorConfig.{name}"):
                DetectorConfig(**{name: value})
    for wrong in ("3", None, True):
        with pytest.raises(TypeError, match=f"DetectorConfig.{name} must be"):
            DetectorConfig(**{name: wrong})
    DetectorConfig(**{name: type(getattr(DetectorConfig(), name))(high)})


def test_every_detector_field_has_a_range():
    assert sorted(DETECTOR_RANGES) == sorted(DetectorConfig().to_dict())


def test_brainwire_spike_options_out_of_range_are_value_errors():
    for options in (dict(threshold=0), dict(threshold=-3), dict(snippet_ms=math.nan),
                    dict(snippet_ms=1e9)):
        with pytest.raises(ValueError, match="DetectorConfig"):
            encode.compress(EXCERPT, spikes=True, **options)
    for options in (dict(threshold=True), dict(threshold="4.5"), dict(snippet_ms=[1.6])):
        with pytest.raises(TypeError, match="DetectorConfig"):
            encode.compress(EXCERPT, spikes=True, **options)


def test_encode_compress_takes_a_path_not_data(wav):
    for value in (wav, 5, None):
        with pytest.raises(TypeError):
            encode.compress(value)


def test_a_tiny_wav_round_trips_through_a_strided_view():
    data = wav_bytes(np.array([1, -2, 3], np.int16), rate=1000)
    blob = codec.compress_bytes(data)
    view = np.frombuffer(blob, np.uint8).repeat(3)[::3]
    assert codec.decompress(view) == data


@pytest.mark.parametrize("value", [None, 5, b"two blocks?", "xy"], ids=repr)
def test_group_decoder_wants_a_list_of_blocks(value):
    with pytest.raises(TypeError, match="list of 2 bytes-like blocks"):
        codec.GroupDecoder([2, 2]).decode(value)


def test_group_blocks_decode_from_strided_views():
    samples = (np.arange(4000, dtype=np.int16) % 89).reshape(-1, 4)
    blobs = codec.GroupEncoder([2, 2]).encode(samples, keyframe=True)
    strided = [np.frombuffer(b, np.uint8).repeat(2)[::2] for b in blobs]
    np.testing.assert_array_equal(codec.GroupDecoder([2, 2]).decode(strided), samples)


@pytest.mark.parametrize("make", [lambda: codec.StreamEncoder(4),
                                  lambda: codec.GroupEncoder([2, 2])])
@pytest.mark.parametrize("flag", ["no", "", 2, -1, 0.0, None, [True]])
def test_keyframe_flag_must_be_a_bool(make, flag):
    # A truthy string would otherwise force a keyframe on every block without a word.
    with pytest.raises(TypeError, match="keyframe"):
        make().encode(np.zeros((10, 4), np.int16), keyframe=flag)


@pytest.mark.parametrize("flag", [True, False, 1, 0, np.bool_(True)])
def test_keyframe_flag_takes_bools_and_0_1(flag):
    samples = (np.arange(400, dtype=np.int16) % 89).reshape(-1, 4)
    first = codec.StreamEncoder(4).encode(samples, keyframe=flag)
    assert codec.block_info(first).keyframe  # a stream's first block is one either way
    encoder = codec.StreamEncoder(4)
    encoder.encode(samples)
    assert codec.block_info(encoder.encode(samples, keyframe=flag)).keyframe == bool(flag)


def test_team_width_is_bounded():
    with pytest.raises(ValueError, match="threads must be in 1..64"):
        codec.CodecTeam(codec.CodecTeam.MAX_THREADS + 1)


def test_many_groups_get_a_team_no_wider_than_the_cpus():
    import os
    encoder = codec.GroupEncoder([1] * 200)
    assert encoder.team.threads <= len(os.sched_getaffinity(0))
    samples = (np.arange(2000, dtype=np.int16) % 89).reshape(-1, 200)
    decoder = codec.GroupDecoder([1] * 200)
    np.testing.assert_array_equal(decoder.decode(encoder.encode(samples)), samples)
