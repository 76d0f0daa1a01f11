"""`neurowire simulate`: a simulated implant streaming packets to a daemon at the real rate.

Pacing is by deadline (start + k x packet period), so a late wake-up is caught up on the next
packets instead of slowing the stream; the lateness of each send is the pacing jitter it
reports.  Sends never block: a daemon that cannot take a packet costs that packet, counted.

The simulator shares the machine with the daemon and subscriber, so its packets are paced and
sent by a C loop (clients/src/sim_loop.c): no Python per packet, the header packed once by
neurowire.wire and patched.  Where that extension cannot load, the Python loop here sends the
same bytes (`--python-loop` forces it, to compare).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import sys
import time
import types

import numpy as np
import zmq

from neurowire.wire import (DEFAULT_CONTROL, DEFAULT_INGEST, INGEST_OFFSETS, MAX_INT,
                            MAX_RATE, STREAM_ID, ControlReplyError, ControlTimeout,
                            apply_curve, new_session, reply_field,
                            pack_ingest, query)

from neurowire import options
from neurowire.options import bounded, endpoint
from neurowire.outfile import open_output

from . import synth
from .liveness import ConnectionWatch
from .native_zmq import libzmq_functions, loads


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Stream simulated (or recorded) electrode data to a daemon."
    parser.add_argument("--connect", default=DEFAULT_INGEST, type=endpoint,
                        help="daemon ingest endpoint (default %(default)s)")
    parser.add_argument("--stream", default="implant0", type=options.stream_id,
                        help="stream id (default %(default)s)")
    parser.add_argument("--channels", type=bounded(int, 1, 4096, what="channels"), default=1024)
    parser.add_argument("--rate", type=bounded(float, 0, MAX_RATE, low_open=True,
                                                what="the rate"),
                        default=20000.0, help="samples per second")
    parser.add_argument("--packet-samples", type=bounded(int, 1, 65536, what="time steps per packet"),
                        default=10,
                        help="time steps per packet (10 = 0.5 ms at 20 kHz)")
    parser.add_argument("--seconds", type=options.duration, default=0.0,
                        help="stop after this long, at most 86400 (0: until interrupted)")
    parser.add_argument("--seed", type=options.seed, default=1, help="synthetic signal seed")
    parser.add_argument("--loop-samples", type=bounded(int, 1, 1 << 24, what="the table's length"),
                        default=15000,
                        help="length of the synthetic table that is looped")
    parser.add_argument("--wav", type=options.path, metavar="DIR", help="play real recordings instead (one WAV per "
                        "channel, looping)")
    parser.add_argument("--start-sample", default=0,
                        type=bounded(int, 0, MAX_INT, what="the first sample's index"),
                        help="index of the first sample (continue a stream after a restart)")
    parser.add_argument("--control", type=endpoint,
                        help="the daemon's control endpoint, asked at the end "
                        "what it took and rejected (default: "
                        f"{DEFAULT_CONTROL} with the default --connect; '' = do not ask)")
    parser.add_argument("--report", type=options.output_file, metavar="FILE", help="write the final report as JSON here")
    parser.add_argument("--python-loop", dest="native", action="store_false",
                        help="send from the Python loop instead of the C one (the same "
                             "packets; to compare their cost)")
    parser.add_argument("--quiet", action="store_true")
    return parser


_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
# Packets the C loop paces per call: between calls Python checks `stop()` (every 0.1 s at
# 2000 packets/s, as the Python loop did) and stores the lateness figures.
_CHUNK = 200


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@functools.lru_cache(maxsize=None)
def _native():
    """(ffi, lib, zmq function table) of the C send loop, made once per process."""
    from ._sim_loop import ffi, lib

    return ffi, lib, libzmq_functions(ffi, "nw_sim_zmq", {"send": "zmq_send",
                                                          "errno_value": "zmq_errno"})


def native_available() -> bool:
    """Whether the C send loop can run here (built, on Linux, one libzmq loaded)."""
    return loads(_native)


class Simulator:
    """A simulated implant on one PUSH socket. Its packets (header and samples) are the same
    whichever loop sends them: the C one (clients/src/sim_loop.c) where it is built and
    loads, else the Python one (`native=False` forces it)."""

    def __init__(self, endpoint: str, table: np.ndarray, rate: float, packet_samples: int,
                 stream: str = "implant0", start_sample: int = 0,
                 context: zmq.Context | None = None, curve: dict | None = None,
                 native: bool | None = None):
        table = np.ascontiguousarray(table)
        if table.ndim != 2 or table.dtype != np.int16 or 0 in table.shape:
            raise ValueError(f"the signal must be a non-empty (samples, channels) int16 table, "
                             f"not {table.dtype} of shape {table.shape}")
        if not 0 < rate <= MAX_RATE:  # NaN fails this too
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] samples/s, not {rate!r}")
        if packet_samples < 1:
            raise ValueError(f"packet_samples must be at least 1, not {packet_samples}")
        if not 0 <= start_sample <= MAX_INT:
            raise ValueError(f"start_sample must be in 0..{MAX_INT}, not {start_sample}")
        if not STREAM_ID.match(stream.encode()):
            raise ValueError(f"stream id {stream!r}: 1 to 64 of A-Z a-z 0-9 _ . : -")
        self.table = table
        self.source = synth.LoopingSource(table)
        self.channels = table.shape[1]
        self.rate = rate
        self.packet_samples = packet_samples
        self.stream = stream
        self._stream_id = stream.encode()  # encoded once, not per packet
        self.session = new_session()  # this run's: the daemon binds the stream to it
        self._lateness: list[np.ndarray] = []
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.PUSH)
        self.sock.sndhwm = 20000
        self.sock.linger = 2000
        apply_curve(self.sock, curve)
        self.watch = ConnectionWatch(self.sock)
        self.sock.connect(endpoint)
        self.native = native_available() if native is None else native
        if self.native:
            self._state = self._setup_native(start_sample)
        else:
            self._state = types.SimpleNamespace(seq=0, next_sample=start_sample, sent=0,
                                                refused=0)

    def _setup_native(self, start_sample: int):
        ffi, self._lib, self._zmq = _native()
        # The header's bytes come from the wire module; C patches seq, first and acquired_ns.
        self._header = ffi.from_buffer(bytearray(pack_ingest(
            self._stream_id, 0, 0, self.packet_samples, self.channels, self.rate, 0,
            self.session)))
        self._scratch = np.empty((self.packet_samples, self.channels), dtype=np.int16)
        self._late_buffer = np.empty(_CHUNK, dtype=np.int64)
        sim = self._sim = ffi.new("nw_sim *")
        sim.table = ffi.cast("const int16_t *", self.table.ctypes.data)
        sim.loop_rows, sim.channels = self.table.shape
        sim.packet_samples = self.packet_samples
        sim.scratch = ffi.cast("int16_t *", self._scratch.ctypes.data)
        sim.header, sim.header_len = self._header, len(self._header)
        sim.seq_at, sim.first_at, sim.acquired_at = (INGEST_OFFSETS[name] for name in
                                                     ("seq", "first", "acquired_ns"))
        sim.next_sample = start_sample
        self._late_pointer = ffi.cast("int64_t *", self._late_buffer.ctypes.data)
        self._socket = ffi.cast("void *", self.sock.underlying)
        return sim

    # The counters live in the C struct when the C loop sends, so both loops share one state.
    seq = property(lambda self: self._state.seq)
    next_sample = property(lambda self: self._state.next_sample)
    sent = property(lambda self: self._state.sent)
    refused = property(lambda self: self._state.refused)

    @property
    def lateness_ns(self) -> np.ndarray:
        """How late each paced packet went, in ns past its deadline."""
        return np.concatenate([np.asarray(chunk, dtype=np.int64) for chunk in self._lateness]
                              or [np.empty(0, dtype=np.int64)])

    def send_packet(self) -> bool:
        """Acquire the next packet now and send it; False if the daemon could not take it."""
        if self.native:
            status = self._lib.nw_sim_send(self._zmq, self._socket, self._sim)
            if status < 0:
                raise zmq.ZMQError(-status)
            return status == 1
        state = self._state
        samples = self.source.samples(state.next_sample, self.packet_samples)
        header = pack_ingest(self._stream_id, state.seq, state.next_sample,
                             self.packet_samples, self.channels, self.rate, time.time_ns(),
                             self.session)
        state.seq += 1
        state.next_sample += self.packet_samples
        try:
            # One send per frame with integer flags: pyzmq's send_multipart and its flag
            # enums cost several times more. A message is queued whole or not at all.
            self.sock.send(header, _MORE)
            self.sock.send(samples, _NOBLOCK)
        except zmq.Again:
            state.refused += 1  # the implant never waits for the daemon
            return False
        state.sent += 1
        return True

    def run(self, seconds: float, stop=None) -> dict:
        """Send at the real rate for `seconds` (0: until `stop()` is true or interrupted)."""
        period_ns = round(self.packet_samples / self.rate * 1e9)
        total_packets = round(seconds * self.rate / self.packet_samples) if seconds else None
        started_wall = time.time()
        self._cpu_start = _cpu_s()
        try:
            if self.native:
                self._run_native(period_ns, total_packets, stop)
            else:
                self._run_python(period_ns, total_packets, stop)
        except KeyboardInterrupt:
            pass
        return self.report(time.time() - started_wall)

    def _run_native(self, period_ns: int, total_packets: int | None, stop) -> None:
        sim = self._sim
        sim.period_ns, sim.packet_number = period_ns, 0
        sim.start_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, the C loop's clock
        endless = (1 << 64) - 1
        while total_packets is None or sim.packet_number < total_packets:
            until = min(endless if total_packets is None else total_packets,
                        (sim.packet_number // _CHUNK + 1) * _CHUNK)
            paced = self._lib.nw_sim_run(self._zmq, self._socket, sim, until,
                                         self._late_pointer, _CHUNK)
            if paced < 0:
                raise zmq.ZMQError(-paced)
            self._lateness.append(self._late_buffer[:paced].copy())
            # A signal woke the loop early: Python runs its handler here (Ctrl-C ends it).
            if stop is not None and sim.packet_number % _CHUNK == 0 and stop():
                break

    def _run_python(self, period_ns: int, total_packets: int | None, stop) -> None:
        start = time.perf_counter_ns()  # CLOCK_MONOTONIC on Linux
        packet_number = 0
        lateness = []
        self._lateness.append(lateness)  # a list until the end, an array in the report
        while total_packets is None or packet_number < total_packets:
            due = start + (packet_number + 1) * period_ns  # the packet's last sample
            now = time.perf_counter_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
                now = time.perf_counter_ns()
            self.send_packet()
            lateness.append(now - due)
            packet_number += 1
            if stop is not None and packet_number % _CHUNK == 0 and stop():
                break

    def report(self, elapsed_s: float) -> dict:
        late = self.lateness_ns / 1e3
        pacing = {}
        if len(late):
            pacing = {"p50_us": float(np.percentile(late, 50)),
                      "p99_us": float(np.percentile(late, 99)), "max_us": float(late.max())}
        return {"stream": self.stream, "channels": self.channels, "rate": self.rate,
                "packet_samples": self.packet_samples, "packets_sent": self.sent,
                "packets_refused": self.refused, "samples_sent": self.next_sample,
                "elapsed_s": elapsed_s,
                "achieved_rate": self.sent * self.packet_samples / elapsed_s if elapsed_s else 0,
                "pacing_lateness": pacing, "c_loop": self.native,
                "cpu_s": _cpu_s() - getattr(self, "_cpu_start", 0.0)}

    def close(self) -> None:
        self.watch.close()
        self.sock.close()


def run(args: argparse.Namespace) -> int:
    if args.wav:
        from neurowire.codec import CodecError  # a .wav that is a damaged neurowire file

        try:
            table, rate = synth.load_wav_dir(args.wav, args.channels)
        except (OSError, ValueError, CodecError) as error:
            print(f"neurowire simulate: cannot play the recordings in {args.wav}: {error}",
                  file=sys.stderr)
            return 2
        if args.rate != 20000.0:
            rate = args.rate
    else:
        problem = synth.table_problem(args.channels, args.loop_samples)
        if problem:
            print(f"neurowire simulate: {problem}; use a smaller --loop-samples",
                  file=sys.stderr)
            return 2
        table = synth.synthesize(args.channels, args.rate, args.loop_samples, args.seed)
        rate = args.rate
    control = args.control
    if control is None and args.connect == DEFAULT_INGEST:
        control = DEFAULT_CONTROL
    rejected_before = _daemon_rejections(control)
    try:
        simulator = Simulator(args.connect, table, rate, args.packet_samples, args.stream,
                              args.start_sample, native=None if args.native else False)
    except ValueError as error:  # e.g. recordings too short to loop, or at a rate beyond 1 MHz
        print(f"neurowire simulate: {error}", file=sys.stderr)
        return 2
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
        with open_output(args.report) as handle:
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
        return reply_field(query(control, "stats", timeout=1.0), "rejected", dict, control)
    except (ControlTimeout, ControlReplyError):
        return None


def _what_the_daemon_took(control: str | None, stream: str, before: dict | None) -> dict:
    """The daemon's own account, from its control endpoint: what it holds for the stream,
    and what it rejected (from anyone) while we sent; answered False when the endpoint does
    not answer as a daemon does."""
    if not control:
        return {"asked": False}
    try:
        return _account(control, stream, before)
    except (ControlReplyError, AttributeError, TypeError, ValueError):
        return {"asked": True, "answered": False}


def _account(control: str, stream: str, before: dict | None) -> dict:
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
