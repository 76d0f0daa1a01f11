"""`neurowire compress` and `neurowire decompress`.

neurowire/cli.py maps both sub-commands to this module and calls configure_parser(sub)
then run(args). Which command it is comes from `command` when given, else from the
sub-parser's prog ("neurowire compress"); run() reads it back from args.
configure_compress/run_compress and configure_decompress/run_decompress are the same per
command, for callers that prefer one function per command.
"""

from __future__ import annotations

import argparse
import sys

from neurowire import options
from neurowire.options import bounded
from neurowire.archive.batch import (DEFAULT_CHUNK_CHANNELS, DEFAULT_CHUNK_SAMPLES,
                                     ArchiveError, compress, decompress)
from neurowire.archive.sources import InputError, RawLayout


def configure_compress(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Compress WAV files (16-bit PCM, e.g. one per channel), int16 "
                          ".npy arrays or raw int16 .dat/.bin files (Open Ephys, SpikeGLX, "
                          "Intan, ...) into a zarr store, losslessly; rerun to resume.")
    parser.add_argument("inputs", type=options.path, nargs="+", metavar="DIR_OR_FILES",
                        help="files, or directories whose .wav/.npy/.dat/.bin files are taken "
                             "(sorted); an Open Ephys recording folder or its structure.oebin")
    parser.add_argument("--channels", type=bounded(int, 1, 1 << 16, what="channels"), default=None,
                        help="raw .dat/.bin: interleaved channels (read from structure.oebin "
                             "or a SpikeGLX .meta when present)")
    parser.add_argument("--rate", type=bounded(float, 0, 1e9, low_open=True, what="the rate"), default=None,
                        help="raw .dat/.bin: samples per second per channel (likewise)")
    parser.add_argument("-o", "--output", type=options.path, required=True, metavar="OUT.zarr")
    parser.add_argument("--chunk-samples", type=bounded(int, 1, 1 << 26, what="time steps per chunk"), default=DEFAULT_CHUNK_SAMPLES,
                        help="time steps per chunk (default %(default)s)")
    parser.add_argument("--chunk-channels", type=options.channels, default=DEFAULT_CHUNK_CHANNELS,
                        help="channels per chunk, at most 4096 (default %(default)s)")
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    parser.add_argument("--dask", metavar="SCHEDULER", default="off",
                        help="a distributed scheduler address, 'local' (a local cluster on "
                             "loopback) or 'off' (default: threads in this process, faster "
                             "on one machine)")
    parser.add_argument("--workers", type=bounded(int, 1, 1024, what="the workers"), default=None,
                        help="threads (local cluster or --dask off); default: all cores")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT.zarr instead of resuming it")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def configure_decompress(parser: argparse.ArgumentParser) -> None:
    parser.description = "Write the files of a neurowire zarr store back, byte for byte."
    parser.add_argument("store", type=options.path, metavar="OUT.zarr")
    parser.add_argument("-o", "--output", type=options.path, required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def configure_parser(parser: argparse.ArgumentParser, command: str | None = None) -> None:
    """command: "compress" or "decompress" (default: the last word of parser.prog)."""
    command = command or parser.prog.split()[-1]
    if command not in ("compress", "decompress"):
        raise ValueError(f"neurowire.archive.cli serves compress and decompress, not {command!r}")
    {"compress": configure_compress, "decompress": configure_decompress}[command](parser)
    parser.set_defaults(archive_command=command)


def run_compress(args: argparse.Namespace) -> int:
    try:
        summary = compress(args.inputs, args.output, chunk_samples=args.chunk_samples,
                           chunk_channels=args.chunk_channels, zarr_format=args.zarr_format,
                           dask=args.dask, workers=args.workers, overwrite=args.overwrite,
                           progress=not args.quiet,
                           layout=RawLayout(channels=args.channels, rate=args.rate))
    except (ArchiveError, InputError, OSError) as err:
        print(f"neurowire compress: {err}", file=sys.stderr)
        return 1
    print(summary.line("compressed"))
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    try:
        summary = decompress(args.store, args.output, overwrite=args.overwrite,
                             progress=not args.quiet)
    except (ArchiveError, OSError) as err:
        print(f"neurowire decompress: {err}", file=sys.stderr)
        return 1
    print(summary.line("decompressed"))
    return 0


def run(args: argparse.Namespace) -> int:
    return {"compress": run_compress, "decompress": run_decompress}[args.archive_command](args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (python -m neurowire.archive.cli compress|decompress ...)."""
    parser = argparse.ArgumentParser(prog="neurowire")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("compress", "decompress"):
        configure_parser(sub.add_parser(command), command)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
