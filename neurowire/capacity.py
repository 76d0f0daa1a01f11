"""`neurowire bench capacity`: which stream this machine can carry right now, and why.

A stream costs CPU in two ways.  The codec's cost grows with the channels (measured here
through `neurowire.codec`: a block of that size encoded on this machine).  Everything else
(the simulator pacing and sending, the daemon receiving, stamping, publishing and holding, the
subscriber receiving) is paid once per packet, whatever its width, mostly in Python and
libzmq.  That part is measured here as a "hop": one packet sent over a ZeroMQ tcp connection
on loopback (msgpack header + raw frame) and received, in this process.  A pipeline does
PER_PACKET_HOPS hops' worth of that work per packet, a figure measured from `neurowire bench
stream --json` (see the constant).  Both measurements scale with the host, so a machine 2x
slower measures 2x the cost and picks a smaller stream.

What the machine can give is its CPUs (neurowire.cpus.usable_cpus), times the share of them this
process actually gets now: `cpus` threads encode side by side for a moment, and their CPU time
over the wall time is how many cores other load leaves us.  A stream fits when its demand
stays within HEADROOM of that, so noise, the decoding after the stream and a neighbour that
wakes up later do not tip it over.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from neurowire import options
from neurowire.cpus import usable_cpus
from neurowire.options import bounded

RATE = 20000.0
# Largest first: the first that fits is what runs.
CHANNEL_LADDER = (1024, 512, 256, 128, 64)
# Samples per packet: 10 is the product's 0.5 ms.  Longer packets cut the per-packet cost,
# used only when no channel count fits at 0.5 ms (and the stream benchmark offers it).
PACKET_LADDER = (10, 20, 40)
# Per-packet pipeline work in hops (see the module doc): `neurowire bench capacity --calibrate
# CHANNELS [--packet-samples N]` streams through `neurowire bench stream` (one encoder
# thread, decoding after the stream) and divides the CPU the daemon, simulator and subscriber
# spent per packet while streaming, less one thread's block encoding as measured here, by a
# hop measured just before. That remainder is not all outside the codec: a block encoded in
# the daemon, whose CPU it shares with the other processes between packets, costs more CPU
# than the same block encoded back to back here (docs/PERFORMANCE.md, "the stream's codec
# figures"). On the README's host D (Intel Xeon model 207, 2 cores, load average 3.7-4.9
# from other sessions, 2026-12-05): 7.3 and 7.5 hops at 1024 x 10, 6.1 at 256 x 10, 3.9 at
# 64 x 10, hops of 30-39 us (over the whole run, start-up included, as measured until then:
# 8.0 / 8.5, 6.3, 4.4). It was 6.0 before, set on host B when the data path was Python:
# below what 1024 channels take now. Re-measure it when the data path changes.
PER_PACKET_HOPS = 8.0
# The daemon's part of it (its data thread, libzmq's I/O thread, the codec's extra CPU in
# the stream), for the serial check below: 3.6 and 4.2 hops at 1024 x 10, 2.3 at 256, 1.1
# at 64 in the same runs (half of PER_PACKET_HOPS before).
DAEMON_HOPS = 4.5
# A team of encoder threads costs more CPU than one thread doing the same block (hand-offs,
# the caller waiting for its helpers): on the README's host A a 1024 x 10 block took p50
# ~180 us on 2 threads against 297 us on one, 2 x 180 / 297 = 1.2 (`neurowire bench codec`).
TEAM_CPU_FACTOR = 1.25
# Demand may take this share of the cores we get; the rest is margin.
HEADROOM = 0.6
# The daemon's data thread may be busy this share of each packet period.
SERIAL_LIMIT = 0.8


@dataclass
class Plan:
    channels: int
    packet_samples: int
    workers: int
    demand_cores: float  # CPU the pipeline needs, in cores
    daemon_thread_share: float  # the daemon's serial path per packet over the packet period
    fits: bool


@dataclass
class Capacity:
    cpus: int  # CPUs this process may run on
    cores_available: float  # what we get of them now, other load considered
    encode_us: dict  # "CHANNELSxSAMPLES" -> one thread's CPU us to encode such a block
    hop_us: dict  # "CHANNELSxSAMPLES" -> CPU us of one hop of such a packet
    plans: list  # every size considered, largest first
    chosen: Plan | None

    @property
    def default_fits(self) -> bool:
        return bool(self.plans) and self.plans[0].fits and self.chosen is self.plans[0]


@functools.lru_cache(maxsize=1)
def _synthetic_table() -> np.ndarray:
    from neurowire.clients.synth import synthesize

    return synthesize(max(CHANNEL_LADDER), RATE, 2000, seed=7)


def _synthetic(channels: int) -> np.ndarray:
    """2000 time steps of the simulator's kind of signal on `channels` channels."""
    return np.ascontiguousarray(_synthetic_table()[:, :channels])


