"""Hostile daemon configs and requests: every numeric config key has a range (daemon/config.py
RANGES) and a value outside it, or NaN, is refused with a message naming the key and the
range; oversized control and lossless requests are answered and counted, never a hang."""
import dataclasses
import math

import pytest

pytest.importorskip("neurowire.codec")

from neurowire.daemon import ConfigError, load_config  # noqa: E402
from neurowire.daemon.config import RANGES, DaemonConfig  # noqa: E402

NUMERIC = [f.name for f in dataclasses.fields(DaemonConfig)
           if type(f.default) in (int, float)]


def test_every_numeric_key_has_a_range():
    assert NUMERIC, "no numeric keys found"
    assert sorted(RANGES) == sorted(NUMERIC)


def test_the_defaults_are_within_their_ranges():
    load_config()  # raises if a default were outside its own range


def outside(key):
    """Values just outside each end of `key`'s range, and far outside, of its own type."""
    allowed = RANGES[key]
    kind = type(getattr(DaemonConfig(), key))
    low = allowed.low if allowed.low_open else allowed.low - (1 if kind is int else 1e-3)
    values = [kind(low), kind(allowed.high + 1), kind(-1e12), kind(1e15)]
    if kind is float:
        values += [math.nan, math.inf, -math.inf]
    return values


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_key_outside_its_range_is_refused_naming_key_and_range(tmp_path, key):
    allowed = RANGES[key]
    for value in outside(key):
        with pytest.raises(ConfigError) as error:
            load_config(**{key: value})
        message = str(error.value)
        assert f"'{key}'" in message, message
        if math.isfinite(value):
            assert f"at most {allowed.high}" in message, message
            assert f"{allowed.low:g}" in message, message


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_key_at_its_ends_is_taken(key):
    allowed = RANGES[key]
    kind = type(getattr(DaemonConfig(), key))
    ends = [allowed.high] + ([] if allowed.low_open else [allowed.low])
    if key == "block_format":  # the ends are checked again against the codec's versions
        return
    for value in ends:
        assert getattr(load_config(**{key: kind(value)}), key) in (kind(value), *(
            [load_config().workers] if key == "workers" and value == 0 else []))


