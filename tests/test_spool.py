"""The subscriber's spooling loop (clients/spooling.py, clients/src/spool_loop.c): the C loop
and the Python one, on real ZeroMQ sockets over tcp and ipc, write the same spool, reject the
same messages for the same reasons, follow streams the same way, decode to the same samples,
and stop when told to."""

import json
import math
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import event, given
from hypothesis import strategies as st

pytest.importorskip("neurowire.codec")

from neurowire import codec  # noqa: E402
from neurowire.clients import fastsub, spooling  # noqa: E402
from neurowire.clients.subscription import Subscription  # noqa: E402
from neurowire.clients.writers import Spool  # noqa: E402
from neurowire.wire import BLOCK, group_suffix, pack_block  # noqa: E402
from helpers import published_block, run_subscribe_command  # noqa: E402

needs_c = pytest.mark.skipif(not fastsub.available(),
                             reason="the C loops need Linux and a built module")

N = 10  # rows per block


def stream_table(seed=3, rows=800, channels=8):
    return np.random.default_rng(seed).integers(-3000, 3000, (rows, channels), dtype=np.int16)


def header(channels=8, n_samples=N, groups=(3, 5), n_groups=None, seq=0, first=0, rate=20000.0,
           version=2, **fields):
    """A block header, with any field made wrong on purpose."""
    raw = pack_block(channels, n_samples, len(groups) if n_groups is None else n_groups, False,
                     seq, 1, first, rate, 0, 0, 1, 2, 3, 1, 0, 4, group_suffix(groups),
                     version=version)
    return raw


# Malformed messages, each with the reason both loops must reject it for (wire.parse_block's,
# or "frames" / "topic"). Codec frames are stand-ins: nothing here reaches a decoder.
MALFORMED = {
    "not_neurowire": ([b"imp\0", b"XY" + bytes(102), b"a", b"b"], "header"),
    "truncated_header": ([b"imp\0", header()[:50], b"a", b"b"], "header"),
    "msgpack_header": ([b"imp\0", b"\x82\xa1a\x01\xa1b\x02", b"a", b"b"], "version"),
    "other_version": ([b"imp\0", header(version=3), b"a", b"b"], "version"),
    "wrong_kind": ([b"imp\0", header()[:3] + b"\x01" + header()[4:], b"a", b"b"], "header"),
    "header_longer_than_groups": ([b"imp\0", header() + b"\0\0\0\0", b"a", b"b"], "header"),
    "wrong_channel_count": ([b"imp\0", header(channels=9), b"a", b"b"], "groups"),
    "empty_group": ([b"imp\0", header(channels=5, groups=(0, 5)), b"a", b"b"], "groups"),
    "codec_frame_missing": ([b"imp\0", header(), b"a"], "groups"),
    "more_frames_than_any_block": ([b"imp\0", header(), *[b"x"] * 1100], "groups"),
    "no_samples": ([b"imp\0", header(n_samples=0), b"a", b"b"], "header"),
    "rate_zero": ([b"imp\0", header(rate=0.0), b"a", b"b"], "header"),
    "rate_nan": ([b"imp\0", header(rate=math.nan), b"a", b"b"], "header"),
    "rate_too_high": ([b"imp\0", header(rate=2e6), b"a", b"b"], "header"),
    "seq_beyond_int64": ([b"imp\0", header(seq=2**63), b"a", b"b"], "header"),
    "first_beyond_int64": ([b"imp\0", header(first=2**64 - 1), b"a", b"b"], "header"),
    "two_frames": ([b"imp\0", header()], "frames"),
    "topic_without_nul": ([b"imp", header(), b"a", b"b"], "topic"),
    "topic_not_a_stream_id": ([b"im p\0", header(), b"a", b"b"], "topic"),
    "empty_topic": ([b"\0", header(), b"a", b"b"], "topic"),
    "empty_topic_frame": ([b"", header(), b"a", b"b"], "topic"),
}


