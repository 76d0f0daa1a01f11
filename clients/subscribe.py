"""Decoding subscriber: `neurowire subscribe` and the `neurowire.subscribe(...)` iterator.

    for block in neurowire.subscribe("tcp://127.0.0.1:7341"):
        block.samples          # int16 (n_samples, channels), exactly what the implant sent
        block.first_sample     # index of its first time step in the stream
        block.gaps             # sample ranges missed just before this block, if any

Live delivery (default) subscribes to the daemon's PUB socket; a subscriber that cannot keep
up loses blocks and reports them.  `lossless=True` talks to the daemon's lossless endpoint,
which holds blocks until this subscriber grants credit for them.

Every block is checked: the daemon's CRC-32 of the raw packet against the decoded samples.
Gaps are exact sample ranges, found from the daemon's per-stream block sequence (blocks that
never arrived) and the implant's sample indices (packets the daemon dropped or never got).
After any loss the decoder waits for the next keyframe, and the range up to it is the gap.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import msgpack
import numpy as np
import zmq

DEFAULT_LIVE = "tcp://127.0.0.1:7341"
DEFAULT_LOSSLESS = "tcp://127.0.0.1:7342"
LATENCY_STAGES = ("ingest", "queue_compress", "publish", "delivery", "decode", "end_to_end")


@dataclass(frozen=True)
class Gap:
    stream: str
    start: int  # first missing sample index
    stop: int   # first sample index received again (exclusive end)
    reason: str  # "delivery" (blocks lost after the daemon), "daemon_dropped", "source"

    @property
    def samples(self) -> int:
        return self.stop - self.start


@dataclass
class Block:
    stream: str
    first_sample: int
    samples: np.ndarray
    rate: float
    seq: int
    keyframe: bool
    latency_ns: dict
    gaps: list = field(default_factory=list)

    @property
    def stop_sample(self) -> int:
        return self.first_sample + self.samples.shape[0]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _view(frame) -> memoryview:
    """A zmq Frame or any bytes-like object as a memoryview, without copying."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


# The block header fields the subscriber reads, and their types (protocol: daemon/protocol.py).
_HEADER_FIELDS = {"stream": str, "seq": int, "first": int, "key": (bool, int), "crc": int,
                  "rate": (int, float), "t_acq": int, "t_recv": int, "t_comp": int, "t_pub": int}


def _block_header(frame) -> dict:
    """The msgpack header of a published block, or ValueError naming what is wrong."""
    header = msgpack.unpackb(_view(frame), raw=False)
    if not isinstance(header, dict):
        raise ValueError(f"header is a {type(header).__name__}, not a map")
    for name, kind in _HEADER_FIELDS.items():
        if not isinstance(header.get(name), kind):
            raise ValueError(f"header field {name!r} missing or not {kind}")
    return header


class _StreamState:
    def __init__(self, header: dict, team):
        from neurowire import codec

        self.epoch = header.get("epoch")
        self.groups = list(header.get("groups") or [header["ch"]])
        # One decoder per channel group of the daemon's, the groups decoded side by side.
        self.decoder = codec.GroupDecoder(self.groups, team=team)
        self.next_seq: int | None = None
        self.next_sample: int | None = None
        self.synced = False
        self.lost_delivery = False
        self.dropped_seen = header.get("dropped", 0)
        self.joined_at: int | None = None

    def desync(self) -> None:
        self.decoder.reset()
        self.synced = False


