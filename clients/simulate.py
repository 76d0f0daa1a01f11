"""`neurowire simulate`: a simulated implant streaming packets to a daemon at the real rate.

Pacing is by deadline (start + k x packet period), so a late wake-up is caught up on the next
packets instead of slowing the stream; the lateness of each send is the pacing jitter it
reports.  Sends never block: a daemon that cannot take a packet costs that packet, counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import zmq

from neurowire.wire import (DEFAULT_CONTROL, DEFAULT_INGEST, ControlTimeout, apply_curve,
                            new_session, pack_ingest, query)

from . import synth
from .liveness import ConnectionWatch


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Stream simulated (or recorded) electrode data to a daemon."
    parser.add_argument("--connect", default=DEFAULT_INGEST,
                        help="daemon ingest endpoint (default %(default)s)")
    parser.add_argument("--stream", default="implant0", help="stream id (default %(default)s)")
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=20000.0, help="samples per second")
    parser.add_argument("--packet-samples", type=int, default=10,
                        help="time steps per packet (10 = 0.5 ms at 20 kHz)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long "
                        "(0: until interrupted)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic signal seed")
    parser.add_argument("--loop-samples", type=int, default=15000,
                        help="length of the synthetic table that is looped")
    parser.add_argument("--wav", metavar="DIR", help="play real recordings instead (one WAV per "
                        "channel, looping)")
    parser.add_argument("--start-sample", type=int, default=0,
                        help="index of the first sample (continue a stream after a restart)")
    parser.add_argument("--control", help="the daemon's control endpoint, asked at the end "
                        "what it took and rejected (default: "
                        f"{DEFAULT_CONTROL} with the default --connect; '' = do not ask)")
    parser.add_argument("--report", metavar="FILE", help="write the final report as JSON here")
    parser.add_argument("--quiet", action="store_true")
    return parser


_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Simulator:
    def __init__(self, endpoint: str, table: np.ndarray, rate: float, packet_samples: int,
                 stream: str = "implant0", start_sample: int = 0,
                 context: zmq.Context | None = None, curve: dict | None = None):
        self.source = synth.LoopingSource(table)
        self.channels = table.shape[1]
        self.rate = rate
        self.packet_samples = packet_samples
        self.stream = stream
        self._stream_id = stream.encode()  # encoded once, not per packet
        self.next_sample = start_sample
        self.seq = 0
        self.session = new_session()  # this run's: the daemon binds the stream to it
        self.sent = 0
        self.refused = 0
        self.lateness_ns: list[int] = []
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.PUSH)
        self.sock.sndhwm = 20000
        self.sock.linger = 2000
        apply_curve(self.sock, curve)
        self.watch = ConnectionWatch(self.sock)
        self.sock.connect(endpoint)

    def send_packet(self) -> bool:
        """Acquire the next packet now and send it; False if the daemon could not take it."""
        samples = self.source.samples(self.next_sample, self.packet_samples)
        header = pack_ingest(self._stream_id, self.seq, self.next_sample, self.packet_samples,
                             self.channels, self.rate, time.time_ns(), self.session)
        self.seq += 1
        self.next_sample += self.packet_samples
        try:
            # One send per frame with integer flags: pyzmq's send_multipart and its flag
            # enums cost several times more. A message is queued whole or not at all.
            self.sock.send(header, _MORE)
            self.sock.send(samples, _NOBLOCK)
        except zmq.Again:
            self.refused += 1  # the implant never waits for the daemon
            return False
        self.sent += 1
        return True

    def run(self, seconds: float, stop=None) -> dict:
        """Send at the real rate for `seconds` (0: until `stop()` is true or interrupted)."""
        period_ns = round(self.packet_samples / self.rate * 1e9)
        total_packets = round(seconds * self.rate / self.packet_samples) if seconds else None
        started_wall = time.time()
        self._cpu_start = _cpu_s()
        start = time.perf_counter_ns()
        packet_number = 0
        lateness = self.lateness_ns
        try:
            while total_packets is None or packet_number < total_packets:
                due = start + (packet_number + 1) * period_ns  # the packet's last sample
                now = time.perf_counter_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                    now = time.perf_counter_ns()
                self.send_packet()
                lateness.append(now - due)
                packet_number += 1
                if stop is not None and packet_number % 200 == 0 and stop():
                    break
        except KeyboardInterrupt:
            pass
        return self.report(time.time() - started_wall)

    def report(self, elapsed_s: float) -> dict:
        late = np.asarray(self.lateness_ns, dtype=np.float64) / 1e3
        pacing = {}
        if len(late):
            pacing = {"p50_us": float(np.percentile(late, 50)),
                      "p99_us": float(np.percentile(late, 99)), "max_us": float(late.max())}
        return {"stream": self.stream, "channels": self.channels, "rate": self.rate,
                "packet_samples": self.packet_samples, "packets_sent": self.sent,
                "packets_refused": self.refused, "samples_sent": self.next_sample,
                "elapsed_s": elapsed_s,
                "achieved_rate": self.sent * self.packet_samples / elapsed_s if elapsed_s else 0,
                "pacing_lateness": pacing,
                "cpu_s": _cpu_s() - getattr(self, "_cpu_start", 0.0)}

    def close(self) -> None:
        self.watch.close()
        self.sock.close()


def run(args: argparse.Namespace) -> int:
    if args.wav:
        table, rate = synth.load_wav_dir(args.wav, args.channels)
        if args.rate != 20000.0:
            rate = args.rate
    else:
        table = synth.synthesize(args.channels, args.rate, args.loop_samples, args.seed)
        rate = args.rate
    control = args.control
    if control is None and args.connect == DEFAULT_INGEST:
        control = DEFAULT_CONTROL
    rejected_before = _daemon_rejections(control)
    simulator = Simulator(args.connect, table, rate, args.packet_samples, args.stream,
                          args.start_sample)
    if not args.quiet:
        print(f"simulating {args.stream}: {args.channels} channels x {rate:g} Hz, "
              f"{args.packet_samples} samples/packet -> {args.connect}", file=sys.stderr)
    try:
        report = simulator.run(args.seconds)
        report["connected"] = simulator.watch.connected(0)
    finally:
        simulator.close()  # lingers up to 2 s to hand over what is queued
    report["daemon"] = _what_the_daemon_took(control, args.stream, rejected_before)
    if args.report:
        with open(args.report, "w") as handle:
            json.dump(report, handle)
    if not args.quiet:
        pacing = report["pacing_lateness"]
        print(f"sent {report['packets_sent']} packets ({report['packets_refused']} refused), "
              f"{report['achieved_rate']:.0f} samples/s; pacing lateness p50 "
              f"{pacing.get('p50_us', 0):.0f} us p99 {pacing.get('p99_us', 0):.0f} us max "
              f"{pacing.get('max_us', 0):.0f} us", file=sys.stderr)
    return _say_what_happened(args, report)


def _daemon_rejections(control: str | None) -> dict | None:
    if not control:
        return None
    try:
        return query(control, "stats", timeout=1.0)["rejected"]
    except (ControlTimeout, KeyError, TypeError):
        return None


def _what_the_daemon_took(control: str | None, stream: str, before: dict | None) -> dict:
    """The daemon's own account, from its control endpoint: what it holds for the stream,
    and what it rejected (from anyone) while we sent."""
    if not control:
        return {"asked": False}
    stats, last_count, deadline = None, None, time.monotonic() + 5.0
    while time.monotonic() < deadline:  # until the daemon has worked through what it got
        try:
            stats = query(control, "stats", timeout=2.0)
        except ControlTimeout:
            return {"asked": True, "answered": False}
        entry = stats.get("streams", {}).get(stream) or {}
        count = (entry.get("packets_in", 0), entry.get("drops", 0))
        if count == last_count:
            break
        last_count = count
        time.sleep(0.5)
    before = before or {}
    rejected = {reason: count - before.get(reason, 0)
                for reason, count in stats.get("rejected", {}).items()
                if count > before.get(reason, 0)}
    entry = stats.get("streams", {}).get(stream) or {}
    return {"asked": True, "answered": True, "rejected": rejected,
            "packets_in": entry.get("packets_in", 0), "drops": entry.get("drops", 0)}


def _say_what_happened(args, report: dict) -> int:
    """One line when the packets did not get where they were sent, and a non-zero exit."""
    sent = report["packets_sent"]
    if not report["connected"]:
        print(f"neurowire simulate: nothing answered at {args.connect}: none of the {sent} "
              "packets reached a daemon", file=sys.stderr)
        return 1
    daemon = report["daemon"]
    if daemon.get("answered"):
        rejected = sum(daemon["rejected"].values())
        if sent and rejected >= sent and daemon["packets_in"] == 0:
            print(f"neurowire simulate: the daemon rejected the packets: "
                  f"{daemon['rejected']} (see its log)", file=sys.stderr)
            return 1
        if rejected and not args.quiet:
            print(f"the daemon rejected {rejected} packets meanwhile: {daemon['rejected']}",
                  file=sys.stderr)
        missing = sent - daemon["packets_in"] - daemon["drops"] - rejected
        if missing > 0:
            print(f"neurowire simulate: the daemon accounts for {sent - missing} of the {sent} "
                  f"packets sent on {args.stream} ({daemon['packets_in']} taken, "
                  f"{daemon['drops']} dropped, {rejected} rejected); {missing} never reached "
                  "it or are still queued", file=sys.stderr)
        elif not args.quiet:
            print(f"the daemon took {daemon['packets_in']} of the {sent} packets "
                  f"({daemon['drops']} dropped)", file=sys.stderr)
    elif daemon.get("asked") and not args.quiet:
        print("the daemon's control endpoint did not answer: what it took is unknown",
              file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire simulate"))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
