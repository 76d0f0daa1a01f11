"""Why a block costs more in the stream than in `neurowire bench codec`: two checks that
need no stream (docs/PERFORMANCE.md, "the stream's codec figures against `neurowire bench
codec`'s").

    python bench/codec_in_stream.py sharing [--rounds 7]
        One thread on CPU 0 encodes 1024 x 10 blocks of the simulator's synthetic signal,
        timed by its own CPU clock (so waiting for a CPU is left out), three ways in turn
        each round of 100 blocks each: back to back as the bench does; with a 250 us sleep
        before each block, as the daemon idles between 0.5 ms packets; and the same with
        another process on CPU 0 sweeping 8 MiB meanwhile, as the simulator, the subscriber
        and libzmq's threads run on the daemon's CPU between its blocks. Prints the p50s
        and each way's ratio to back to back within a round.

    python bench/codec_in_stream.py instructions [--data DIR]
        Instructions the encoder and decoder retire on 40 blocks of 1024 x 10 of the
        synthetic signal and of the recordings, under callgrind (exact; perf counters are
        often unavailable in VMs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from neurowire.options import bounded

CHANNELS, BLOCK, RATE = 1024, 10, 20000.0
SLEEP_S = 0.00025
# Sweeps a buffer four times the codec's L2 on host D, touching each cache line.
SWEEPER = ("import os, numpy as np\nos.sched_setaffinity(0, {0})\n"
           "buffer = np.zeros(8 << 20, np.uint8)\nwhile True:\n    buffer[::64] += 1\n")

# Run under callgrind: codes 40 blocks of one kind of data (arguments: kind, data folder).
_COUNT_SCRIPT = """
import sys
import numpy as np
from neurowire.codec import LANE_FORMAT_VERSION, StreamDecoder, StreamEncoder
channels, block, blocks = 1024, 10, 40
if sys.argv[1] == "recordings":
    from neurowire.codec.bench import find_recordings, load, stack_channels
    _, signals = load(find_recordings(sys.argv[2] or None)[0][:64])
    data = stack_channels(signals, channels, block * blocks)
else:
    from neurowire.clients.synth import synthesize
    data = np.ascontiguousarray(synthesize(channels, 20000.0, 15000, 1)[:block * blocks])
encoder = StreamEncoder(channels, format_version=LANE_FORMAT_VERSION)
decoder = StreamDecoder(channels)
for first in range(0, block * blocks, block):
    decoder.decode(encoder.encode(data[first:first + block]))
"""


def sharing(rounds: int, blocks_per_way: int = 100) -> dict:
    """{way: [p50 CPU us per block, one per round]}. Short rounds, the three ways in turn
    within each: this host's speed changes from one minute to the next, so only blocks
    timed close together compare."""
    import signal

    import numpy as np

    from neurowire.clients.synth import synthesize
    from neurowire.codec import LANE_FORMAT_VERSION, StreamEncoder

    table = np.ascontiguousarray(synthesize(CHANNELS, RATE, 4000, 1))
    blocks = [np.ascontiguousarray(table[i:i + BLOCK]) for i in range(0, len(table), BLOCK)]
    encoder = StreamEncoder(CHANNELS, format_version=LANE_FORMAT_VERSION)
    os.sched_setaffinity(0, {0})

    def p50(sleep: bool) -> float:
        times = []
        for index in range(blocks_per_way):
            if sleep:
                time.sleep(SLEEP_S)
            started = time.thread_time_ns()
            encoder.encode(blocks[index % len(blocks)])
            times.append(time.thread_time_ns() - started)
        return float(np.median(times)) / 1e3

    ways = ("back to back", "sleeping between blocks",
            "sleeping, another process sweeping 8 MiB on the CPU")
    result = {way: [] for way in ways}
    sweeper = subprocess.Popen([sys.executable, "-c", SWEEPER])
    try:
        time.sleep(0.3)  # started and sweeping
        for _ in range(rounds):
            sweeper.send_signal(signal.SIGSTOP)
            result[ways[0]].append(p50(False))
            result[ways[1]].append(p50(True))
            sweeper.send_signal(signal.SIGCONT)
            result[ways[2]].append(p50(True))
    finally:
        sweeper.kill()
        sweeper.wait()
    return result


def instructions(data_dir: str | None) -> dict:
    """{kind: {"encode": instructions, "decode": instructions}} under callgrind."""
    valgrind, annotate = shutil.which("valgrind"), shutil.which("callgrind_annotate")
    if not valgrind or not annotate:
        raise SystemExit("needs valgrind (callgrind) and callgrind_annotate")
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("synthetic", "recordings"):
            out = os.path.join(tmp, f"callgrind.{kind}")
            subprocess.run([valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, "-c", _COUNT_SCRIPT, kind, data_dir or ""],
                           check=True, capture_output=True)
            listing = subprocess.run([annotate, "--inclusive=yes", "--threshold=100", out],
                                     check=True, capture_output=True, text=True).stdout
            counts = {}
            for line in listing.splitlines():
                for name, key in (("nw_stream_encode_block ", "encode"),
                                  ("nw_stream_decode_block ", "decode")):
                    if name in line and key not in counts and ".c:" in line:
                        counts[key] = int(line.split()[0].replace(",", ""))
            result[kind] = counts
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sharing").add_argument(
        "--rounds", type=bounded(int, 1, 100_000, what="the rounds"), default=30)
    commands.add_parser("instructions").add_argument("--data", help="folder of .wav "
                                                      "recordings (default: the bench's)")
    args = parser.parse_args(argv)
    if args.command == "sharing":
        result = sharing(args.rounds)
        import numpy as np

        base = result["back to back"]
        for way, p50s in result.items():
            ratios = [p / b for p, b in zip(p50s, base)]
            print(f"{way}: p50 CPU us per block, median of the rounds {np.median(p50s):.0f} "
                  f"(range {min(p50s):.0f}-{max(p50s):.0f}); against back to back in the "
                  f"same round: median {np.median(ratios):.2f}, quartiles "
                  f"{np.percentile(ratios, 25):.2f}-{np.percentile(ratios, 75):.2f}")
    else:
        result = instructions(args.data)
        for kind, counts in result.items():
            print(f"{kind}: " + ", ".join(f"{key} {count / 1e6:.2f} M instructions"
                                          for key, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
