"""`neurowire bench challenge DIR`: the Neuralink compression challenge's score over a folder.

As the challenge's eval.sh: every recording goes through `ENCODE in out` and `DECODE out copy`
and must come back byte for byte (the run stops at the first that does not, naming it); then

    ratio = total raw bytes / (total compressed bytes + size of ENCODE + size of DECODE)

The programs' own sizes count, so a coder cannot hide a dictionary in them.  The last line
printed is `ratio R`, with 4 decimals (eval.sh prints it with bc's scale=4).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from neurowire import options
from neurowire.options import bounded


class RoundTripError(Exception):
    """A recording did not survive encode and decode unchanged."""


@dataclass
class FileResult:
    name: str
    raw_bytes: int
    compressed_bytes: int
    encode_s: float
    decode_s: float


def time_limit_s(source: str) -> float:
    """How long one program may take on `source` before it counts as hung: a minute, plus a
    second per MB (the codec does ~10 MB/s on a slow host)."""
    return 60.0 + os.path.getsize(source) / 1e6


def _call(program: str, source: str, target: str, name: str, step: str) -> float:
    start = time.perf_counter()
    limit = time_limit_s(source)
    try:
        result = subprocess.run([program, source, target], capture_output=True, text=True,
                                timeout=limit)
    except subprocess.TimeoutExpired:
        raise RoundTripError(f"{name}: {step} did not finish within {limit:g} s") from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise RoundTripError(f"{name}: {step} exited {result.returncode}"
                             + (f" ({detail[-1]})" if detail else ""))
    if not os.path.isfile(target):
        raise RoundTripError(f"{name}: {step} exited 0 but wrote no {os.path.basename(target)}")
    return time.perf_counter() - start


def round_trip(path: str, encode: str, decode: str, workdir: str) -> FileResult:
    name = os.path.basename(path)
    compressed = os.path.join(workdir, name + ".nw")
    copy = os.path.join(workdir, name + ".copy")
    try:
        encode_s = _call(encode, path, compressed, name, "encode")
        decode_s = _call(decode, compressed, copy, name, "decode")
        if not filecmp.cmp(path, copy, shallow=False):
            raise RoundTripError(f"{name}: differs from the original after encode and decode")
        return FileResult(name, os.path.getsize(path), os.path.getsize(compressed),
                          encode_s, decode_s)
    finally:
        for leftover in (compressed, copy):
            if os.path.exists(leftover):
                os.remove(leftover)


def recordings(folder: str) -> list:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".wav"))
    if not names:
        raise FileNotFoundError(f"no .wav files in {folder}")
    paths = [os.path.join(folder, n) for n in names]
    for path in paths:  # a program reading a FIFO would wait for a writer for ever
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is not a regular file")
    return paths


def evaluate(folder: str, encode: str, decode: str, jobs: int = 1) -> dict:
    """Round-trips every recording (`jobs` at a time) and returns the score's parts; raises
    RoundTripError on the first file that fails."""
    for program in (encode, decode):
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise FileNotFoundError(f"{program} is not an executable file (build it with `make`)")
    encode, decode = os.path.abspath(encode), os.path.abspath(decode)
    paths = recordings(folder)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="neurowire-challenge-") as workdir, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(round_trip, p, encode, decode, workdir) for p in paths]
        results = []
        try:
            for future in futures:
                results.append(future.result())
        except RoundTripError:
            for future in futures:
                future.cancel()
            raise
    raw = sum(r.raw_bytes for r in results)
    compressed = sum(r.compressed_bytes for r in results)
    programs = os.path.getsize(encode) + os.path.getsize(decode)
    return {"files": results, "raw_bytes": raw, "compressed_bytes": compressed,
            "program_bytes": programs, "wall_s": time.perf_counter() - start,
            "ratio_without_programs": raw / compressed,
            "ratio": raw / (compressed + programs)}


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("The challenge score over a folder of WAV recordings: each file "
                          "round-tripped byte for byte through the programs, then raw bytes / "
                          "(compressed bytes + the programs' sizes).")
    parser.add_argument("folder", type=options.path, metavar="DIR", help="folder of .wav recordings")
    parser.add_argument("--encode", type=options.path, default="./encode", help="default ./encode")
    parser.add_argument("--decode", type=options.path, default="./decode", help="default ./decode")
    parser.add_argument("-j", "--jobs", type=bounded(int, 1, 256, what="the jobs"), default=1,
                        help="files round-tripped in parallel (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per file")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        score = evaluate(args.folder, args.encode, args.decode, args.jobs)
    except (RoundTripError, FileNotFoundError) as error:
        print(f"neurowire bench challenge: {error}", file=sys.stderr)
        print("ratio FAILED")
        return 1
    files = score["files"]
    if args.verbose:
        for f in files:
            print(f"{f.name} {f.raw_bytes} -> {f.compressed_bytes} bytes "
                  f"(encode {f.encode_s:.3f} s, decode {f.decode_s:.3f} s)")
    print(f"files {len(files)}, every one byte-exact after encode and decode")
    print(f"raw bytes {score['raw_bytes']}  compressed bytes {score['compressed_bytes']}  "
          f"encode+decode program bytes {score['program_bytes']}")
    print(f"ratio without program sizes {score['ratio_without_programs']:.4f}")
    print(f"encode {sum(f.encode_s for f in files):.2f} s, decode "
          f"{sum(f.decode_s for f in files):.2f} s (summed), run wall {score['wall_s']:.2f} s")
    print(f"ratio {score['ratio']:.4f}")
    return 0


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire bench challenge"))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
