"""Clients that ask a control endpoint (subscribe --control, simulate's account at the end)
trust nothing in the reply: bytes that are not msgpack, a list, an error map, a missing field
or an endpoint that is no endpoint are one line and exit 1, never a traceback (they were a
msgpack FormatError, a KeyError 'bound', an AttributeError)."""
import threading

import msgpack
import pytest
import zmq

from neurowire import cli

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake_control():
    """A ROUTER answering every request with the bytes in `replies[cmd]`."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    replies = {}
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if router.poll(50):
                *envelope, body = router.recv_multipart()
                cmd = msgpack.unpackb(body).get("cmd")
                router.send_multipart([*envelope, replies.get(cmd, replies.get("*", b""))])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{port}", replies
    stop.set()
    thread.join()
    router.close(linger=0)
    context.term()


def run_main(capsys, *argv):
    rc = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


GOOD_BOUND = {"bound": {"publish": "tcp://127.0.0.1:1", "lossless": "tcp://127.0.0.1:1"}}

REPLIES = {
    "not msgpack": ({"*": b"\xc1\xc1"}, "not msgpack"),
    "a list": ({"*": msgpack.packb([1, 2])}, "answered a list, not a map"),
    "an error": ({"*": msgpack.packb({"error": "nope"})}, "without a usable 'bound': nope"),
    "bound not a map": ({"*": msgpack.packb({"bound": 5})}, "without a usable 'bound'"),
    "no endpoint": ({"*": msgpack.packb({"bound": {"publish": 5}})},
                    "named 5 as its publish endpoint"),
    "a bad endpoint": ({"*": msgpack.packb({"bound": {"publish": "garbage://x"}})},
                       "named 'garbage://x' as its publish endpoint"),
}


@pytest.mark.parametrize("name", REPLIES)
def test_subscribe_refuses_a_reply_that_is_no_daemons(capsys, fake_control, name):
    endpoint, replies = fake_control
    replies.update(REPLIES[name][0])
    rc, err = run_main(capsys, "subscribe", "--control", endpoint, "--seconds", "1")
    assert rc == 1
    assert err.count("\n") == 1 and REPLIES[name][1] in err


@pytest.mark.parametrize("streams, message", [
    (5, "without a usable 'streams'"), (["bad id!"], "no stream ids"), ([7], "no stream ids")])
def test_a_feed_subscriber_refuses_stream_lists_that_are_no_ids(capsys, fake_control, streams,
                                                                message):
    endpoint, replies = fake_control
    replies.update({"config": msgpack.packb(GOOD_BOUND),
                    "status": msgpack.packb({"streams": streams})})
    rc, err = run_main(capsys, "subscribe", "--feed", "spikes", "--control", endpoint,
                       "--seconds", "1")
    assert rc == 1
    assert message in err


@pytest.mark.parametrize("stats", [b"\xc1", msgpack.packb([1]), msgpack.packb({"streams": 5}),
                                   msgpack.packb({"rejected": 5, "streams": {"implant0": 3}})])
def test_simulate_takes_a_nonsense_account_as_no_answer(capsys, fake_control, stats):
    endpoint, replies = fake_control
    replies["*"] = stats
    rc, err = run_main(capsys, "simulate", "--control", endpoint, "--connect",
                       "tcp://127.0.0.1:1", "--seconds", "0.05", "--channels", "2", "--quiet")
    assert rc == 1
    assert "nothing answered at tcp://127.0.0.1:1" in err
