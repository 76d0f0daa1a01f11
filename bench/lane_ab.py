"""Two builds of the lane codec against each other, in one run: time (and count) them
alternating, so that a shared machine's changing load falls on both alike.

    .venv/bin/python bench/lane_ab.py [--base main] [--head WORKTREE] [--simd avx512 avx2]
                                      [--rounds 7] [--count]

Each side is the C core of a git revision (`--base`, default main) or of the work tree
(`--head`, the default), compiled with the extension's -O3 into bench/lane_steps.c's driver.
A round runs each build once per kernel (1024 x 10 blocks of the recordings, 200 blocks,
the block's median time), the order turned around every round; the table gives each build's
median over the rounds, the median and quartiles of the rounds' head/base ratios (a shared
machine's speed wanders more between rounds than within one), and the load average before
and after. `--count` adds
the instructions per sample of each build (lane_steps single-stepping 64 x 10 x 20 blocks,
as `neurowire bench codec --instructions` counts them).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from neurowire.codec.bench import find_recordings, load, stack_channels  # noqa: E402

CC = os.environ.get("CC", "cc")
FLAGS = ["-O3", "-std=c99", "-pthread"]   # codec_c/build_ffi.py's


def build(source: str, out: Path) -> Path:
    """lane_steps linked with the C core of `source` (a revision, or "WORKTREE")."""
    src = out / "src"
    src.mkdir(parents=True)
    if source == "WORKTREE":
        for f in (REPO / "codec_c" / "src").iterdir():
            shutil.copy(f, src)
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", source, "codec_c/src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "--strip-components=2", "-C", str(src)], input=archive, check=True)
    binary = out / "lane_steps"
    subprocess.run([CC, *FLAGS, f"-I{src}", "-o", str(binary), str(REPO / "bench" / "lane_steps.c"),
                    *sorted(str(p) for p in src.glob("nw_*.c")), "-lm"], check=True)
    return binary


def run(binary: Path, data: Path, shape, simd: str, env: dict) -> dict:
    out = subprocess.run([str(binary), str(data), *map(str, shape), simd], check=True,
                         capture_output=True, text=True, env={**os.environ, **env}).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision (default main)")
    parser.add_argument("--head", default="WORKTREE", help="git revision (default: the work tree)")
    parser.add_argument("--simd", nargs="+", default=["avx512", "avx2"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", action="store_true", help="also count instructions per sample")
    parser.add_argument("--data", help="folder of .wav recordings")
    args = parser.parse_args()

    _, signals = load(find_recordings(args.data)[0][:64])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timed, counted = (1024, 10, 200), (64, 10, 20)
        data = tmp / "timed.i16"
        stack_channels(signals, timed[0], timed[1] * timed[2]).tofile(data)
        small = tmp / "counted.i16"
        stack_channels(signals, counted[0], counted[1] * counted[2]).tofile(small)
        sides = {name: build(rev, tmp / name) for name, rev in (("base", args.base), ("head", args.head))}
        load_before = os.getloadavg()
        times = {(side, simd): {"encode_us": [], "decode_us": []} for side in sides for simd in args.simd}
        for r in range(args.rounds):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                for simd in args.simd:
                    result = run(sides[side], data, timed, simd, {"LANE_STEPS_TIME": "1"})
                    for key in ("encode_us", "decode_us"):
                        times[side, simd][key].append(result[key])
        load_after = os.getloadavg()
        counts = {(side, simd): run(sides[side], small, counted, simd, {})
                  for side in sides for simd in args.simd} if args.count else {}

    print(f"base {args.base}, head {args.head}; {timed[0]} x {timed[1]} blocks, median of "
          f"{args.rounds} alternating rounds (each the median of {timed[2]} blocks); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for simd in args.simd:
        for key in ("encode_us", "decode_us"):
            base = statistics.median(times["base", simd][key])
            head = statistics.median(times["head", simd][key])
            # each round's two runs are neighbours in time: their ratio is what the load spares
            ratios = sorted(h / b for h, b in zip(times["head", simd][key], times["base", simd][key]))
            line = (f"{simd:>7} {key[:6]}: base {base:7.1f} us, head {head:7.1f} us, head/base per round "
                    f"{statistics.median(ratios):.3f} (quartiles {ratios[len(ratios) // 4]:.3f}-"
                    f"{ratios[3 * len(ratios) // 4]:.3f})")
            if counts:
                c = key[:6]
                line += (f"; instructions/sample {counts['base', simd][c]:.1f} -> "
                         f"{counts['head', simd][c]:.1f}")
            print(line)


if __name__ == "__main__":
    main()
