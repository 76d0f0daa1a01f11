"""Python face of the C codec: owns the C objects, checks arguments, maps errors."""
import errno
import os
import stat
import threading
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from neurowire.cpus import usable_cpus

from ._native import ffi, lib
from ._wav import WavFileError  # noqa: F401 (re-exported: read_samples raises it)

FORMAT_VERSION = lib.NW_FORMAT_VERSION            # streams made with format_version=1
FILE_FORMAT_VERSION = lib.NW_FILE_FORMAT_VERSION  # files written by compress(); versions 1 to 3 still read
LANE_FORMAT_VERSION = lib.NW_LANE_FORMAT_VERSION  # streams: channels side by side
LANE_CODERS = lib.NW_LANE_CODERS                  # interleaved range coders in a lane block
MAX_CHANNELS = lib.NW_MAX_CHANNELS
MAX_BLOCK_SAMPLES = lib.NW_MAX_BLOCK_SAMPLES
BLOCK_HEADER_BYTES = lib.NW_BLOCK_HEADER_BYTES
MAX_ERROR_LIMIT = lib.NW_MAX_ERROR_LIMIT
# Inputs read whole from a path stop below 4 GiB, as ./encode and ./decode do: a WAV's
# 32-bit sizes describe no more, and a larger file would be read into memory entire.
MAX_INPUT_BYTES = (1 << 32) - 1

# Output buffers are written in full by the C side before any byte is read back, so
# zero-filling them first would be wasted work on the hot path.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
# The C tables are built once here, under the import lock: cffi calls drop the GIL, and two
# threads making their first coders at once would otherwise both build them.
lib.nw_prepare()


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


def _keyframe_flag(keyframe):
    """1 or 0 for the C call. Only a bool (or 0/1) is taken: a string such as "no" is truthy
    and would silently force a keyframe, which costs ratio on every block."""
    if isinstance(keyframe, (bool, np.bool_)) or (
            isinstance(keyframe, (int, np.integer)) and keyframe in (0, 1)):
        return int(bool(keyframe))
    raise TypeError(f"keyframe must be a bool, not {type(keyframe).__name__} {keyframe!r}")


def _check_channels(channels):
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
        raise TypeError(f"channels must be an int, not {type(channels).__name__}")
    channels = int(channels)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")
    return channels


def contiguous_bytes(data, what="data"):
    """`data` as a C-contiguous buffer: a bytes-like object as it is, a strided view (a
    slice with a step, a transposed array) copied once. Anything else is a TypeError that
    names it: an int would otherwise become that many zero bytes (`bytes(5)`), and a masked
    array would be coded as whatever lies under its mask."""
    if isinstance(data, np.ma.MaskedArray):
        raise TypeError(f"{what} must be bytes-like, not a numpy masked array (its masked "
                        "values have no bytes; fill them first: array.filled(...))")
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes-like, not str (encode it, or pass a path "
                        "where a path is taken)")
    if isinstance(data, np.generic):  # a numpy number exports its bytes, but is a number
        raise TypeError(f"{what} must be bytes-like, not a numpy {type(data).__name__}")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview, numpy "
                        f"array), not {type(data).__name__}") from None
    # A flat uint8 array, not a memoryview: memoryviews we make, exported to cffi and caught
    # in a traceback, crash CPython 3.11 on release (see neurowire/archive/codec.py).
    with view:
        return np.frombuffer(data if view.c_contiguous else view.tobytes(), np.uint8)


def _input_bytes(data, what="data"):
    """A cffi view of any bytes-like object, without copying a contiguous one."""
    kind = type(data)
    if kind is bytes or kind is bytearray or (kind is memoryview and data.c_contiguous):
        return ffi.from_buffer("uint8_t[]", data)  # the common cases, per block: no checks
    return ffi.from_buffer("uint8_t[]", contiguous_bytes(data, what))


def _as_block(samples, channels):
    if isinstance(samples, np.ma.MaskedArray):
        raise TypeError("samples must be a plain numpy int16 array, not a masked array (the "
                        "codec is lossless: masked values have nothing to keep; fill them "
                        "first: samples.filled(...))")
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
    if not samples.dtype.isnative or not samples.flags.aligned:
        # A view of a network frame may start at an odd address (libzmq's receive buffer):
        # the C side reads int16_t, which must be 2-byte aligned.
        samples = samples.astype(np.int16)
    return np.ascontiguousarray(samples)


