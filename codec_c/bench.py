"""`neurowire bench codec`: compression ratio, single-core speed and per-block latency of
the codec, next to zlib, lzma and FLAC measured in the same process on the same data.

Data: the challenge recordings (../shared/data/challenge) when found, else the excerpts
bundled with the tests. Speeds are single-thread medians over --repeats runs.
"""
import argparse
import glob
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from neurowire import options
from neurowire.options import bounded

from . import (FORMAT_VERSION, LANE_FORMAT_VERSION, MAX_BLOCK_SAMPLES, CodecTeam, GroupDecoder,
               GroupEncoder, StreamEncoder, compress_bytes, decompress, read_samples, set_simd,
               team_cpus)
from ._codec import read_file

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the repo, for an editable install


def find_recordings(explicit=None):
    if explicit:
        paths = sorted(glob.glob(os.path.join(explicit, "*.wav")))
        if not paths:
            raise SystemExit(f"no .wav files in {explicit}")
        return paths, explicit
    for base in (Path.cwd(), SOURCE_ROOT):
        folder = base.parent / "shared" / "data" / "challenge"
        paths = sorted(glob.glob(str(folder / "*.wav")))
        if paths:
            return paths, str(folder)
    for base in (Path.cwd(), SOURCE_ROOT):
        paths = sorted(glob.glob(str(base / "tests" / "data" / "excerpt_*.wav")))
        if paths:
            return paths, "bundled test excerpts"
    raise SystemExit("no recordings found: pass --data DIR")


def load(paths):
    files, signals = [], []
    for p in paths:
        raw = read_file(p)  # a FIFO named *.wav is refused, not waited on
        files.append(raw)
        # The strict reader: a file of the folder that is no whole recording is named.
        signals.append(read_samples(p).samples[:, 0])
    return files, signals


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stack_channels(signals, channels, n_samples):
    """`channels` channels cut from the recordings at different offsets."""
    rng = np.random.default_rng(0)
    out = np.empty((n_samples, channels), np.int16)
    for c in range(channels):
        sig = signals[c % len(signals)]
        start = int(rng.integers(0, max(1, len(sig) - n_samples)))
        out[:, c] = np.resize(sig[start:start + n_samples], n_samples)
    return out


def percentiles_us(ns):
    ns = np.asarray(ns, dtype=np.float64) / 1e3
    return {"p50": float(np.percentile(ns, 50)), "p99": float(np.percentile(ns, 99)),
            "max": float(ns.max())}


# ---- whole-file measurements --------------------------------------------------------

def bytes_codec(name, enc, dec, files, repeats, n_samples):
    packed = [enc(f) for f in files]
    for f, p in zip(files, packed):
        if dec(p) != f:
            raise SystemExit(f"{name}: round trip failed")
    t_enc = median_time(lambda: [enc(f) for f in files], repeats)
    t_dec = median_time(lambda: [dec(p) for p in packed], repeats)
    return {"ratio": sum(map(len, files)) / sum(map(len, packed)),
            "encode_msps": n_samples / t_enc / 1e6, "decode_msps": n_samples / t_dec / 1e6}


def flac_files(paths, repeats, n_samples):
    """FLAC (level 5, the flac default) through the command-line tool, all files per call,
    so process start-up is spread over the whole set."""
    flac = shutil.which("flac")
    if not flac:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        enc_cmd = [flac, "-s", "-f", "-5", "--output-prefix", f"{out}/", *paths]
        t_enc = median_time(lambda: subprocess.run(enc_cmd, check=True), repeats)
        packed = sorted(out.glob("*.flac"))
        size = sum(p.stat().st_size for p in packed)
        dec_dir = out / "dec"
        dec_dir.mkdir()
        dec_cmd = [flac, "-s", "-f", "-d", "--output-prefix", f"{dec_dir}/", *map(str, packed)]
        t_dec = median_time(lambda: subprocess.run(dec_cmd, check=True), repeats)
        for p in paths:
            if (dec_dir / Path(p).name).read_bytes() != Path(p).read_bytes():
                raise SystemExit("flac: round trip failed")
    raw = sum(os.path.getsize(p) for p in paths)
    return {"ratio": raw / size, "encode_msps": n_samples / t_enc / 1e6,
            "decode_msps": n_samples / t_dec / 1e6, "note": "flac -5 binary, incl. process start"}


# ---- per-block latency --------------------------------------------------------------

# What the "polling" rows give the team (the daemon's spin_us): a block interval or more.
BENCH_SPIN_US = 1000


