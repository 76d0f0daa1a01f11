"""Ratio and speed of neurowire against the codecs labs use in zarr today, on the
development recordings (one WAV per channel).

Every recording is one chunk of shape (samples, 1), encoded and decoded through the
numcodecs interface in this process, one thread; every codec must give the samples back
exactly. Ratio = raw sample bytes / encoded bytes. A last row runs the whole
`neurowire compress` pipeline (files -> zarr store with 64-channel chunks, single process)
and reports file bytes / store bytes.

    python bench/bench_archive.py [--data DIR] [--limit N] [--repeat R]

Prints a markdown table. Codecs whose package is missing are listed as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neurowire.options import bounded



def load_recordings(data: Path, limit: int | None) -> list[np.ndarray]:
    from neurowire.archive.sources import open_source

    paths = sorted(p for p in data.iterdir() if p.suffix.lower() == ".wav")[:limit]
    return [np.array(open_source(str(p)).samples()) for p in paths]


def candidates():
    """(label, factory or None, why-missing) in table order."""
    import numcodecs

    from neurowire.archive import NeurowireCodec

    yield "neurowire", NeurowireCodec, ""
    yield "zstd level 3", lambda: numcodecs.Zstd(level=3), ""
    yield "zstd level 19", lambda: numcodecs.Zstd(level=19), ""
    yield "delta + zstd level 3", lambda: _Chain(numcodecs.Delta(dtype="<i2"),
                                                 numcodecs.Zstd(level=3)), ""
    yield "blosc lz4 shuffle (zarr 2 default)", lambda: numcodecs.Blosc(
        cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE), ""
    yield "blosc zstd bitshuffle", lambda: numcodecs.Blosc(
        cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE), ""
    try:
        from flac_numcodecs import Flac

        yield "FLAC level 8 (flac-numcodecs)", lambda: Flac(level=8), ""
    except ImportError as err:
        yield "FLAC (flac-numcodecs)", None, f"not installed ({err})"
    try:
        # The numcodecs class, not the zarr-3 wrapper the package exports when zarr 3 is
        # installed; one decoding thread, like every other row.
        from wavpack_numcodecs.wavpack import WavPack

        yield "WavPack level 3 (wavpack-numcodecs)", lambda: WavPack(
            level=3, num_decoding_threads=1), ""
    except ImportError as err:
        yield "WavPack (wavpack-numcodecs)", None, f"not installed ({err})"


class _Chain:
    """Filters then compressor, as zarr applies them."""

    def __init__(self, *codecs):
        self.codecs = codecs

    def encode(self, x):
        for c in self.codecs:
            x = c.encode(x)
        return x

    def decode(self, b):
        for c in reversed(self.codecs):
            b = c.decode(b)
        return b


def measure(factory, recordings, repeat: int) -> tuple[float, float, float]:
    codec = factory()
    raw = sum(r.nbytes for r in recordings)
    best_enc = best_dec = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        blobs = [bytes(codec.encode(r)) for r in recordings]
        best_enc = min(best_enc, time.perf_counter() - t)
        t = time.perf_counter()
        decoded = [codec.decode(b) for b in blobs]
        best_dec = min(best_dec, time.perf_counter() - t)
    for r, d in zip(recordings, decoded):
        d = np.frombuffer(np.ascontiguousarray(d).tobytes(), dtype=np.int16)
        if not np.array_equal(d, r.reshape(-1)):
            raise AssertionError(f"{type(codec).__name__} is not lossless here")
    return raw / sum(len(b) for b in blobs), raw / 1e6 / best_enc, raw / 1e6 / best_dec


def measure_pipeline(data: Path, limit: int | None) -> tuple[float, float, float]:
    from neurowire.archive.batch import compress, decompress

    paths = sorted(str(p) for p in data.iterdir() if p.suffix.lower() == ".wav")[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "a.zarr")
        s = compress(paths, store, dask="off", workers=1, progress=False)
        d = decompress(store, os.path.join(tmp, "back"), progress=False)
        for p in paths:
            with open(p, "rb") as a, open(os.path.join(tmp, "back", os.path.basename(p)), "rb") as b:
                assert a.read() == b.read(), p
    return s.ratio, s.input_bytes / 1e6 / s.seconds, d.input_bytes / 1e6 / d.seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="folder of .wav recordings (default: the challenge set beside the "
                         "clone, else the bundled excerpts)")
    ap.add_argument("--limit", type=bounded(int, 1, 1_000_000, what="the recordings"), default=None, help="first N recordings only")
    ap.add_argument("--repeat", type=bounded(int, 1, 1000, what="the repeats"), default=3, help="best of R timings")
    args = ap.parse_args(argv)
    if args.data is None:
        from neurowire.codec.bench import find_recordings

        args.data = Path(find_recordings()[0][0]).parent
    recordings = load_recordings(args.data, args.limit)
    raw = sum(r.nbytes for r in recordings)
    print(f"{len(recordings)} recordings, {raw / 1e6:.1f} MB of int16 samples, "
          f"one chunk per recording, 1 thread, best of {args.repeat}\n", file=sys.stderr)
    rows = []
    for label, factory, missing in candidates():
        if factory is None:
            rows.append(f"| {label} | {missing} | | |")
            continue
        try:
            ratio, enc, dec = measure(factory, recordings, args.repeat)
        except Exception as err:  # one codec failing must not hide the others
            rows.append(f"| {label} | failed: {type(err).__name__}: {err} | | |")
            continue
        rows.append(f"| {label} | {ratio:.3f} | {enc:.1f} | {dec:.1f} |")
        print(rows[-1], file=sys.stderr)
    ratio, enc, dec = measure_pipeline(args.data, args.limit)
    rows.append(f"| `neurowire compress` to zarr (files -> store, 64-ch chunks) | {ratio:.3f} | "
                f"{enc:.1f} | {dec:.1f} |")
    print("| codec | ratio | encode MB/s | decode MB/s |")
    print("| --- | ---: | ---: | ---: |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
