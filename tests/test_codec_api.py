"""The Python wrapper itself: argument checks, copies, ownership, threads, constants."""
import gc
import threading

import numpy as np
import pytest

from neurowire import codec


def test_constants_come_from_the_header():
    text = (__import__("conftest").REPO / "codec_c" / "src" / "neurowire.h").read_text()
    for name, value in [("NW_FORMAT_VERSION", codec.FORMAT_VERSION),
                        ("NW_FILE_FORMAT_VERSION", codec.FILE_FORMAT_VERSION),
                        ("NW_MAX_CHANNELS", codec.MAX_CHANNELS),
                        ("NW_BLOCK_HEADER_BYTES", codec.BLOCK_HEADER_BYTES)]:
        assert f"#define {name} {value}" in text
    assert codec.MAX_BLOCK_SAMPLES == 1 << 20


@pytest.mark.parametrize("bad", [0, -1, codec.MAX_CHANNELS + 1])
def test_channel_range(bad):
    with pytest.raises(ValueError):
        codec.StreamEncoder(bad)
    with pytest.raises(ValueError):
        codec.StreamDecoder(bad)


@pytest.mark.parametrize("bad", [1.0, "4", None, True])
def test_channel_type(bad):
    with pytest.raises(TypeError):
        codec.StreamEncoder(bad)


def test_channel_extremes():
    for channels in (1, codec.MAX_CHANNELS):
        x = np.arange(3 * channels, dtype=np.int16).reshape(3, channels)
        enc, dec = codec.StreamEncoder(channels), codec.StreamDecoder(channels)
        np.testing.assert_array_equal(dec.decode(enc.encode(x)), x)
    assert codec.StreamEncoder(np.int64(5)).channels == 5