def neurowire_blocks(data, block, threads=1, spin_us=0, version=FORMAT_VERSION):
    """Each block coded as it would be live, its channels split into `threads` groups coded
    side by side by a CodecTeam, each thread on a CPU of its own when there are enough (the
    daemon's `workers`, `pin_threads` and `spin_us`); one group is a plain single-thread
    stream. version: the block format (FORMAT_VERSION or LANE_FORMAT_VERSION)."""
    groups = [g.shape[1] for g in np.array_split(data[:1], threads, axis=1)]
    cpus = team_cpus(threads)
    team = CodecTeam(threads, cpus, spin_us=spin_us)
    encoder = GroupEncoder(groups, team, format_version=version)
    decoder = GroupDecoder(groups, team)
    saved_affinity = os.sched_getaffinity(0) if cpus else None
    if cpus:
        os.sched_setaffinity(0, {cpus[0]})
    t_enc, t_dec, size = [], [], 0
    starts = range(0, len(data) - block + 1, block)
    try:
        for i in starts:
            part = data[i:i + block]
            t = time.perf_counter_ns()
            blobs = encoder.encode(part)
            t_enc.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            out = decoder.decode(blobs)
            t_dec.append(time.perf_counter_ns() - t)
            size += sum(map(len, blobs))
            if not np.array_equal(out, part):
                raise SystemExit("neurowire: block round trip failed")
    finally:
        if saved_affinity:
            os.sched_setaffinity(0, saved_affinity)
    return t_enc, t_dec, size, len(starts) * block * data.shape[1] * 2


def baseline_blocks(data, block, enc, dec):
    """Each block compressed on its own: what a stateless byte compressor can do live."""
    t_enc, t_dec, size, raw = [], [], 0, 0
    for i in range(0, len(data) - block + 1, block):
        part = np.ascontiguousarray(data[i:i + block]).tobytes()
        t = time.perf_counter_ns()
        blob = enc(part)
        t_enc.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        dec(blob)
        t_dec.append(time.perf_counter_ns() - t)
        size += len(blob)
        raw += len(part)
    return t_enc, t_dec, size, raw


# Run under callgrind by instructions_per_sample: codes `blocks` blocks of the recordings
# stacked as in the latency run (arguments: version, channels, block, blocks, data folder).
_COUNT_SCRIPT = """
import sys
import numpy as np
from neurowire.codec import StreamDecoder, StreamEncoder
from neurowire.codec.bench import find_recordings, load, stack_channels
version, channels, block, blocks = map(int, sys.argv[1:5])
_, signals = load(find_recordings(sys.argv[5] or None)[0][:64])
data = stack_channels(signals, channels, block * blocks)
enc, dec = StreamEncoder(channels, format_version=version), StreamDecoder(channels)
for i in range(blocks):
    dec.decode(enc.encode(data[i * block:(i + 1) * block]))
"""


def instructions_per_sample(version, channels, block, blocks, data_dir):
    """Instructions the C encoder and decoder retire per sample, counted by callgrind
    (valgrind; exact and the same on any run, where perf counters are often not available
    in a VM). None without valgrind."""
    valgrind = shutil.which("valgrind")
    annotate = shutil.which("callgrind_annotate")
    if not valgrind or not annotate:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run([valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-c", _COUNT_SCRIPT, str(version), str(channels),
                        str(block), str(blocks), data_dir or ""],
                       check=True, capture_output=True)
        listing = subprocess.run([annotate, "--inclusive=yes", str(out)], check=True,
                                 capture_output=True, text=True).stdout
    totals = {}
    for line in listing.splitlines():
        for name, key in (("nw_stream_encode_block ", "encode"), ("nw_stream_decode_block ", "decode")):
            if name in line and key not in totals and ".c:" in line:
                totals[key] = int(line.split()[0].replace(",", ""))
    samples = channels * block * blocks
    return {key: count / samples for key, count in totals.items()}


def instructions_by_stepping(channels, block, blocks, data_dir, simd):
    """The lane format's instructions per sample on one kernel of the lane code, counted by
    bench/lane_steps.c single-stepping the C core under ptrace: the AVX-512 code, which
    callgrind cannot run, included. None without the source tree or a C compiler."""
    driver, src = SOURCE_ROOT / "bench" / "lane_steps.c", SOURCE_ROOT / "codec_c" / "src"
    cc = shutil.which(os.environ.get("CC", "cc"))
    if not driver.exists() or not cc:
        return None
    _, signals = load(find_recordings(data_dir)[0][:64])
    with tempfile.TemporaryDirectory() as tmp:
        binary, data = Path(tmp) / "lane_steps", Path(tmp) / "samples.i16"
        stack_channels(signals, channels, block * blocks).tofile(data)
        # the extension's flags (codec_c/build_ffi.py)
        subprocess.run([cc, "-O3", "-std=c99", "-pthread", f"-I{src}", "-o", str(binary), str(driver),
                        *sorted(map(str, src.glob("nw_*.c"))), "-lm"], check=True, capture_output=True)
        out = subprocess.run([str(binary), str(data), str(channels), str(block), str(blocks), simd],
                             check=True, capture_output=True, text=True).stdout
    counts = json.loads(out)
    return {"encode": counts["encode"], "decode": counts["decode"], "blocks": f"{channels}x{block}"}