def encode_cpu_us(channels: int, packet_samples: int = 10, seconds: float = 0.15) -> float:
    """Median CPU time of one thread encoding one block, in microseconds, in the block format
    the daemon writes by default (the lane format)."""
    from neurowire import codec

    table = _synthetic(channels)
    encoder = codec.StreamEncoder(channels, format_version=codec.LANE_FORMAT_VERSION)
    blocks = [table[i:i + packet_samples] for i in range(0, len(table), packet_samples)]
    times = []
    deadline = time.monotonic() + seconds
    index = 0
    while time.monotonic() < deadline or len(times) < 20:
        block = blocks[index % len(blocks)]
        start = time.thread_time_ns()
        encoder.encode(block, keyframe=index == 0)
        times.append(time.thread_time_ns() - start)
        index += 1
    return float(np.median(times)) / 1e3


def cores_available(cpus: int, seconds: float = 0.6) -> float:
    """How many cores `cpus` busy threads get now: their CPU time over the wall time.  The
    encoder runs without the GIL, so on an idle machine this is ~cpus; a CPU-bound neighbour
    takes its fair share out of it."""
    from neurowire import codec

    table = _synthetic(256)[:400]
    cpu_ns = [0] * cpus

    def work(slot: int) -> None:
        encoder = codec.StreamEncoder(256)
        start = time.thread_time_ns()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for first in range(0, len(table), 10):
                encoder.encode(table[first:first + 10])
        cpu_ns[slot] = time.thread_time_ns() - start

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(cpus)]
    wall = time.perf_counter_ns()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter_ns() - wall
    return min(float(cpus), sum(cpu_ns) / wall)


def hop_cpu_us(channels: int, packet_samples: int = 10, batches: int = 9,
               batch_size: int = 40) -> float:
    """CPU time (all threads of this process, libzmq's included) per packet sent over tcp on
    loopback and received, with the header packed and unpacked."""
    import msgpack
    import zmq

    context = zmq.Context(1)
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        frame = np.zeros((packet_samples, channels), dtype=np.int16)  # content is irrelevant
        header = {"stream": "capacity", "seq": 0, "first_sample": 0, "channels": channels,
                  "n_samples": packet_samples, "t_sent_ns": 0}

        def one(seq: int) -> None:
            header["seq"], header["t_sent_ns"] = seq, time.time_ns()
            push.send_multipart([msgpack.packb(header), frame], copy=False)
            head, body = pull.recv_multipart(copy=False)
            received = msgpack.unpackb(head.buffer)
            np.frombuffer(body.buffer, dtype=np.int16).reshape(received["n_samples"], -1)

        for seq in range(50):  # connection up, buffers warm
            one(seq)
        per_batch = []
        for batch in range(batches):
            start = time.process_time_ns()
            for seq in range(batch_size):
                one(seq)
            per_batch.append((time.process_time_ns() - start) / batch_size)
        # The upper quartile: a neighbour's burst makes single batches slow, while a machine
        # whose CPUs happen to be busy makes wake-ups (most of a hop) cheaper than usual.
        return float(np.percentile(per_batch, 75)) / 1e3
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        context.term()


def workers_for(cpus: int) -> int:
    return min(2, cpus)


