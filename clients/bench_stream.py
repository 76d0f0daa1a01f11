"""`neurowire bench stream --seconds N [--json]`: the whole pipeline, measured.

Starts the daemon, a lossless (or, with --live, live) subscriber and the simulator as three
separate processes on loopback; the subscriber compares every decoded sample with the
simulator's synthetic table (same seed, rebuilt on its side).  Meanwhile this process runs a
timed sleep loop: how late the machine wakes a sleeper is the floor under every latency here.

`--verify after`: the subscriber only receives while the stream runs and decodes every block
after it.  Decoding costs about as much CPU as encoding, so on a 2-core machine encoder and
decoder of 1024 channels at 20 kHz do not both fit in real time; this mode measures the daemon
at full rate and still checks every sample, with the decoding time added to each block's
delivery time as if a core had been free for it (reported as such).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from neurowire import options
from neurowire.cpus import usable_cpus
from neurowire.options import bounded
from neurowire.wire import MAX_RATE, ControlTimeout, query, wait_ready

from .ports import free_loopback_port


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Run daemon, simulator and subscriber on loopback and measure them."
    parser.add_argument("--seconds", type=options.seconds, default=10.0)
    parser.add_argument("--channels", type=options.channels, default=1024)
    parser.add_argument("--rate", type=bounded(float, 0, MAX_RATE, low_open=True, what="the rate"), default=20000.0)
    parser.add_argument("--packet-samples", type=bounded(int, 1, 4096, what="time steps per packet"), default=10,
                        help="10 = 0.5 ms packets at 20 kHz")
    parser.add_argument("--workers", type=options.workers, default=min(2, usable_cpus()),
                        help="daemon channel groups encoded in parallel threads "
                             "(default: %(default)s)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="leave the daemon's threads to the scheduler (pin_threads = false)")
    parser.add_argument("--spin-us", type=bounded(int, 0, 1_000_000, what="the spin time"), default=0, metavar="US",
                        help="the daemon's spin_us: its encoder threads poll this long for the "
                             "next block before sleeping (default 0)")
    parser.add_argument("--realtime-priority", type=bounded(int, 0, 99, what="the priority"), default=0, metavar="N",
                        help="1..99: the daemon's realtime_priority (its data path SCHED_FIFO), "
                             "and the simulator (standing in for implant hardware) and the "
                             "subscriber SCHED_FIFO at the same priority; needs root or "
                             "CAP_SYS_NICE (default 0, off)")
    parser.add_argument("--verify", choices=("realtime", "after"), default="realtime",
                        help="decode and check in real time, or receive now and decode and "
                             "check every block after the stream (default %(default)s)")
    parser.add_argument("--keyframe-interval", type=bounded(float, 0, 3600, low_open=True, what="the interval"), default=1.0)
    parser.add_argument("--block-format", type=bounded(int, 0, 255, what="the block format"), default=0, metavar="N",
                        help="the daemon's block_format: 0 = the lane format (its default), "
                             "1 = version 1 blocks, to compare")
    parser.add_argument("--python-data-path", dest="fast_path", action="store_false",
                        help="the daemon's data path in Python alone (fast_path = false), to "
                             "compare with its C one")
    parser.add_argument("--python-simulator", dest="native_simulator", action="store_false",
                        help="the simulator sends from its Python loop (simulate "
                             "--python-loop), to compare with its C one")
    parser.add_argument("--python-subscriber", dest="native_subscriber", action="store_false",
                        help="the subscriber receives (and spools) in its Python loop "
                             "(subscribe --python-loop), to compare with its C one")
    parser.add_argument("--live", action="store_true",
                        help="live subscriber (drops when behind) instead of lossless")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip timing the bare C relay (PULL -> PUB) baseline")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--keep", type=options.path, metavar="DIR", help="keep configs, logs and reports here")
    return parser


def _python(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *map(str, arguments)]


def _realtime_start(priority: int):
    """A preexec_fn that makes a child SCHED_FIFO at `priority`, or None when 0 or when this
    process may not (tried on itself first: a failing preexec_fn would abort the run)."""
    if not priority or not hasattr(os, "SCHED_FIFO"):
        return None
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as error:
        print(f"realtime priority refused ({error}): simulator and subscriber run at "
              "ordinary priority", file=sys.stderr)
        return None
    return lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def _percentiles_us(values_ns) -> dict:
    data = np.asarray(values_ns, dtype=np.float64) / 1e3
    if not len(data):
        return {}
    return {"p50": round(float(np.percentile(data, 50)), 1),
            "p99": round(float(np.percentile(data, 99)), 1),
            "max": round(float(data.max()), 1), "count": int(len(data))}


def noise_floor(until, period_s: float = 0.001, tick=None) -> dict:
    """Oversleep of a `period_s` sleep, repeated until `until()` is true; `tick()` once a
    second (its own time is left out of the figures)."""
    lateness = []
    next_tick = time.monotonic() + 1.0
    while not until():
        start = time.perf_counter_ns()
        time.sleep(period_s)
        lateness.append(time.perf_counter_ns() - start - period_s * 1e9)
        if tick is not None and time.monotonic() >= next_tick:
            tick()
            next_tick = time.monotonic() + 1.0
    return _percentiles_us(lateness)


class Progress:
    """One line a second from the daemon's stats: what the pipeline is doing right now."""

    def __init__(self, control: str, say):
        self.control, self.say = control, say
        self.previous = None
        self.started = time.monotonic()

    def __call__(self) -> None:
        try:
            stats = query(self.control, "stats", timeout=0.5)
        except ControlTimeout:
            self.say("  daemon: no answer to stats within 0.5 s")
            return
        stream = next(iter(stats.get("streams", {}).values()), None)
        if stream is None:
            return
        now = time.monotonic()
        samples = stream["samples_in"]
        rate = 0.0
        if self.previous is not None:
            rate = (samples - self.previous[1]) / (now - self.previous[0])
        self.previous = (now, samples)
        latency = stream["latency_us"]
        held = sum(s["held"] for s in stats.get("lossless", []))
        cpu = stats["process"]["cpu_user_s"] + stats["process"]["cpu_system_s"]
        self.say(f"  t={now - self.started:5.1f}s  {rate / 1e3:5.1f} kHz x {stream['channels']} "
                 f"ch  packets {stream['packets_in']}  drops {stream['drops']}  ratio "
                 f"{stream['ratio']:.3f}  held for lossless {held}  compress p50 "
                 f"{latency['compress']['p50']:.0f} us  publish p50 "
                 f"{latency['publish']['p50']:.0f} us  daemon cpu {cpu:.1f} s")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_packet(cpu_s: float, packets: int, seconds: float) -> dict:
    return {"cpu_s": round(cpu_s, 3),
            "us_per_packet": round(1e6 * cpu_s / packets, 1) if packets else None,
            "percent_of_core": round(100 * cpu_s / seconds, 1) if seconds > 0 else None}


