"""The daemon's C data path (daemon/fastpath.py, daemon/src/nw_fastpath.c) against the
Python one: the same ingest checks, the same header bytes, the same published blocks for the
same packets (live and lossless, on real sockets over tcp and ipc), and exact lossless
delivery when credit runs short."""

import math
import struct
import time
import zlib

import msgpack
import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

from neurowire.daemon import DaemonThread, load_config  # noqa: E402
from neurowire.daemon import fastpath  # noqa: E402
from neurowire.wire import (BLOCK, MAX_INT, Rejected, pack_block,  # noqa: E402
                            pack_ingest, parse_block, parse_ingest)
from conftest import wait_for  # noqa: E402
from helpers import LOOPBACK, block_formats, codec_versions  # noqa: E402

needs_fast_path = pytest.mark.skipif(fastpath.lib is None, reason="C data path not built")


# ---- the ingest check: C and wire.parse_ingest agree on every header ------------------------

def _python_accepts(head: bytes, payload_bytes: int, max_channels: int, max_samples: int):
    try:
        parse_ingest(head, payload_bytes, max_channels, max_samples)
        return True
    except Rejected:
        return False


def _hostile_headers(rng, count):
    """Valid headers, then each mutated: fields at and past their limits, bytes flipped,
    the frame cut or lengthened, ids of every byte value."""
    fields = [(4, "I"), (8, "I"), (12, "Q"), (20, "Q"), (28, "d"), (36, "q"), (44, "Q")]
    specials = {"I": [0, 1, 63, 64, 65, 2**32 - 1],
                "Q": [0, 1, MAX_INT, MAX_INT + 1, 2**64 - 1],
                "q": [-1, 0, MAX_INT, -2**63],
                "d": [0.0, -0.0, 1e-300, 1e6, 1e6 + 1, math.inf, -math.inf, math.nan, 20000.0]}
    for _ in range(count):
        channels, n = int(rng.integers(1, 65)), int(rng.integers(1, 65))
        stream = bytes(rng.choice(list(b"az09_.:-AZ"), int(rng.integers(1, 65))).tolist())
        head = bytearray(pack_ingest(stream, int(rng.integers(0, 2**40)),
                                     int(rng.integers(0, 2**40)), n, channels, 20000.0,
                                     time.time_ns(), int(rng.integers(1, 2**62))))
        payload = n * channels * 2
        kind = rng.integers(0, 6)
        if kind == 0:
            offset, code = fields[rng.integers(0, len(fields))]
            values = specials[code]
            struct.pack_into("<" + code, head, offset, values[rng.integers(0, len(values))])
        elif kind == 1:
            for _ in range(int(rng.integers(1, 4))):
                head[int(rng.integers(0, len(head)))] = int(rng.integers(0, 256))
        elif kind == 2:
            head = head[:int(rng.integers(0, len(head)))]
        elif kind == 3:
            head += bytes(rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8))
        elif kind == 4:
            payload += int(rng.choice([-2, -1, 1, 2, payload]))
        yield bytes(head), max(0, payload)


@needs_fast_path
def test_c_ingest_check_agrees_with_parse_ingest_on_hostile_headers():
    rng = np.random.default_rng(12)
    verdicts = {True: 0, False: 0}
    for head, payload in _hostile_headers(rng, 30000):
        expected = _python_accepts(head, payload, 64, 64)
        assert fastpath.ingest_valid(head, payload, 64, 64) == expected, (head, payload)
        verdicts[expected] += 1
    assert min(verdicts.values()) > 3000  # both verdicts well exercised


@needs_fast_path
@pytest.mark.parametrize("byte", range(256))
def test_c_ingest_check_reads_every_stream_id_byte_as_the_pattern_does(byte):
    head = pack_ingest(b"ab" + bytes([byte]), 0, 0, 1, 1, 1000.0, 0, 1)
    assert fastpath.ingest_valid(head, 2, 8, 8) == _python_accepts(head, 2, 8, 8)


# ---- the block header: the same bytes as wire.pack_block -------------------------------------