def plan(channels: int, packet_samples: int, cpus: int, cores: float, encode_us: float,
         hop_us: float, headroom: float = HEADROOM, workers: int | None = None) -> Plan:
    """Whether `channels` in packets of `packet_samples` fit, coded by `workers` encoder
    threads (default: workers_for(cpus)); encode_us and hop_us are for this packet size."""
    workers = workers_for(cpus) if workers is None else workers
    period_us = packet_samples / RATE * 1e6
    team = TEAM_CPU_FACTOR if workers > 1 else 1.0
    per_packet_us = encode_us * team + PER_PACKET_HOPS * hop_us
    demand = per_packet_us / period_us
    # The daemon's data thread handles packets one after another: its share of the
    # per-packet work plus its part of the encoding must fit in a packet period by itself.
    serial = (encode_us * team / workers + DAEMON_HOPS * hop_us) / period_us
    fits = demand <= cores * headroom and serial <= SERIAL_LIMIT
    return Plan(channels, packet_samples, workers, round(demand, 3), round(serial, 3), fits)


def cheapest_plan(channels: int, packet_samples: int, cpus: int, cores: float,
                  encode_us: float, hop_us: float, headroom: float = HEADROOM) -> Plan:
    """The plan with one encoder thread when its data thread keeps up alone, else with
    workers_for(cpus). A team's hand-off (waking the helper, the caller waiting for it) costs
    CPU on every block whatever its width: at 1024 x 10, ~85 us per packet of the daemon's
    ~480 here (`neurowire bench stream --channels 1024 --verify after --workers 1|2`,
    docs/PERFORMANCE.md), CPU that a subscriber and a simulator on the same cores need more
    than the daemon needs the shorter block time."""
    single = plan(channels, packet_samples, cpus, cores, encode_us, hop_us, headroom, workers=1)
    if single.fits or workers_for(cpus) == 1:
        return single
    return plan(channels, packet_samples, cpus, cores, encode_us, hop_us, headroom)


def measure(packet_options=PACKET_LADDER, channel_ladder=CHANNEL_LADDER) -> Capacity:
    cpus = usable_cpus()
    cores = cores_available(cpus)
    encode_us, hop_us, plans = {}, {}, []
    chosen = None
    for packet_samples in packet_options:
        for channels in channel_ladder:
            key = f"{channels}x{packet_samples}"
            encode_us[key] = round(encode_cpu_us(channels, packet_samples), 1)
            hop_us[key] = round(hop_cpu_us(channels, packet_samples), 1)
            candidate = cheapest_plan(channels, packet_samples, cpus, cores, encode_us[key],
                                      hop_us[key])
            plans.append(candidate)
            if candidate.fits:
                chosen = candidate
                break
        if chosen is not None:
            break
    return Capacity(cpus, round(cores, 2), encode_us, hop_us, plans, chosen)


def describe(capacity: Capacity) -> str:
    """One sentence: does the default fit, and if not, what runs instead and why."""
    default = capacity.plans[0]
    key = f"{default.channels}x{default.packet_samples}"
    numbers = (f"{default.channels} channels in 0.5 ms packets need ~{default.demand_cores:.2f}"
               f" cores (a block encodes in {capacity.encode_us[key]:.0f} us of CPU here alone, "
               f"and each packet costs the pipeline ~{PER_PACKET_HOPS * capacity.hop_us[key]:.0f}"
               " us more: the data path and the codec's extra cost beside the other processes),"
               f" and {capacity.cores_available:.2f} of its {capacity.cpus} CPUs are "
               f"free for it, of which the margin lets a stream use {HEADROOM:.0%}")
    chosen = capacity.chosen
    if chosen is default:
        return f"This machine can sustain the default stream: {numbers}."
    if chosen is None:
        last = capacity.plans[-1]
        return (f"This machine cannot sustain even {last.channels} channels in "
                f"{last.packet_samples / RATE * 1e3:g} ms packets now (~{last.demand_cores:.2f} "
                f"cores): {numbers}.")
    return (f"This machine cannot sustain the default stream now: {numbers}; running "
            f"{chosen.channels} channels in {chosen.packet_samples / RATE * 1e3:g} ms packets "
            f"instead (~{chosen.demand_cores:.2f} cores).")


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Measure this machine's codec speed, per-packet cost and free CPU, "
                          "and say which stream size it can sustain.")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--calibrate", type=options.channels, metavar="CHANNELS",
                        help="instead: stream CHANNELS for --seconds through `neurowire bench "
                             "stream` and print the pipeline's CPU per packet in hops (the "
                             "figures PER_PACKET_HOPS and DAEMON_HOPS hold)")
    parser.add_argument("--seconds", type=options.seconds, default=5.0)
    parser.add_argument("--packet-samples", type=bounded(int, 1, 4096, what="time steps per packet"), default=10)
    parser.add_argument("--workers", type=options.workers, default=1,
                        help="with --calibrate: the daemon's encoder threads")
    return parser