def grid_values():
    """The int16 value of each ADC code of the grid the codec knows, in code order."""
    values = np.empty(lib.NW_GRID_CODES, dtype=np.int16)
    lib.nw_grid_values(ffi.from_buffer("int16_t[]", values))
    return values


class StreamEncoder:
    """Encodes consecutive blocks of one stream; state carries over between blocks."""

    def __init__(self, channels, max_error=0, format_version=FORMAT_VERSION):
        """max_error=k > 0: bounded-error coding, every decoded sample within k ADC codes
        of the original (k units of the 16-bit value on channels off the ADC grid).
        format_version: FORMAT_VERSION (a channel at a time) or LANE_FORMAT_VERSION
        (channels side by side, see docs/FORMAT.md; decoders read both)."""
        self.channels = _check_channels(channels)
        if format_version not in (FORMAT_VERSION, LANE_FORMAT_VERSION):
            raise ValueError(f"format_version must be {FORMAT_VERSION} or "
                             f"{LANE_FORMAT_VERSION}, got {format_version!r}")
        self.format_version = int(format_version)
        if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)):
            raise TypeError(f"max_error must be an int, not {type(max_error).__name__}")
        if not 0 <= max_error <= MAX_ERROR_LIMIT:
            raise ValueError(f"max_error must be in 0..{MAX_ERROR_LIMIT}, got {max_error}")
        self.max_error = int(max_error)
        ptr = lib.nw_stream_encoder_new(self.channels, self.format_version)
        if ptr == ffi.NULL:
            raise MemoryError("nw_stream_encoder_new failed")
        self._enc = ffi.gc(ptr, lib.nw_stream_encoder_free)
        _check(lib.nw_stream_encoder_set_max_error(self._enc, self.max_error))
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
            size = _check(lib.nw_stream_encode_block(self._enc, src, n, self.channels,
                                                     _keyframe_flag(keyframe), out, cap))
        return ffi.buffer(out, size)[:]

    def channel_bytes(self):
        """Compressed bytes spent on each channel so far: uint64 array (channels,)."""
        totals = np.zeros(self.channels, dtype=np.uint64)
        with self._lock:
            lib.nw_stream_encoder_channel_bytes(
                self._enc, ffi.from_buffer("uint64_t[]", totals), self.channels)
        return totals


class StreamDecoder:
    """Decodes the blocks of one stream in order, of either format version. After any
    error it forgets its state and raises NeedKeyframeError until the next keyframe."""

    def __init__(self, channels):
        self.channels = _check_channels(channels)
        ptr = lib.nw_stream_decoder_new(self.channels)
        if ptr == ffi.NULL:
            raise MemoryError("nw_stream_decoder_new failed")
        self._dec = ffi.gc(ptr, lib.nw_stream_decoder_free)
        self._lock = threading.Lock()

    def reset(self):
        with self._lock:
            lib.nw_stream_decoder_reset(self._dec)

    def decode(self, blob):
        """Decodes one block (bytes-like) into an int16 array (n_samples, channels)."""
        src = _input_bytes(blob, "blob")
        info = ffi.new("nw_block_info *")
        with self._lock:
            status = lib.nw_stream_block_peek(src, len(src), info)
            if status < 0:
                # A header the decoder cannot even read still breaks the stream:
                # the C decoder would have dropped its state, so drop it here too.
                lib.nw_stream_decoder_reset(self._dec)
                raise _error(status)
            # Sized by this decoder's channel count: if the header disagrees, the C
            # side reports NW_ERR_CHANNELS before writing anything.
            out = np.empty((info.n_samples, self.channels), dtype=np.int16)
            _check(lib.nw_stream_decode_block(
                self._dec, src, len(src),
                ffi.from_buffer("int16_t[]", out, require_writable=True),
                info.n_samples, self.channels, info))
        return out


def block_info(blob):
    """Reads and checks a block header (of either format version) without decoding it."""
    src = _input_bytes(blob, "blob")
    info = ffi.new("nw_block_info *")
    _check(lib.nw_stream_block_peek(src, len(src), info))
    return _info(info)


def compress_bytes(raw):
    """Compresses any byte string into a neurowire file (what ./encode writes)."""
    src = _input_bytes(raw, "raw")
    cap = lib.nw_file_bound(len(src))
    out = _alloc("uint8_t[]", cap)
    size = _check(lib.nw_file_compress(src, len(src), out, cap))
    return ffi.buffer(out, size)[:]