def stream_vs_whole(signals, channels, blocks):
    """Ratio of the recordings streamed as `channels` channels (recordings cycled, each
    channel coded on its own state, so repeats cannot flatter it) in blocks of a few
    samples, against the same samples coded one whole recording per block; in both block
    formats."""
    n = min(len(s) for s in signals)
    whole = sum(len(StreamEncoder(1).encode(s[:n].reshape(-1, 1))) for s in signals)
    whole_ratio = 2 * n * len(signals) / whole
    data = np.stack([signals[c % len(signals)][:n] for c in range(channels)], axis=1)
    result = {"channels": channels, "whole_ratio": whole_ratio, "samples_per_channel": n,
              "blocks": {}}
    for block in blocks:
        for version, suffix in ((FORMAT_VERSION, ""), (LANE_FORMAT_VERSION, " lanes")):
            enc = StreamEncoder(channels, format_version=version)
            size = sum(len(enc.encode(data[t:t + block])) for t in range(0, n, block))
            ratio = data.nbytes / size
            result["blocks"][f"{block}-sample blocks{suffix}"] = {
                "ratio": ratio, "change_percent": 100 * (ratio / whole_ratio - 1)}
    return result


def run_benchmark(args):
    # the lane kernel's code for the timed runs (callgrind, which has no AVX-512, counts the
    # best its CPU model offers)
    simd = set_simd(getattr(args, "simd", "auto"))
    paths, source = find_recordings(args.data)
    if args.files:
        paths = paths[:args.files]
    files, signals = load(paths)
    n_samples = sum(len(s) for s in signals)
    report = {"data": source, "simd": simd, "files": len(files), "samples": n_samples,
              "raw_bytes": sum(map(len, files)), "repeats": args.repeats, "files_results": {},
              "latency": {}}

    codecs = {
        "neurowire": (compress_bytes, decompress),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "lzma-6": (lambda b: lzma.compress(b, preset=6), lzma.decompress),
    }
    for name, (enc, dec) in codecs.items():
        if name in args.skip:
            continue
        report["files_results"][name] = bytes_codec(name, enc, dec, files, args.repeats, n_samples)
    if "flac" not in args.skip:
        flac = flac_files(paths, args.repeats, n_samples)
        if flac:
            report["files_results"]["flac"] = flac

    tools = [SOURCE_ROOT / "encode", SOURCE_ROOT / "decode"]
    if all(t.exists() for t in tools):
        program = sum(t.stat().st_size for t in tools)
        packed = sum(len(compress_bytes(f)) for f in files)
        report["challenge_score"] = {"ratio": report["raw_bytes"] / (packed + program),
                                     "program_bytes": program}

    report["stream_vs_whole"] = stream_vs_whole(signals, args.channels, args.blocks)

    data = stack_channels(signals, args.channels, args.latency_samples)
    for block in args.blocks:
        key = f"{args.channels}x{block}"
        lanes = LANE_FORMAT_VERSION
        entries = {"neurowire": neurowire_blocks(data, block),
                   "neurowire lanes": neurowire_blocks(data, block, version=lanes),
                   "neurowire 2 threads": neurowire_blocks(data, block, threads=2),
                   "neurowire lanes 2 threads": neurowire_blocks(data, block, threads=2,
                                                                 version=lanes),
                   "neurowire 2 threads, polling": neurowire_blocks(data, block, threads=2,
                                                                    spin_us=BENCH_SPIN_US)}
        for name, (enc, dec) in codecs.items():
            if name not in entries and name not in args.skip:
                entries[name] = baseline_blocks(data, block, enc, dec)
        report["latency"][key] = {}
        for name, (t_enc, t_dec, size, raw) in entries.items():
            report["latency"][key][name] = {
                "ratio": raw / size, "blocks": len(t_enc),
                "encode_us": percentiles_us(t_enc), "decode_us": percentiles_us(t_dec),
                "encode_msps": data.shape[1] * block / (np.median(t_enc) / 1e9) / 1e6}
    if args.instructions:
        report["instructions_blocks"] = f"{args.channels}x{args.blocks[0]}"
        report["instructions_per_sample"] = {
            name: instructions_per_sample(version, args.channels, args.blocks[0], 20, args.data)
            for name, version in (("version 1", FORMAT_VERSION), ("lanes", LANE_FORMAT_VERSION))}
        # callgrind runs the best code its own CPU model has (no AVX-512): the kernel in use
        # counted by single steps too, on 64 channels (a step costs a system call)
        stepped = instructions_by_stepping(64, args.blocks[0], 20, args.data, simd)
        if stepped:
            report["instructions_per_sample"][f"lanes, {simd} kernel"] = stepped
    return report


