"""`neurowire bench bounded`: ratio and measured error of bounded-error coding.

For each max_error k, every recording is coded as one single-channel stream in blocks of
--block time steps and decoded again; the error of every sample is measured in ADC levels
(codes of the grid the recordings use), and the command fails if any sample is off by more
than k. Ratio = raw int16 bytes / coded bytes.
"""
import argparse
import json
import sys

import numpy as np

from neurowire import options
from neurowire.options import bounded

from . import MAX_BLOCK_SAMPLES, MAX_ERROR_LIMIT, StreamDecoder, StreamEncoder, grid_values
from .bench import find_recordings, load

DEFAULT_LEVELS = (0, 1, 2, 4)


def code_of(samples, grid):
    """Index of each sample in the ADC grid (exact for on-grid values)."""
    idx = np.clip(np.searchsorted(grid, samples), 1, len(grid) - 1)
    nearer_below = (samples - grid[idx - 1]) < (grid[idx] - samples)
    return np.where(nearer_below, idx - 1, idx)


def measure(signals, max_error, block):
    grid = grid_values().astype(np.int64)
    raw = coded = 0
    worst = 0
    squares = 0.0
    count = 0
    for samples in signals:
        column = samples.reshape(-1, 1)
        encoder, decoder = StreamEncoder(1, max_error=max_error), StreamDecoder(1)
        parts = []
        for start in range(0, len(column), block):
            blob = encoder.encode(column[start:start + block])
            coded += len(blob)
            parts.append(decoder.decode(blob))
        decoded = np.concatenate(parts)[:, 0].astype(np.int64)
        raw += 2 * len(samples)
        error = code_of(decoded, grid) - code_of(samples.astype(np.int64), grid)
        worst = max(worst, int(np.abs(error).max(initial=0)))
        squares += float(np.sum(error.astype(np.float64) ** 2))
        count += len(samples)
    return {"max_error": max_error, "ratio": raw / coded, "measured_max_error": worst,
            "rms_error": (squares / max(count, 1)) ** 0.5, "samples": count,
            "within_bound": worst <= max_error}


def configure_parser(parser):
    parser.add_argument("--data", type=options.path, help="folder of .wav recordings (default: the challenge "
                        "set when found, else the bundled excerpts)")
    parser.add_argument("--levels", type=bounded(int, 0, MAX_ERROR_LIMIT, what="max_error"), nargs="+", default=list(DEFAULT_LEVELS),
                        help="max_error values to measure, in ADC levels")
    parser.add_argument("--block", type=bounded(int, 1, MAX_BLOCK_SAMPLES, what="the block length"), default=4096, help="time steps per block")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def run(args):
    paths, where = find_recordings(args.data)
    _, signals = load(paths)
    rows = [measure(signals, k, args.block) for k in args.levels]
    if args.json:
        print(json.dumps({"data": where, "files": len(paths), "rows": rows}))
    else:
        print(f"bounded-error coding on {len(paths)} recordings ({where}), "
              f"blocks of {args.block}; errors in ADC levels, every sample checked\n")
        print("| max_error k | ratio | measured max error | RMS error |")
        print("|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['max_error']} | {r['ratio']:.3f} | {r['measured_max_error']} | "
                  f"{r['rms_error']:.3f} |")
    return 0 if all(r["within_bound"] for r in rows) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
