"""Input files as columns of one int16 array, and back to the same bytes.

Every input file becomes `header bytes + int16 samples (n x c) + trailer bytes`:
- WAV (16-bit PCM, any channel count): header = everything before the `data` payload,
  trailer = whatever follows the last whole sample frame (pad byte, LIST chunks, ...).
- .npy (int16, 1-D or 2-D): header = the .npy header, trailer normally empty.
Header and trailer go into the store attributes, the samples into the array, so writing
`header + samples + trailer` gives the original file byte for byte.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import asdict, dataclass, field

import numpy as np

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Sub-format GUID tail shared by all KSDATAFORMAT_SUBTYPE_* values; PCM's starts 01 00.
_PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")


class InputError(ValueError):
    """An input file this archive format cannot hold byte-exact."""


@dataclass
class SourceFile:
    name: str              # file name inside the archive (unique)
    path: str              # absolute path at compress time
    kind: str              # "wav" or "npy"
    size: int              # bytes
    mtime_ns: int
    data_offset: int       # first sample byte
    n_samples: int         # time steps
    channels: int          # columns this file contributes
    order: str = "C"       # npy only: "F" = column-major data
    ndim: int = 2          # npy only: 1-D arrays come back 1-D (kept in the header anyway)
    column: int = 0        # first column in the archive array
    header: bytes = field(default=b"", repr=False)
    trailer: bytes = field(default=b"", repr=False)

    @property
    def data_bytes(self) -> int:
        return self.n_samples * self.channels * 2

    def to_json(self, with_path: bool = True) -> dict:
        d = asdict(self)
        if not with_path:
            # Where the inputs were is none of the archive's business (nor reproducible).
            d["path"] = ""
        d["header"] = base64.b64encode(self.header).decode("ascii")
        d["trailer"] = base64.b64encode(self.trailer).decode("ascii")
        return d

    @classmethod
    def from_json(cls, d: dict) -> SourceFile:
        d = dict(d)
        d["header"] = base64.b64decode(d["header"])
        d["trailer"] = base64.b64decode(d["trailer"])
        return cls(**d)

    def fingerprint(self) -> list:
        """What must not change between an interrupted run and its resumption."""
        return [self.name, self.size, self.mtime_ns, self.column, self.channels]

    def samples(self) -> np.ndarray:
        """Read-only (n_samples, channels) view of the file's samples, no copy."""
        if self.n_samples == 0:
            return np.zeros((0, self.channels), dtype=np.int16)
        return np.memmap(self.path, dtype="<i2", mode="r", offset=self.data_offset,
                         shape=(self.n_samples, self.channels), order=self.order)


def _parse_wav(path: str, name: str, st: os.stat_result) -> SourceFile:
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise InputError(f"{name}: not a RIFF/WAVE file")
        fmt = None
        pos = 12
        while True:
            f.seek(pos)
            hdr = f.read(8)
            if len(hdr) < 8:
                raise InputError(f"{name}: no data chunk")
            cid, csize = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(min(csize, 40))
            elif cid == b"data":
                break
            pos += 8 + csize + (csize & 1)  # RIFF chunks are word aligned
    if fmt is None or len(fmt) < 16:
        raise InputError(f"{name}: data chunk before a valid fmt chunk")
    tag, channels, _rate, _bps, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 40:
        tag = WAVE_FORMAT_PCM if fmt[24:40] == _PCM_GUID else tag
    if tag != WAVE_FORMAT_PCM or bits != 16 or channels == 0:
        raise InputError(
            f"{name}: only 16-bit PCM WAV is supported (format 0x{tag:04x}, {bits} bits, "
            f"{channels} channels)")
    data_offset = pos + 8
    # Streamed WAVs leave the size at 0 or 0xFFFFFFFF: trust the file length then.
    available = max(0, st.st_size - data_offset)
    payload = min(csize, available) if csize not in (0, 0xFFFFFFFF) else available
    n = payload // (2 * channels)
    return SourceFile(name=name, path=path, kind="wav", size=st.st_size,
                      mtime_ns=st.st_mtime_ns, data_offset=data_offset, n_samples=n,
                      channels=channels)


