"""`neurowire demo` (what `make run` runs): the product working, at a size this machine carries.

First the capacity check (neurowire.capacity) says whether the default stream fits here now
and picks the largest that does; then `neurowire bench stream` runs simulator -> daemon ->
lossless subscriber at that size, through its command line, with every block decoded and
compared after the stream; last, a summary of what ran, what was lost and the latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from neurowire import capacity
from neurowire.options import bounded

RATE = capacity.RATE


def _stream_options() -> set:
    """The options `neurowire bench stream` offers (its module's own parser)."""
    from neurowire.clients import bench_stream

    parser = bench_stream.configure_parser(argparse.ArgumentParser())
    return {option for action in parser._actions for option in action.option_strings}


def _ms(packet_samples: int) -> str:
    return f"{packet_samples / RATE * 1e3:g} ms"


def stream_command(channels: int, packet_samples: int, workers: int, seconds: float) -> list:
    command = [sys.executable, "-m", "neurowire.cli", "bench", "stream",
               "--seconds", f"{seconds:g}", "--channels", str(channels),
               "--workers", str(workers), "--verify", "after", "--json"]
    if packet_samples != 10:
        command += ["--packet-samples", str(packet_samples)]
    return command


def summary(report: dict, channels: int, packet_samples: int, workers: int,
            seconds: float) -> tuple[list, bool]:
    """The last lines a user reads, and whether the run is a success."""
    sent, lost = report["packets_sent"], report["packets_lost"]
    ok = bool(report["exact"]) and lost == 0
    lines = [f"ran: implant simulator -> daemon ({workers} encoder thread"
             f"{'s' if workers > 1 else ''}) -> lossless subscriber on loopback, {channels} "
             f"channels x {RATE / 1e3:g} kHz in {_ms(packet_samples)} packets for {seconds:g} s;"
             " every block decoded and compared with what was sent, after the stream"]
    compared = report.get("samples_compared")
    if ok:
        lines.append(f"lost: nothing ({sent:,} of {sent:,} packets arrived"
                     + (f", all {compared:,} samples exact)" if compared else ", every sample exact)"))
    else:
        drops = report.get("daemon_drops")
        lines.append(f"lost: {lost:,} of {sent:,} packets"
                     + (f" ({drops:,} dropped by the daemon, which fell behind)" if drops else "")
                     + ("" if report["exact"] or lost else "; decoded samples differ from what was sent"))
    latency = report.get("latency_us", {})
    end_to_end, compress = latency.get("end_to_end"), latency.get("compress")
    if end_to_end:
        line = (f"latency: end to end p50 {end_to_end['p50'] / 1e3:.2f} ms, p99 "
                f"{end_to_end['p99'] / 1e3:.2f} ms (simulator send to subscriber decoded; decode"
                " timed after the stream and added)")
        if compress:
            line += (f"; compression p50 {compress['p50'] / 1e3:.2f} ms, p99 "
                     f"{compress['p99'] / 1e3:.2f} ms")
        lines.append(line)
    if report.get("ratio"):
        lines.append(f"compression ratio: {report['ratio']:.3f} (synthetic signal)")
    return lines, ok


def advice(report: dict, channels: int, packet_samples: int) -> str:
    load = report.get("load_average", {})
    busier = ""
    if load.get("start") and load.get("end"):
        busier = (f" (load average {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at "
                  "the end)")
    smaller = max(capacity.CHANNEL_LADDER[-1], channels // 2)
    return (f"why: the pipeline fell behind the stream's rate{busier}: other work took CPU the "
            "capacity check counted on, or this machine is slower than it measured. What to "
            "change: stop other CPU-heavy work and run `make run` again, or run a smaller "
            f"stream: `neurowire demo --channels {smaller}`"
            + (f" --packet-samples {packet_samples}" if packet_samples != 10 else "")
            + "; `neurowire bench capacity --json` shows every figure of the check.")


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Check this machine's capacity, then stream simulator -> daemon -> "
                          "subscriber at the largest size it sustains and check every sample.")
    parser.add_argument("--seconds", type=bounded(float, 0, 86400, low_open=True, what="the stream length"), default=10.0, help="stream length (default 10)")
    parser.add_argument("--channels", type=bounded(int, 1, 4096, what="channels"),
                        help="run this many channels whatever the capacity check says")
    parser.add_argument("--packet-samples", type=bounded(int, 1, 10_000, what="time steps per packet"), default=None,
                        help="with --channels: time steps per packet (default 10 = 0.5 ms)")
    return parser


def run(args: argparse.Namespace) -> int:
    options = _stream_options()
    packet_ladder = [p for p in capacity.PACKET_LADDER
                     if p == 10 or "--packet-samples" in options]
    print("checking this machine's capacity (codec speed, per-packet cost, free CPU) ...",
          flush=True)
    measured = capacity.measure(packet_options=packet_ladder)
    print(capacity.describe(measured), flush=True)
    if args.channels:
        channels, packet_samples = args.channels, args.packet_samples or 10
        workers = capacity.workers_for(measured.cpus)
        print(f"running {channels} channels in {_ms(packet_samples)} packets as asked.")
    else:
        # With nothing inside the margin, the smallest size is still worth a try: the lossless
        # subscriber lets the daemon fall behind for a while before anything is lost.
        chosen = measured.chosen or measured.plans[-1]
        if measured.chosen is None:
            print(f"trying {chosen.channels} channels in {_ms(chosen.packet_samples)} packets "
                  "anyway, beyond the margin: packets may be lost.")
        channels, packet_samples, workers = chosen.channels, chosen.packet_samples, chosen.workers
    command = stream_command(channels, packet_samples, workers, args.seconds)
    print(f"streaming for {args.seconds:g} s: neurowire {' '.join(command[3:])}", flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        print(f"why: `neurowire bench stream` exited {result.returncode} without a report (its "
              "messages are above). What to change: run the command shown above by hand and "
              "read its logs (`--keep DIR` keeps them).", file=sys.stderr)
        return 1
    missing = [key for key in ("exact", "packets_sent", "packets_lost") if key not in report]
    if missing:
        print(f"why: `neurowire bench stream --json` no longer reports {', '.join(missing)}, "
              "which this summary reads. What to change: neurowire/demo.py, to the report's "
              "new keys.", file=sys.stderr)
        return 1
    lines, ok = summary(report, channels, packet_samples, workers, args.seconds)
    print("\n".join(lines))
    if not ok:
        print(advice(report, channels, packet_samples))
        return 1
    return 0


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire demo")).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