@needs_fast_path
@pytest.mark.parametrize("seed", range(20))
def test_c_block_header_is_pack_block(seed):
    rng = np.random.default_rng(seed)
    groups = [int(g) for g in rng.integers(1, 300, int(rng.integers(1, 9)))]
    args = dict(channels=sum(groups), n_samples=int(rng.integers(1, 4097)),
                n_groups=len(groups), keyframe=bool(seed % 2), seq=int(rng.integers(0, MAX_INT)),
                epoch=int(rng.integers(-2**63, 2**63)), first=int(rng.integers(0, MAX_INT)),
                rate=float(rng.uniform(1e-3, 1e6)), codec_version=int(rng.integers(0, 2**32)),
                crc=int(rng.integers(0, 2**32)), acquired_ns=int(rng.integers(-2**63, 2**63)),
                received_ns=int(rng.integers(-2**63, 2**63)),
                compressed_ns=int(rng.integers(-2**63, 2**63)),
                compress_ns=int(rng.integers(-2**63, 2**63)), dropped=int(rng.integers(0, 2**63)),
                published_ns=int(rng.integers(-2**63, 2**63)))
    expected = pack_block(**args, groups_suffix=struct.pack(f"<{len(groups)}I", *groups))
    ffi, lib = fastpath.ffi, fastpath.lib
    out = ffi.new("uint8_t[]", BLOCK.size + 4 * len(groups))
    size = lib.nwfp_pack_block(out, args["channels"], args["n_samples"], len(groups),
                               args["keyframe"], args["seq"], args["epoch"], args["first"],
                               args["rate"], args["codec_version"], args["crc"],
                               args["acquired_ns"], args["received_ns"], args["compressed_ns"],
                               args["compress_ns"], args["dropped"], args["published_ns"],
                               ffi.new("uint32_t[]", groups))
    assert ffi.buffer(out, size)[:] == expected


# ---- the same packets through both paths: the same blocks -------------------------------------

def _samples(first, n, channels, salt):
    rows = np.arange(first, first + n, dtype=np.int64)[:, None]
    noise = np.random.default_rng(first * 31 + salt).integers(-40, 40, (n, channels))
    return ((rows * 7 + np.arange(channels) * 13 + salt) % 3000 - 1500 + noise).astype(np.int16)


def _script():
    """Ingest messages exercising both paths in one stream of packets: first packets, new
    streams (one of two channel groups), gaps, duplicates, a new session, and malformed
    messages between good ones."""
    messages = []

    def packet(stream, seq, first, channels, session=7, n=10, salt=0):
        head = pack_ingest(stream, seq, first, n, channels, 20000.0, 1_000_000 + seq, session)
        messages.append([head, _samples(first, n, channels, salt).tobytes()])

    for seq in range(12):
        packet("a", seq, seq * 10, 8)
    messages.append([pack_ingest("a", 12, 120, 10, 8, 20000.0, 5, 7)])     # 1 frame
    messages.append([b"x", b"y", b"z"])                                    # 3 frames
    messages.append([pack_ingest("a", 12, 120, 10, 0, 20000.0, 5, 7), bytes(16)])  # 0 channels
    messages.append([pack_ingest("bad id", 0, 0, 1, 8, 20000.0, 0, 7), bytes(16)])
    messages.append([pack_ingest("a", 12, 120, 10, 8, 20000.0, 5, 7), bytes(10)])  # size
    for seq in range(10):
        packet("b", seq, seq * 10, 130, salt=3)
        packet("a", 12 + seq, 120 + seq * 10, 8)
    packet("a", 25, 250, 8)                     # a gap of 3: drops counted, on it goes
    packet("a", 20, 200, 8, salt=9)             # a rewind: rejected as a duplicate
    for seq in range(26, 40):
        packet("a", seq, seq * 10, 8)
        packet("b", seq - 16, (seq - 16) * 10, 130, salt=3)
    packet("b", 24, 240, 130, session=8)        # another session: refused (b is live)
    for seq in range(40, 60):
        packet("a", seq, seq * 10, 8)
    return messages