def print_report(r, out=sys.stdout):
    w = out.write
    w(f"data: {r['data']} ({r['files']} files, {r['samples'] / 1e6:.2f} M samples, "
      f"{r['raw_bytes'] / 1e6:.1f} MB); speeds: 1 thread, median of {r['repeats']}; "
      f"lane kernel: {r.get('simd', 'auto')}\n\n")
    base = r["files_results"].get("neurowire", {}).get("ratio")
    w(f"{'whole files':<12}{'ratio':>8}{'nw gain':>9}{'enc MS/s':>11}{'dec MS/s':>11}\n")
    for name, v in r["files_results"].items():
        rel = f"{base / v['ratio']:.2f}x" if base and name != "neurowire" else ""
        w(f"{name:<12}{v['ratio']:>8.3f}{rel:>9}{v['encode_msps']:>11.2f}{v['decode_msps']:>11.2f}"
          f"{'  (' + v['note'] + ')' if 'note' in v else ''}\n")
    if "challenge_score" in r:
        c = r["challenge_score"]
        w(f"challenge ratio with ./encode+./decode ({c['program_bytes']} B): {c['ratio']:.4f}\n")
    sv = r["stream_vs_whole"]
    w(f"\nstreamed as {sv['channels']} channels, whole recordings ratio {sv['whole_ratio']:.3f}: "
      + ", ".join(f"{b} {v['ratio']:.3f} ({v['change_percent']:+.2f} %)"
                  for b, v in sv["blocks"].items()) + "\n")
    for name, counts in r.get("instructions_per_sample", {}).items():
        if counts:
            w(f"\ninstructions per sample, {name} ({counts.get('blocks', r['instructions_blocks'])} blocks, "
              f"{'single steps' if 'kernel' in name else 'callgrind'}): "
              f"encode {counts.get('encode', 0):.0f}, "
              f"decode {counts.get('decode', 0):.0f}")
    if r.get("instructions_per_sample"):
        w("\n")
    for key, rows in r["latency"].items():
        w(f"\nblocks {key} (channels x samples), each block on its own call\n")
        w(f"{'':<28}{'ratio':>8}{'enc p50 us':>12}{'enc p99':>10}{'dec p50 us':>12}{'dec p99':>10}"
          f"{'enc MS/s':>10}\n")
        for name, v in rows.items():
            w(f"{name:<28}{v['ratio']:>8.3f}{v['encode_us']['p50']:>12.1f}{v['encode_us']['p99']:>10.1f}"
              f"{v['decode_us']['p50']:>12.1f}{v['decode_us']['p99']:>10.1f}{v['encode_msps']:>10.2f}\n")


def configure_parser(parser):
    parser.add_argument("--data", type=options.path, help="folder of .wav recordings (default: the challenge set, "
                        "else the bundled excerpts)")
    parser.add_argument("--files", type=bounded(int, 0, 1_000_000, what="the file count"), default=0,
                        help="use only the first N files (0: all)")
    parser.add_argument("--repeats", type=bounded(int, 1, 1000, what="the repeats"), default=3, help="runs per speed measurement")
    parser.add_argument("--channels", type=options.channels, default=1024, help="channels of the latency run")
    parser.add_argument("--blocks", type=bounded(int, 1, MAX_BLOCK_SAMPLES, what="a block length"), nargs="+", default=[10, 20],
                        help="block lengths (time steps) of the latency run")
    parser.add_argument("--latency-samples", type=bounded(int, 1, 1 << 26, what="the time steps"), default=5000,
                        help="time steps streamed in the latency run")
    parser.add_argument("--skip", nargs="*", default=[], choices=["zlib-6", "lzma-6", "flac"],
                        help="baselines to leave out")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per sample under callgrind (valgrind)")
    parser.add_argument("--simd", default="auto", choices=["auto", "scalar", "sse2", "avx2", "avx512"],
                        help="the lane kernel's code for the timed runs (default: the best this CPU has)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args):
    report = run_benchmark(args)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench_codec", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))
