"""Where the daemon's and the subscriber's CPU goes per packet, codec and the rest apart.

Runs `neurowire bench stream --json` with the given options and, once the stream is under
way, samples the daemon and the subscriber with `perf record -e cpu-clock -g` (a software
clock: it works on VMs without hardware counters, as root or with perf_event_paranoid <= 1).
Each sample is put in one category by its innermost frame (and, for kernel frames, the first
user frame under them): the codec's own work, the codec team's hand-off (the caller polling
for its helper, futex waits and wake-ups), libzmq's I/O thread, the CRC-32 (zlib-ng's or zlib's), Python, and so
on. The shares times the bench's CPU per packet over the streaming window give microseconds
per packet, printed beside the bare C relay the bench times in the same run.

    python bench/profile_stream.py [--seconds-profiled 5] -- --channels 1024 --seconds 14 \\
        --workers 1

Prints one table per process. Needs `perf` (Debian: linux-perf).

`--codec-baseline` also times the codec alone in this process, before the stream and after
it, as `neurowire bench codec` does (the same function: one thread, lane format, 0.5 ms
blocks coded back to back) on the simulator's synthetic table and, when found, on the
challenge recordings; printed beside the stream's own compression and decoding p50 (wall
time, what the stream reports) and the codec's CPU per packet in the daemon (perf), so the
stream's codec figures are compared with the bench's taken in the same run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

from neurowire import options as options_types
from neurowire.options import bounded

# Innermost frames that are the codec computing (encoder, decoder, lane kernel, block CRC).
CODEC = ("encode_grid_step", "decode_grid_step", "nw_lanes_run", "encode_lanes", "decode_lanes",
         "encode_other", "decode_other", "nw_block_crc", "nw_crc32", "nw_stream", "model_code",
         "nw_encode", "nw_decode", "nw_team_encode", "nw_team_decode", "run_share")
HAND_OFF = ("futex", "pthread_cond", "lll_lock", "getpid")


def category(comm: str, frames: list) -> str:
    top = frames[0] if frames else ""
    if comm.startswith("ZMQbg"):
        return "libzmq I/O thread (user and kernel)"
    if "run_round" in top:
        return "codec team hand-off: caller polling for its helper"
    if "_native.abi3" in top:
        return "codec" if any(name in top for name in CODEC) else "codec, other"
    if "kernel" in top:
        user = next((frame for frame in frames if "kernel" not in frame), "")
        if any(name in user for name in HAND_OFF):
            return "codec team hand-off: kernel (futex, wake-up, switch)"
        if any(name in user for name in CODEC) or "run_round" in user:
            return "kernel during the codec (timer interrupts, preemption)"
        if "write" in user:
            return "kernel: write (libzmq waking its I/O thread)"
        return "kernel, other"
    if "libz.so" in top or "zlib_ng" in top:
        return "crc32 (the header's CRC of the samples; zlib or zlib-ng)"
    if "libzmq" in top:
        return "libzmq in the data thread"
    if any(name in top for name in ("libpython", "cpython", "_cffi", "_zmq.", "msgpack")):
        return "Python, numpy, cffi, pyzmq"
    if "_fastpath" in top or "_sub_loop" in top:
        return "the C data loop (nw_fastpath.c, sub_loop.c)"
    if "libc" in top:
        return "libc (memcpy, malloc, locks)"
    return "other"


def samples(perf_data: str):
    """(comm, frames innermost first) of every sample in a perf.data file."""
    text = subprocess.run(["perf", "script", "-i", perf_data, "-F", "comm,tid,ip,sym,dso"],
                          capture_output=True, text=True, check=True).stdout
    comm, frames = None, []
    for line in text.splitlines() + [""]:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line.startswith((" ", "\t")):
            comm = line.split()[0]
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[-1])


def codec_alone(channels: int, packet_samples: int, rate: float) -> dict:
    """The codec alone, timed as `neurowire bench codec` times it (its own function), on
    the simulator's table (seed 1, its default) and on the recordings when found: p50 in us
    of encode, decode, and decode plus the subscriber's CRC-32 of the decoded block."""
    import zlib

    import numpy as np

    from neurowire.clients.synth import synthesize
    from neurowire.codec import LANE_FORMAT_VERSION, StreamDecoder, StreamEncoder
    from neurowire.codec.bench import find_recordings, load, neurowire_blocks, stack_channels

    steps = 5000  # the bench's --latency-samples
    tables = {"synthetic": np.ascontiguousarray(synthesize(channels, rate, 15000, 1)[:steps])}
    try:
        paths, source = find_recordings()
    except SystemExit:
        source = None
    if source and source != "bundled test excerpts":
        tables["recordings"] = stack_channels(load(paths)[1], channels, steps)
    result = {}
    for name, table in tables.items():
        t_enc, t_dec, _, _ = neurowire_blocks(table, packet_samples, version=LANE_FORMAT_VERSION)
        # the subscriber's decoding stage also takes the CRC of what it decoded
        encoder, decoder, t_crc = StreamEncoder(channels, format_version=LANE_FORMAT_VERSION), \
            StreamDecoder(channels), []
        for first in range(0, steps - packet_samples + 1, packet_samples):
            samples = decoder.decode(encoder.encode(table[first:first + packet_samples]))
            started = time.perf_counter_ns()
            zlib.crc32(samples)
            t_crc.append(time.perf_counter_ns() - started)
        result[name] = {"encode": float(np.median(t_enc)) / 1e3,
                        "decode": float(np.median(t_dec)) / 1e3,
                        "crc": float(np.median(t_crc)) / 1e3}
    return result


