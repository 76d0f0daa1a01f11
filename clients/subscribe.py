"""`neurowire subscribe`: receive, decode and verify a daemon's stream, report gaps, write
the samples. The library is neurowire.clients.subscription (imported here for existing
callers of `neurowire.clients.subscribe.subscribe`)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import msgpack
import numpy as np
import zmq

from neurowire import options
from neurowire.options import bounded, endpoint
from neurowire.outfile import open_output
from neurowire.wire import DEFAULT_LOSSLESS, DEFAULT_PUBLISH, MAX_INT, MAX_RATE

from .subscription import (FEEDS, Block, Gap, Run, Subscription, _cpu_s,  # noqa: F401
                           _view, feed_subscription, subscribe)
from .writers import SampleWriter, Spool, spool_problem



def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Receive, decode and verify a daemon's compressed feed."
    parser.add_argument("--connect", type=endpoint, help="daemon publish (or, with --lossless, lossless) "
                        f"endpoint (default {DEFAULT_PUBLISH} / {DEFAULT_LOSSLESS})")
    parser.add_argument("--control", type=endpoint, help="ask this control endpoint for the data endpoints")
    parser.add_argument("--stream", action="append", type=options.stream_id, help="stream id (repeatable; default all)")
    parser.add_argument("--lossless", action="store_true",
                        help="the daemon holds blocks for us instead of dropping them")
    parser.add_argument("--seconds", type=options.duration, default=0.0, help="stop after this long, at most 86400 (0: never)")
    parser.add_argument("--idle-timeout", type=bounded(float, 0, options.MAX_SECONDS, what="the idle timeout"), default=0.0,
                        help="stop after this many seconds without data (0: never); before "
                             "the first message, at least 60 s")
    parser.add_argument("--until-sample", type=bounded(int, 0, MAX_INT, what="the sample index"), default=0,
                        help="stop once a stream has delivered samples up to this index")
    parser.add_argument("--npy", type=options.output_file, metavar="FILE", help="write the samples here (.npy)")
    parser.add_argument("--wav-dir", type=options.output_folder, metavar="DIR", help="write one WAV file per channel")
    parser.add_argument("--lsl", metavar="NAME",
                        help="publish the decoded samples as a Lab Streaming Layer outlet "
                             "(NAME with one --stream, else NAME-<stream id>); needs pylsl")
    parser.add_argument("--republish", metavar="ENDPOINT", type=endpoint,
                        help="bind a PUB socket here with the decoded samples "
                             "(frames: topic, msgpack header, raw int16)")
    parser.add_argument("--verify-synth", type=options.seed, metavar="SEED",
                        help="compare every sample with the simulator's synthetic table")
    parser.add_argument("--channels", type=bounded(int, 1, 4096, what="channels"), default=1024, help="for --verify-synth")
    parser.add_argument("--rate", type=bounded(float, 0, MAX_RATE, low_open=True, what="the rate"), default=20000.0, help="for --verify-synth")
    parser.add_argument("--loop-samples", type=bounded(int, 1, 1 << 24, what="the table's length"), default=15000, help="for --verify-synth")
    parser.add_argument("--resume-from", type=bounded(int, 0, MAX_INT, what="the sample index"), metavar="SAMPLE",
                        help="report samples missed since this index (where a previous run "
                             "stopped) as a gap")
    parser.add_argument("--spool", type=options.output_file, metavar="FILE",
                        help="only receive while streaming (into FILE), then decode and check "
                             "every block: where decoding in real time does not fit next to "
                             "the daemon; latency then counts decoding as if done on arrival")
    parser.add_argument("--python-loop", action="store_true",
                        help="receive (and, with --spool, spool) in Python on pyzmq instead "
                             "of the C loops, to compare; the report's c_loop says which ran")
    parser.add_argument("--report", type=options.output_file, metavar="FILE", help="write the final report as JSON")
    parser.add_argument("--ready-file", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--feed", choices=FEEDS, default="lossless",
                        help="which of the daemon's feeds (default lossless; the others need "
                             "the daemon's `feeds` config and --stream or --control; --npy "
                             "writes bounded samples)")
    parser.add_argument("--events", type=options.output_file, metavar="FILE",
                        help="with --feed spikes: write the events here (.npz: sample, "
                             "channel, snippets, pre, rate)")
    parser.add_argument("--wait", action="store_true",
                        help="keep waiting when nothing answers at the endpoint (default: "
                             "say so and exit after 3 s)")
    parser.add_argument("--max-gap-s", type=bounded(float, 0, 3600, what="the gap"), default=60.0,
                        help="with --npy / --wav-dir: a gap longer than this many seconds "
                             "ends the file instead of filling it with zeros")
    parser.add_argument("--batch-ms", type=bounded(float, 0, 10_000, what="the batch time"), default=10.0, metavar="MS",
                        help="hand decoded blocks to the writers (--npy, --lsl, ...) every this "
                             "many ms (default %(default)s; 0: as each wake-up brings them). "
                             "Blocks are decoded, checked and timed as they arrive either way; "
                             "batching saves the work per wake-up")
    parser.add_argument("--quiet", action="store_true")
    return parser


def _terminate_as_interrupt(signum, frame):
    """SIGTERM ends a run as Ctrl-C does: files written, scratch gone (a second SIGTERM
    does not cut the writing short)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