def scripted_messages():
    """Two streams' blocks with trouble between them: a lost block, keyframe waits, a
    duplicate, a feed's message, every malformed kind, a daemon restart (new epoch)."""
    rows, rows2 = stream_table(), stream_table(4, 200, 4)
    imp = codec.GroupEncoder([3, 5])
    imp2 = codec.GroupEncoder([4])

    def block(seq, key=False, epoch=1, first=None):
        first = seq * N if first is None else first
        return published_block(imp, rows[first:first + N], seq, first, key, epoch=epoch)

    messages = [block(seq, key=seq == 0) for seq in range(10)]
    block(10)  # encoded, never sent: lost, and the next ones wait for a keyframe
    messages += [block(seq) for seq in range(11, 14)]
    messages.append(block(14, key=True))
    messages += [block(15)] * 2  # the second: a duplicate
    messages.append([b"imp/spikes\0", b"not a block"])  # a feed's message
    messages += [message for message, _ in MALFORMED.values()]
    for k in range(10):  # another stream, interleaved
        messages += [published_block(imp2, rows2[k * N:(k + 1) * N], k, k * N, k == 0,
                                     stream="imp2"), block(16 + k)]
    # The daemon restarted: a new epoch, seq from 0, samples carrying on.
    messages += [block(k, key=k == 0, epoch=2, first=260 + N * k) for k in range(10)]
    return messages, {"imp": rows, "imp2": rows2}


def endpoint_for(transport, tmp_path):
    return "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path}/spool-pub"


def spool_both(context, tmp_path, messages, transport="tcp", **limits):
    """The same messages into a C-loop and a Python-loop subscription of one PUB socket;
    returns [(subscription, spool, spool_into's report)] for (C, Python)."""
    pub = context.socket(zmq.XPUB)
    pub.sndhwm = 0
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # each subscription shows, though they are the same
    pub.bind(endpoint_for(transport, tmp_path))
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    subscriptions = [Subscription(endpoint, context=context, live_hwm=0, native=native,
                                  decode_threads=1, record_latency=True)
                     for native in (True, False)]
    try:
        for subscription in subscriptions:
            subscription.open()
        for _ in subscriptions:  # both have reached the publisher: nothing sent is missed
            assert pub.poll(10_000) and pub.recv()[0] == 1
        for message in messages:
            pub.send_multipart(message)
        time.sleep(0.5)  # all of it waits in both SUB sockets
        results = []
        for k, subscription in enumerate(subscriptions):
            spool = Spool(str(tmp_path / f"spool{k}.bin"))
            report = subscription.spool_into(spool, **{"idle_timeout": 0.3, **limits})
            results.append((subscription, spool, report))
        return results
    finally:
        for subscription in subscriptions:
            subscription.close()
        pub.close(linger=0)


def replayed(subscription, spool):
    """(spooled frames as bytes, decoded blocks) of a spool, replayed through `handle`."""
    frames, blocks = [], []
    for message, received_ns in spool.replay():
        frames.append([bytes(frame) for frame in message])
        block = subscription.handle(message, received_ns, deferred=True)
        if block is not None:
            blocks.append(block)
    return frames, blocks


def comparable(report):
    return {k: v for k, v in report.items() if k not in ("latency_us", "cpu_s", "c_loop")}


@needs_c
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_c_and_python_loops_spool_and_decode_the_same(context, tmp_path, transport):
    messages, tables = scripted_messages()
    (c_sub, c_spool, c_report), (py_sub, py_spool, py_report) = spool_both(
        context, tmp_path, messages, transport)
    assert c_report["c_loop"] and not py_report["c_loop"]
    assert c_report["ended_by"] == py_report["ended_by"] == "idle"
    assert comparable(c_report) == comparable(py_report)
    assert c_report["spooled"] == c_spool.messages == py_spool.messages == 46
    c_frames, c_blocks = replayed(c_sub, c_spool)
    py_frames, py_blocks = replayed(py_sub, py_spool)
    assert c_frames == py_frames  # byte for byte
    assert len(c_blocks) == len(py_blocks) == 42
    for c_block, py_block in zip(c_blocks, py_blocks):
        assert (c_block.stream, c_block.first_sample) == (py_block.stream, py_block.first_sample)
        assert c_block.samples.tobytes() == py_block.samples.tobytes()
        table = tables[c_block.stream]
        np.testing.assert_array_equal(
            c_block.samples, table[c_block.first_sample:c_block.stop_sample])
    assert comparable(c_sub.report()) == comparable(py_sub.report())


@needs_c
def test_lost_blocks_gaps_and_keyframe_waits_are_counted_while_spooling(context, tmp_path):
    messages, _ = scripted_messages()
    for subscription, _, report in spool_both(context, tmp_path, messages):
        assert report["lost_blocks"] == 1  # seq 10
        assert report["keyframe_waits"] == 3  # seq 11..13, before the keyframe at 14
        assert report["duplicates"] == 1
        assert report["feed_messages"] == 1
        # Samples 100..149 (the lost block and the three not decodable) missed in delivery.
        assert report["gaps"] == {"delivery": 1, "daemon_dropped": 0, "source": 0}
        assert report["gap_samples"] == 40
        # Decoding after the stream finds the same (as decode_errors, the rejections).
        decoded = subscription.report()
        assert decoded["lost_blocks"] == 0  # nothing replayed yet
        assert decoded["decode_errors"] == len(MALFORMED)


