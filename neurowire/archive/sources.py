"""Input files as columns of one int16 array, and back to the same bytes.

Every input file becomes `header bytes + int16 samples (n x c) + trailer bytes`:
- WAV (16-bit PCM, any channel count): header = everything before the `data` payload,
  trailer = whatever follows the last whole sample frame (pad byte, LIST chunks, ...).
- .npy (int16, 1-D or 2-D): header = the .npy header, trailer normally empty.
- raw .dat/.bin (flat little-endian int16, channels interleaved): no header, trailer = a
  last incomplete frame if any.  Channels and rate come from what the acquisition system
  wrote beside the file, else from `RawLayout` (`--channels N --rate R`):
    Open Ephys (binary format): structure.oebin, a JSON file two folders up from
      continuous/<folder_name>/continuous.dat; its "continuous" entries give folder_name,
      sample_rate, num_channels and per channel channel_name, bit_volts and units;
    SpikeGLX: X.meta beside X.bin, `key=value` lines: nSavedChans, imSampRate (imec) or
      niSampRate (NI); the rest is kept in the manifest as it was.
Header and trailer go into the store attributes, the samples into the array, so writing
`header + samples + trailer` gives the original file byte for byte.
"""

from __future__ import annotations

import base64
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np


MAX_AROUND_BYTES = 64 << 20   # headers and trailers of a source file, together


class InputError(ValueError):
    """An input file this archive format cannot hold byte-exact."""


RAW_SUFFIXES = (".dat", ".bin")
INPUT_SUFFIXES = (".wav", ".wave", ".npy") + RAW_SUFFIXES
OEBIN = "structure.oebin"


@dataclass(frozen=True)
class RawLayout:
    """How to read a flat int16 file that nothing beside it describes."""
    channels: int | None = None
    rate: float | None = None


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
    rate: float | None = None              # samples per second, when known
    channel_names: list | None = None      # as the acquisition system named them
    gain: list | None = None               # physical units per ADC code, per channel
    units: str | None = None               # of gain (e.g. "uV")
    origin: str = ""                       # "open-ephys", "spikeglx", "flat" for raw files
    meta: dict | None = None               # SpikeGLX .meta as it was (strings)
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
        """The entry of a store's manifest, checked: a store comes from anywhere, and its
        names become paths that decompress writes (InputError says what is wrong)."""
        if not isinstance(d, dict):
            raise InputError(f"a file entry is {type(d).__name__}, not a map")
        d = dict(d)
        known = {f.name for f in fields(cls)}
        if set(d) - known or {"name", "size", "n_samples", "channels"} - set(d):
            raise InputError(f"a file entry has keys {sorted(d)}; expected {sorted(known)}")
        try:
            d["header"] = base64.b64decode(d.get("header", ""), validate=True)
            d["trailer"] = base64.b64decode(d.get("trailer", ""), validate=True)
        except (TypeError, ValueError) as err:
            raise InputError(f"a file entry's header or trailer is not base64 ({err})") from None
        entry = cls(**d)
        problem = entry._problem()
        if problem:
            raise InputError(f"file entry {entry.name!r}: {problem}")
        return entry

    def _problem(self) -> str | None:
        name = self.name
        if not isinstance(name, str) or not name or name in (".", "..") or any(
                c in name for c in "/\\\0"):
            return "the name must be a plain file name (no folder, no '..')"
        for key in ("size", "mtime_ns", "data_offset", "n_samples", "channels", "column",
                    "ndim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or (
                    value < 0 and key != "mtime_ns"):  # a file may predate 1970
                return f"{key} must be a non-negative integer, not {value!r}"
        if self.channels < 1 or self.order not in ("C", "F") or self.ndim not in (1, 2):
            return "channels, order or ndim is not a possible value"
        if self.size != len(self.header) + self.data_bytes + len(self.trailer):
            return (f"size {self.size} is not header {len(self.header)} + samples "
                    f"{self.data_bytes} + trailer {len(self.trailer)} bytes")
        return None

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
    # The same strict reader as read_samples, reading only the chunk headers: a recording
    # may be far larger than memory, and its samples are mapped, not loaded.
    from neurowire.codec._wav import wav_layout

    with open(path, "rb") as f:
        def read(offset: int, count: int) -> bytes:
            f.seek(offset)
            return f.read(count)
        try:
            layout = wav_layout(read, st.st_size)
        except ValueError as error:
            raise InputError(f"{name}: {error}") from None
    return SourceFile(name=name, path=path, kind="wav", size=st.st_size,
                      mtime_ns=st.st_mtime_ns, data_offset=layout.data_offset,
                      n_samples=layout.frames, channels=layout.channels,
                      rate=float(layout.rate))


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


