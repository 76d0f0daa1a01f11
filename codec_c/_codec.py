"""Python face of the C codec: owns the C objects, checks arguments, maps errors."""
import os
import threading
from collections import namedtuple

import numpy as np

from ._native import ffi, lib

FORMAT_VERSION = lib.NW_FORMAT_VERSION
MAX_CHANNELS = lib.NW_MAX_CHANNELS
MAX_BLOCK_SAMPLES = lib.NW_MAX_BLOCK_SAMPLES
BLOCK_HEADER_BYTES = lib.NW_BLOCK_HEADER_BYTES
MAX_ERROR_LIMIT = lib.NW_MAX_ERROR_LIMIT

# Output buffers are written in full by the C side before any byte is read back, so
# zero-filling them first would be wasted work on the hot path.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


class CodecError(Exception):
    """Any failure reported by the C codec; ``status`` is the negative nw_status."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class CorruptStreamError(CodecError):
    """The input is not an intact neurowire block or file (magic, truncation, damage,
    checksum, or a channel count the decoder was not made for)."""


class VersionError(CodecError):
    """Written by a format version this build does not read."""


class NeedKeyframeError(CodecError):
    """The decoder has no valid state (fresh, reset, or after an error) and the block is
    not a keyframe."""


class SequenceError(CodecError):
    """A block was skipped or repeated: its index is not the one after the last block."""


class InvalidArgumentError(CodecError, ValueError):
    """The C side refused an argument the Python checks let through."""


class OutputFullError(CodecError):
    """An output buffer sized from the C bound was too small: a bug, not bad input."""


class CodecMemoryError(CodecError, MemoryError):
    """The C side could not allocate."""


_ERRORS = {
    lib.NW_ERR_ARGUMENT: InvalidArgumentError,
    lib.NW_ERR_NOMEM: CodecMemoryError,
    lib.NW_ERR_OUTPUT_FULL: OutputFullError,
    lib.NW_ERR_MAGIC: CorruptStreamError,
    lib.NW_ERR_VERSION: VersionError,
    lib.NW_ERR_TRUNCATED: CorruptStreamError,
    lib.NW_ERR_CORRUPT: CorruptStreamError,
    lib.NW_ERR_CHECKSUM: CorruptStreamError,
    lib.NW_ERR_CHANNELS: CorruptStreamError,
    lib.NW_ERR_NEED_KEYFRAME: NeedKeyframeError,
    lib.NW_ERR_SEQUENCE: SequenceError,
}


def _error(status):
    message = ffi.string(lib.nw_strerror(status)).decode("utf-8", "replace")
    return _ERRORS.get(status, CodecError)(message, status)


def _check(result):
    if result < 0:
        raise _error(int(result))
    return result


BlockInfo = namedtuple(
    "BlockInfo", "channels n_samples index block_bytes crc32 keyframe stored max_error")


def _info(c_info):
    return BlockInfo(c_info.channels, c_info.n_samples, c_info.index, c_info.block_bytes,
                     c_info.crc32, bool(c_info.keyframe), bool(c_info.stored),
                     c_info.max_error)


def _check_channels(channels):
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
        raise TypeError(f"channels must be an int, not {type(channels).__name__}")
    channels = int(channels)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")
    return channels


def _input_bytes(data, what="data"):
    """A cffi view of any contiguous bytes-like object, without copying it."""
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes-like, not str")
    try:
        return ffi.from_buffer("uint8_t[]", data)
    except TypeError:
        raise TypeError(f"{what} must be bytes-like, not {type(data).__name__}") from None
    except ValueError as exc:  # e.g. a non-contiguous memoryview
        raise ValueError(f"{what} must be a contiguous buffer: {exc}") from None


def _as_block(samples, channels):
    if not isinstance(samples, np.ndarray):
        raise TypeError("samples must be a numpy int16 array of shape (n_samples, channels),"
                        f" not {type(samples).__name__}")
    if samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
        # No silent casting: a wider type would lose values without a word.
        raise TypeError(f"samples must have dtype int16, not {samples.dtype}")
    if samples.ndim != 2 or samples.shape[1] != channels:
        raise ValueError(f"samples must have shape (n_samples, {channels}), "
                         f"got {samples.shape}")
    if not 1 <= samples.shape[0] <= MAX_BLOCK_SAMPLES:
        raise ValueError(f"a block holds 1..{MAX_BLOCK_SAMPLES} time steps, "
                         f"got {samples.shape[0]}")
    if not samples.dtype.isnative:
        samples = samples.astype(np.int16)
    return np.ascontiguousarray(samples)


def grid_values():
    """The int16 value of each ADC code of the grid the codec knows, in code order."""
    values = np.empty(lib.NW_GRID_CODES, dtype=np.int16)
    lib.nw_grid_values(ffi.from_buffer("int16_t[]", values))
    return values


class StreamEncoder:
    """Encodes consecutive blocks of one stream; state carries over between blocks."""

    def __init__(self, channels, max_error=0):
        """max_error=k > 0: bounded-error coding, every decoded sample within k ADC codes
        of the original (k units of the 16-bit value on channels off the ADC grid)."""
        self.channels = _check_channels(channels)
        if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)):
            raise TypeError(f"max_error must be an int, not {type(max_error).__name__}")
        if not 0 <= max_error <= MAX_ERROR_LIMIT:
            raise ValueError(f"max_error must be in 0..{MAX_ERROR_LIMIT}, got {max_error}")
        self.max_error = int(max_error)
        ptr = lib.nw_encoder_new(self.channels)
        if ptr == ffi.NULL:
            raise MemoryError("nw_encoder_new failed")
        self._enc = ffi.gc(ptr, lib.nw_encoder_free)
        _check(lib.nw_encoder_set_max_error(self._enc, self.max_error))
        # The C call runs without the GIL; the lock keeps two threads from sharing
        # one encoder state (separate encoders still run in parallel).
        self._lock = threading.Lock()

    def encode(self, samples, keyframe=False):
        """Encodes an int16 array (n_samples, channels) into one block (bytes)."""
        block = _as_block(samples, self.channels)
        n = block.shape[0]
        cap = lib.nw_encode_bound(self.channels, n)
        out = _alloc("uint8_t[]", cap)
        src = ffi.from_buffer("int16_t[]", block)
        with self._lock:
            size = _check(lib.nw_encode_block(self._enc, src, n, 1 if keyframe else 0,
                                              out, cap))
        return ffi.buffer(out, size)[:]

    def channel_bytes(self):
        """Compressed bytes spent on each channel so far: uint64 array (channels,)."""
        totals = np.zeros(self.channels, dtype=np.uint64)
        with self._lock:
            lib.nw_encoder_channel_bytes(self._enc, ffi.from_buffer("uint64_t[]", totals),
                                         self.channels)
        return totals


class StreamDecoder:
    """Decodes the blocks of one stream in order. After any error it forgets its state
    and raises NeedKeyframeError until the next keyframe arrives."""

    def __init__(self, channels):
        self.channels = _check_channels(channels)
        ptr = lib.nw_decoder_new(self.channels)
        if ptr == ffi.NULL:
            raise MemoryError("nw_decoder_new failed")
        self._dec = ffi.gc(ptr, lib.nw_decoder_free)
        self._lock = threading.Lock()

    def reset(self):
        with self._lock:
            lib.nw_decoder_reset(self._dec)

    def decode(self, blob):
        """Decodes one block (bytes-like) into an int16 array (n_samples, channels)."""
        src = _input_bytes(blob, "blob")
        info = ffi.new("nw_block_info *")
        with self._lock:
            status = lib.nw_block_peek(src, len(src), info)
            if status < 0:
                # A header the decoder cannot even read still breaks the stream:
                # the C decoder would have dropped its state, so drop it here too.
                lib.nw_decoder_reset(self._dec)
                raise _error(status)
            # Sized by this decoder's channel count: if the header disagrees, the C
            # side reports NW_ERR_CHANNELS before writing anything.
            out = np.empty((info.n_samples, self.channels), dtype=np.int16)
            _check(lib.nw_decode_block(self._dec, src, len(src),
                                       ffi.from_buffer("int16_t[]", out, require_writable=True),
                                       out.size, info))
        return out


def block_info(blob):
    """Reads and checks a block header without decoding the block."""
    src = _input_bytes(blob, "blob")
    info = ffi.new("nw_block_info *")
    _check(lib.nw_block_peek(src, len(src), info))
    return _info(info)


def compress_bytes(raw):
    """Compresses any byte string into a neurowire file (what ./encode writes)."""
    src = _input_bytes(raw, "raw")
    cap = lib.nw_file_bound(len(src))
    out = _alloc("uint8_t[]", cap)
    size = _check(lib.nw_file_compress(src, len(src), out, cap))
    return ffi.buffer(out, size)[:]


def compress(path):
    """Compresses the file at ``path``; same bytes as ``./encode path OUT``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("compress() takes a path; use compress_bytes() for data")
    with open(path, "rb") as f:
        return compress_bytes(f.read())


