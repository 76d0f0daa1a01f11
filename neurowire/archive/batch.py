"""Batch compression of recordings into a zarr store and back, resumable, optionally on
a Dask cluster.

Store layout (a zarr group, format 3 by default or 2):
- array `samples`: int16, (longest input x total channels), dimensions ("time",
  "channel") (format 3: dimension_names; format 2: the `_ARRAY_DIMENSIONS` attribute
  xarray reads); every input file owns a range of columns (a mono WAV one column); past a
  shorter file's end its columns hold the array's fill value (zarr's "no data"; 31, on the
  ADC grid, where the codec codes it almost free). Chunks are at most
  (chunk_samples x chunk_channels), evened out so the last chunk is nearly full; each
  chunk is one neurowire keyframe block.
- array attributes that stand alone: `sample_rate` (Hz, when every input has the same),
  `channel_ids` (file name, or name:index, or the acquisition system's channel name),
  `lengths` (each channel's true number of samples), `gain` and `gain_units` (physical
  units per ADC code per channel, null where the input does not say).
- while a run is unfinished the array is named `samples.unfinished`, so a plain zarr
  reader asking for `samples` gets "not found" rather than zeros where chunks are missing;
  it is renamed `samples` once every chunk was written and read back.
- group attribute `neurowire_archive`: the manifest (per file: name, size, columns,
  length, rate, and the header/trailer bytes that make the file byte-exact again), and
  `complete`, true only once every chunk was written and read back.
- `.neurowire-progress/`: while a run is unfinished, an empty marker per chunk, made only
  after that chunk was written and read back equal to the input. An interrupted run
  rewrites exactly the chunks without a marker; the directory goes when the run ends.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from neurowire.archive.codec import NeurowireCodec
from neurowire.cpus import usable_cpus
from neurowire.archive.sources import (ColumnReader, InputError, RawLayout, SourceFile,
                                      collect_inputs)

ARCHIVE_ATTR = "neurowire_archive"
ARCHIVE_VERSION = 2          # 2: raw inputs, rates, channel attributes; reads 1 and 2
READABLE_VERSIONS = (1, 2)
ARRAY_NAME = "samples"
UNFINISHED_NAME = "samples.unfinished"
DIMENSIONS = ["time", "channel"]
PROGRESS_DIR = ".neurowire-progress"
DEFAULT_CHUNK_SAMPLES = 1 << 16
DEFAULT_CHUNK_CHANNELS = 64


class ArchiveError(RuntimeError):
    """A store that cannot be written or read as asked (message says why and where)."""


@dataclass
class Summary:
    files: int
    input_bytes: int        # bytes of the input files (compress) / written files (decompress)
    store_bytes: int        # bytes of the zarr store on disk
    chunks_total: int
    chunks_done: int        # chunks processed by this run
    chunks_skipped: int     # chunks already done by an earlier, interrupted run
    seconds: float
    processed_bytes: int    # raw sample bytes this run handled

    @property
    def ratio(self) -> float:
        return self.input_bytes / self.store_bytes if self.store_bytes else float("inf")

    @property
    def mb_per_s(self) -> float:
        return self.processed_bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def line(self, verb: str) -> str:
        resumed = f", {self.chunks_skipped} from an earlier run" if self.chunks_skipped else ""
        return (f"{verb} {self.files} files: {self.input_bytes / 1e6:.2f} MB of files, "
                f"{self.store_bytes / 1e6:.2f} MB store, ratio {self.ratio:.3f}; "
                f"{self.chunks_done}/{self.chunks_total} chunks{resumed} in {self.seconds:.2f} s "
                f"({self.mb_per_s:.1f} MB/s)")


def _store_bytes(path: str) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != PROGRESS_DIR]
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _chunk_grid(shape, chunks) -> tuple[int, int]:
    return tuple(max(1, -(-s // c)) for s, c in zip(shape, chunks))


def _balanced(length: int, most: int) -> int:
    """Chunk length of at most `most` that splits `length` into near-equal chunks: zarr
    pads the last chunk to full size, and padding is compressed and stored like data."""
    if length <= 0:
        return 1
    return -(-length // -(-length // most))


def _marker_path(progress: str, i: int, j: int) -> str:
    return os.path.join(progress, f"{i}.{j}")


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def _verify_and_mark(stored: np.ndarray, source: np.ndarray, *, progress: str,
                     chunks: tuple[int, int], row0: int, block_info=None) -> np.ndarray:
    """Dask task: the block was written and read back (`stored`); mark its chunks done
    only if it equals the input."""
    (a, b), (c, d) = block_info[0]["array-location"]
    if not np.array_equal(stored, source):
        raise ArchiveError(f"rows {row0 + a}:{row0 + b}, columns {c}:{d} read back different "
                           "from the input")
    for i in range((row0 + a) // chunks[0], -(-(row0 + b) // chunks[0])):
        for j in range(c // chunks[1], -(-d // chunks[1])):
            _touch(_marker_path(progress, i, j))
    return np.ones((1, 1), dtype=bool)


def _manifest(sources: list[SourceFile], shape, chunks, zarr_format: int) -> dict:
    return {"version": ARCHIVE_VERSION, "complete": False, "zarr_format": zarr_format,
            "shape": list(shape), "chunks": list(chunks),
            "files": [s.to_json(with_path=False) for s in sources]}


def _same_run(old: dict, new: dict) -> bool:
    keys = ("version", "zarr_format", "shape", "chunks")
    if any(old.get(k) != new.get(k) for k in keys):
        return False
    try:
        fp = [SourceFile.from_json(f).fingerprint() for f in old.get("files", [])]
    except InputError:  # a damaged manifest is no run to resume
        return False
    return fp == [SourceFile.from_json(f).fingerprint() for f in new["files"]]


def _remove_archive(zarr, out: str) -> None:
    """--overwrite: removes `out` only when it is a neurowire archive, finished or not. A
    folder of other files (the inputs' folder, a home directory given by mistake) or a file
    is never deleted, whatever the flag says."""
    try:
        is_archive = (os.path.isdir(out) and not os.path.islink(out)
                      and ARCHIVE_ATTR in zarr.open_group(out, mode="r").attrs)
    except Exception:
        is_archive = False
    if not is_archive:
        raise ArchiveError(f"{out} exists and is not a neurowire archive: --overwrite replaces "
                           "only an archive; remove it yourself or choose another output")
    shutil.rmtree(out)


def _manifest_files(store: str, manifest, shape) -> list[SourceFile]:
    """The files a store's manifest lists, each checked (sources.SourceFile.from_json) and
    all of them against the array: names unique, every file's columns and rows inside it."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not files:
        raise ArchiveError(f"{store}: damaged manifest: no list of files")
    try:
        sources = [SourceFile.from_json(f) for f in files]
    except InputError as err:
        raise ArchiveError(f"{store}: damaged manifest: {err}") from None
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ArchiveError(f"{store}: damaged manifest: a file name appears twice")
    for s in sources:
        if s.column + s.channels > shape[1] or s.n_samples > shape[0]:
            raise ArchiveError(f"{store}: damaged manifest: {s.name!r} reaches past the "
                               f"{shape[0]} x {shape[1]} array")
    return sources


def channel_attributes(sources: list[SourceFile]) -> dict:
    """What a reader needs beside the samples, per channel (column) of the array."""
    ids, lengths, gain = [], [], []
    for s in sources:
        names = s.channel_names or ([s.name] if s.channels == 1 else
                                    [f"{s.name}:{i}" for i in range(s.channels)])
        ids += [str(n) for n in names]
        lengths += [s.n_samples] * s.channels
        gain += list(s.gain) if s.gain else [None] * s.channels
    rates = {s.rate for s in sources}
    units = {s.units for s in sources if s.gain}
    attrs = {"channel_ids": ids, "lengths": lengths, "gain": gain,
             "gain_units": units.pop() if len(units) == 1 else None}
    if len(rates) == 1 and None not in rates:
        attrs["sample_rate"] = rates.pop()
    return attrs


@functools.lru_cache(maxsize=1)
def fill_value() -> int:
    """What a store holds past a shorter file's end: the ADC grid value nearest zero (31).
    A value off the codec's grid costs ~16 bits a sample (0 cost 3 % of ratio on the
    challenge set, where lengths differ by 1 %); one on it nearly nothing."""
    from neurowire.codec import grid_values

    grid = grid_values().astype(np.int32)
    return int(grid[np.argmin(np.abs(grid))])


def _create_array(group, shape, chunks, zarr_format: int, attributes: dict):
    common = dict(name=UNFINISHED_NAME, shape=shape, attributes=attributes, chunks=chunks, dtype="int16",
                  fill_value=fill_value(), config={"write_empty_chunks": True})
    if zarr_format == 3:
        from neurowire.archive.zarr3 import NeurowireZarr3Codec

        return group.create_array(serializer=NeurowireZarr3Codec(), compressors=None,
                                  dimension_names=DIMENSIONS, **common)
    common["attributes"] = {**attributes, "_ARRAY_DIMENSIONS": DIMENSIONS}
    return group.create_array(compressors=NeurowireCodec(), filters=None, **common)


def _open_scheduler(dask: str, workers: int | None):
    """Returns (client, close) for a distributed scheduler, or (None, noop)."""
    from distributed import Client, LocalCluster

    if dask == "local":
        # Threads, not processes: the C core releases the GIL, and a thread pool starts
        # in a fraction of the time a process pool does.  The scheduler and the worker
        # talk in-process; their HTTP servers (dashboard, metrics) listen anyway, on every
        # interface unless told otherwise (dashboard_address=None does not stop them), so
        # they are put on loopback (issue 13).
        cluster = LocalCluster(n_workers=1, threads_per_worker=workers or usable_cpus(),
                               processes=False, dashboard_address="127.0.0.1:0",
                               worker_dashboard_address="127.0.0.1:0")
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()
        return client, close
    client = Client(dask)
    return client, client.close


def _runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """[1,2,3,7,8] -> [(1,4),(7,9)]: contiguous row-chunk ranges for to_zarr regions."""
    out: list[tuple[int, int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _need_zarr3(zarr) -> None:
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ArchiveError(f"neurowire compress and decompress need zarr >= 3.1 (found "
                           f"{zarr.__version__}); with zarr 2 the numcodecs codec "
                           "(neurowire.archive.NeurowireCodec) still works as a compressor")


def compress(inputs: list[str], out: str, *, chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
             chunk_channels: int = DEFAULT_CHUNK_CHANNELS, zarr_format: int = 3,
             dask: str = "off", workers: int | None = None, overwrite: bool = False,
             progress: bool = True, layout: RawLayout = RawLayout(),
             _after_chunk: Callable[[tuple[int, int]], None] | None = None) -> Summary:
    """Compress WAV/.npy/raw int16 files (or directories of them) into the zarr store `out`.

    dask: "off" (threads in this process), "local" (a local distributed cluster) or a
    scheduler address. An existing unfinished store made from the same inputs with the
    same settings is resumed; anything else in the way needs overwrite=True.
    """
    import zarr
    from tqdm import tqdm

    _need_zarr3(zarr)
    if not os.fspath(out).strip():
        # zarr takes "" as the current folder, and mode "w" empties it.
        raise ArchiveError("no output path given")
    if zarr_format not in (2, 3):
        raise ArchiveError(f"zarr format must be 2 or 3, not {zarr_format}")
    if not 1 <= chunk_channels <= 4096 or chunk_samples < 1:
        raise ArchiveError("chunk channels must be 1..4096 and chunk samples at least 1")
    t0 = time.perf_counter()
    sources = collect_inputs(inputs, layout)
    reader = ColumnReader(sources, fill_value())
    shape = reader.shape
    chunks = (_balanced(shape[0], chunk_samples), _balanced(shape[1], chunk_channels))
    manifest = _manifest(sources, shape, chunks, zarr_format)
    progress_dir = os.path.join(out, PROGRESS_DIR)

    group = None
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)  # an empty directory made ahead of time is as good as none
    if os.path.exists(out) and not overwrite:
        try:
            group = zarr.open_group(out, mode="r+")
            old = group.attrs[ARCHIVE_ATTR]
        except Exception as err:
            raise ArchiveError(f"{out} exists and is not a neurowire archive "
                               "(use --overwrite to replace it)") from err
        if not _same_run(old, manifest):
            raise ArchiveError(f"{out} holds an archive of other inputs or settings "
                               "(use --overwrite to replace it)")
        if old.get("complete"):
            n = int(np.prod(_chunk_grid(shape, chunks)))
            return Summary(len(sources), sum(s.size for s in sources), _store_bytes(out),
                           n, 0, n, time.perf_counter() - t0, 0)
        # Runtime settings are not stored: padding-only chunks must still be written, so
        # that a missing chunk file always means damage.  (Stores of version 1 kept the
        # array's final name while unfinished.)
        name = UNFINISHED_NAME if UNFINISHED_NAME in group else ARRAY_NAME
        z = group[name].with_config({"write_empty_chunks": True})
        # A killed writer can leave zarr's temporary files; they are never read as chunks.
        for root, _dirs, files in os.walk(out):
            for f in files:
                if f.endswith(".partial"):
                    os.unlink(os.path.join(root, f))
    else:
        if os.path.lexists(out):
            _remove_archive(zarr, out)
        group = zarr.open_group(out, mode="w", zarr_format=zarr_format)
        # The manifest goes first, complete=False: a store cut short at any point after
        # this is recognisably unfinished.
        group.attrs[ARCHIVE_ATTR] = manifest
        z = _create_array(group, shape, chunks, zarr_format, channel_attributes(sources))
    os.makedirs(progress_dir, exist_ok=True)

    grid = _chunk_grid(shape, chunks)
    all_chunks = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
    done = {c for c in all_chunks if os.path.exists(_marker_path(progress_dir, *c))}
    pending = [c for c in all_chunks if c not in done]

    def chunk_slices(i, j):
        return (slice(i * chunks[0], min(shape[0], (i + 1) * chunks[0])),
                slice(j * chunks[1], min(shape[1], (j + 1) * chunks[1])))

    def raw_bytes(c):
        r, s = chunk_slices(*c)
        return (r.stop - r.start) * (s.stop - s.start) * 2

    bar = tqdm(total=sum(raw_bytes(c) for c in all_chunks),
               initial=sum(raw_bytes(c) for c in done), unit="B", unit_scale=True,
               desc="compress", disable=not progress, dynamic_ncols=True)
    processed = 0
    try:
        if pending and dask != "off":
            processed = _compress_dask(z, reader, chunks, pending, progress_dir, dask, workers,
                                       bar, raw_bytes)
        elif pending:
            def write(c):
                sl = chunk_slices(*c)
                block = reader[sl]
                z[sl] = block
                if not np.array_equal(z[sl], block):
                    raise ArchiveError(f"chunk {c} read back different from the input")
                _touch(_marker_path(progress_dir, *c))
                return c

            with ThreadPoolExecutor(max_workers=workers or usable_cpus()) as pool:
                for c in pool.map(write, pending):
                    bar.update(raw_bytes(c))
                    processed += raw_bytes(c)
                    if _after_chunk is not None:
                        _after_chunk(c)
    finally:
        bar.close()

    missing = [c for c in all_chunks if not os.path.exists(_marker_path(progress_dir, *c))]
    if missing:
        raise ArchiveError(f"{len(missing)} chunks were not written, e.g. {missing[0]}; "
                           "run the same command again to finish")
    if os.path.isdir(os.path.join(out, UNFINISHED_NAME)):
        os.replace(os.path.join(out, UNFINISHED_NAME), os.path.join(out, ARRAY_NAME))
    manifest["complete"] = True
    group.attrs[ARCHIVE_ATTR] = manifest
    shutil.rmtree(progress_dir, ignore_errors=True)
    return Summary(len(sources), sum(s.size for s in sources), _store_bytes(out),
                   len(all_chunks), len(pending), len(done), time.perf_counter() - t0,
                   processed)


def _compress_dask(z, reader, chunks, pending, progress_dir, dask_address, workers, bar,
                   raw_bytes) -> int:
    import dask
    import dask.array as da
    from distributed import as_completed

    client, close = _open_scheduler(dask_address, workers)
    try:
        src = da.from_array(reader, chunks=chunks, lock=False, asarray=True,
                            meta=np.empty((0, 0), dtype=np.int16),
                            name="neurowire-input-" + dask.base.tokenize(
                                [s.fingerprint() + [s.path] for s in reader.sources]))
        pending_rows = {i for i, _ in pending}
        chunk_nbytes = chunks[0] * chunks[1] * 2
        deliverables = []
        for r0, r1 in _runs(pending_rows):
            rows = slice(r0 * chunks[0], min(z.shape[0], r1 * chunks[0]))
            part = src[rows]
            # to_zarr regroups the input into "auto" chunks of up to array.chunk-size
            # bytes; one zarr chunk per task gives one marker per chunk as it finishes.
            with dask.config.set({"array.chunk-size": chunk_nbytes}):
                stored = da.to_zarr(part, z, region=(rows, slice(None)), compute=False,
                                    return_stored=True)
            marks = da.map_blocks(
                functools.partial(_verify_and_mark, progress=progress_dir, chunks=chunks,
                                  row0=rows.start),
                stored, part.rechunk(stored.chunks), dtype=bool,
                chunks=(tuple(1 for _ in stored.chunks[0]), tuple(1 for _ in stored.chunks[1])),
                meta=np.empty((0, 0), dtype=bool))
            for (bi, bj), d in np.ndenumerate(marks.to_delayed()):
                a = sum(stored.chunks[0][:bi]) + rows.start
                b = a + stored.chunks[0][bi]
                nbytes = (b - a) * stored.chunks[1][bj] * 2
                deliverables.append((d, nbytes))
        futures = client.compute([d for d, _ in deliverables])
        size = {f.key: n for f, (_, n) in zip(futures, deliverables)}
        processed = 0
        for fut in as_completed(futures):
            fut.result()  # re-raises a worker's error here
            bar.update(size[fut.key])
            processed += size[fut.key]
        return processed
    finally:
        close()


def _chunk_key_path(store: str, z, i: int, j: int) -> tuple[str, str]:
    key = z.metadata.encode_chunk_key((i, j))
    return f"{ARRAY_NAME}/{key}", os.path.join(store, ARRAY_NAME, *key.split("/"))


def _read_band(store: str, z, rows: slice, j0: int, j1: int, chunks) -> np.ndarray:
    """Rows x the columns of chunk columns j0..j1-1; errors name the chunk."""
    i = rows.start // chunks[0]
    for j in range(j0, j1):
        key, path = _chunk_key_path(store, z, i, j)
        if not os.path.exists(path):
            raise ArchiveError(f"{store}: chunk {key} is missing")
    cols = slice(j0 * chunks[1], min(z.shape[1], j1 * chunks[1]))
    try:
        return z[rows, cols]
    except Exception:
        pass
    # Read the chunks one at a time to name the damaged one.
    parts = []
    for j in range(j0, j1):
        key, _ = _chunk_key_path(store, z, i, j)
        try:
            parts.append(z[rows, j * chunks[1]:min(z.shape[1], (j + 1) * chunks[1])])
        except Exception as err:
            raise ArchiveError(f"{store}: chunk {key} is damaged: {err}") from err
    return np.concatenate(parts, axis=1)


def _read_columns(store: str, z, s: SourceFile, chunks) -> np.ndarray:
    j0 = s.column // chunks[1]
    j1 = -(-(s.column + s.channels) // chunks[1])
    off = s.column - j0 * chunks[1]
    parts = [_read_band(store, z, slice(r, min(s.n_samples, r + chunks[0])), j0, j1, chunks)
             [:, off:off + s.channels] for r in range(0, s.n_samples, chunks[0])]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, s.channels), np.int16)


def _batches(sources: list[SourceFile], chunk_cols: int) -> list[tuple[int, int, list]]:
    """Files grouped so that each group covers whole chunk columns j0..j1-1 that no other
    group touches: every chunk is decoded once, and only a chunk's worth of files is open."""
    out: list[tuple[int, int, list]] = []
    for s in sorted(sources, key=lambda s: s.column):
        j0 = s.column // chunk_cols
        j1 = -(-(s.column + s.channels) // chunk_cols)
        if out and j0 < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], j1), out[-1][2] + [s])
        else:
            out.append((j0, j1, [s]))
    return out