def read_file(path) -> bytes:
    """The bytes of the regular file at `path`. A FIFO, socket or device is refused
    (OSError naming it) before it is opened: opening a FIFO nobody writes to blocks for
    ever, and /dev/zero never ends. A file over MAX_INPUT_BYTES is refused (OSError EFBIG)
    without being read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # open() below says what is wrong, naming the path
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, socket or device)",
                      os.fspath(path))
    with open(path, "rb") as f:
        # Reads one byte past the cap rather than trusting the size: the file may be growing.
        if os.fstat(f.fileno()).st_size <= MAX_INPUT_BYTES:
            data = f.read(MAX_INPUT_BYTES + 1)
            if len(data) <= MAX_INPUT_BYTES:
                return data
    raise OSError(errno.EFBIG, "larger than the 4 GiB a WAV file can hold", os.fspath(path))


def compress(path):
    """Compresses the file at ``path``; same bytes as ``./encode path OUT``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("compress() takes a path; use compress_bytes() for data")
    return compress_bytes(read_file(path))


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


@dataclass(frozen=True)
class WavSamples:
    """What read_samples returns: named fields only. It cannot be unpacked, because the
    brainwire package orders the same pair (rate, samples): `rate, data = read_samples(x)`
    would otherwise swap them silently."""

    samples: np.ndarray   # int16 (n_frames, channels)
    rate: int             # frames per second

    def __iter__(self):
        raise TypeError("read_samples() returns .samples and .rate by name, not a pair "
                        "(brainwire's decompress orders them (rate, samples))")


def read_samples(data_or_path):
    """Samples of a compressed (or plain) 16-bit PCM WAV file, as WavSamples(.samples: int16
    array (n_frames, channels), .rate). Raises CodecError for a damaged neurowire file (or
    bytes that are neither that nor a WAV file) and ValueError when the original is not a
    whole 16-bit PCM WAV recording (codec_c/_wav.py says what it refuses)."""
    from ._wav import parse_wav

    path = None
    if isinstance(data_or_path, (str, os.PathLike)):
        path = data_or_path
        data = read_file(path)
    else:
        data = contiguous_bytes(data_or_path, "data_or_path")
    if bytes(data[:4]) == b"RIFF":
        wav = data
    elif bytes(data[:3]) == b"NWF":
        try:
            wav = decompress(data)
        except CodecError as error:
            if path is None:
                raise
            named = type(error)(f"{os.fspath(path)}: {error}", error.status)
            named.filename = os.fspath(path)  # as WavFileError's: commands print one line
            raise named from None
    else:
        problem = (f"neither a WAV file (RIFF) nor a neurowire file (NWF): it starts with "
                   f"{bytes(data[:12])!r}")
        if path is not None:
            raise WavFileError(path, problem)
        raise CorruptStreamError(problem, lib.NW_ERR_MAGIC)
    try:
        return WavSamples(*parse_wav(wav))
    except ValueError as error:
        if path is None:
            raise
        raise WavFileError(path, error) from None


def _group_sizes(group_channels):
    sizes = [_check_channels(count) for count in group_channels]
    if not sizes:
        raise ValueError("at least one channel group is needed")
    if sum(sizes) > MAX_CHANNELS:
        raise ValueError(f"the groups hold {sum(sizes)} channels, more than {MAX_CHANNELS}")
    return tuple(sizes)


def team_cpus(threads):
    """A CPU for each of `threads` threads (the caller's first) for CodecTeam's cpus, or
    None to leave them to the scheduler: for one thread, or with fewer CPUs allowed than
    threads, or without an affinity API. Left alone, Linux tends to queue a helper woken for
    a block behind the thread that woke it, on one CPU, and the block takes twice as long."""
    if threads < 2 or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[:threads] if len(allowed) >= threads else None


