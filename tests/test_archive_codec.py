"""neurowire as a numcodecs codec: the checks numcodecs runs on its own codecs, plus
golden chunks that pin the on-disk format."""

import json
import pickle
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")

from neurowire.archive import CODEC_ID, DamagedChunkError, NeurowireCodec  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "archive"


def grid_signal(n, channels, seed=0, step=4):
    """Electrode-like samples: a slow random walk plus noise, on a 10-bit ADC grid
    (values multiples of `step`), as the implants deliver."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 3, (n, channels)), axis=0)
    noise = rng.normal(0, 8, (n, channels))
    codes = np.clip(np.round((walk + noise) / step), -512, 511)
    return (codes * step).astype(np.int16)


SHAPES = [(1, 1), (7, 3), (1000, 1), (4096, 8), (2500, 64)]


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip(shape):
    codec = NeurowireCodec()
    x = grid_signal(*shape)
    enc = codec.encode(x)
    assert isinstance(enc, bytes)
    dec = codec.decode(enc)
    assert dec.dtype == np.int16 and dec.shape == shape
    np.testing.assert_array_equal(dec, x)
    # numcodecs codecs also decode into a caller's buffer
    out = np.empty_like(x)
    codec.decode(enc, out=out)
    np.testing.assert_array_equal(out, x)


def test_full_scale_and_extremes():
    x = np.array([[-32768, 32767], [32767, -32768], [0, 0], [-1, 1]] * 50, dtype=np.int16)
    codec = NeurowireCodec()
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)


def test_flat_input_uses_channels():
    x = grid_signal(300, 4)
    codec = NeurowireCodec(channels=4)
    for flat in (x.reshape(-1), x.tobytes(), bytearray(x.tobytes()), x.view(np.uint8).reshape(-1)):
        dec = codec.decode(codec.encode(flat))
        np.testing.assert_array_equal(dec, x)
    with pytest.raises(ValueError):
        codec.encode(x.reshape(-1)[:-1])


def test_fortran_ordered_and_strided_input():
    x = grid_signal(500, 6)
    codec = NeurowireCodec()
    np.testing.assert_array_equal(codec.decode(codec.encode(np.asfortranarray(x))), x)
    np.testing.assert_array_equal(codec.decode(codec.encode(x[::2, 1::2])), x[::2, 1::2])


def test_chunks_are_independent_and_deterministic():
    """Every chunk is a keyframe from a fresh encoder: same input, same bytes, whichever
    chunks the process encoded before."""
    codec = NeurowireCodec()
    a, b = grid_signal(800, 2, seed=1), grid_signal(800, 2, seed=2)
    enc_b_first = codec.encode(b)
    enc_a = codec.encode(a)
    assert codec.encode(b) == enc_b_first
    np.testing.assert_array_equal(NeurowireCodec().decode(enc_a), a)


def test_empty_chunk():
    codec = NeurowireCodec(channels=3)
    assert codec.encode(np.zeros((0, 3), np.int16)) == b""
    assert codec.decode(b"").shape == (0, 3)


def test_rejects_other_dtypes_and_shapes():
    codec = NeurowireCodec()
    with pytest.raises(TypeError):
        codec.encode(np.zeros((10, 2), np.float32))
    with pytest.raises(TypeError):
        codec.encode(np.zeros((10, 2), np.int32))
    with pytest.raises(ValueError):
        codec.encode(np.zeros((2, 2, 2), np.int16))
    with pytest.raises(ValueError):
        NeurowireCodec(channels=0)
    with pytest.raises(ValueError):
        codec.encode(np.zeros((4, 4097), np.int16))


def test_config_json_round_trip():
    for codec in (NeurowireCodec(), NeurowireCodec(channels=32)):
        config = codec.get_config()
        assert config["id"] == CODEC_ID
        again = numcodecs.get_codec(json.loads(json.dumps(config)))
        assert isinstance(again, NeurowireCodec)
        assert again == codec and again.get_config() == config


def test_registry_lookup():
    assert numcodecs.get_codec({"id": "neurowire"}) == NeurowireCodec()
    assert numcodecs.registry.codec_registry[CODEC_ID] is NeurowireCodec


def test_entry_point_declared():
    """Where neurowire is installed with its metadata, numcodecs finds the codec without
    neurowire.archive being imported first."""
    eps = {e.name: e for e in entry_points(group="numcodecs.codecs")}
    if CODEC_ID not in eps:
        pytest.skip("neurowire installed without the numcodecs.codecs entry point (yet)")
    assert eps[CODEC_ID].load() is NeurowireCodec


def test_repr():
    assert repr(NeurowireCodec()) == "NeurowireCodec(channels=None)"
    assert repr(NeurowireCodec(channels=8)) == "NeurowireCodec(channels=8)"
    assert eval(repr(NeurowireCodec(channels=8))) == NeurowireCodec(channels=8)


def test_pickle_before_and_after_use():
    codec = NeurowireCodec(channels=2)
    x = grid_signal(200, 2)
    enc = codec.encode(x)  # using it must leave nothing unpicklable behind
    for c in (NeurowireCodec(channels=2), codec):
        again = pickle.loads(pickle.dumps(c))
        assert again == codec
        np.testing.assert_array_equal(again.decode(enc), x)
    assert set(vars(codec)) == {"channels"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "tail"])
def test_damaged_chunk_raises_clear_error(damage):
    codec = NeurowireCodec()
    x = grid_signal(2000, 4)
    enc = bytearray(codec.encode(x))
    if damage == "truncate":
        enc = enc[: len(enc) // 2]
    elif damage == "flip":
        enc[len(enc) // 2] ^= 0x10
    elif damage == "garbage":
        enc = bytearray(b"this is not a neurowire chunk" * 3)
    else:
        enc += b"\x00" * 7
    with pytest.raises(DamagedChunkError, match="damaged neurowire chunk"):
        codec.decode(bytes(enc))


def test_long_chunk_spans_several_blocks(monkeypatch):
    """Chunks longer than the C core's block limit become continuation blocks; shrink
    the limit rather than allocate a million-sample chunk."""
    import neurowire.archive.codec as mod

    monkeypatch.setattr(mod, "_max_block_samples", lambda _m: 1000)
    x = grid_signal(3500, 3)
    enc = NeurowireCodec().encode(x)
    np.testing.assert_array_equal(NeurowireCodec().decode(enc), x)
    with pytest.raises(DamagedChunkError, match="block 3"):
        NeurowireCodec().decode(enc[:-3])


# ---- golden chunks: the bytes old archives hold ------------------------------------

def _golden_cases():
    return sorted(GOLDEN.glob("*.input.npy"))


def test_golden_files_present():
    assert len(_golden_cases()) >= 3, "run tests/data/archive/make_golden.py"


@pytest.mark.parametrize("path", _golden_cases(), ids=lambda p: p.name.split(".")[0])
def test_golden_chunk_decodes(path):
    """Old chunks must keep decoding to their inputs. Re-encoding is allowed to differ
    (a better encoder), decoding old bytes is not."""
    x = np.load(path)
    blob = path.with_name(path.name.replace(".input.npy", ".chunk")).read_bytes()
    codec = numcodecs.get_codec(json.loads(
        path.with_name(path.name.replace(".input.npy", ".json")).read_text()))
    np.testing.assert_array_equal(codec.decode(blob), x)
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)