def test_out_of_range_in_a_file_names_the_file_key_and_range(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[daemon]\nkeyframe_interval_s = 36000\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "'keyframe_interval_s' = 36000.0 is out of range" in message
    assert "at least 0 and at most 3600" in message


def test_a_64_bit_integer_is_refused_by_range_not_overflow(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("[daemon]\nblock_format = 9223372036854775807\nworkers = 2\n")
    with pytest.raises(ConfigError, match="'block_format' .* out of range"):
        load_config(path)


# ---- requests: sizes and credit abuse, over tcp and ipc ------------------------------------

import msgpack  # noqa: E402
import zmq  # noqa: E402

from neurowire.daemon import DaemonThread  # noqa: E402
from neurowire.daemon.lossless import MAX_CREDIT  # noqa: E402
from neurowire.daemon.requests import MAX_REQUEST_BYTES, REQUEST_FRAME_LIMIT  # noqa: E402
from conftest import wait_for  # noqa: E402
from helpers import connected  # noqa: E402


def endpoints(transport, folder):
    if transport == "tcp":
        return {name: "tcp://127.0.0.1:*" for name in ("ingest", "publish", "lossless",
                                                       "control")}
    return {name: f"ipc://{folder}/{name}" for name in ("ingest", "publish", "lossless",
                                                         "control")}


@pytest.fixture(params=["tcp", "ipc"])
def daemon(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ipc")
    config = load_config(**endpoints(request.param, folder), metrics="")
    with DaemonThread(config) as running:
        yield running.daemon


def padded(request: dict, size: int) -> bytes:
    """`request` with a 'pad' string making it exactly `size` bytes of msgpack."""
    bare = len(msgpack.packb({**request, "pad": ""}))
    for pad in range(max(0, size - bare - 4), size):
        message = msgpack.packb({**request, "pad": "x" * pad})
        if len(message) == size:
            return message
    raise AssertionError(f"cannot pad to {size}")


def ask(context, daemon, frame: bytes, wait_ms=10_000):
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(daemon.endpoints["control"])
    sock.send(frame)
    answered = sock.poll(wait_ms)
    reply = msgpack.unpackb(sock.recv()) if answered else None
    sock.close()
    return reply


@pytest.mark.parametrize("size", [100, 1025, 4097, 16384, MAX_REQUEST_BYTES])
def test_control_requests_up_to_64_kib_are_answered(context, daemon, size):
    before = daemon.reporter.control_answered
    reply = ask(context, daemon, padded({"cmd": "status"}, size))
    assert reply is not None and reply.get("state") == "running", reply
    assert "request_size" not in daemon.rejected
    assert daemon.reporter.control_answered == before + 1
    stats = ask(context, daemon, msgpack.packb({"cmd": "stats"}))
    assert stats["requests"]["control"] == before + 1  # those answered before this one
    assert stats["rejected"] == {}


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES + 1, 200_000, REQUEST_FRAME_LIMIT])
def test_larger_control_requests_are_refused_answered_and_counted(context, daemon, size):
    before = daemon.rejected.get("request_size", 0)
    reply = ask(context, daemon, padded({"cmd": "status"}, size))
    assert reply is not None and f"limit {MAX_REQUEST_BYTES}" in reply["error"]
    assert daemon.rejected["request_size"] == before + 1


def test_a_frame_beyond_the_socket_limit_leaves_the_daemon_serving(context, daemon):
    # libzmq cuts that connection (no reply: nothing reaches the daemon to answer) ...
    assert ask(context, daemon, b"\0" * (REQUEST_FRAME_LIMIT + 1), wait_ms=500) is None
    # ... and every other client is served as before.
    assert ask(context, daemon, msgpack.packb({"cmd": "status"}))["state"] == "running"


def lossless_dealer(context, daemon):
    return connected(context, zmq.DEALER, daemon.endpoints["lossless"])


def test_a_64_kib_lossless_hello_is_taken_a_larger_one_counted(context, daemon):
    taken = lossless_dealer(context, daemon)
    taken.send(padded({"cmd": "hello", "streams": None, "credit": 4}, MAX_REQUEST_BYTES))
    wait_for(lambda: len(daemon.lossless_subscribers) == 1)
    refused = lossless_dealer(context, daemon)
    refused.send(padded({"cmd": "hello", "streams": None, "credit": 4},
                        MAX_REQUEST_BYTES + 1))
    wait_for(lambda: daemon.rejected.get("request_size") == 1)
    assert len(daemon.lossless_subscribers) == 1
    assert daemon.data.lossless.requests_taken == 1


CREDIT_ABUSE = [
    [msgpack.packb({"cmd": "credit", "n": 5})],                      # before hello
    [msgpack.packb({"cmd": "hello", "credit": -1})],
    [msgpack.packb({"cmd": "hello", "credit": MAX_CREDIT + 1})],
    [msgpack.packb({"cmd": "hello", "credit": 2**63})],
    [msgpack.packb({"cmd": "hello", "credit": 1.5})],
    [msgpack.packb({"cmd": "hello", "credit": True})],
    [msgpack.packb({"cmd": "hello", "credit": "64"})],
    [msgpack.packb({"cmd": "hello", "streams": "s0"})],
    [msgpack.packb({"cmd": "hello", "streams": [1, 2]})],
    [msgpack.packb({"cmd": "hello"}), b"a second frame"],
    [msgpack.packb({"cmd": "steal"})],
]


def test_lossless_credit_abuse_is_counted_and_grants_nothing(context, daemon):
    before = daemon.rejected.get("lossless_request", 0)
    abusers = [lossless_dealer(context, daemon) for _ in CREDIT_ABUSE]  # kept open: linger 0
    for abuser, frames in zip(abusers, CREDIT_ABUSE):
        abuser.send_multipart(frames)
    wait_for(lambda: daemon.rejected.get("lossless_request", 0) == before + len(CREDIT_ABUSE))
    assert daemon.lossless_subscribers == {} or len(daemon.lossless_subscribers) == 0
    # A real subscriber then asks for more credit than any may hold: it is clamped.
    dealer = lossless_dealer(context, daemon)
    dealer.send(msgpack.packb({"cmd": "hello", "streams": None, "credit": 10}))
    wait_for(lambda: len(daemon.lossless_subscribers) == 1)
    for grant in (-5, MAX_CREDIT + 1, False, None):
        dealer.send(msgpack.packb({"cmd": "credit", "n": grant}))
    wait_for(lambda: daemon.rejected.get("lossless_request", 0)
             == before + len(CREDIT_ABUSE) + 4)
    for _ in range(3):
        dealer.send(msgpack.packb({"cmd": "credit", "n": MAX_CREDIT}))
    limit = daemon.config.lossless_max_messages
    wait_for(lambda: query_lossless(daemon) and query_lossless(daemon)[0]["credit"] == limit)


def query_lossless(daemon):
    from neurowire.wire import query
    return query(daemon.endpoints["control"], "stats").get("lossless")


def test_malformed_ingest_is_counted_over_either_transport(context, daemon):
    import time

    import numpy as np

    from neurowire.wire import pack_ingest

    good = pack_ingest("s0", 0, 0, 10, 4, 20000.0, time.time_ns(), 7)
    samples = np.zeros((10, 4), np.int16).tobytes()
    abuse = {
        "header": [b"XX" + good[2:], samples],
        "frames": [good],
        "payload_size": [good, samples[:-2]],
        "stream_id": [pack_ingest("s0", 0, 0, 10, 4, 20000.0, time.time_ns(), 7)[:-2]
                      + b"\xff\xfe", samples],
    }
    push = connected(context, zmq.PUSH, daemon.endpoints["ingest"], linger=1000)
    for frames in abuse.values():
        push.send_multipart(frames)
    push.send_multipart([good, samples])
    wait_for(lambda: "s0" in daemon.table.by_name)
    for reason in ("header", "frames", "payload_size"):
        assert daemon.rejected.get(reason) == 1, (reason, daemon.rejected)
    assert sum(daemon.rejected.values()) == len(abuse)
    push.close()
