"""The daemon's feed process: `python -m neurowire.feeds.worker IN OUT CONFIG_JSON`.

A process of its own, not a thread: spike detection is numpy driven from Python, and a thread
doing it holds the GIL often enough to show in the lossless path's latency tail (the data
thread, back from a poll or from the codec, waits for the GIL).

    IN   PULL, connects: [stream, msgpack {"first", "rate"}, int16 samples (n, ch) LE]
         or [b""] = process what came before, answer [b"", b"done"] and exit
         or [b"/key", stream, feed] = a subscriber joined: keyframe soon ("/" is in no stream id)
    OUT  PUSH, connects: [topic, message]      a feed message to publish
                         [b"", msgpack {"stream", "samples", "events", "packets"}] after
                                                                  each run of packets

The data thread counts messages and bytes as it publishes them, and samples and spike events
from the batch reports.  Consecutive packets waiting together are joined before detection
(the feeds' messages do not depend on packetisation), so a busy moment costs fewer calls.
"""

from __future__ import annotations

import json
import os
import sys

import msgpack
import numpy as np
import zmq

from .detect import DetectorConfig
from .serve import FeedTap


def run(inbound: str, outbound: str, settings: dict) -> int:
    feeds = tuple(settings["feeds"])
    detector = DetectorConfig(
        threshold=settings["threshold"], snippet_ms=settings["snippet_ms"],
        power_bin_ms=settings["power_bin_ms"] if "power" in feeds else 0.0)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvhwm = settings.get("queue", 2000)
    pull.connect(inbound)
    push = context.socket(zmq.PUSH)
    push.sndhwm = 0  # the data thread drains us; what we made is never dropped here
    push.linger = 5000
    push.connect(outbound)
    push.send_multipart([b"", b"ready"])
    taps: dict[str, FeedTap] = {}
    parent = os.getppid()
    try:
        while True:
            # A daemon killed outright (SIGKILL) cannot stop us: notice it has gone instead
            # of waiting forever as an orphan.
            while not pull.poll(1000):
                if os.getppid() != parent:
                    return 1
            batch, ending = [pull.recv_multipart()], False
            while True:
                try:
                    batch.append(pull.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            runs: list[list] = []
            for frames in batch:
                if len(frames) == 1:
                    ending = True
                    break
                if frames[0] == b"/key" and len(frames) == 3:
                    stream = frames[1].decode()
                    if stream in taps:
                        taps[stream].key_soon(stream, frames[2].decode())
                    continue
                stream = frames[0].decode()
                header = msgpack.unpackb(frames[1])
                n_channels = header["ch"]
                samples = np.frombuffer(frames[2], "<i2").reshape(-1, n_channels)
                last = runs[-1] if runs else None
                if (last and last[0] == stream and last[1] + last[3] == header["first"]
                        and last[2][0].shape[1] == n_channels and last[4] == header["rate"]):
                    last[2].append(samples)
                    last[3] += samples.shape[0]
                else:
                    runs.append([stream, header["first"], [samples], samples.shape[0],
                                 header["rate"]])
            for stream, first, parts, count, rate in runs:
                tap = taps.get(stream)
                if tap is None:
                    tap = taps[stream] = FeedTap(detector, batch_ms=settings["batch_ms"],
                                                 feeds=feeds, max_error=settings["max_error"])
                samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
                for topic, message in tap.on_packet(stream, rate, first, samples):
                    push.send_multipart([topic, message])
                push.send_multipart([b"", msgpack.packb(
                    {"stream": stream, "samples": count, "events": tap.last_events,
                     "packets": len(parts)})])
            if ending:
                push.send_multipart([b"", b"done"])
                return 0
    finally:
        pull.close(linger=0)
        push.close()
        context.term()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(argv[0], argv[1], json.loads(argv[2]))


if __name__ == "__main__":
    sys.exit(main())