def _read_spikeglx_meta(path: str) -> dict:
    meta = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.rstrip("\r\n").partition("=")
            if sep:
                meta[key] = value
    return meta


def _spikeglx(path: str, name: str, meta_path: str) -> dict:
    meta = _read_spikeglx_meta(meta_path)
    try:
        channels = int(meta["nSavedChans"])
        rate = float(meta.get("imSampRate") or meta["niSampRate"])
    except (KeyError, ValueError) as err:
        raise InputError(f"{name}: {os.path.basename(meta_path)} lacks a valid nSavedChans "
                         f"and imSampRate/niSampRate ({err})") from err
    return dict(channels=channels, rate=rate, origin="spikeglx", meta=meta)


def _find_oebin(path: str) -> str | None:
    """structure.oebin of an Open Ephys recording holding `path`
    (<recording>/continuous/<folder>/continuous.dat)."""
    folder = os.path.dirname(path)
    for _ in range(3):
        candidate = os.path.join(folder, OEBIN)
        if os.path.isfile(candidate):
            return candidate
        folder = os.path.dirname(folder)
    return None


def _load_oebin(oebin: str) -> list[dict]:
    import json

    try:
        with open(oebin, encoding="utf-8") as f:
            streams = json.load(f)["continuous"]
        return [dict(s, folder_name=s["folder_name"].strip("/")) for s in streams]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{oebin}: not an Open Ephys structure.oebin ({err})") from err


def _open_ephys(path: str, name: str, oebin: str) -> dict:
    root = os.path.dirname(oebin)
    for stream in _load_oebin(oebin):
        folder = os.path.join(root, "continuous", stream["folder_name"])
        if os.path.abspath(os.path.dirname(path)) == os.path.abspath(folder):
            try:
                channels = int(stream["num_channels"])
                rate = float(stream["sample_rate"])
                described = stream.get("channels") or []
                names = [c.get("channel_name", str(i)) for i, c in enumerate(described)]
                gain = [float(c["bit_volts"]) for c in described if "bit_volts" in c]
                units = {c.get("units") for c in described} - {None}
            except (KeyError, ValueError, TypeError, AttributeError) as err:
                raise InputError(f"{name}: {oebin} describes folder {stream['folder_name']} "
                                 f"without num_channels and sample_rate ({err})") from err
            return dict(channels=channels, rate=rate, origin="open-ephys",
                        channel_names=names if len(names) == channels else None,
                        gain=gain if len(gain) == channels else None,
                        units=units.pop() if len(units) == 1 else None)
    raise InputError(f"{name}: {oebin} has no continuous stream in {os.path.dirname(path)}")


def _parse_raw(path: str, name: str, st: os.stat_result, layout: RawLayout) -> SourceFile:
    meta_path = os.path.splitext(path)[0] + ".meta"
    oebin = _find_oebin(path)
    if os.path.isfile(meta_path):
        described = _spikeglx(path, name, meta_path)
    elif oebin:
        described = _open_ephys(path, name, oebin)
    elif layout.channels and layout.rate:
        described = dict(channels=layout.channels, rate=float(layout.rate), origin="flat")
    else:
        raise InputError(f"{name}: a raw int16 file needs --channels N and --rate R "
                         "(no SpikeGLX .meta beside it, no Open Ephys structure.oebin above it)")
    for key in ("channels", "rate"):
        given = getattr(layout, key)
        if given and float(given) != float(described[key]):
            raise InputError(f"{name}: --{key} {given:g} but the {described['origin']} "
                             f"metadata says {described[key]:g}")
    if described["channels"] < 1 or described["rate"] <= 0:
        raise InputError(f"{name}: {described['channels']} channels at {described['rate']:g} Hz")
    n = st.st_size // (2 * described["channels"])
    return SourceFile(name=name, path=path, kind="raw", size=st.st_size,
                      mtime_ns=st.st_mtime_ns, data_offset=0, n_samples=n, **described)