def test_dtype_checks():
    enc = codec.StreamEncoder(2)
    for dtype in (np.int32, np.uint16, np.float32, np.int8, np.int64):
        with pytest.raises(TypeError, match="int16"):
            enc.encode(np.zeros((4, 2), dtype=dtype))
    with pytest.raises(TypeError):
        enc.encode([[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        enc.encode(b"\0" * 8)


def test_shape_checks():
    enc = codec.StreamEncoder(3)
    for shape in [(10,), (10, 2), (10, 4), (3, 10), (2, 3, 1), (0, 3)]:
        with pytest.raises(ValueError):
            enc.encode(np.zeros(shape, np.int16))


def test_too_many_samples_is_refused_before_allocating():
    enc = codec.StreamEncoder(1)
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.int16),
                                          shape=(codec.MAX_BLOCK_SAMPLES + 1, 1), strides=(0, 0))
    with pytest.raises(ValueError):
        enc.encode(big)


def test_non_contiguous_and_byteswapped_input():
    rng = np.random.default_rng(0)
    base = rng.integers(-1000, 1000, size=(40, 6)).astype(np.int16)
    views = {
        "column_slice": base[:, ::2],
        "transposed": np.ascontiguousarray(base[:, :3].T).T,
        "row_step": base[::2, :3],
        "fortran": np.asfortranarray(base[:, :3]),
        "big_endian": base[:, :3].astype(">i2"),
    }
    for name, view in views.items():
        enc, dec = codec.StreamEncoder(3), codec.StreamDecoder(3)
        expected = np.array(view, dtype=np.int16)
        np.testing.assert_array_equal(dec.decode(enc.encode(view)), expected, err_msg=name)
    reference = codec.StreamEncoder(3).encode(np.ascontiguousarray(base[:, ::2]))
    assert codec.StreamEncoder(3).encode(base[:, ::2]) == reference


def test_input_is_not_modified():
    x = np.arange(-500, 500, dtype=np.int16).reshape(100, 10)
    before = x.copy()
    blob = codec.StreamEncoder(10).encode(x)
    np.testing.assert_array_equal(x, before)
    frozen = np.frombuffer(blob, np.uint8)  # read-only buffer input is fine
    assert frozen.flags.writeable is False
    np.testing.assert_array_equal(codec.StreamDecoder(10).decode(frozen), x)


def test_blob_types():
    x = np.ones((5, 2), np.int16)
    blob = codec.StreamEncoder(2).encode(x)
    assert isinstance(blob, bytes)
    for view in (bytearray(blob), memoryview(blob), np.frombuffer(blob, np.uint8)):
        np.testing.assert_array_equal(codec.StreamDecoder(2).decode(view), x)
    with pytest.raises(TypeError):
        codec.StreamDecoder(2).decode("text")
    with pytest.raises(TypeError):
        codec.StreamDecoder(2).decode(12)
    with pytest.raises(TypeError):
        codec.compress_bytes("text")
    with pytest.raises(TypeError):
        codec.compress(b"bytes are not a path")


def test_decoded_array_is_owned_and_writable():
    x = np.ones((5, 2), np.int16)
    out = codec.StreamDecoder(2).decode(codec.StreamEncoder(2).encode(x))
    assert out.dtype == np.int16 and out.shape == (5, 2) and out.flags.c_contiguous
    assert out.flags.writeable
    out[:] = 7  # must not scribble over anything the codec still uses


def test_block_info_fields():
    enc = codec.StreamEncoder(3)
    x = np.zeros((7, 3), np.int16)
    first, second = enc.encode(x), enc.encode(x)
    a, b = codec.block_info(first), codec.block_info(second)
    assert isinstance(a, codec.BlockInfo)
    assert (a.channels, a.n_samples, a.index, a.keyframe) == (3, 7, 0, True)
    assert (b.index, b.keyframe, b.block_bytes) == (1, False, len(second))
    assert isinstance(a.stored, bool) and isinstance(a.crc32, int)


def test_channel_bytes_tracks_output():
    rng = np.random.default_rng(3)
    enc = codec.StreamEncoder(3)
    assert enc.channel_bytes().tolist() == [0, 0, 0]
    x = np.zeros((2000, 3), np.int16)
    x[:, 2] = rng.integers(-32768, 32768, 2000)  # one noisy channel among silent ones
    total = sum(len(enc.encode(x[i:i + 100])) for i in range(0, 2000, 100))
    per = enc.channel_bytes()
    assert per.dtype == np.uint64 and per.shape == (3,)
    assert per[2] > 10 * max(per[0], per[1])
    assert abs(int(per.sum()) - total) <= 20 * (codec.BLOCK_HEADER_BYTES + 3 * 2)


def _heap_in_use():
    """Bytes glibc's malloc has handed out (small chunks and mmap'd ones)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    import os
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("ASan replaces malloc; mallinfo2 does not see its heap")
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 for mallinfo2")
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def test_objects_are_freed():
    # ffi.gc owns the C objects: the C heap goes back to where it was once they are dropped
    # (a 4096-channel encoder and decoder hold several MB between them).
    before = _heap_in_use()
    pairs = [(codec.StreamEncoder(4096), codec.StreamDecoder(4096)) for _ in range(20)]
    held = _heap_in_use() - before
    assert held > 20 * 4096 * 16  # the measurement sees them at all
    del pairs
    gc.collect()
    assert _heap_in_use() - before < held / 10


def test_threads_encode_in_parallel_correctly():
    rng = np.random.default_rng(5)
    data = [rng.integers(-2000, 2000, size=(400, 64)).astype(np.int16) for _ in range(4)]
    expected = [codec.StreamEncoder(64).encode(d) for d in data]
    results = [None] * 4

    def work(i):
        enc = codec.StreamEncoder(64)
        results[i] = [enc.encode(data[i]) for _ in range(1)][0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_shared_encoder_across_threads_stays_consistent():
    # Misuse (one encoder, many threads) is serialised, not corrupted: every block decodes
    # in the order its index says.
    x = np.arange(200 * 8, dtype=np.int16).reshape(200, 8)
    enc = codec.StreamEncoder(8)
    blobs = []
    lock = threading.Lock()

    def work():
        for _ in range(25):
            blob = enc.encode(x[:20])
            with lock:
                blobs.append(blob)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blobs.sort(key=lambda b: codec.block_info(b).index)
    assert [codec.block_info(b).index for b in blobs] == list(range(100))
    dec = codec.StreamDecoder(8)
    for b in blobs:
        np.testing.assert_array_equal(dec.decode(b), x[:20])


def test_read_samples_rejects_non_pcm16():
    from conftest import wav_bytes
    packed = codec.compress_bytes(wav_bytes(np.arange(100) % 256, sampwidth=1))
    with pytest.raises(ValueError, match="16-bit"):
        codec.read_samples(packed)
    with pytest.raises(ValueError):
        codec.read_samples(codec.compress_bytes(b"plain text, not a wav"))
    with pytest.raises(codec.CodecError):
        codec.read_samples(b"neither a WAV nor a neurowire file")


def test_read_samples_extensible_format():
    from conftest import wav_bytes
    x = np.arange(-50, 50, dtype=np.int16).reshape(50, 2)
    plain = wav_bytes(x)
    # Rewrite the fmt chunk as WAVE_FORMAT_EXTENSIBLE with the PCM sub-format.
    fmt = plain[20:36]
    ext = (b"\xfe\xff" + fmt[2:] + (22).to_bytes(2, "little") + (16).to_bytes(2, "little")
           + (3).to_bytes(4, "little") + b"\x01\x00" + bytes(14))
    body = b"WAVE" + b"fmt " + len(ext).to_bytes(4, "little") + ext + plain[36:]
    raw = b"RIFF" + len(body).to_bytes(4, "little") + body
    read = codec.read_samples(codec.compress_bytes(raw))
    got, rate = read.samples, read.rate
    np.testing.assert_array_equal(got, x)
    assert rate == 19531


def test_read_samples_gives_named_fields_that_cannot_be_swapped_by_unpacking():
    from conftest import wav_bytes
    raw = wav_bytes(np.arange(-40, 40, dtype=np.int16).reshape(-1, 2), rate=19531)
    read = codec.read_samples(codec.compress_bytes(raw))
    assert read.rate == 19531 and read.samples.shape == (40, 2)
    # brainwire orders the pair (rate, samples): unpacking ours must fail, not swap.
    with pytest.raises(TypeError, match="by name"):
        rate, samples = read


def test_samples_at_an_odd_address_are_coded_as_their_aligned_copy():
    """A view of a network frame may start at an odd address; the C side reads int16_t, so
    the wrapper hands it an aligned copy (under `make asan` a misaligned read aborts)."""
    from neurowire.codec import GroupEncoder, StreamEncoder

    samples = np.random.default_rng(5).integers(-900, 900, (10, 70), dtype=np.int16)
    frame = bytearray(1 + samples.nbytes)
    frame[1:] = samples.tobytes()
    view = np.frombuffer(memoryview(frame)[1:], dtype="<i2").reshape(samples.shape)
    assert not view.flags.aligned
    assert StreamEncoder(70).encode(view, True) == StreamEncoder(70).encode(samples, True)
    assert GroupEncoder([35, 35]).encode(view, True) == GroupEncoder([35, 35]).encode(samples,
                                                                                        True)
