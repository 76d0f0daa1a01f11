"""The subscriber's batched C path (clients/fastsub.py, clients/src/sub_loop.c) against its
per-block pyzmq path, on real ZeroMQ sockets: the same blocks, samples, gaps and counts, for
ordinary runs and for every kind of trouble inside a batch."""

import threading
import time

import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

from neurowire import codec  # noqa: E402
from neurowire.clients import fastsub  # noqa: E402
from neurowire.clients.subscription import Subscription  # noqa: E402
from helpers import block_formats, codec_versions, published_block  # noqa: E402

pytestmark = pytest.mark.skipif(not fastsub.available(),
                                reason="the C receive loop needs Linux and a built module")


def send_paced(pub, messages, pause=0.0005):
    for message in messages:
        pub.send_multipart(message)
        time.sleep(pause)


def scripted_messages(block_format=codec.LANE_FORMAT_VERSION):
    """(messages, each stream's samples by index): ordinary runs with every kind of trouble
    between them, as a daemon and the network could produce it, in codec blocks of
    `block_format`."""
    rng = np.random.default_rng(7)
    imp = codec.GroupEncoder([3, 5], format_version=block_format)
    imp2 = codec.GroupEncoder([4], format_version=block_format)
    rows = rng.integers(-3000, 3000, (600, 8), dtype=np.int16)
    rows2 = rng.integers(-3000, 3000, (100, 4), dtype=np.int16)
    messages, n = [], 10

    def block(seq, key=False, **options):
        first = options.pop("first", seq * n)
        return published_block(imp, rows[first:first + n], seq, first, key, **options)

    messages += [block(seq, key=seq == 0) for seq in range(10)]  # an ordinary run
    corrupt = block(10)
    corrupt[3] = bytes(corrupt[3][:12]) + bytes(len(corrupt[3]) - 12)  # damaged codec frame
    messages.append(corrupt)
    messages += [block(seq) for seq in range(11, 15)]  # no keyframe yet: skipped
    messages += [block(15, key=True)] + [block(seq) for seq in range(16, 20)]
    messages.append(messages[-2])  # seq 18 again: a duplicate
    block(20)  # encoded, never sent: lost
    messages += [block(21), block(22, key=True), block(23)]
    messages.append([b"imp/spikes\0", b"not a block"])  # a feed's message
    messages.append(block(24)[:1] + [block(24)[1][:50]] + block(24)[2:])  # truncated header
    messages += [block(25, key=True), block(26)]
    messages.append(block(27, crc=12345))  # decodes, fails its CRC check: counted, delivered
    messages.append(block(28)[:3])  # a codec frame missing
    messages += [block(29, key=True)]
    second = [published_block(imp2, rows2[k * n:(k + 1) * n], k, k * n, k == 0, stream="imp2")
              for k in range(10)]
    for k in range(10):  # another stream, interleaved
        messages += [second[k], block(30 + k)]
    long_header = block(40)  # the header says 12 rows, the codec frames hold 10
    long_header[1] = published_block(codec.GroupEncoder([3, 5], format_version=block_format),
                                     rows[400:412], 40, 400)[1]
    messages.append(long_header)
    messages.append(block(41, key=True))
    messages.append(block(42)[:2] + [b"x"] * 1100)  # more frames than any block has
    # The daemon restarted: a new epoch, seq from 0, samples carrying on.
    messages += [block(k, key=k == 0, epoch=2, first=420 + 10 * k) for k in range(10)]
    return messages, {"imp": rows, "imp2": rows2}


def received(subscription, mode: str):
    """Everything the subscription yields until nothing comes for a second: by batches
    (`gather`ing for 50 ms or not), or block by block."""
    blocks, runs = [], []
    while True:
        if mode != "block":
            got = subscription.receive_batch(timeout=1.0, gather=0.05 if mode == "gather" else 0)
            if not got:
                return blocks, runs
            runs += got
            blocks += [block for run in got for block in run.blocks()]
        else:
            block = subscription.receive(timeout=1.0)
            if block is None:
                return blocks, runs
            blocks.append(block)


def comparable(report):
    return {k: v for k, v in report.items() if k not in ("latency_us", "cpu_s")}