def build_bare_relay(workdir: str) -> str:
    """Compile clients/bare_relay.c against the libzmq this Python's pyzmq loaded."""
    import zmq

    with open("/proc/self/maps") as handle:
        libraries = {line.split()[-1] for line in handle if "libzmq" in line}
    if not libraries:
        raise RuntimeError(f"no libzmq found loaded by pyzmq {zmq.__version__}")
    library = sorted(libraries)[0]
    binary = os.path.join(workdir, "bare_relay")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_relay.c")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", binary, source, library,
                    f"-Wl,-rpath,{os.path.dirname(library)}"], check=True,
                   capture_output=True, text=True)
    return binary


def time_bare_relay(args: argparse.Namespace, workdir: str, seconds: float) -> dict:
    """The same packets through a bare C PULL -> PUB relay to one SUB: its CPU per packet
    over the streaming window, the baseline `bench stream` prints ours beside."""
    import threading

    import zmq

    try:
        binary = build_bare_relay(workdir)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        return {"error": f"cannot build the bare relay: {getattr(error, 'stderr', '') or error}"}
    ingest, publish = (f"tcp://127.0.0.1:{free_loopback_port()}" for _ in range(2))
    relay = subprocess.Popen([binary, ingest, publish])
    context = zmq.Context()
    sink = context.socket(zmq.SUB)
    sink.subscribe(b"")
    sink.rcvhwm = 0
    sink.connect(publish)
    received = [0]
    done = threading.Event()

    def drain():
        while not done.is_set():
            if sink.poll(100):
                while True:
                    try:
                        sink.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received[0] += 1

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    time.sleep(0.3)  # the SUB's subscription reaches the relay
    simulator = subprocess.Popen(
        _python("neurowire.clients.simulate", "--connect", ingest, "--channels", args.channels,
                "--rate", args.rate, "--packet-samples", args.packet_samples,
                "--seconds", seconds, "--quiet"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while received[0] == 0 and simulator.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        start = (time.monotonic(), process_cpu_s(relay.pid), received[0])
        simulator.wait(timeout=seconds + 60)
        time.sleep(0.1)
        end = (time.monotonic(), process_cpu_s(relay.pid), received[0])
    finally:
        done.set()
        thread.join()
        relay.kill()
        relay.wait()
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        sink.close(0)
        context.term()
    if start[1] is None or end[1] is None:
        return {"error": "the bare relay exited"}
    result = _per_packet(end[1] - start[1], end[2] - start[2], end[0] - start[0])
    result["packets"] = end[2] - start[2]
    return result


def keyframe_cost(channels: int, rate: float, packet_samples: int, interval_s: float,
                  seed: int = 1, block_format: int | None = None) -> dict:
    """Ratio of 2 s of the synthetic signal with keyframes every interval_s vs only one, in
    the given block format version (default: the lane format the daemon writes)."""
    from neurowire import codec

    if block_format is None:
        block_format = codec.LANE_FORMAT_VERSION
    from .synth import LoopingSource, synthesize

    source = LoopingSource(synthesize(channels, rate, 15000, seed))
    total = int(2 * rate) // packet_samples * packet_samples
    every = max(1, round(interval_s * rate)) if interval_s > 0 else None
    sizes = {}
    for name, use_keyframes in (("with_keyframes", True), ("first_only", False)):
        encoder = codec.StreamEncoder(channels, format_version=block_format)
        size = 0
        for first in range(0, total, packet_samples):
            key = use_keyframes and every is not None and first % every == 0
            size += len(encoder.encode(source.samples(first, packet_samples), keyframe=key))
        sizes[name] = total * channels * 2 / size
    sizes["cost_percent"] = round(100 * (1 - sizes["with_keyframes"] / sizes["first_only"]), 3)
    return sizes


def _window_mark(control: str, processes: dict, wait_first: bool = True) -> dict:
    """CPU seconds of daemon and subscriber and the daemon's packet count, now; with
    `wait_first`, once the first packet has arrived (start-up imports are not counted)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            # A refused request (the daemon's control rate limit) has no "streams": ask again.
            stats = query(control, "stats", timeout=2)
            stream = next(iter(stats.get("streams", {}).values()), {})
        except ControlTimeout:
            stream = {}
        if stream.get("packets_in") or not wait_first or time.monotonic() > deadline:
            break
        # Well under the daemon's control rate limit; the window opens at most this late.
        time.sleep(0.05)
    return {"time": time.monotonic(), "packets": stream.get("packets_in", 0),
            "daemon": process_cpu_s(processes["daemon"].pid),
            "subscriber": process_cpu_s(processes["subscriber"].pid)}


def _block_format_error(block_format: int) -> str | None:
    """Why the daemon would refuse this block_format (it writes what the codec writes), or
    None; said before anything starts."""
    from neurowire import codec

    try:
        codec.StreamEncoder(1, format_version=block_format or codec.LANE_FORMAT_VERSION)
    except ValueError:
        return (f"--block-format {block_format}: the daemon writes 0 (the lane format, now "
                f"version {codec.LANE_FORMAT_VERSION}), {codec.LANE_FORMAT_VERSION} or "
                f"{codec.FORMAT_VERSION}")
    return None


def run(args: argparse.Namespace) -> int:
    error = _block_format_error(args.block_format)
    if error:
        print(f"neurowire bench stream: {error}", file=sys.stderr)
        return 2
    workdir = args.keep or tempfile.mkdtemp(prefix="neurowire-bench-")
    os.makedirs(workdir, exist_ok=True)
    ports = {name: free_loopback_port() for name in ("ingest", "publish", "lossless", "control")}
    endpoints = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    config_path = os.path.join(workdir, "daemon.toml")
    with open(config_path, "w") as handle:
        handle.write("[daemon]\n" + "".join(f'{k} = "{v}"\n' for k, v in endpoints.items()))
        handle.write(f'metrics = ""\nworkers = {args.workers}\n'
                     f"pin_threads = {'true' if args.pin else 'false'}\n"
                     f"realtime_priority = {args.realtime_priority}\n"
                     f"spin_us = {args.spin_us}\n"
                     f"fast_path = {'true' if args.fast_path else 'false'}\n"
                     f"block_format = {args.block_format}\n"
                     f"keyframe_interval_s = {args.keyframe_interval}\n"
                     "max_backlog_packets = 2000\nlog_level = \"WARNING\"\n")
    sub_report = os.path.join(workdir, "subscriber.json")
    sim_report = os.path.join(workdir, "simulator.json")
    total_samples = round(args.seconds * args.rate / args.packet_samples) * args.packet_samples
    logs = {name: open(os.path.join(workdir, f"{name}.log"), "w")
            for name in ("daemon", "subscriber", "simulator")}
    say = (lambda *a: print(*a, file=sys.stderr)) if not args.json else (lambda *a: None)
    processes = {}
    realtime = _realtime_start(args.realtime_priority)
    try:
        processes["daemon"] = subprocess.Popen(
            _python("neurowire.daemon", "--config", config_path),
            stdout=logs["daemon"], stderr=subprocess.STDOUT)
        wait_ready(endpoints["control"], timeout=20)
        say(f"daemon up ({endpoints['ingest']}); starting subscriber")
        processes["subscriber"] = subprocess.Popen(
            _python("neurowire.clients.subscribe",
                    "--connect", endpoints["publish" if args.live else "lossless"],
                    *([] if args.live else ["--lossless"]),
                    "--verify-synth", 1, "--channels", args.channels, "--rate", args.rate,
                    "--until-sample", total_samples, "--idle-timeout", 5,
                    *(["--spool", os.path.join(workdir, "spool.bin")]
                      if args.verify == "after" else []),
                    "--report", sub_report, "--quiet",
                    *([] if args.native_subscriber else ["--python-loop"])),
            stdout=logs["subscriber"], stderr=subprocess.STDOUT, preexec_fn=realtime)
        deadline = time.monotonic() + 60
        while True:  # the subscriber builds its reference table before it connects
            status = query(endpoints["control"], "status")
            if status["lossless_subscribers"] + status["live_subscriptions"] >= 1:
                break
            if time.monotonic() > deadline or processes["subscriber"].poll() is not None:
                raise RuntimeError("subscriber did not connect; see " + workdir)
            time.sleep(0.1)
        say(f"streaming {args.channels} ch x {args.rate:g} Hz in {args.packet_samples}-sample "
            f"packets for {args.seconds:g} s")
        processes["simulator"] = subprocess.Popen(
            _python("neurowire.clients.simulate", "--connect", endpoints["ingest"],
                    "--channels", args.channels, "--rate", args.rate,
                    "--packet-samples", args.packet_samples, "--seconds", args.seconds,
                    "--report", sim_report, "--quiet",
                    *([] if args.native_simulator else ["--python-loop"])),
            stdout=logs["simulator"], stderr=subprocess.STDOUT, preexec_fn=realtime)
        load_start = os.getloadavg()
        window_start = _window_mark(endpoints["control"], processes)
        floor = noise_floor(lambda: processes["simulator"].poll() is not None,
                            tick=None if args.json else Progress(endpoints["control"], say))
        window_end = _window_mark(endpoints["control"], processes, wait_first=False)
        load_end = os.getloadavg()
        if args.verify == "after":
            say("stream done; the subscriber decodes and checks every block now")
        processes["subscriber"].wait(timeout=60 + (5 * args.seconds
                                                   if args.verify == "after" else 0))
        # An overloaded daemon may be too busy to answer: the run's figures from the clients
        # stand, and the report says which of the daemon's are missing and why.
        stats_error = None
        try:
            stats = query(endpoints["control"], "stats", timeout=5)
            data_path = query(endpoints["control"], "status", timeout=5).get("data_path", {})
        except ControlTimeout:
            stats, data_path = {}, {}
            stats_error = ("the daemon's control endpoint did not answer within 5 s "
                           "(overloaded?): its ratio, drops and CPU are not known")
        processes["daemon"].send_signal(signal.SIGTERM)
        try:
            daemon_exit = processes["daemon"].wait(timeout=30)
        except subprocess.TimeoutExpired:  # still flushing a backlog: killed below
            say("the daemon did not stop within 30 s of SIGTERM; killed")
            daemon_exit = None
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in logs.values():
            handle.close()
    with open(sim_report) as handle:
        simulator = json.load(handle)
    with open(sub_report) as handle:
        subscriber = json.load(handle)
    stream = next(iter(stats.get("streams", {}).values()), {})
    daemon_cpu = stats.get("process", {})
    daemon_cpu_s = daemon_cpu.get("cpu_user_s", 0) + daemon_cpu.get("cpu_system_s", 0)
    wall = simulator["elapsed_s"]
    latency = {stage: {k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()}
               for stage, values in subscriber["latency_us"].items()}
    exact = (subscriber["mismatches"] == 0 and subscriber["crc_errors"] == 0
             and subscriber["decode_errors"] == 0)
    packets_lost = simulator["packets_sent"] - subscriber["blocks"]
    result = {
        "config": {"channels": args.channels, "rate": args.rate,
                   "packet_samples": args.packet_samples,
                   "packet_ms": 1000 * args.packet_samples / args.rate,
                   "seconds": args.seconds, "workers": args.workers, "pin_threads": args.pin,
                   "realtime_priority": args.realtime_priority, "spin_us": args.spin_us,
                   "fast_path": args.fast_path,
                   # The codec block version the daemon wrote (its block_format, resolved).
                   "block_format": data_path.get("block_format"),
                   # Which loop sent: the C one unless asked otherwise or it cannot load.
                   "simulator_c_loop": simulator.get("c_loop"),
                   # Which loop received (with --verify after, the spooling loop).
                   "subscriber_c_loop": subscriber.get("c_loop"),
                   "clients_realtime": realtime is not None,
                   "delivery": "live" if args.live else "lossless",
                   "keyframe_interval_s": args.keyframe_interval, "cpus": os.cpu_count(),
                   "verify": args.verify},
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in load_end]},
        "sustained": {"channels": args.channels,
                      "sample_rate": round(simulator["achieved_rate"], 1),
                      "channel_samples_per_s": round(args.channels * simulator["achieved_rate"])},
        "samples_sent": simulator["samples_sent"],
        "samples_received": subscriber["samples"],
        "samples_compared": subscriber["samples"] * args.channels,
        "decoded_samples_exact": exact,  # every sample that arrived equals what was sent
        "complete": subscriber["samples"] == simulator["samples_sent"],
        "exact": exact and subscriber["samples"] == simulator["samples_sent"],
        "packets_sent": simulator["packets_sent"],
        "packets_refused_by_socket": simulator["packets_refused"],
        "packets_lost": packets_lost,
        "daemon_drops": stream.get("drops"),
        "gaps": subscriber["gaps"],
        "ratio": stream.get("ratio"),
        "keyframes": stream.get("keyframes"),
        "latency_us": latency,
        "daemon_latency_us_recent": stream.get("latency_us"),
        "cpu": {"daemon": {"cpu_s": round(daemon_cpu_s, 2) if daemon_cpu else None,
                           "percent_of_core": round(100 * daemon_cpu_s / wall, 1)
                           if daemon_cpu else None},
                "simulator": {"cpu_s": round(simulator["cpu_s"], 2),
                              "percent_of_core": round(100 * simulator["cpu_s"] / wall, 1)},
                # While streaming: with --verify after, the decoding that follows is not in it.
                "subscriber": {"cpu_s": round(subscriber.get("cpu_streaming_s",
                                                             subscriber["cpu_s"]), 2),
                               "percent_of_core": round(100 * subscriber.get(
                                   "cpu_streaming_s", subscriber["cpu_s"]) / wall, 1),
                               "cpu_total_s": round(subscriber["cpu_s"], 2)}},
        "simulator_pacing_lateness_us": simulator["pacing_lateness"],
        "noise_floor_us": floor,
        "daemon_stats_error": stats_error,
        "daemon_exit_code": daemon_exit,
        "daemon_data_path": data_path,  # CPUs and priority the daemon actually got
        "workdir": workdir if args.keep else None,
    }
    packets = window_end["packets"] - window_start["packets"]
    seconds = window_end["time"] - window_start["time"]
    result["cpu_streaming"] = {
        "packets": packets, "seconds": round(seconds, 2),
        **{name: _per_packet(window_end[name] - window_start[name], packets, seconds)
           for name in ("daemon", "subscriber")
           if window_start.get(name) is not None and window_end.get(name) is not None},
        "simulator": _per_packet(simulator["cpu_s"], simulator["packets_sent"], wall)}
    if args.baseline:
        say("timing a bare C relay (PULL -> PUB) with the same packets, as the baseline")
        result["cpu_streaming"]["bare_c_relay"] = time_bare_relay(
            args, workdir, min(args.seconds, 5.0))
    try:
        result["keyframe_cost"] = keyframe_cost(args.channels, args.rate, args.packet_samples,
                                                args.keyframe_interval,
                                                block_format=data_path.get("block_format"))
    except Exception as error:  # the figure is a bonus; the run itself already succeeded
        result["keyframe_cost"] = {"error": str(error)}
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(result)
    return 0 if result["exact"] and packets_lost == 0 else 1


def _print_human(result: dict) -> None:
    config = result["config"]
    data_path = result.get("daemon_data_path") or {}
    print(f"pipeline: {config['channels']} ch x {config['rate']:g} Hz, "
          f"{config['packet_ms']:g} ms packets, {config['seconds']:g} s, {config['delivery']} "
          f"subscriber, {config['workers']} encoder thread(s)"
          f"{' on CPUs ' + str(data_path['cpus']) if data_path.get('cpus') else ''}"
          f"{', SCHED_FIFO %d' % data_path['realtime_priority'] if data_path.get('realtime_priority') else ''}"
          f"{', polling %d us' % data_path['spin_us'] if data_path.get('spin_us') else ''}"
          f"{', block format %d' % config['block_format'] if config.get('block_format') else ''}"
          f", {config['cpus']} CPUs, "
          f"checked {'after the stream' if config['verify'] == 'after' else 'in real time'}")
    load = result["load_average"]
    print(f"load average (1/5/15 min): {load['start']} at the start, {load['end']} at the end")
    sustained = result["sustained"]
    print(f"sustained: {sustained['channels']} ch x {sustained['sample_rate']:g} Hz = "
          f"{sustained['channel_samples_per_s'] / 1e6:.2f} M samples/s")
    print(f"exact: {result['exact']} (decoded samples all equal: "
          f"{result['decoded_samples_exact']}; {result['samples_received']} of "
          f"{result['samples_sent']} time steps arrived, {result['samples_compared']} samples "
          "compared)")
    print(f"packets: {result['packets_sent']} sent, {result['packets_lost']} lost, "
          f"{result['daemon_drops']} dropped by the daemon, "
          f"{result['packets_refused_by_socket']} refused at the simulator; "
          f"{len(result['gaps'])} gaps")
    if result.get("daemon_stats_error"):
        print(f"daemon figures: {result['daemon_stats_error']}")
    ratio = "not known" if result["ratio"] is None else f"{result['ratio']:.3f}"
    print(f"ratio: {ratio}  keyframes: {result['keyframes']}  keyframe cost: "
          f"{result['keyframe_cost']}")
    print("latency (us)        p50       p99       max")
    for stage, values in result["latency_us"].items():
        print(f"  {stage:<15}{values['p50']:>9.0f} {values['p99']:>9.0f} {values['max']:>9.0f}")
    floor = result["noise_floor_us"]
    print(f"  {'noise floor':<15}{floor.get('p50', 0):>9.0f} {floor.get('p99', 0):>9.0f} "
          f"{floor.get('max', 0):>9.0f}   (oversleep of a 1 ms sleep)")
    pacing = result["simulator_pacing_lateness_us"]
    print(f"  {'sim pacing':<15}{pacing.get('p50_us', 0):>9.0f} {pacing.get('p99_us', 0):>9.0f} "
          f"{pacing.get('max_us', 0):>9.0f}")
    print("cpu: " + ", ".join(f"{name} {v['cpu_s']} s ({v['percent_of_core']}% of a core)"
                              if v["cpu_s"] is not None else f"{name} not known"
                              for name, v in result["cpu"].items()))
    window = result["cpu_streaming"]
    relay = window.get("bare_c_relay", {})
    loops = {name: " (C loop)" if config.get(f"{name}_c_loop") else " (Python loop)"
             for name in ("simulator", "subscriber")}
    line = ", ".join(f"{name}{loops.get(name, '')} {window[name]['us_per_packet']} us "
                     f"({window[name]['percent_of_core']}% of a core)"
                     for name in ("daemon", "subscriber", "simulator") if name in window)
    print(f"cpu per packet while streaming ({window['packets']} packets): {line}")
    if relay.get("us_per_packet"):
        print(f"  bare C relay (PULL -> PUB, same packets): {relay['us_per_packet']} us; "
              + ", ".join(f"{name} {window[name]['us_per_packet'] / relay['us_per_packet']:.1f}x"
                          for name in ("daemon", "subscriber", "simulator")
                          if window.get(name, {}).get("us_per_packet")))
    elif relay:
        print(f"  bare C relay: {relay.get('error')}")
    print(f"daemon exit code after SIGTERM: {result['daemon_exit_code']}")


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire bench stream"))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