def _parse_npy(path: str, name: str, st: os.stat_result) -> SourceFile:
    with open(path, "rb") as f:
        try:
            major, _minor = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as err:
            raise InputError(f"{name}: not a .npy file ({err})") from err
        offset = f.tell()
    if dtype != np.dtype("<i2") or len(shape) not in (1, 2):
        raise InputError(
            f"{name}: only 1-D or 2-D little-endian int16 arrays are supported "
            f"(dtype {dtype}, shape {shape})")
    n = shape[0]
    channels = shape[1] if len(shape) == 2 else 1
    if channels == 0:
        raise InputError(f"{name}: array has no channels (shape {shape})")
    src = SourceFile(name=name, path=path, kind="npy", size=st.st_size,
                     mtime_ns=st.st_mtime_ns, data_offset=offset, n_samples=n,
                     channels=channels, order="F" if fortran and len(shape) == 2 else "C",
                     ndim=len(shape))
    if st.st_size < offset + src.data_bytes:
        raise InputError(f"{name}: file is shorter than its header says")
    return src


def open_source(path: str, name: str | None = None) -> SourceFile:
    path = os.path.abspath(path)
    name = name or os.path.basename(path)
    st = os.stat(path)
    if path.lower().endswith(".npy"):
        src = _parse_npy(path, name, st)
    elif path.lower().endswith((".wav", ".wave")):
        src = _parse_wav(path, name, st)
    else:
        raise InputError(f"{name}: neither .wav nor .npy")
    with open(path, "rb") as f:
        src.header = f.read(src.data_offset)
        f.seek(src.data_offset + src.data_bytes)
        src.trailer = f.read()
    return src


def collect_inputs(paths: list[str]) -> list[SourceFile]:
    """Expand directories (their .wav and .npy files, sorted) and lay files side by side
    as columns, in the given order."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(e.path for e in os.scandir(p) if e.is_file()
                           and e.name.lower().endswith((".wav", ".wave", ".npy")))
            if not found:
                raise InputError(f"{p}: no .wav or .npy files")
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    sources: list[SourceFile] = []
    seen: dict[str, str] = {}
    column = 0
    for path in files:
        name = os.path.basename(path)
        if name in seen:
            raise InputError(f"two inputs are named {name}: {seen[name]} and {path}")
        seen[name] = path
        src = open_source(path, name)
        src.column = column
        column += src.channels
        sources.append(src)
    if not sources:
        raise InputError("no input files")
    return sources


class ColumnReader:
    """Array-like (shape, dtype, ndim, __getitem__) over the input files laid out as
    columns of one (max samples x total channels) array. Past its end a shorter file
    repeats its last sample: a run of zeros costs the codec a lot when the signal sits on
    a grid that 0 is not on, a held value almost nothing. Holds only paths and offsets, so it pickles to Dask workers (which need the
    same paths, e.g. a shared filesystem)."""

    def __init__(self, sources: list[SourceFile]):
        self.sources = [SourceFile.from_json(s.to_json()) for s in sources]
        for s in self.sources:
            s.header = s.trailer = b""  # not needed to read samples; keeps pickles small
        self.shape = (max(s.n_samples for s in sources), sum(s.channels for s in sources))
        self.dtype = np.dtype(np.int16)
        self.ndim = 2

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=np.int16)
        for s in self.sources:
            a, b = max(c0, s.column), min(c1, s.column + s.channels)
            if a >= b or s.n_samples == 0:
                continue
            cols_in_file = slice(a - s.column, b - s.column)
            end = min(r1, s.n_samples)
            if r0 < end:
                out[:end - r0, a - c0:b - c0] = s.samples()[r0:end, cols_in_file]
            if r1 > s.n_samples:
                out[max(0, end - r0):, a - c0:b - c0] = s.samples()[-1, cols_in_file]
        return out