@pytest.mark.parametrize("block_format", block_formats())
@pytest.mark.parametrize("paced", [False, True], ids=["burst", "paced"])
def test_batched_path_matches_the_per_block_path(context, paced, block_format):
    """Four live subscribers of one PUB socket (C batches through receive_batch, gathering or
    not, C batches through receive, pyzmq block by block) see the same scripted messages:
    sent in one burst, each wake-up of the batched ones finds many waiting; paced, the
    gathering one takes them as they come."""
    pub = context.socket(zmq.PUB)
    pub.sndhwm = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    messages, tables = scripted_messages(block_format)
    assert codec_versions(messages[0]) == ({block_format}, block_format)
    expected = {stream: table.copy() for stream, table in tables.items()}
    expected["imp"][165, 2] += 1  # one block that does not match what the test expects

    def expect(stream, first, n):
        return expected[stream][first:first + n]

    subscriptions = [Subscription(endpoint, context=context, live_hwm=0, native=native,
                                  record_latency=True, decode_threads=1, expected=expect)
                     for native in (True, True, False, True)]
    modes = ("batch", "block", "block", "gather")
    try:
        for subscription in subscriptions:
            subscription.open()
        assert [s._receiver is not None for s in subscriptions] == [True, True, False, True]
        time.sleep(0.5)  # the subscriptions reach the PUB socket
        if paced:
            threading.Thread(target=send_paced, args=(pub, messages), daemon=True).start()
            gathered = received(subscriptions[3], "gather")  # while they come
        for message in [] if paced else messages:
            pub.send_multipart(message)
        time.sleep(2.0 if paced else 0.5)  # all of it waits in the other sockets
        if not paced:
            gathered = received(subscriptions[3], "gather")
        (batch_blocks, runs), (native_blocks, _), (plain_blocks, _) = [
            received(s, mode) for s, mode in zip(subscriptions[:3], modes)]
    finally:
        for subscription in subscriptions:
            subscription.close()
        pub.close(0)

    def key(block):
        return (block.stream, block.first_sample, block.seq, block.keyframe, block.rate,
                block.samples.tobytes(), block.gaps)

    assert [key(b) for b in batch_blocks] == [key(b) for b in plain_blocks]
    assert [key(b) for b in native_blocks] == [key(b) for b in plain_blocks]
    assert [key(b) for b in gathered[0]] == [key(b) for b in plain_blocks]
    reports = [comparable(s.report()) for s in subscriptions]
    assert reports[0] == reports[1] == reports[2] == reports[3]
    plain = reports[2]
    # The trouble was seen, and counted, not passed on.
    assert plain["decode_errors"] == 5  # damaged frame, truncated header, missing frame,
    #                                     rows the header did not announce, too many frames
    assert plain["crc_errors"] == 1 and plain["duplicates"] == 1 and plain["mismatches"] == 1
    assert plain["verified_samples"] == sum(b.samples.size for b in plain_blocks) - 10 * 8
    assert plain["lost_blocks"] == 3  # seq 20, and the unreadable 24 and 28
    assert subscriptions[0].feed_messages == subscriptions[2].feed_messages == 1
    assert [(g["stream"], g["start"], g["stop"], g["reason"]) for g in plain["gaps"]] == [
        ("imp", 100, 150, "delivery"), ("imp", 200, 220, "delivery"),
        ("imp", 240, 250, "delivery"), ("imp", 280, 290, "delivery"),
        ("imp", 400, 410, "delivery")]
    # The C path took runs of many blocks (the point of it), with the same latencies.
    assert max(len(run.blocks()) for run in runs) >= 5
    assert max(len(run.blocks()) for run in gathered[1]) >= 5
    latencies = [s.latency_ns for s in subscriptions]
    assert latencies[0]["compress"] == latencies[2]["compress"]
    assert len(latencies[0]["end_to_end"]) == len(latencies[2]["end_to_end"]) == plain["blocks"]


def test_receiver_takes_every_waiting_message_and_gives_frames_back(context):
    """One drain takes all waiting messages, frames intact, and the next drain gives them
    back to libzmq; with nothing waiting it returns 0 after its time-out."""
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        receiver = fastsub.Receiver(pull)
        sent = [[b"a", b"b" * 70000, b""], [b"single"], [b"x%d" % k for k in range(1100)]]
        for message in sent:
            push.send_multipart(message)
        deadline = time.monotonic() + 5
        taken, frames = 0, []
        while taken < len(sent) and time.monotonic() < deadline:
            got = receiver.drain(200)
            for m in range(got):
                first, stop = receiver.message_first[m], receiver.message_first[m + 1]
                frames.append(([receiver.frame(k) for k in range(first, stop)],
                               receiver.excess[m], receiver.tail_bytes[m]))
            taken += got
        assert frames[0] == (sent[0], 0, 0) and frames[1] == (sent[1], 0, 0)
        kept, excess, tail = frames[2]
        assert kept == sent[2][:fastsub._native()[1].NW_SUB_MAX_MESSAGE_FRAMES]
        assert excess == 1100 - len(kept)
        assert tail == sum(len(f) for f in sent[2][2:])
        started = time.monotonic()
        assert receiver.drain(100) == 0
        assert time.monotonic() - started >= 0.09
        receiver.release()
    finally:
        push.close(0)
        pull.close(0)