def calibrate(channels: int, seconds: float, packet_samples: int = 10,
              workers: int = 1) -> dict:
    """The pipeline's CPU per packet outside the codec, in hops measured just before: over
    the streaming window (what competes with the stream), and, for comparison, over the
    whole run (start-up and the decoding after the stream included)."""
    import subprocess

    encode_us = encode_cpu_us(channels, packet_samples)
    hop_us = hop_cpu_us(channels, packet_samples)
    result = subprocess.run(
        [sys.executable, "-m", "neurowire.cli", "bench", "stream", "--seconds", str(seconds),
         "--channels", str(channels), "--workers", str(workers), "--verify", "after",
         "--packet-samples", str(packet_samples), "--no-baseline", "--json"],
        capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return calibration(report, encode_us, hop_us, workers)


PARTS = ("daemon", "simulator", "subscriber")


def calibration(report: dict, encode_us: float, hop_us: float, workers: int) -> dict:
    """What `calibrate` prints, from a `neurowire bench stream --json` report and the
    encode and hop figures measured beside it."""
    codec_us = encode_us * (TEAM_CPU_FACTOR if workers > 1 else 1.0)
    window = report["cpu_streaming"]
    streaming = {part: window[part]["us_per_packet"] for part in PARTS}
    # The daemon's whole-run CPU comes from its control endpoint, which an overloaded daemon
    # may not answer (bench stream reports it as None then): those two figures are unknown.
    whole_run_cpu_s = [report["cpu"][part]["cpu_s"] for part in PARTS]
    whole_run_us = (None if None in whole_run_cpu_s
                    else sum(whole_run_cpu_s) / report["packets_sent"] * 1e6)
    pipeline_us = sum(streaming.values())
    return {"channels": report["config"]["channels"], "workers": workers,
            "encode_us": round(encode_us, 1), "hop_us": round(hop_us, 1),
            "streaming_us_per_packet": streaming,
            "hops_per_packet": round((pipeline_us - codec_us) / hop_us, 2),
            "daemon_hops_per_packet": round((streaming["daemon"] - codec_us) / hop_us, 2),
            "whole_run_us_per_packet": None if whole_run_us is None else round(whole_run_us, 1),
            "whole_run_hops_per_packet": None if whole_run_us is None
            else round((whole_run_us - codec_us) / hop_us, 2),
            "packets_lost": report["packets_lost"]}


def to_json(capacity: Capacity) -> dict:
    return {"cpus": capacity.cpus, "cores_available": capacity.cores_available,
            "encode_us": capacity.encode_us, "hop_us": capacity.hop_us,
            "per_packet_hops": PER_PACKET_HOPS, "headroom": HEADROOM,
            "plans": [asdict(p) for p in capacity.plans],
            "chosen": asdict(capacity.chosen) if capacity.chosen else None}


def run(args: argparse.Namespace) -> int:
    if args.calibrate:
        print(json.dumps(calibrate(args.calibrate, args.seconds, args.packet_samples,
                                   args.workers)))
        return 0
    capacity = measure()
    if args.json:
        print(json.dumps(to_json(capacity)))
    else:
        print(describe(capacity))
    return 0 if capacity.chosen is not None else 1


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire bench capacity"))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