# Before the first message, --idle-timeout is at least this long: a daemon on a busy machine
# can take seconds to deliver its first block, and leaving then would miss the stream.
FIRST_MESSAGE_WAIT_S = 60.0


def _until_limits(receive, args: argparse.Namespace):
    """Messages from `receive(timeout=...)` until --seconds or --idle-timeout runs out (the
    idle time-out counts from the last message; before the first, FIRST_MESSAGE_WAIT_S at
    least, with a note every 5 s that nothing has come yet)."""
    started = last_data = last_note = time.monotonic()
    received = False
    while True:
        now = time.monotonic()
        if args.seconds and now - started >= args.seconds:
            return
        idle_limit = args.idle_timeout if received else max(args.idle_timeout,
                                                              FIRST_MESSAGE_WAIT_S)
        if args.idle_timeout and now - last_data >= idle_limit:
            if not received:
                print(f"neurowire subscribe: nothing arrived in {idle_limit:g} s; giving up",
                      file=sys.stderr)
            return
        if not received and now - last_note >= 5.0:
            last_note = now
            print(f"neurowire subscribe: no data yet after {now - started:.0f} s (is a daemon "
                  "running there, and a source streaming to it?)", file=sys.stderr)
        # Wake at least every 0.2 s for the notes, and when a limit runs out: on time.
        left = [0.2]
        if args.seconds:
            left.append(started + args.seconds - now)
        if args.idle_timeout:
            left.append(last_data + idle_limit - now)
        message = receive(timeout=max(min(left), 0.001))
        if message:  # None or [] when nothing came
            received = True
            last_data = time.monotonic()
            yield message


def _with_suffix(path: str, suffix: str) -> str:
    """The name numpy's save/savez give a path: `suffix` added when missing."""
    return path if path.endswith(suffix) else path + suffix