def schedstat(pid: int) -> dict:
    """{thread id: (name, ns on a CPU, ns runnable but waiting for one)} of a process's
    threads (/proc/PID/task/TID/schedstat): the wait is time a thread could have run but
    the CPUs were taken, by our other processes or anyone's."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm, \
                    open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                on_cpu, waiting = map(int, stat.read().split()[:2])
                threads[tid] = (comm.read().strip(), on_cpu, waiting)
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return threads


def busiest_thread(before: dict, after: dict) -> tuple[float, float]:
    """(ns on a CPU, ns waiting for one) of the thread, outside libzmq's, that ran most
    between two schedstat readings: the daemon's data thread, the subscriber's receiving
    one."""
    deltas = [(after[tid][1] - before[tid][1], after[tid][2] - before[tid][2])
              for tid in after if tid in before and not after[tid][0].startswith("ZMQ")]
    return max(deltas, default=(0, 0))


def _pid(pattern: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        if found.split():
            return int(found.split()[0])
        time.sleep(0.2)
    raise RuntimeError(f"no process matching {pattern!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds-profiled", type=bounded(float, 0, 86400, low_open=True, what="the profile"), default=5.0)
    parser.add_argument("--start-after", type=bounded(float, 0, 86400, what="the start"), default=7.0,
                        help="seconds from the bench's start to the profile's (start-up, "
                             "the subscriber's reference table, the first packets)")
    parser.add_argument("--codec-baseline", action="store_true",
                        help="also time the codec alone before and after the stream, as "
                             "`neurowire bench codec` does (the module doc)")
    parser.add_argument("bench", nargs=argparse.REMAINDER,
                        help="options of `neurowire bench stream` (after --)")
    args = parser.parse_args(argv)
    options = [option for option in args.bench if option != "--"]
    workdir = tempfile.mkdtemp(prefix="neurowire-profile-")
    baseline = []
    if args.codec_baseline:
        shape = argparse.ArgumentParser(add_help=False)
        shape.add_argument("--channels", type=options_types.channels, default=1024)
        shape.add_argument("--packet-samples", type=bounded(int, 1, 4096, what="time steps"),
                           default=10)
        shape.add_argument("--rate", type=bounded(float, 0, 1e6, low_open=True, what="the rate"),
                           default=20000.0)
        stream_shape, _ = shape.parse_known_args(options)
        baseline.append(codec_alone(stream_shape.channels, stream_shape.packet_samples,
                                    stream_shape.rate))
    bench = subprocess.Popen([sys.executable, "-m", "neurowire.cli", "bench", "stream", "--json",
                              "--keep", workdir, *options], stdout=subprocess.PIPE, text=True,
                             stderr=subprocess.DEVNULL)
    time.sleep(args.start_after)
    deadline = time.monotonic() + 30
    pids = {"daemon": _pid(f"neurowire.daemon --config {workdir}/daemon.toml", deadline),
            "subscriber": _pid(f"neurowire.clients.subscribe.*{workdir}", deadline)}
    sched_before = {name: schedstat(pid) for name, pid in pids.items()}
    sched_started = time.monotonic()
    recorders = [subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g",
                                   "-o", os.path.join(workdir, f"{name}.perf"), "-p", str(pid),
                                   "--", "sleep", str(args.seconds_profiled)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in pids.items()]
    for recorder in recorders:
        recorder.wait()
    sched_after = {name: schedstat(pid) for name, pid in pids.items()}
    sched_seconds = time.monotonic() - sched_started
    report = json.loads(bench.communicate()[0].strip().splitlines()[-1])
    if args.codec_baseline:
        baseline.append(codec_alone(stream_shape.channels, stream_shape.packet_samples,
                                    stream_shape.rate))
    window = report["cpu_streaming"]
    relay = window.get("bare_c_relay", {}).get("us_per_packet")
    config = report["config"]
    print(f"{config['channels']} ch, {config['packet_ms']:g} ms packets, workers "
          f"{config['workers']}, block format {config.get('block_format')}, verify "
          f"{config['verify']}: {report['packets_lost']} packets lost, exact {report['exact']}, "
          f"load average {report['load_average']['start'][0]}-{report['load_average']['end'][0]}; "
          f"bare C relay, same run: {relay} us per packet")
    latency = report["latency_us"]
    print(f"the stream's own figures (wall time): compression p50 {latency['compress']['p50']:.0f}"
          f" us, decoding p50 {latency['decode']['p50']:.0f} us (the subscriber's stage: its CRC "
          "of the decoded block included)")
    tables = {}
    for name in pids:
        tables[name] = collections.Counter(category(comm, frames) for comm, frames in
                                           samples(os.path.join(workdir, f"{name}.perf")))
    if baseline:
        daemon = tables["daemon"]
        codec_us = window["daemon"]["us_per_packet"] * daemon["codec"] / max(1, sum(daemon.values()))
        print(f"the daemon's codec CPU per packet (perf): {codec_us:.0f} us")
        for when, figures in zip(("before", "after"), baseline):
            for data, p50 in figures.items():
                print(f"codec alone {when} the stream, {data}: encode p50 {p50['encode']:.0f} us, "
                      f"decode p50 {p50['decode']:.0f} us, CRC of the decoded block "
                      f"{p50['crc']:.1f} us")
    packets_profiled = sched_seconds * config["rate"] / config["packet_samples"]
    for name in pids:
        per_packet = window[name]["us_per_packet"]
        counts = tables[name]
        total = sum(counts.values())
        on_cpu, waiting = busiest_thread(sched_before[name], sched_after[name])
        print(f"\n{name}: {per_packet} us per packet ({window[name]['percent_of_core']} % of a "
              f"core), {total} samples; its busiest thread: {on_cpu / 1e3 / packets_profiled:.0f}"
              f" us per packet on a CPU, {waiting / 1e3 / packets_profiled:.0f} us runnable but "
              "waiting for one")
        for what, count in counts.most_common():
            print(f"  {per_packet * count / total:7.1f} us  {100 * count / total:5.1f} %  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
