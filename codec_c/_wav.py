"""The one strict RIFF/WAVE reader of the Python side (read_samples, brainwire, the archive's
sources, the benchmarks' folders). The stdlib `wave` module rejects WAVE_FORMAT_EXTENSIBLE
and stops at some odd layouts, while recordings come with extra chunks and padding; the
other way round, a lax reader turns a damaged file into plausible samples. So this one takes
any chunk layout but refuses what cannot be a whole recording: half a frame, a data chunk
longer than the file, a second data (or fmt) chunk, a sample rate of 0.

./encode does not use it: the file container keeps ANY bytes exactly, and only codes the
samples of a WAV it recognises (codec_c/src/nw_file.c)."""
import struct
from os import fspath as os_fspath
from dataclasses import dataclass

import numpy as np

_PCM = 1
_EXTENSIBLE = 0xFFFE
# The first two bytes of the sub-format GUID hold the plain format tag (as in nw_file.c).
_SUBFORMAT_OFFSET = 24
# Writers that stream a WAV out before they know its length leave the data size at 0 or
# 0xFFFFFFFF: the samples then run to the end of the file (unless what follows a 0 is whole
# chunks to the end: a finished file with no samples, _chunks_to_end).
STREAMING_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class WavLayout:
    """Where a WAV file's samples are: data_bytes bytes of int16 frames at data_offset."""
    channels: int
    rate: int
    data_offset: int
    data_bytes: int

    @property
    def frames(self) -> int:
        return self.data_bytes // (2 * self.channels)


def not_wav_message(head: bytes) -> str:
    return f"not a WAV file: it starts with {bytes(head[:12])!r}, not RIFF<size>WAVE"


def wav_layout(read, size: int) -> WavLayout:
    """The layout of a WAV file of `size` bytes, whose bytes `read(offset, count)` returns
    (a slice of memory, or a seek and read of a file too big to load). ValueError says what
    is wrong when it is not a whole 16-bit PCM recording."""
    head = read(0, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError(not_wav_message(head))
    fmt = data = None
    pos = 12
    chunks = 0
    while pos + 8 <= size:
        header = bytes(read(pos, 8))
        chunk_id, (chunk_size,) = header[:4], struct.unpack_from("<I", header, 4)
        body = pos + 8
        chunks += 1
        # Chunk ids are four printable characters; zeros or noise where a chunk should be
        # (a sparse or garbage tail) would otherwise be walked 8 bytes at a time to the end.
        if not _is_chunk_id(chunk_id) or chunks > MAX_CHUNKS:
            if data is not None and fmt is not None:
                break  # after the samples: a trailer, not ours
            what = (f"more than {MAX_CHUNKS} chunks" if chunks > MAX_CHUNKS
                    else f"no chunk id ({chunk_id!r})")
            raise ValueError(f"{what} at byte {pos}, before both the fmt and the data "
                             "chunk: not a WAV recording's layout")
        if chunk_id == b"data":
            if data is not None:
                raise ValueError(f"a second data chunk at byte {pos} (the first holds the "
                                 f"samples at byte {data[0]}): which one is the recording?")
            if chunk_size in STREAMING_SIZES and not (chunk_size == 0 and
                                                      _chunks_to_end(read, body, size)):
                chunk_size = size - body
            elif body + chunk_size > size:
                raise ValueError(f"the data chunk says {chunk_size} bytes but only "
                                 f"{size - body} follow it: the file is truncated")
            data = (body, chunk_size)
        elif body + chunk_size > size:
            if data is None:
                raise ValueError(f"the {chunk_id!r} chunk at byte {pos} says {chunk_size} "
                                 "bytes, past the end of the file, before any data chunk")
            break  # bytes after the samples that are no whole chunk: a trailer, not ours
        elif chunk_id == b"fmt ":
            if fmt is not None:
                raise ValueError(f"a second fmt chunk at byte {pos}")
            fmt = _parse_fmt(read(body, min(chunk_size, 40)))
        pos = body + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise ValueError("WAV file has no fmt chunk")
    if data is None:
        raise ValueError("WAV file has no data chunk")
    channels, rate = fmt
    offset, data_bytes = data
    if data_bytes % (2 * channels):
        raise ValueError(f"the data chunk holds {data_bytes} bytes, not a whole number of "
                         f"{2 * channels}-byte frames ({channels} channels x 16 bits): "
                         "it ends in half a frame")
    return WavLayout(channels, rate, offset, data_bytes)


# A recording has a handful of chunks; a bound keeps a hostile file of millions of tiny
# chunks from costing a walk per chunk.
MAX_CHUNKS = 4096


def _is_chunk_id(chunk_id: bytes) -> bool:
    return len(chunk_id) == 4 and all(32 <= c < 127 for c in chunk_id)


def _chunks_to_end(read, pos: int, size: int) -> bool:
    """Whether the bytes from `pos` are whole chunks (an id of four printable ASCII
    characters, a size, its body) to the end of the file: after a data size of 0 they are
    a finished file's chunks (LIST, id3) and there are no samples; samples of a file
    streamed out with the size left at 0 do not line up so."""
    if pos >= size:
        return False  # nothing after: the streamed file of no samples yet reads the same
    for _ in range(MAX_CHUNKS):
        if pos + 8 > size:
            break
        header = bytes(read(pos, 8))
        if not _is_chunk_id(header[:4]):
            return False
        (chunk_size,) = struct.unpack_from("<I", header, 4)
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return pos in (size, size + 1)  # the last chunk's pad byte may be missing


def parse_wav(data):
    """Returns (int16 array (n_frames, channels), sample_rate) of 16-bit PCM WAV bytes."""
    data = memoryview(data).cast("B")
    layout = wav_layout(lambda offset, count: data[offset:offset + count], len(data))
    pcm = data[layout.data_offset:layout.data_offset + layout.data_bytes]
    samples = np.frombuffer(pcm, dtype="<i2")
    return samples.astype(np.int16).reshape(layout.frames, layout.channels), layout.rate


class WavFileError(ValueError):
    """A named file that is not a whole 16-bit PCM WAV recording; `filename` is its path
    (as OSError's is), so a command can say which of a folder's files it was."""

    def __init__(self, path, problem):
        self.filename = os_fspath(path)
        super().__init__(f"{self.filename}: {problem}")


def _parse_fmt(body):
    if len(body) < 16:
        raise ValueError("WAV fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= _SUBFORMAT_OFFSET + 2:
        (tag,) = struct.unpack_from("<H", body, _SUBFORMAT_OFFSET)
    if tag != _PCM or bits != 16:
        raise ValueError(f"only 16-bit PCM WAV is supported (format {tag}, {bits} bits)")
    if channels == 0:
        raise ValueError("WAV fmt chunk says 0 channels")
    if rate == 0:
        raise ValueError("WAV fmt chunk says a sample rate of 0")
    return channels, rate