# epoch, t_recv, t_comp, compress_ns, t_pub: clocks; `dropped`: counted as a packet is
# admitted, and the Python path admits a whole batch before compressing it, so a gap may
# show in the blocks just before it there (the last block's count is compared below).
MASKED = ((24, 32), (64, 96), (96, 104))


def _masked(head: bytes) -> bytes:
    head = bytearray(head)
    for start, stop in MASKED:
        head[start:stop] = bytes(stop - start)
    return bytes(head)


def _run(config, context, credit):
    """The script through a daemon, a lossless subscriber granting `credit` blocks at a time
    (blocks wait in the daemon meanwhile); (live blocks, lossless blocks, rejected, stats,
    what the data path got)."""
    sockets = []

    def socket(kind, endpoint):
        sock = context.socket(kind)
        sock.linger = 0
        sockets.append(sock)
        sock.connect(endpoint)
        return sock

    try:
        with DaemonThread(config) as running:
            daemon = running.daemon
            live = socket(zmq.SUB, daemon.endpoints["publish"])
            live.subscribe(b"")
            dealer = socket(zmq.DEALER, daemon.endpoints["lossless"])
            dealer.send(msgpack.packb({"cmd": "hello", "streams": None, "credit": credit}))
            wait_for(lambda: daemon.live_subscriptions and daemon.lossless_subscribers)
            push = socket(zmq.PUSH, daemon.endpoints["ingest"])
            for message in _script():
                push.send_multipart(message)
            expected = 12 + 20 + 1 + 28 + 20  # blocks the script's packets make
            got = {"live": [], "lossless": []}
            deadline = time.monotonic() + 30
            while len(got["lossless"]) < expected or len(got["live"]) < expected:
                assert time.monotonic() < deadline, {k: len(v) for k, v in got.items()}
                for name, sock in (("live", live), ("lossless", dealer)):
                    if sock.poll(10):
                        got[name].append(sock.recv_multipart())
                        if name == "lossless" and len(got["lossless"]) % credit == 0:
                            dealer.send(msgpack.packb({"cmd": "credit", "n": credit}))
            time.sleep(0.2)
            assert not live.poll(100) and not dealer.poll(100)  # nothing more
            stats = {name: {key: state.stats(0)[key] for key in (
                "packets_in", "bytes_in", "bytes_out", "blocks_out", "keyframes", "drops",
                "drops_sequence", "duplicates", "seq")} for name, state in daemon.streams.items()}
            return got, dict(daemon.rejected), stats, dict(daemon.data.granted)
    finally:
        for sock in sockets:
            sock.close()


def _blocks(frames_list):
    """Per stream, in order (the Python path compresses a batch stream by stream, the C one
    in arrival order: between streams the order may differ)."""
    streams = {}
    for frames in frames_list:
        streams.setdefault(frames[0], []).append((_masked(frames[1]), *frames[2:]))
    return streams


def _last_dropped(frames_list):
    return {frames[0]: parse_block(frames[1], len(frames) - 2).dropped for frames in frames_list}