@needs_c
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_message_is_rejected_for_its_reason_by_both_loops(context, tmp_path,
                                                                         case):
    message, reason = MALFORMED[case]
    imp = codec.GroupEncoder([3, 5])
    good = published_block(imp, stream_table()[:N], 0, 0, True)
    for _, spool, report in spool_both(context, tmp_path, [message, good]):
        expected = dict.fromkeys(spooling.REJECT_REASONS, 0)
        expected[reason] = 1
        assert report["rejected"] == expected
        assert report["spooled"] == spool.messages == 1  # the good block alone


def take_in_c(tmp_path, frames):
    """What the C loop does with one message (nw_spool_take), on a file of its own."""
    from neurowire.clients._sub_loop import ffi, lib

    fastsub._native()
    with open(tmp_path / "take.bin", "wb") as handle:
        buffer = ffi.new("uint8_t[]", 4096)
        state = ffi.new("nw_spool *")
        state.fd, state.buffer, state.buffer_cap = handle.fileno(), buffer, 4096
        kept = [ffi.from_buffer(frame) for frame in frames]
        data = ffi.new("uint8_t *[]", [ffi.cast("uint8_t *", k) for k in kept])
        sizes = ffi.new("size_t[]", [len(frame) for frame in frames])
        spooled = lib.nw_spool_take(state, data, sizes, len(frames), 0, 7)
        assert lib.nw_spool_flush(state) == 0
    rejected = [reason for k, reason in enumerate(spooling.REJECT_REASONS)
                if state.counts.rejected[k]]
    return spooled, rejected, (tmp_path / "take.bin").read_bytes()


def take_in_python(tmp_path, frames):
    (tmp_path / "take.bin").unlink(missing_ok=True)  # take_in_c's: a spool is never reused
    spool = Spool(str(tmp_path / "take.bin"))
    loop = spooling.PythonSpoolLoop(None, spool)
    spooled = loop.take(frames, 7)
    spool.handle.close()
    rejected = [reason for reason, n in loop.counts()["rejected"].items() if n]
    return int(spooled), rejected, (tmp_path / "take.bin").read_bytes()


def mostly(right, *wrong):
    """Hypothesis: the right value eight times as often as the wrong ones together, so that
    many examples are right in every field but one."""
    return st.sampled_from([right] * 8 * len(wrong) + list(wrong))


@needs_c
@given(magic=mostly(b"NW", b"NX", b"\x82W"), version=mostly(2, 1, 3), kind=mostly(2, 1),
       groups=st.lists(mostly(3, 0, 1, 7), min_size=1, max_size=4),
       channels_off=mostly(0, 1, -1), n_groups_off=mostly(0, 1, -1), blobs_off=mostly(0, 1, -1),
       n_samples=mostly(10, 0, 1, 2**32 - 1), seq=mostly(5, 0, 2**63 - 1, 2**63, 2**64 - 1),
       first=mostly(100, 2**63 - 1, 2**63, 2**64 - 1),
       rate=mostly(20000.0, 0.0, -1.0, 1e6, 1e7, math.nan, math.inf), cut=mostly(0, -1, -60),
       topic=mostly(b"imp\0", b"imp", b"i/p\0", b"\0", b"a" * 64 + b"\0",
                    b"a" * 65 + b"\0", b"\xc3\xa9\0"))
def test_header_checks_match_wire_parse_block(magic, version, kind, groups, channels_off,
                                             n_groups_off, blobs_off, n_samples, seq, first,
                                             rate, cut, topic):
    """Arbitrary headers, mostly right and wrong in every way: the C checks spool or reject
    each as the Python loop (wire.parse_block) does, for the same reason, and spool the same
    bytes."""
    n_groups = max(0, len(groups) + n_groups_off)
    raw = BLOCK.pack(magic, version, kind, max(0, sum(groups) + channels_off), n_samples,
                     n_groups, 0, seq, 1, first, rate, 0, 0, 1, 2, 3, 4, 0, 5)
    raw += struct.pack(f"<{len(groups)}I", *groups)
    raw = raw[:len(raw) + cut]
    frames = [topic, raw, *[b"z"] * max(0, len(groups) + blobs_off)]
    with tempfile.TemporaryDirectory() as folder:
        outcome = take_in_c(Path(folder), frames)
        event(f"rejected {outcome[1]}" if outcome[1] else f"spooled {outcome[0]}")
        assert outcome == take_in_python(Path(folder), frames)