class CodecTeam:
    """C threads that code the channel groups of one block side by side: the calling
    thread codes its share and `threads` - 1 helpers, waiting between blocks, the rest.
    One GroupEncoder/GroupDecoder call at a time uses it (others wait their turn), so one
    team can serve every stream of a process.

    cpus: a CPU per thread, the caller's first; helpers are bound to the others (Linux),
    as a scheduler left alone tends to queue a woken helper behind the thread that woke it.
    The caller binds its own thread if it wants to (os.sched_setaffinity(0, ...)).

    spin_us: how long a helper that has finished its share polls for the next block, and
    the caller for the helpers, before sleeping (0: sleep at once). A sleeping helper takes
    tens of microseconds to wake on a VM, on every block; polling saves that but keeps the
    team's CPUs busy, so it is for CPUs given to the team (at most SPIN_LIMIT_US)."""

    SPIN_LIMIT_US = lib.NW_TEAM_SPIN_LIMIT_US

    # A team wider than this would be threads waiting for cores: the daemon's `workers` has
    # the same bound.
    MAX_THREADS = 64

    def __init__(self, threads, cpus=None, spin_us=0):
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"threads must be an int, not {type(threads).__name__}")
        if not 1 <= threads <= self.MAX_THREADS:
            raise ValueError(f"threads must be in 1..{self.MAX_THREADS}, got {threads}")
        if isinstance(spin_us, bool) or not isinstance(spin_us, (int, np.integer)):
            raise TypeError(f"spin_us must be an int, not {type(spin_us).__name__}")
        if not 0 <= spin_us <= self.SPIN_LIMIT_US:
            raise ValueError(f"spin_us must be in 0..{self.SPIN_LIMIT_US}, got {spin_us}")
        helpers = int(threads) - 1
        cpu_list = ffi.NULL
        if cpus is not None:
            cpus = [int(cpu) for cpu in cpus]
            if len(cpus) < threads:
                raise ValueError(f"cpus lists {len(cpus)} CPUs for {threads} threads")
            cpu_list = ffi.new("int[]", cpus[1:threads] or [0])
        team = lib.nw_team_new(helpers, cpu_list)
        if team == ffi.NULL:
            raise MemoryError("nw_team_new failed")
        self._team = ffi.gc(team, lib.nw_team_free)
        _check(lib.nw_team_set_spin(self._team, int(spin_us)))
        self.spin_us = int(spin_us)
        # Fewer when the system refused a thread: the work is then shared among fewer.
        self.threads = lib.nw_team_helpers(self._team) + 1
        self.lock = threading.Lock()


def default_team_threads(groups):
    """One thread per group, but no more than the CPUs this process may use."""
    return max(1, min(groups, usable_cpus(), CodecTeam.MAX_THREADS))


class _GroupCoder:
    """What GroupEncoder and GroupDecoder share: the groups, a coder each, the team."""

    def __init__(self, group_channels, team, make_coder):
        self.group_channels = _group_sizes(group_channels)
        self.channels = sum(self.group_channels)
        self._coders = [make_coder(count) for count in self.group_channels]
        self.team = CodecTeam(default_team_threads(len(self._coders))) if team is None else team
        self._lock = threading.Lock()


class GroupEncoder(_GroupCoder):
    """A stream's channels in consecutive groups, each coded as a stream of its own (the
    blocks a StreamEncoder of those channels would make), the groups of a block side by
    side on C threads: group 0 on the calling thread, the others on helper threads that
    wait between blocks. One call per block, without the GIL and without copying a group
    out of the rows: for a stream too wide for one core.

    team: the CodecTeam that codes the groups (default: a team of one thread per group, at
    most one per CPU).
    format_version: as StreamEncoder's, for every group."""

    def __init__(self, group_channels, team=None, format_version=FORMAT_VERSION):
        _GroupCoder.__init__(self, group_channels, team,
                             lambda count: StreamEncoder(count, format_version=format_version))
        self._pointers = ffi.new("nw_stream_encoder *[]", [e._enc for e in self._coders])
        self._layouts = {}  # n_samples -> (offsets, total bytes): blocks keep one length

    def _layout(self, n):
        layout = self._layouts.get(n)
        if layout is None:
            bounds = [lib.nw_encode_bound(count, n) for count in self.group_channels]
            offsets = [sum(bounds[:g]) for g in range(len(bounds))]
            layout = self._layouts[n] = (ffi.new("size_t[]", offsets), offsets, sum(bounds))
            if len(self._layouts) > 64:  # a stream whose block lengths keep changing
                self._layouts.clear()
        return layout

    def encode(self, samples, keyframe=False):
        """Encodes an int16 array (n_samples, channels) into one block per group (bytes)."""
        block = _as_block(samples, self.channels)
        n = block.shape[0]
        c_offsets, offsets, total = self._layout(n)
        out = _alloc("uint8_t[]", total)
        groups = len(self._coders)
        sizes = ffi.new("int64_t[]", groups)
        with self._lock, self.team.lock:
            status = lib.nw_team_encode(self.team._team, groups, self._pointers,
                                        ffi.from_buffer("int16_t[]", block), n, self.channels,
                                        _keyframe_flag(keyframe), out, total, c_offsets, sizes)
        if status < 0:
            raise _error(status)
        view = ffi.buffer(out)
        return [view[offset:offset + sizes[g]] for g, offset in enumerate(offsets)]

    def native_handles(self):
        """For C code of this process that calls nw_team_encode itself (the daemon's data
        path): the addresses of the team and of the groups' encoder array, valid while this
        object lives, and the locks to hold around such a call (this encoder's, the team's),
        as encode holds them."""
        return {"team": int(ffi.cast("uintptr_t", self.team._team)),
                "encoders": int(ffi.cast("uintptr_t", self._pointers)),
                "locks": (self._lock, self.team.lock)}

    def channel_bytes(self):
        """Compressed bytes spent on each channel so far: uint64 array (channels,)."""
        with self._lock:
            return np.concatenate([encoder.channel_bytes() for encoder in self._coders])