def open_source(path: str, name: str | None = None,
                layout: RawLayout = RawLayout()) -> SourceFile:
    path = os.path.abspath(path)
    name = name or os.path.basename(path)
    st = os.stat(path)
    lower = path.lower()
    if lower.endswith(".npy"):
        src = _parse_npy(path, name, st)
    elif lower.endswith((".wav", ".wave")):
        src = _parse_wav(path, name, st)
    elif lower.endswith(RAW_SUFFIXES):
        src = _parse_raw(path, name, st, layout)
    else:
        raise InputError(f"{name}: not .wav, .npy, .dat or .bin")
    # The bytes around the samples are held in memory and kept base64 in the manifest: a
    # file whose samples end early (a huge or sparse file after a small data chunk) would
    # otherwise be read whole.
    around = src.data_offset + max(0, st.st_size - src.data_offset - src.data_bytes)
    if around > MAX_AROUND_BYTES:
        raise InputError(f"{name}: {around} bytes besides the samples; at most "
                         f"{MAX_AROUND_BYTES} are kept")
    with open(path, "rb") as f:
        src.header = f.read(src.data_offset)
        f.seek(src.data_offset + src.data_bytes)
        src.trailer = f.read(MAX_AROUND_BYTES + 1)
    if len(src.header) + len(src.trailer) > MAX_AROUND_BYTES:
        raise InputError(f"{name}: grew while read; more than {MAX_AROUND_BYTES} bytes "
                         "besides the samples")
    return src


def _oebin_files(oebin: str) -> list[tuple[str, str]]:
    """(path, archive name) of each continuous stream of an Open Ephys recording."""
    root = os.path.dirname(os.path.abspath(oebin))
    out = []
    for stream in _load_oebin(oebin):
        dat = os.path.join(root, "continuous", stream["folder_name"], "continuous.dat")
        if not os.path.isfile(dat):
            raise InputError(f"{oebin}: {dat} is missing")
        out.append((dat, stream["folder_name"].replace("/", "_") + ".continuous.dat"))
    return out


def collect_inputs(paths: list[str], layout: RawLayout = RawLayout()) -> list[SourceFile]:
    """Expand directories (their .wav, .npy, .dat and .bin files, sorted; an Open Ephys
    recording folder or its structure.oebin: its continuous streams) and lay files side
    by side as columns, in the given order."""
    files: list[tuple[str, str]] = []
    for p in paths:
        if os.path.isdir(p) and os.path.isfile(os.path.join(p, OEBIN)):
            files.extend(_oebin_files(os.path.join(p, OEBIN)))
        elif os.path.isdir(p):
            found = sorted(e.path for e in os.scandir(p) if e.is_file()
                           and e.name.lower().endswith(INPUT_SUFFIXES))
            if not found:
                raise InputError(f"{p}: no .wav, .npy, .dat or .bin files")
            files.extend((f, os.path.basename(f)) for f in found)
        elif os.path.isfile(p) and os.path.basename(p) == OEBIN:
            files.extend(_oebin_files(p))
        elif os.path.isfile(p):
            files.append((p, os.path.basename(p)))
        elif os.path.exists(p):
            raise InputError(f"{p}: not a regular file or folder (a pipe, socket or device)")
        else:
            raise InputError(f"{p}: no such file or directory")
    sources: list[SourceFile] = []
    seen: dict[str, str] = {}
    column = 0
    for path, name in files:
        if name in seen:
            raise InputError(f"two inputs are named {name}: {seen[name]} and {path}")
        seen[name] = path
        src = open_source(path, name, layout)
        src.column = column
        column += src.channels
        sources.append(src)
    if not sources:
        raise InputError("no input files")
    return sources


class ColumnReader:
    """Array-like (shape, dtype, ndim, __getitem__) over the input files laid out as
    columns of one (max samples x total channels) array.  Past its end a shorter file
    reads as `fill_value`, the store's (zarr's "no data"): the store holds no sample the
    file did not (its true length is in the attributes).  Holds only paths and offsets, so
    it pickles to Dask workers (which need the same paths, e.g. a shared filesystem)."""

    def __init__(self, sources: list[SourceFile], fill_value: int = 0):
        self.sources = [SourceFile.from_json(s.to_json()) for s in sources]
        for s in self.sources:
            s.header = s.trailer = b""  # not needed to read samples; keeps pickles small
            s.meta = None
        self.shape = (max(s.n_samples for s in sources), sum(s.channels for s in sources))
        self.dtype = np.dtype(np.int16)
        self.ndim = 2
        self.fill_value = fill_value

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        out = np.full((max(0, r1 - r0), max(0, c1 - c0)), self.fill_value, dtype=np.int16)
        for s in self.sources:
            a, b = max(c0, s.column), min(c1, s.column + s.channels)
            end = min(r1, s.n_samples)
            if a < b and r0 < end:
                out[:end - r0, a - c0:b - c0] = s.samples()[r0:end, a - s.column:b - s.column]
        return out