@needs_c
def test_until_sample_stops_after_the_block_that_reaches_it(context, tmp_path):
    messages, _ = scripted_messages()
    for subscription, spool, report in spool_both(context, tmp_path, messages,
                                                  until_sample=60):
        assert report["ended_by"] == "until_sample"
        assert spool.messages == 6  # samples 0..59
        frames, blocks = replayed(subscription, spool)
        assert blocks[-1].stop_sample == 60


@needs_c
@pytest.mark.parametrize("native", [True, False], ids=["c_loop", "python_loop"])
def test_idle_timeout_stop_and_seconds_end_the_loop(context, tmp_path, native):
    """Nothing comes: the idle time-out ends the loop no sooner than its time (a timed
    upper bound belongs in bench, not here); stop_spooling() from another thread and
    --seconds end it too."""
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subscription = Subscription(f"tcp://127.0.0.1:{port}", context=context, native=native)
    try:
        spool = Spool(str(tmp_path / "idle.bin"))
        started = time.monotonic()
        report = subscription.spool_into(spool, idle_timeout=0.3)
        assert report["ended_by"] == "idle" and time.monotonic() - started >= 0.3
        assert report["c_loop"] is native
        report = subscription.spool_into(spool, seconds=0.2)
        assert report["ended_by"] == "seconds"
        assert not subscription.stop_spooling()  # none running
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            subscription.spool_into(spool, idle_timeout=60)))
        thread.start()
        while not subscription.stop_spooling():
            time.sleep(0.01)
        thread.join(10)
        assert result["ended_by"] == "stop"
    finally:
        subscription.close()
        pub.close(linger=0)


def test_python_loop_when_the_c_extension_is_missing(context, tmp_path, monkeypatch):
    """Without the C loops (not built, or not Linux) the Python loop spools, and says so."""
    monkeypatch.setattr(fastsub, "available", lambda: False)
    pub = context.socket(zmq.PUB)
    pub.sndhwm = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subscription = Subscription(f"tcp://127.0.0.1:{port}", context=context, live_hwm=0)
    try:
        subscription.open()
        assert subscription._receiver is None
        time.sleep(0.3)
        imp = codec.GroupEncoder([3, 5])
        rows = stream_table()
        for seq in range(5):
            pub.send_multipart(published_block(imp, rows[seq * N:(seq + 1) * N], seq, seq * N,
                                               seq == 0))
        spool = Spool(str(tmp_path / "fallback.bin"))
        report = subscription.spool_into(spool, idle_timeout=0.3, until_sample=50)
        assert not report["c_loop"] and report["spooled"] == 5
    finally:
        subscription.close()
        pub.close(linger=0)


@needs_c
def test_a_failed_write_is_an_error_not_silence(context, tmp_path):
    """A spool that cannot be written (a full disk: /dev/full) stops the C loop with
    OSError, after counting what it took."""
    pub = context.socket(zmq.PUB)
    pub.sndhwm = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subscription = Subscription(f"tcp://127.0.0.1:{port}", context=context, live_hwm=0,
                                native=True)
    try:
        subscription.open()
        time.sleep(0.3)
        imp = codec.GroupEncoder([3, 5])
        pub.send_multipart(published_block(imp, stream_table()[:N], 0, 0, True))
        spool = Spool("/dev/full")
        with pytest.raises(OSError):
            subscription.spool_into(spool, idle_timeout=0.5)
        assert subscription.spool_report["c_loop"]
        spool.handle = open("/dev/null", "wb")  # its own close must not fail again
    finally:
        subscription.close()
        pub.close(linger=0)


@needs_c
@pytest.mark.parametrize("python_loop", [False, True], ids=["c_loop", "python_loop"])
def test_subscribe_command_spools_lossless_blocks_exactly(tmp_path, python_loop):
    """`neurowire subscribe --lossless --spool` from a real daemon, either loop: every
    sample exact, and the report says which loop ran."""
    from neurowire.clients import synth

    rc, table, report_path = run_subscribe_command(
        tmp_path, 4, ["--spool", str(tmp_path / "spool.bin"),
                      *(["--python-loop"] if python_loop else [])])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  synth.LoopingSource(table).samples(0, 3000))
    report = json.loads(report_path.read_text())
    assert report["c_loop"] is not python_loop and report["spool"]["c_loop"] is not python_loop
    assert report["spool"]["spooled"] == 300 and report["spool"]["ended_by"] == "until_sample"
    assert report["verified_samples"] == 3000 * 4 and report["gaps"] == []