def decompress(store: str, out_dir: str, *, overwrite: bool = False,
               progress: bool = True) -> Summary:
    """Write every file of the archive `store` into `out_dir`, byte for byte."""
    import zarr
    from tqdm import tqdm

    _need_zarr3(zarr)
    import neurowire.archive.zarr3  # noqa: F401  (format 3 stores need the codec registered)

    t0 = time.perf_counter()
    if not os.fspath(store).strip() or not os.fspath(out_dir).strip():
        raise ArchiveError("no store or no output folder given")
    try:
        group = zarr.open_group(store, mode="r")
        manifest = group.attrs[ARCHIVE_ATTR]
    except Exception as err:
        raise ArchiveError(f"{store} is not a neurowire archive ({err})") from err
    if manifest.get("version") not in READABLE_VERSIONS:
        raise ArchiveError(f"{store}: archive version {manifest.get('version')} is not "
                           f"supported (this neurowire reads {READABLE_VERSIONS})")
    if not manifest.get("complete"):
        raise ArchiveError(f"{store} is unfinished: run the compress command again to "
                           "complete it")
    try:
        z = group[ARRAY_NAME]
    except Exception as err:
        raise ArchiveError(f"{store} has no {ARRAY_NAME} array ({err})") from err
    sources = _manifest_files(store, manifest, z.shape)
    chunks = tuple(z.chunks)
    os.makedirs(out_dir, exist_ok=True)
    for s in sources:
        target = os.path.join(out_dir, s.name)
        if os.path.exists(target) and not overwrite:
            raise ArchiveError(f"{target} exists (use --overwrite to replace it)")

    total = sum(s.size for s in sources)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="decompress",
               disable=not progress, dynamic_ncols=True)
    try:
        for j0, j1, group_sources in _batches(sources, chunks[1]):
            col0 = j0 * chunks[1]
            handles = {}
            try:
                for s in group_sources:
                    tmp = os.path.join(out_dir, f".{s.name}.partial")
                    handles[s.name] = (open(tmp, "wb"), tmp)
                    handles[s.name][0].write(s.header)
                    bar.update(len(s.header))
                length = max(s.n_samples for s in group_sources)
                for r0 in range(0, length, chunks[0]):
                    rows = slice(r0, min(length, r0 + chunks[0]))
                    band = _read_band(store, z, rows, j0, j1, chunks)
                    for s in group_sources:
                        if s.order == "F" or r0 >= s.n_samples:
                            continue
                        part = band[:s.n_samples - r0, s.column - col0:s.column - col0 + s.channels]
                        data = np.ascontiguousarray(part, dtype="<i2").tobytes()
                        handles[s.name][0].write(data)
                        bar.update(len(data))
                for s in group_sources:
                    f, tmp = handles[s.name]
                    if s.order == "F":
                        # Column-major .npy data: the whole array, transposed, in one go.
                        whole = _read_columns(store, z, s, chunks)
                        data = np.ascontiguousarray(whole.T, dtype="<i2").tobytes()
                        f.write(data)
                        bar.update(len(data))
                    f.write(s.trailer)
                    bar.update(len(s.trailer))
                    f.close()
                    if os.path.getsize(tmp) != s.size:
                        raise ArchiveError(f"{s.name}: wrote {os.path.getsize(tmp)} bytes, "
                                           f"the original had {s.size}")
                    os.replace(tmp, os.path.join(out_dir, s.name))
            finally:
                for f, tmp in handles.values():
                    f.close()
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    finally:
        bar.close()
    return Summary(len(sources), total, _store_bytes(store), int(np.prod(_chunk_grid(z.shape, chunks))),
                   int(np.prod(_chunk_grid(z.shape, chunks))), 0, time.perf_counter() - t0,
                   sum(s.data_bytes for s in sources))