@needs_fast_path
@pytest.mark.parametrize("block_format", block_formats())
def test_fast_and_python_paths_publish_the_same_blocks(tmp_path, context, block_format):
    runs = {}
    for fast, transport in ((False, "tcp"), (True, "tcp"), (True, "ipc")):
        endpoints = dict(LOOPBACK) if transport == "tcp" else {
            name: f"ipc://{tmp_path}/{name}-{fast}" for name in
            ("ingest", "publish", "lossless", "control")}
        config = load_config(**{**endpoints, "metrics": ""}, workers=2, fast_path=fast,
                             max_channels=256, max_packet_samples=64,
                             block_format=block_format)
        runs[fast, transport] = _run(config, context, credit=4)
    python, fast_tcp, fast_ipc = runs[False, "tcp"], runs[True, "tcp"], runs[True, "ipc"]
    assert python[3]["fast_path"] is False and fast_tcp[3]["fast_path"] is True
    for fast in (fast_tcp, fast_ipc):
        for name in ("live", "lossless"):
            assert _blocks(fast[0][name]) == _blocks(python[0][name]), name
        assert _last_dropped(fast[0]["lossless"]) == _last_dropped(python[0]["lossless"])
        assert fast[1] == python[1]      # the same rejections, for the same reasons
        assert fast[2] == python[2]      # the same counters
    assert python[1] == {"frames": 2, "header": 1, "stream_id": 1, "payload_size": 1,
                         "duplicate": 1, "stream_owned": 1}
    assert python[2]["a"]["drops_sequence"] == 3
    # and the blocks are right: each header's crc is the samples' as sent, groups as made,
    # every codec block (and the header's `codec`) in the configured format
    for run in runs.values():
        assert run[3]["block_format"] == block_format
        for frames in run[0]["live"] + run[0]["lossless"]:
            assert codec_versions(frames) == ({block_format}, block_format)
    for frames in python[0]["lossless"]:
        header = parse_block(frames[1], len(frames) - 2)
        assert header.groups == ((8,) if frames[0] == b"a\0" else (65, 65))


@needs_fast_path
@pytest.mark.parametrize("block_format", [None, *block_formats()[1:]],
                         ids=["default_lanes", "v1"])
@pytest.mark.parametrize("crc_kind", ["zlib-ng", "zlib"])
def test_lossless_with_scarce_credit_gets_every_block_in_order_and_exact(
        context, monkeypatch, block_format, crc_kind):
    """...and each header's CRC is zlib's of the samples, computed by zlib-ng (the default)
    or by zlib where zlib-ng is missing."""
    from neurowire import checksum
    from neurowire.codec import LANE_FORMAT_VERSION, GroupDecoder

    monkeypatch.setattr(fastpath, "native_crc32", lambda: checksum.native_crc32((crc_kind,)))
    options = {} if block_format is None else {"block_format": block_format}
    config = load_config(**LOOPBACK, workers=2, max_channels=256, max_packet_samples=64,
                         **options)
    got, rejected, stats, data_path = _run(config, context, credit=1)
    assert data_path["fast_path"] is True
    written = LANE_FORMAT_VERSION if block_format is None else block_format
    assert all(codec_versions(frames) == ({written}, written) for frames in got["lossless"])
    by_stream = {}
    for frames in got["lossless"]:
        by_stream.setdefault(frames[0], []).append(frames)
    for topic, blocks in by_stream.items():
        header = parse_block(blocks[0][1], len(blocks[0]) - 2)
        decoder = GroupDecoder(header.groups)
        salt = 3 if topic == b"b\0" else 0
        for seq, frames in enumerate(blocks):
            header = parse_block(frames[1], len(frames) - 2)
            assert header.seq == seq
            samples = decoder.decode(frames[2:])
            expected = _samples(header.first, header.n_samples, header.channels, salt)
            np.testing.assert_array_equal(samples, expected)
            assert header.crc == zlib.crc32(expected.tobytes())