def test_the_c_loop_uses_the_libzmq_pyzmq_loaded():
    """The C sides (the subscriber's receive loop, the simulator's send loop) call the very
    libzmq instance that owns pyzmq's sockets: one such library is mapped in the process,
    before and after they looked it up."""
    from neurowire.clients import native_zmq, simulate

    def libzmq_files():
        with open("/proc/self/maps") as handle:
            return {line.split()[-1] for line in handle if "libzmq" in line}

    before = libzmq_files()
    fastsub._native()
    if simulate.native_available():
        simulate._native()
    assert libzmq_files() == before and len(before) == 1
    assert native_zmq.loaded_libzmq() in before


@pytest.mark.parametrize("block_format", block_formats())
@pytest.mark.parametrize("crc_source", ["zlib-ng", "zlib", "table"])
def test_the_c_decode_gives_the_samples_and_zlibs_crc_of_them(context, block_format, crc_source):
    """nw_sub_decode's CRC of the decoded rows, by zlib-ng's zng_crc32_z (found at load), by
    zlib's crc32 when zlib-ng is missing, or by its own table loop when neither was found, is
    zlib.crc32 of the samples the encoder was given."""
    import zlib

    from neurowire.checksum import native_crc32

    ffi, _, _, codec_api, _ = fastsub._native()
    found = (codec_api.crc32_z, codec_api.crc32)
    assert codec_api.crc32_z != ffi.NULL  # zlib-ng is a dependency: the default
    rows = np.random.default_rng(5).integers(-3000, 3000, (60, 200), dtype=np.int16)
    encoder = codec.GroupEncoder([64, 136], format_version=block_format)
    decoder = fastsub.NativeGroupDecoder(codec.GroupDecoder([64, 136]))
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    receiver = fastsub.Receiver(pull)
    try:
        codec_api.crc32_z = codec_api.crc32 = ffi.NULL
        if crc_source != "table":
            kind, address = native_crc32((crc_source,))
            field = "crc32_z" if kind == "zlib-ng" else "crc32"
            setattr(codec_api, field, ffi.cast(ffi.typeof(getattr(codec_api, field)), address))
        for block in range(6):
            samples = rows[block * 10:block * 10 + 10]
            push.send_multipart(published_block(encoder, samples, block, block * 10,
                                                key=block == 0))
            while not receiver.drain(5000):
                pass
            decoded, crc = decoder.decode(receiver, receiver.message_first[0] + 2, 10)
            np.testing.assert_array_equal(decoded, samples)
            assert crc == zlib.crc32(samples.tobytes())
    finally:
        codec_api.crc32_z, codec_api.crc32 = found
        receiver.release()
        push.close(0)
        pull.close(0)


@pytest.mark.parametrize("limit", ["seconds", "idle_timeout"])
def test_the_real_time_loop_never_waits_past_its_limit(monkeypatch, limit):
    """subscribe's real-time loop asks for data no longer than until --seconds or
    --idle-timeout runs out (it waited 0.2 s at a time before, so it could end that late)."""
    import argparse

    from neurowire.clients import subscribe as subscribe_cli

    clock = [1000.0]
    monkeypatch.setattr(subscribe_cli.time, "monotonic", lambda: clock[0])
    asked = []

    def receive(timeout):
        asked.append(timeout)
        clock[0] += timeout  # nothing came in that time
        return [] if len(asked) > 1 else ["block"]

    args = argparse.Namespace(seconds=0.35 if limit == "seconds" else 0.0,
                              idle_timeout=0.33 if limit == "idle_timeout" else 0.0)
    got = list(subscribe_cli._until_limits(receive, args))
    assert got == [["block"]]
    assert max(asked) <= 0.2
    # it ends when the limit runs out, not at the next 0.2 s step after it
    end = 1000.0 + (0.35 if limit == "seconds" else asked[0] + 0.33)
    assert clock[0] == pytest.approx(end, abs=0.002)


def test_decoded_samples_are_checked_in_place_and_exactly():
    """fastsub.same_bytes (memcmp on the arrays' own memory) and _same_samples, which a
    checking subscriber (--verify-synth, bench stream) runs on every decoded run."""
    from neurowire.clients.subscription import _same_samples

    a = np.random.default_rng(3).integers(-2**15, 2**15, (20, 1024), dtype=np.int16)
    b = a.copy()
    assert fastsub.same_bytes(a, b) is True and _same_samples(a, b)
    b[19, 1023] ^= 1                                   # the very last byte differs
    assert fastsub.same_bytes(a, b) is False and not _same_samples(a, b)
    assert fastsub.same_bytes(a, a[:10]) is False
    # strided and other-typed views are compared too, by copy
    assert _same_samples(a[:, ::2], a[:, ::2].copy()) and not _same_samples(a[:, ::2], b[:, 1::2])
    assert _same_samples(a, a.astype(np.int32)) and not _same_samples(a, b.astype(np.int32))