class GroupDecoder(_GroupCoder):
    """Decodes what a GroupEncoder of the same groups made: the groups' blocks of one time
    span side by side on C threads, into one array. A block whose groups fail or disagree
    is lost as a whole: every group's state is dropped (resume at a keyframe).

    team: the CodecTeam that decodes the groups (default: as GroupEncoder's)."""

    def __init__(self, group_channels, team=None):
        _GroupCoder.__init__(self, group_channels, team, StreamDecoder)
        self._pointers = ffi.new("nw_stream_decoder *[]", [d._dec for d in self._coders])

    def reset(self):
        with self._lock:
            for decoder in self._coders:
                lib.nw_stream_decoder_reset(decoder._dec)

    def _fail(self, error):
        for decoder in self._coders:
            lib.nw_stream_decoder_reset(decoder._dec)
        return error

    def decode(self, blobs):
        """Decodes one block per group (a sequence of bytes-like) into an int16 array
        (n_samples, channels)."""
        groups = len(self._coders)
        if not isinstance(blobs, (list, tuple)):
            # bytes would iterate as ints, an int or None not at all: say what is wanted.
            raise TypeError(f"blobs must be a list of {groups} bytes-like blocks (one per "
                            f"channel group), not {type(blobs).__name__}")
        views = [_input_bytes(blob, "blob") for blob in blobs]
        with self._lock:
            if len(views) != groups:
                raise self._fail(CorruptStreamError(
                    f"{len(views)} blocks for {groups} channel groups", lib.NW_ERR_CORRUPT))
            info = ffi.new("nw_block_info *")
            lengths = set()
            for view in views:
                status = lib.nw_stream_block_peek(view, len(view), info)
                if status < 0:
                    raise self._fail(_error(status))
                lengths.add(info.n_samples)
            if len(lengths) != 1:
                raise self._fail(CorruptStreamError(
                    f"the groups of one block disagree on its length: {sorted(lengths)}",
                    lib.NW_ERR_CORRUPT))
            n = lengths.pop()
            out = np.empty((n, self.channels), dtype=np.int16)
            statuses = ffi.new("int[]", groups)
            infos = ffi.new("nw_block_info[]", groups)
            with self.team.lock:
                status = lib.nw_team_decode(self.team._team, groups, self._pointers,
                                            ffi.new("uint8_t *[]", views),
                                            ffi.new("size_t[]", [len(v) for v in views]),
                                            ffi.from_buffer("int16_t[]", out,
                                                            require_writable=True),
                                            n, self.channels, statuses, infos)
            if status < 0:
                raise self._fail(_error(status))
        return out


SIMD_LEVELS = {"auto": lib.NW_SIMD_AUTO, "scalar": lib.NW_SIMD_SCALAR, "sse2": lib.NW_SIMD_SSE2,
               "avx2": lib.NW_SIMD_AVX2, "avx512": lib.NW_SIMD_AVX512}


def native_function(name):
    """The address of one of the codec's C functions (nw_team_encode, nw_encode_bound), for
    C code of this process that calls it through a pointer: the codec's globals and tables
    are then this extension's, not a second copy."""
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def set_simd(level="auto"):
    """Which code the lane format runs on: "scalar", "sse2", "avx2", "avx512" (F, BW and VL)
    or "auto" (the best this CPU has). Every level writes the same bytes; this is for tests and benchmarks.
    Process-wide: call it while no stream is being coded. Returns the level now in use;
    ValueError when the CPU (or this build) lacks it."""
    if level not in SIMD_LEVELS:
        raise ValueError(f"level must be one of {sorted(SIMD_LEVELS)}, got {level!r}")
    got = lib.nw_lanes_set_simd(SIMD_LEVELS[level])
    if got < 0:
        raise ValueError(f"this CPU or build has no {level} code")
    return next(name for name, value in SIMD_LEVELS.items() if value == got)