@needs_fast_path
def test_the_c_path_takes_packet_after_packet_without_returning_to_python(context, monkeypatch):
    """nwfp_run: the C path waits for and publishes each packet itself, so Python runs
    once per run (until a side socket has a message, or FAST_RUN_S), not once per packet;
    every block still comes out as its packet arrives, in order and exact."""
    from neurowire.codec import GroupDecoder
    from neurowire.daemon import datapath

    monkeypatch.setattr(datapath, "FAST_RUN_S", 0.5)  # a run may last this long
    config = load_config(**LOOPBACK, workers=1, max_channels=256, max_packet_samples=64)
    sockets = []
    try:
        with DaemonThread(config) as running:
            daemon = running.daemon
            live = context.socket(zmq.SUB)
            push = context.socket(zmq.PUSH)
            sockets += [live, push]
            live.connect(daemon.endpoints["publish"])
            live.subscribe(b"")
            wait_for(lambda: daemon.live_subscriptions, timeout=10)
            push.connect(daemon.endpoints["ingest"])
            first = pack_ingest("s", 0, 0, 10, 8, 20000.0, 1, 7)
            push.send_multipart([first, _samples(0, 10, 8, 0).tobytes()])  # Python's: new
            blocks = [live.recv_multipart()]
            calls_before = daemon.data.fast_calls
            for seq in range(1, 21):
                # one at a time: the next is sent once the last one's block is out
                head = pack_ingest("s", seq, seq * 10, 10, 8, 20000.0, 1 + seq, 7)
                push.send_multipart([head, _samples(seq * 10, 10, 8, 0).tobytes()])
                assert live.poll(10_000), f"no block for packet {seq}"
                blocks.append(live.recv_multipart())
            calls = daemon.data.fast_calls - calls_before
    finally:
        for sock in sockets:
            sock.close(0)
    assert calls < 10, f"{calls} returns to Python for 20 packets"
    decoder = GroupDecoder(parse_block(blocks[0][1], len(blocks[0]) - 2).groups)
    for seq, frames in enumerate(blocks):
        header = parse_block(frames[1], len(frames) - 2)
        assert header.seq == seq
        np.testing.assert_array_equal(decoder.decode(frames[2:]), _samples(seq * 10, 10, 8, 0))


@needs_fast_path
def test_a_long_c_run_still_serves_the_side_sockets_at_once(context, monkeypatch):
    """While the C path waits for packets (a run of up to FAST_RUN_S, here a minute), a new
    subscriber is taken on and a stop request heard: nwfp_run polls the side sockets too
    and hands them to Python as soon as one has a message."""
    from neurowire.daemon import datapath

    monkeypatch.setattr(datapath, "FAST_RUN_S", 60.0)
    config = load_config(**LOOPBACK, workers=1, max_channels=256, max_packet_samples=64)
    sockets = []
    try:
        running = DaemonThread(config).start()
        daemon = running.daemon
        push = context.socket(zmq.PUSH)
        sockets.append(push)
        push.connect(daemon.endpoints["ingest"])
        for seq in range(2):  # the first through Python, the second starts a run in C
            head = pack_ingest("s", seq, seq * 10, 10, 8, 20000.0, 1 + seq, 7)
            push.send_multipart([head, _samples(seq * 10, 10, 8, 0).tobytes()])
        wait_for(lambda: "s" in daemon.streams and daemon.streams["s"].hot[
            fastpath.lib.NWFP_HOT_PACKETS_IN] >= 2, timeout=20)  # the run has begun
        live = context.socket(zmq.SUB)
        sockets.append(live)
        live.connect(daemon.endpoints["publish"])
        live.subscribe(b"")
        wait_for(lambda: daemon.live_subscriptions, timeout=20)   # not after the minute
        head = pack_ingest("s", 2, 20, 10, 8, 20000.0, 3, 7)
        push.send_multipart([head, _samples(20, 10, 8, 0).tobytes()])
        assert live.poll(20_000)
        assert parse_block(*(lambda f: (f[1], len(f) - 2))(live.recv_multipart())).seq == 2
        running.stop(timeout=20)                                   # nor the stop
    finally:
        for sock in sockets:
            sock.close(0)


def test_the_python_path_serves_alone_when_the_fast_path_is_off(context):
    config = load_config(**LOOPBACK, fast_path=False, max_channels=256, max_packet_samples=64)
    got, rejected, stats, data_path = _run(config, context, credit=64)
    assert data_path["fast_path"] is False
    assert stats["a"]["blocks_out"] == 12 + 10 + 1 + 14 + 20


def test_the_fast_path_refuses_what_only_python_can_serve(tmp_path):
    """Where the C path cannot do the whole job it does not start, and says why."""
    sockets = object()  # never reached: the reason comes first
    assert fastpath.FastPath.load(load_config(fast_path=False), sockets) is None
    assert fastpath.FastPath.load(load_config(feeds=["power"]), sockets) is None
    assert fastpath.FastPath.load(load_config(lossless_max_subscribers=65), sockets) is None
