"""Helpers the daemon and stream tests share: loopback configs, packets, collecting blocks."""

import time

import numpy as np
import zmq

from neurowire.wire import PROTOCOL_VERSION, pack_ingest

# Every endpoint on a free loopback port; metrics off.
LOOPBACK = dict(ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                lossless="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", metrics="")


def block_formats():
    """pytest params of every codec block format a daemon may write: the lane format (its
    default, whatever version LANE_FORMAT_VERSION names) and version 1 (`block_format = 1`)."""
    import pytest

    from neurowire import codec

    return [pytest.param(codec.LANE_FORMAT_VERSION, id="lanes"),
            pytest.param(codec.FORMAT_VERSION, id="v1")]


def codec_versions(frames):
    """The format version of each codec block of a published block's frames (byte 2 of the
    codec block header, docs/FORMAT.md), and the version the wire header states."""
    from neurowire.wire import parse_block

    header = parse_block(frames[1], len(frames) - 2)
    return {bytes(blob)[2] for blob in frames[2:]}, header.codec_version


def packet_frames(seq, channels=8, n_samples=10, stream="s0", version=PROTOCOL_VERSION,
                  rng=None):
    """([header, payload], samples) of one ingest message, as an implant sends it."""
    rng = rng or np.random.default_rng(seq)
    samples = rng.integers(-2000, 2000, (n_samples, channels), dtype=np.int16)
    header = pack_ingest(stream, seq, seq * n_samples, n_samples, channels, 20000.0,
                         time.time_ns(), version=version)
    return [header, samples.tobytes()], samples


def connected(context, kind, endpoint, linger=0):
    """A socket of `kind` connected to `endpoint`."""
    sock = context.socket(kind)
    sock.linger = linger
    sock.connect(endpoint)
    return sock


def pusher(context, endpoint):
    return connected(context, zmq.PUSH, endpoint, linger=1000)


def collect(subscription, n_samples, timeout=10.0):
    """Blocks until `n_samples` time steps have arrived; fails if none comes for `timeout`."""
    blocks = []
    got = 0
    while got < n_samples:
        block = subscription.receive(timeout=timeout)
        assert block is not None, f"stalled after {got} of {n_samples} samples"
        blocks.append(block)
        got += block.samples.shape[0]
    return blocks


def check_exact(blocks, source):
    for block in blocks:
        expected = source.samples(block.first_sample, block.samples.shape[0])
        np.testing.assert_array_equal(block.samples, expected)


def published_block(encoder, samples, seq, first, key=True, stream="imp", groups=None,
                    epoch=1, crc=None):
    """The frames the daemon publishes for one block (neurowire.wire); `crc` overrides the
    header's CRC-32 of the samples."""
    import zlib

    from neurowire.wire import group_suffix, pack_block

    groups = list(encoder.group_channels) if groups is None else groups
    crc = zlib.crc32(samples) if crc is None else crc
    blobs = encoder.encode(samples, key)
    header = pack_block(samples.shape[1], samples.shape[0], len(groups), key, seq, epoch, first,
                        20000.0, blobs[0][2], crc, 1, 2, 3, 1, 0, 4, group_suffix(groups))
    return [stream.encode() + b"\0", header, *blobs]


def run_subscribe_command(tmp_path, channels, extra_arguments, workers=1):
    """`neurowire subscribe --lossless` against a real daemon fed 3000 time steps of
    synthetic data; returns (exit status, the synthetic table, the report path)."""
    import threading

    from neurowire.clients import synth
    from neurowire.clients.simulate import Simulator
    from neurowire.clients.subscribe import main
    from neurowire.daemon import DaemonThread, load_config

    config = load_config(ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                         lossless="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", metrics="",
                         max_backlog_packets=100_000, workers=workers)
    table = synth.synthesize(channels=channels, rate=20000, loop_samples=2000, seed=1)
    report = tmp_path / "sub.json"
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        arguments = ["--control", endpoints["control"], "--lossless", "--until-sample", "3000",
                     "--npy", str(tmp_path / "out.npy"), *extra_arguments,
                     "--verify-synth", "1", "--channels", str(channels), "--loop-samples", "2000",
                     "--idle-timeout", "10", "--report", str(report), "--quiet"]
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("rc", main(arguments)))
        thread.start()
        deadline = time.monotonic() + 20
        while not running.daemon.lossless_subscribers:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        simulator = Simulator(endpoints["ingest"], table, 20000.0, 10)
        for _ in range(300):
            simulator.send_packet()
        thread.join(30)
        simulator.close()
    return result.get("rc"), table, report