class Subscription:
    """Iterator of decoded Blocks; use as a context manager or call close()."""

    def __init__(self, endpoint: str | None = None, *, streams=None, lossless: bool = False,
                 control: str | None = None, credit: int = 512, curve: dict | None = None,
                 idle_timeout: float | None = None, context: zmq.Context | None = None,
                 expected: Callable[[str, int, int], np.ndarray] | None = None,
                 record_latency: bool = False, live_hwm: int = 4000,
                 resume_from: dict | int | None = None, socket_options: dict | None = None,
                 decode_threads: int | None = None):
        if isinstance(streams, str):
            streams = [streams]
        self.streams = list(streams) if streams else None
        self.lossless = lossless
        if endpoint is None and control is not None:
            from neurowire.daemon.control import query

            bound = query(control, "config", curve=curve)["bound"]
            endpoint = bound["lossless" if lossless else "publish"]
        self.endpoint = endpoint or (DEFAULT_LOSSLESS if lossless else DEFAULT_LIVE)
        self.credit_window = credit
        self.idle_timeout = idle_timeout
        self.expected = expected
        self.context = context or zmq.Context.instance()
        self.states: dict[str, _StreamState] = {}
        self.gaps: list[Gap] = []
        self.blocks = self.samples = self.bytes_in = 0
        self.verified_samples = 0
        self.crc_errors = self.mismatches = self.decode_errors = self.skipped_blocks = 0
        self.lost_blocks = 0
        self.feed_messages = 0  # other feeds' messages passed over (see receive_raw)
        self.record_latency = record_latency
        # Where an earlier run of this subscriber stopped ({stream: next sample index}, or one
        # index for every stream): what is missing since then is reported as a gap.
        self.resume_from = resume_from
        self.latency_ns: dict[str, list[int]] = {stage: [] for stage in LATENCY_STAGES}
        self.sock = self.context.socket(zmq.DEALER if lossless else zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = 100_000 if lossless else live_hwm
        if curve:
            self.sock.curve_serverkey = curve["server_public"]
            self.sock.curve_publickey = curve["public"]
            self.sock.curve_secretkey = curve["secret"]
        for option, value in (socket_options or {}).items():
            self.sock.setsockopt(option, value)
        if lossless:
            # A stable identity lets the daemon recognise us after a reconnect.
            self.sock.routing_id = uuid.uuid4().bytes
        else:
            for stream in self.streams or [""]:
                self.sock.subscribe(stream.encode() + b"\0" if stream else b"")
        self.sock.connect(self.endpoint)
        self._ungranted = 0
        self._last_sent = 0.0
        self._last_hello = 0.0
        self._cpu_start = _cpu_s()  # what building a reference table cost is not ours
        # Channel groups (one per daemon encoder thread) decode in parallel up to the CPUs.
        self._decode_threads = (os.cpu_count() or 1) if decode_threads is None else decode_threads
        self._team = None  # the decoding threads, made with the first stream
        if lossless:
            self._hello()

    # ---- lossless credit -----------------------------------------------------------------

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(msgpack.packb(message), zmq.NOBLOCK)
            self._last_sent = time.monotonic()
        except zmq.Again:
            pass  # not connected yet: the next idle tick says hello again

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        self._ungranted = 0
        self._send({"cmd": "hello", "streams": self.streams, "credit": self.credit_window})

    def _grant(self) -> None:
        self._ungranted += 1
        if self._ungranted >= self.credit_window // 2:
            self._send({"cmd": "credit", "n": self._ungranted})
            self._ungranted = 0
        elif time.monotonic() - self._last_sent > 1.0:
            self._send({"cmd": "credit", "n": 0})  # keep-alive while the window is open

    # ---- receiving -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Block]:
        return self

    def __next__(self) -> Block:
        block = self.receive(self.idle_timeout)
        if block is None:
            raise StopIteration
        return block

    def receive(self, timeout: float | None = None) -> Block | None:
        """Next decoded block, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            raw = self.receive_raw(remaining)
            if raw is None:
                return None
            block = self._handle(*raw)
            if block is not None:
                return block

    def receive_raw(self, timeout: float | None = None):
        """(frames, received_ns) of the next message, undecoded, or None after `timeout`.
        Pass them to `handle` later: decoding can then run after the stream, where a machine
        has no core to spare for decoding while the daemon encodes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return None
            if not self.sock.poll(int(wait * 1000)):
                if self.lossless and time.monotonic() - self._last_hello >= 1.0:
                    self._hello()  # idle: the daemon may have restarted and forgotten us
                continue
            frames = self.sock.recv_multipart(copy=False)
            received_ns = time.time_ns()
            if self.lossless:
                self._grant()
            elif self._other_feed(frames):
                continue
            return frames, received_ns

    def _other_feed(self, frames) -> bool:
        # A feed topic ("<stream>/spikes"; '/' is never in a stream id), which an every-stream
        # subscription (prefix "") receives too: not ours to decode, and no error either.
        if frames and b"/" in bytes(_view(frames[0])):
            self.feed_messages += 1
            return True
        return False

    def handle(self, frames, received_ns: int, deferred: bool = False) -> Block | None:
        """Decode and check frames from `receive_raw`.  `deferred`: they were received long
        ago, so the decoded time is taken as received + the decoding time measured now."""
        return self._handle(frames, received_ns, deferred)

    def _state_for(self, header: dict) -> "_StreamState":
        """The stream's state; a new one for a new stream or a restarted daemon (new epoch)."""
        stream = header["stream"]
        state = self.states.get(stream)
        if state is None or state.epoch != header.get("epoch"):
            previous = state
            if self._team is None:
                from neurowire import codec

                # No more threads than the daemon has channel groups (its `workers`).
                groups = len(header.get("groups") or [1])
                self._team = codec.CodecTeam(max(1, min(self._decode_threads, groups)))
            state = _StreamState(header, self._team)  # checks the group sizes
            self.states[stream] = state
            if previous is None and self.resume_from is not None:
                resume = (self.resume_from.get(stream) if isinstance(self.resume_from, dict)
                          else self.resume_from)
                if resume is not None:
                    state.next_sample = state.joined_at = resume
                    state.lost_delivery = True
            if previous is not None:  # the daemon restarted: keep counting samples across it
                state.next_sample = previous.next_sample
                state.joined_at = previous.joined_at
                state.lost_delivery = True
        return state

    def _handle(self, frames, received_ns: int, deferred: bool = False) -> Block | None:
        from neurowire.codec import CodecError

        if not self.lossless and self._other_feed(frames):
            return None
        if len(frames) < 3:
            self.decode_errors += 1
            return None
        try:
            header = _block_header(frames[1])
            state = self._state_for(header)
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            # A header that cannot be read: no stream to charge the block to. The next good
            # block's sequence number shows the gap.
            self.decode_errors += 1
            if self.decode_errors <= 10:
                print(f"neurowire subscribe: unreadable block header ({error!r}); skipped",
                      file=sys.stderr)
            return None
        stream, seq, first, key = header["stream"], header["seq"], header["first"], header["key"]
        if state.next_seq is not None and seq != state.next_seq:
            self.lost_blocks += max(0, seq - state.next_seq)
            state.lost_delivery = True
            state.desync()
        state.next_seq = seq + 1
        blobs = frames[2:]
        self.bytes_in += sum(len(blob) for blob in blobs)
        if not state.synced and not key:
            self.skipped_blocks += 1  # a keyframe is where decoding can resume
            return None
        decode_started = time.perf_counter_ns()
        try:
            samples = state.decoder.decode([_view(blob) for blob in blobs])
        except CodecError:
            self.decode_errors += 1
            state.lost_delivery = True
            state.desync()
            return None
        if deferred:
            decoded_ns = received_ns + time.perf_counter_ns() - decode_started
        else:
            decoded_ns = time.time_ns()
        state.synced = True
        if zlib.crc32(samples) != header["crc"]:
            self.crc_errors += 1
        n_samples = samples.shape[0]
        if self.expected is not None and not np.array_equal(
                samples, self.expected(stream, first, n_samples)):
            self.mismatches += 1
        elif self.expected is not None:
            self.verified_samples += samples.size
        gaps = []
        if state.next_sample is None:
            state.joined_at = first
        elif first > state.next_sample:
            dropped = header.get("dropped", 0)
            reason = ("delivery" if state.lost_delivery else
                      "daemon_dropped" if dropped > state.dropped_seen else "source")
            gaps.append(Gap(stream, state.next_sample, first, reason))
        state.dropped_seen = header.get("dropped", 0)
        state.lost_delivery = False
        state.next_sample = first + n_samples
        self.gaps.extend(gaps)
        self.blocks += 1
        self.samples += n_samples
        acquired = header["t_acq"]
        latency = {"ingest": header["t_recv"] - acquired,
                   "queue_compress": header["t_comp"] - header["t_recv"],
                   "compress": header.get("compress_ns", 0),
                   "publish": header["t_pub"] - acquired,
                   "delivery": received_ns - header["t_pub"],
                   "decode": decoded_ns - received_ns,
                   "end_to_end": decoded_ns - acquired}
        if self.record_latency:
            for stage in LATENCY_STAGES:
                self.latency_ns[stage].append(latency[stage])
            self.latency_ns.setdefault("compress", []).append(latency["compress"])
        return Block(stream, first, samples, header["rate"], seq, key, latency, gaps)

    # ---- reporting -------------------------------------------------------------------------

    def latency_summary_us(self) -> dict:
        summary = {}
        for stage, values in self.latency_ns.items():
            if values:
                data = np.asarray(values, dtype=np.float64) / 1e3
                summary[stage] = {"p50": float(np.percentile(data, 50)),
                                  "p99": float(np.percentile(data, 99)),
                                  "max": float(data.max()), "count": len(values)}
        return summary

    def report(self) -> dict:
        return {"blocks": self.blocks, "samples": self.samples, "bytes_in": self.bytes_in,
                "lost_blocks": self.lost_blocks, "skipped_blocks": self.skipped_blocks,
                "decode_errors": self.decode_errors, "crc_errors": self.crc_errors,
                "mismatches": self.mismatches, "verified_samples": self.verified_samples,
                "gaps": [{"stream": g.stream, "start": g.start, "stop": g.stop,
                          "samples": g.samples, "reason": g.reason} for g in self.gaps],
                "streams": {name: {"joined_at": s.joined_at, "next_sample": s.next_sample}
                            for name, s in self.states.items()},
                "latency_us": self.latency_summary_us(),
                "cpu_s": _cpu_s() - self._cpu_start}

    def close(self) -> None:
        if self.lossless and not self.sock.closed:
            self._send({"cmd": "bye"})
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


FEEDS = ("lossless", "spikes", "power", "bounded")


def subscribe(endpoint: str | None = None, *, feed: str | None = None, **options):
    """`for block in neurowire.subscribe(...)`: see Subscription for the options.

    feed="spikes", "power" or "bounded" gives the daemon's feed of that name instead (config
    `feeds`): a neurowire.feeds.serve.FeedSubscription yielding decoded message dicts (spike
    ones carry "events", power ones "power", bounded ones "samples" and "first"); it needs `streams` (or `control`, which names them) and
    takes endpoint / control, streams, idle_timeout, curve and context."""
    if feed in (None, "lossless"):
        return Subscription(endpoint, **options)
    return feed_subscription(endpoint, feed=feed, **options)


def feed_subscription(endpoint: str | None = None, *, feed: str, streams=None,
                      control: str | None = None, curve: dict | None = None,
                      idle_timeout: float | None = None, context: zmq.Context | None = None):
    from neurowire.feeds.serve import FEEDS as SERVED, FeedSubscription

    if feed not in SERVED:
        raise ValueError(f"feed {feed!r}: one of {FEEDS}")
    if isinstance(streams, str):
        streams = [streams]
    if control is not None and (endpoint is None or not streams):
        from neurowire.daemon.control import query

        if endpoint is None:
            endpoint = query(control, "config", curve=curve)["bound"]["publish"]
        if not streams:
            # Feed topics cannot be matched by a prefix common to all streams without
            # taking every lossless block too, so the streams are named one by one.
            streams = query(control, "status", curve=curve)["streams"]
    if not streams:
        raise ValueError(f"the {feed} feed needs streams=[...] (or control= to list the "
                         "daemon's current streams)")
    return FeedSubscription(endpoint or DEFAULT_LIVE, streams, feed=feed, context=context,
                            idle_timeout=idle_timeout, curve=curve)


# ---- outputs for the command ---------------------------------------------------------------

class Spool:
    """Received messages in a scratch file, to be decoded after the stream: for machines that
    cannot decode in real time next to the daemon, yet every sample must still be checked.
    Record: int64 received_ns, uint32 frame count, then (uint32 length, bytes) per frame."""

    def __init__(self, path: str):
        self.path = path
        self.handle = open(path, "wb", buffering=1 << 20)
        self.messages = 0

    def write(self, frames, received_ns: int) -> None:
        write = self.handle.write
        write(struct.pack("<qI", received_ns, len(frames)))
        for frame in frames:
            view = _view(frame)
            write(struct.pack("<I", view.nbytes))
            write(view)
        self.messages += 1

    def replay(self):
        """(frames, received_ns) in the order received; the file is removed afterwards."""
        self.handle.close()
        try:
            with open(self.path, "rb") as handle:
                data = memoryview(handle.read())
            offset = 0
            while offset < len(data):
                received_ns, count = struct.unpack_from("<qI", data, offset)
                offset += 12
                frames = []
                for _ in range(count):
                    (length,) = struct.unpack_from("<I", data, offset)
                    offset += 4
                    frames.append(data[offset:offset + length])
                    offset += length
                yield frames, received_ns
        finally:
            os.unlink(self.path)


class SampleWriter:
    """Appends raw int16 rows to a scratch file; at close writes .npy and/or WAV per channel.
    Gaps are written as zeros so that row i is always sample (first + i)."""

    def __init__(self, npy_path: str | None, wav_dir: str | None):
        self.npy_path, self.wav_dir = npy_path, wav_dir
        directory = os.path.dirname(os.path.abspath(npy_path or os.path.join(wav_dir, "x")))
        os.makedirs(directory, exist_ok=True)
        self.scratch = tempfile.NamedTemporaryFile(dir=directory, suffix=".raw", delete=False)
        self.rows = 0
        self.channels = None
        self.rate = None

    def write(self, block: Block) -> None:
        self.channels = block.samples.shape[1]
        self.rate = block.rate
        for gap in block.gaps:
            # Zeros keep every later sample at its true time; the report lists the ranges.
            self.scratch.write(bytes(gap.samples * self.channels * 2))
            self.rows += gap.samples
        self.scratch.write(np.ascontiguousarray(block.samples, dtype="<i2").tobytes())
        self.rows += block.samples.shape[0]

    def close(self) -> None:
        import wave

        self.scratch.close()
        try:
            if not self.rows:
                return
            raw = np.memmap(self.scratch.name, dtype="<i2", mode="r",
                            shape=(self.rows, self.channels))
            if self.npy_path:
                out = np.lib.format.open_memmap(self.npy_path, mode="w+", dtype="<i2",
                                                shape=raw.shape)
                for start in range(0, self.rows, 65536):
                    out[start:start + 65536] = raw[start:start + 65536]
                out.flush()
                del out
            if self.wav_dir:
                os.makedirs(self.wav_dir, exist_ok=True)
                for channel in range(self.channels):
                    with wave.open(os.path.join(self.wav_dir, f"ch{channel:04d}.wav"), "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(round(self.rate))
                        w.writeframes(np.ascontiguousarray(raw[:, channel]).tobytes())
            del raw
        finally:
            os.unlink(self.scratch.name)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Receive, decode and verify a daemon's compressed feed."
    parser.add_argument("--connect", help="daemon publish (or, with --lossless, lossless) "
                        f"endpoint (default {DEFAULT_LIVE} / {DEFAULT_LOSSLESS})")
    parser.add_argument("--control", help="ask this control endpoint for the data endpoints")
    parser.add_argument("--stream", action="append", help="stream id (repeatable; default all)")
    parser.add_argument("--lossless", action="store_true",
                        help="the daemon holds blocks for us instead of dropping them")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long")
    parser.add_argument("--idle-timeout", type=float, default=0.0,
                        help="stop after this many seconds without data (0: never)")
    parser.add_argument("--until-sample", type=int, default=0,
                        help="stop once a stream has delivered samples up to this index")
    parser.add_argument("--npy", metavar="FILE", help="write the samples here (.npy)")
    parser.add_argument("--wav-dir", metavar="DIR", help="write one WAV file per channel")
    parser.add_argument("--republish", metavar="ENDPOINT",
                        help="bind a PUB socket here with the decoded samples "
                             "(frames: topic, msgpack header, raw int16)")
    parser.add_argument("--verify-synth", type=int, metavar="SEED",
                        help="compare every sample with the simulator's synthetic table")
    parser.add_argument("--channels", type=int, default=1024, help="for --verify-synth")
    parser.add_argument("--rate", type=float, default=20000.0, help="for --verify-synth")
    parser.add_argument("--loop-samples", type=int, default=15000, help="for --verify-synth")
    parser.add_argument("--resume-from", type=int, metavar="SAMPLE",
                        help="report samples missed since this index (where a previous run "
                             "stopped) as a gap")
    parser.add_argument("--spool", metavar="FILE",
                        help="only receive while streaming (into FILE), then decode and check "
                             "every block: where decoding in real time does not fit next to "
                             "the daemon; latency then counts decoding as if done on arrival")
    parser.add_argument("--report", metavar="FILE", help="write the final report as JSON")
    parser.add_argument("--ready-file", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--feed", choices=FEEDS, default="lossless",
                        help="which of the daemon's feeds (default lossless; the others need "
                             "the daemon's `feeds` config and --stream or --control; --npy "
                             "writes bounded samples)")
    parser.add_argument("--events", metavar="FILE",
                        help="with --feed spikes: write the events here (.npz: sample, "
                             "channel, snippets, pre, rate)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def _until_limits(receive, args: argparse.Namespace):
    """Messages from `receive(timeout=...)` until --seconds or --idle-timeout runs out."""
    started = last_data = time.monotonic()
    while True:
        now = time.monotonic()
        if args.seconds and now - started >= args.seconds:
            return
        if args.idle_timeout and now - last_data >= args.idle_timeout:
            return
        message = receive(timeout=0.2)
        if message is not None:
            last_data = time.monotonic()
            yield message


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
        np.savez(args.events, sample=events.sample, channel=events.channel,
                 snippets=events.snippets, pre=pre, rate=rate)
    if args.npy and bounded:
        np.save(args.npy, np.concatenate(bounded))  # from first_sample; gaps are not marked
    if args.report:
        with open(args.report, "w") as handle:
            json.dump(report, handle)
    if not args.quiet:
        print(json.dumps(report), file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "feed", "lossless") != "lossless":
        if args.lossless:
            print("neurowire subscribe: --lossless is for the lossless feed only",
                  file=sys.stderr)
            return 2
        return run_feed(args)
    expected = None
    if args.verify_synth is not None:
        from .synth import LoopingSource, synthesize

        source = LoopingSource(synthesize(args.channels, args.rate, args.loop_samples,
                                          args.verify_synth))
        expected = lambda stream, first, n: source.samples(first, n)  # noqa: E731
    subscription = Subscription(args.connect, streams=args.stream, lossless=args.lossless,
                                control=args.control, expected=expected, record_latency=True,
                                idle_timeout=None, resume_from=args.resume_from)
    writer = SampleWriter(args.npy, args.wav_dir) if (args.npy or args.wav_dir) else None
    republisher = None
    if args.republish:
        republisher = subscription.context.socket(zmq.PUB)
        republisher.bind(args.republish)
    if args.ready_file:
        open(args.ready_file, "w").close()
    spool = Spool(args.spool) if args.spool else None
    streaming_cpu_s = []  # with a spool: what receiving alone cost, before the decoding

    def spool_then_blocks():
        for raw in _until_limits(subscription.receive_raw, args):
            spool.write(*raw)
            header = msgpack.unpackb(_view(raw[0][1]), raw=False) if len(raw[0]) > 1 else {}
            if args.until_sample and header.get("first", 0) + header.get("n", 0) >= \
                    args.until_sample:
                break
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
        blocks = spool_then_blocks() if spool else _until_limits(subscription.receive, args)
        for block in blocks:
            now = time.monotonic()
            for gap in block.gaps:
                print(f"gap in {gap.stream}: samples {gap.start}..{gap.stop - 1} "
                      f"({gap.samples} samples, {gap.reason})", file=sys.stderr)
            if writer is not None:
                writer.write(block)
            if republisher is not None:
                republisher.send_multipart(
                    [block.stream.encode() + b"\0",
                     msgpack.packb({"stream": block.stream, "first": block.first_sample,
                                    "n": block.samples.shape[0],
                                    "ch": block.samples.shape[1], "rate": block.rate}),
                     block.samples], copy=False)
            if not args.quiet and now - last_status >= 5:
                last_status = now
                e2e = subscription.latency_ns["end_to_end"][-2000:]
                print(f"{subscription.blocks} blocks, {subscription.samples} samples, "
                      f"{len(subscription.gaps)} gaps, {subscription.crc_errors} check failures"
                      f", end-to-end p50 {np.median(e2e) / 1e3 if e2e else 0:.0f} us",
                      file=sys.stderr)
            if args.until_sample and block.stop_sample >= args.until_sample and not spool:
                break
    except KeyboardInterrupt:
        pass
    finally:
        subscription.close()
        if republisher is not None:
            republisher.close(linger=0)
        if writer is not None:
            writer.close()
    report = subscription.report()
    report["cpu_streaming_s"] = streaming_cpu_s[0] if streaming_cpu_s else report["cpu_s"]
    report["deferred_decode"] = spool is not None
    if args.report:
        with open(args.report, "w") as handle:
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