def decompress(data):
    """Returns the original file from a neurowire file."""
    src = _input_bytes(data, "data")
    size = ffi.new("uint64_t *")
    _check(lib.nw_file_original_size(src, len(src), size))
    n = size[0]
    try:
        out = _alloc("uint8_t[]", n)
    except (MemoryError, OverflowError) as exc:
        # Only a damaged header claims more than can exist in memory.
        raise CorruptStreamError(f"header claims an original size of {n} bytes",
                                 lib.NW_ERR_CORRUPT) from exc
    got = _check(lib.nw_file_decompress(src, len(src), out, n))
    if got != n:
        raise CorruptStreamError(f"decoded {got} bytes, header says {n}", lib.NW_ERR_CORRUPT)
    return ffi.buffer(out, got)[:]


def read_samples(data_or_path):
    """Samples of a compressed (or plain) 16-bit PCM WAV file.

    Returns (int16 array (n_frames, channels), sample_rate). Raises CodecError for a
    damaged neurowire file and ValueError when the original is not 16-bit PCM WAV."""
    from ._wav import parse_wav

    if isinstance(data_or_path, (str, os.PathLike)):
        with open(data_or_path, "rb") as f:
            data = f.read()
    else:
        data = bytes(data_or_path)
    wav = data if data[:4] == b"RIFF" else decompress(data)
    return parse_wav(wav)