def run_feed(args: argparse.Namespace) -> int:
    """`--feed spikes|power`: receive until --seconds / --idle-timeout / --until-sample."""
    from neurowire.feeds.detect import Events

    subscription = feed_subscription(args.connect, feed=args.feed, streams=args.stream,
                                     control=args.control)
    if args.ready_file:
        open(args.ready_file, "w").close()
    started = time.monotonic()
    parts, bins, rate, pre, length = [], 0, 0.0, 0, 0
    bounded, first_bounded = [], None
    try:
        for message in _until_limits(subscription.receive, args):
            rate = message["rate"]
            if message["kind"] == "spikes":
                parts.append(message["events"])
                pre, length = message["pre"], message["len"]
                reached = message["to"]
            elif message["kind"] == "bounded":
                if first_bounded is None:
                    first_bounded = message["first"]
                bounded.append(message["samples"])
                reached = message["first"] + message["n"]
            else:
                bins += len(message["power"].power)
                reached = message["origin"] + (message["bin"] + message["n"]) * message["width"]
            if args.until_sample and reached >= args.until_sample:
                break
    except KeyboardInterrupt:
        pass
    finally:
        subscription.close()
    events = Events.concat(parts, length, pre)
    seconds = max(time.monotonic() - started, 1e-9)
    report = {"feed": args.feed, "streams": subscription.streams,
              "messages": subscription.messages, "bytes": subscription.bytes,
              "lost": subscription.lost, "events": len(events), "power_bins": bins,
              "bounded_samples": sum(len(b) for b in bounded), "first_sample": first_bounded,
              "bits_per_s_wall": 8 * subscription.bytes / seconds}
    if args.events and args.feed == "spikes":
        with open_output(_with_suffix(args.events, ".npz"), "wb") as handle:
            np.savez(handle, sample=events.sample, channel=events.channel,
                     snippets=events.snippets, pre=pre, rate=rate)
    if args.npy and bounded:
        with open_output(_with_suffix(args.npy, ".npy"), "wb") as handle:
            np.save(handle, np.concatenate(bounded))  # from first_sample; gaps not marked
    if args.report:
        with open_output(args.report) as handle:
            json.dump(report, handle)
    if not args.quiet:
        print(json.dumps(report), file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    import signal

    from neurowire.wire import ControlReplyError, ControlTimeout

    import threading

    # Signals reach the main thread only (a test or a notebook may run this on another).
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if on_main else None
    try:
        return _run(args)
    except ControlTimeout as error:
        print(f"neurowire subscribe: the daemon's control endpoint does not answer ({error})",
              file=sys.stderr)
        return 1
    except ControlReplyError as error:
        print(f"neurowire subscribe: the control endpoint's reply is not a neurowire "
              f"daemon's: {error}", file=sys.stderr)
        return 1
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


# Outputs and the feeds that fill them: any other pairing would be silently ignored.
_OUTPUT_FEEDS = {"wav_dir": ("lossless",), "npy": ("lossless", "bounded"),
                 "events": ("spikes",), "lossless": ("lossless",)}


def _combination_problem(args: argparse.Namespace) -> str | None:
    feed = getattr(args, "feed", "lossless")
    for dest, feeds in _OUTPUT_FEEDS.items():
        if getattr(args, dest, None) and feed not in feeds:
            option = "--" + dest.replace("_", "-")
            return f"{option} is for --feed {' or '.join(feeds)}, not {feed}"
    if getattr(args, "spool", None) and spool_problem(args.spool):
        return f"--spool {args.spool} {spool_problem(args.spool)}"
    if feed != "lossless" and not (args.stream or args.control):
        return f"--feed {feed} needs --stream ID (or --control, to ask the daemon for them)"
    return None


def _run(args: argparse.Namespace) -> int:
    problem = _combination_problem(args)
    if problem:
        print(f"neurowire subscribe: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "feed", "lossless") != "lossless":
        return run_feed(args)
    expected = None
    if args.verify_synth is not None:
        from .synth import LoopingSource, synthesize, table_problem

        problem = table_problem(args.channels, args.loop_samples)
        if problem:
            print(f"neurowire subscribe: {problem}; use a smaller --loop-samples",
                  file=sys.stderr)
            return 2
        source = LoopingSource(synthesize(args.channels, args.rate, args.loop_samples,
                                          args.verify_synth))
        expected = lambda stream, first, n: source.samples(first, n)  # noqa: E731
    subscription = Subscription(args.connect, streams=args.stream, lossless=args.lossless,
                                control=args.control, expected=expected, record_latency=True,
                                idle_timeout=None, resume_from=args.resume_from,
                                native=False if args.python_loop else None)
    subscription.open()
    if not args.wait and not subscription.answering(3.0):
        subscription.close()
        print(f"neurowire subscribe: nothing answers at {subscription.endpoint} within 3 s "
              "(is the daemon running there? --wait keeps waiting)", file=sys.stderr)
        return 1
    writer = (SampleWriter(args.npy, args.wav_dir, args.max_gap_s)
              if (args.npy or args.wav_dir) else None)
    outlets = None
    if args.lsl:
        from .lsl import LslOutlets

        try:
            import pylsl  # noqa: F401
        except ImportError:
            print("neurowire subscribe: --lsl needs pylsl (pip install pylsl)", file=sys.stderr)
            subscription.close()
            return 2
        outlets = LslOutlets(args.lsl, single_stream=len(args.stream or ()) == 1)
    republisher = None
    if args.republish:
        republisher = subscription.context.socket(zmq.PUB)
        republisher.bind(args.republish)
    if args.ready_file:
        open(args.ready_file, "w").close()
    spool = Spool(args.spool) if args.spool else None
    streaming_cpu_s = []  # with a spool: what receiving alone cost, before the decoding

    def spool_then_blocks():
        def note(seconds):
            print(f"neurowire subscribe: no data yet after {seconds:.0f} s (is a daemon "
                  "running there, and a source streaming to it?)", file=sys.stderr)

        ended_by = subscription.spool_into(
            spool, seconds=args.seconds, idle_timeout=args.idle_timeout,
            first_wait=FIRST_MESSAGE_WAIT_S, until_sample=args.until_sample,
            note=note)["ended_by"]
        if ended_by == "idle" and not subscription.spool_report["spooled"]:
            print("neurowire subscribe: nothing arrived; giving up", file=sys.stderr)
        subscription.close()
        streaming_cpu_s.append(_cpu_s() - subscription._cpu_start)
        if not args.quiet:
            print(f"received {spool.messages} messages; decoding and checking them",
                  file=sys.stderr)
        for frames, received_ns in spool.replay():
            block = subscription.handle(frames, received_ns, deferred=True)
            if block is not None:
                yield block

    last_status = time.monotonic()
    try:
        # Batches of Runs (consecutive blocks of a stream in one array), one per wake-up;
        # replayed spool blocks one at a time.
        batches = (([block] for block in spool_then_blocks()) if spool else _until_limits(
            functools.partial(subscription.receive_batch, gather=args.batch_ms / 1e3), args))
        for run in (run for batch in batches for run in batch):
            now = time.monotonic()
            for gap in run.gaps:
                print(f"gap in {gap.stream}: samples {gap.start}..{gap.stop - 1} "
                      f"({gap.samples} samples, {gap.reason})", file=sys.stderr)
            if writer is not None:
                writer.write(run)
            if outlets is not None:
                outlets.write(run)
            if republisher is not None:
                republisher.send_multipart(
                    [run.stream.encode() + b"\0",
                     msgpack.packb({"stream": run.stream, "first": run.first_sample,
                                    "n": run.samples.shape[0],
                                    "ch": run.samples.shape[1], "rate": run.rate}),
                     run.samples], copy=False)
            if not args.quiet and now - last_status >= 5:
                last_status = now
                e2e = subscription.recent_latency_ns("end_to_end", 2000)
                print(f"{subscription.blocks} blocks, {subscription.samples} samples, "
                      f"{len(subscription.gaps)} gaps, {subscription.crc_errors} check failures"
                      f", end-to-end p50 {np.median(e2e) / 1e3 if e2e else 0:.0f} us",
                      file=sys.stderr)
            if args.until_sample and run.stop_sample >= args.until_sample and not spool:
                break
    except KeyboardInterrupt:
        pass
    finally:
        subscription.close()
        if republisher is not None:
            republisher.close(linger=0)
        if writer is not None:
            writer.close()
        if outlets is not None:
            outlets.close()
    report = subscription.report()
    if writer is not None:
        report["rows_not_written"] = writer.rows_not_written
        report["file_ends_at_gap"] = writer.ended_at
    report["cpu_streaming_s"] = streaming_cpu_s[0] if streaming_cpu_s else report["cpu_s"]
    report["deferred_decode"] = spool is not None
    # Which loop received: C (fastsub) or Python (pyzmq); with --spool, the spooling loop's.
    report["c_loop"] = (subscription.spool_report["c_loop"] if subscription.spool_report
                        else subscription._receiver is not None)
    if subscription.spool_report:
        report["spool"] = subscription.spool_report
    if args.report:
        with open_output(args.report) as handle:
            json.dump(report, handle)
    if not args.quiet:
        print(json.dumps({k: v for k, v in report.items() if k != "latency_us"}),
              file=sys.stderr)
    failed = report["crc_errors"] or report["mismatches"] or report["decode_errors"]
    return 1 if failed else 0


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire subscribe"))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
