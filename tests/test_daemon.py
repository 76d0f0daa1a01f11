"""The daemon on real ZeroMQ sockets: config, validation, control, metrics, CURVE, SIGTERM,
sd_notify."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import msgpack
import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

from neurowire.daemon import ConfigError, DaemonThread, load_config  # noqa: E402
from neurowire.daemon.notify import notify  # noqa: E402
from neurowire.wire import ControlTimeout, query  # noqa: E402
from conftest import wait_for  # noqa: E402
from helpers import LOOPBACK, packet_frames, pusher  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- configuration ------------------------------------------------------------------------

def test_config_defaults_are_loopback():
    config = load_config()
    assert config.ingest.startswith("tcp://127.0.0.1")
    assert config.keyframe_interval_s == 1.0


@pytest.mark.parametrize("text, words", [
    ("[daemon]\nwrokers = 2\n", ["unknown key", "wrokers"]),
    ("[daemon]\nworkers = \"two\"\n", ["workers", "int"]),
    ("[daemon]\npin_threads = 1\n", ["pin_threads", "bool"]),
    ("[daemon]\nrealtime_priority = 100\n", ["realtime_priority", "1..99"]),
    ("[daemon]\nspin_us = -5\n", ["spin_us", "1000000"]),
    ("[daemon]\nblock_format = 7\n", ["'block_format' = 7", "not a block format", "0 (the lane"]),
    ("[daemon]\nblock_format = -1\n", ["'block_format' = -1", "out of range"]),
    ("[daemon]\nblock_format = \"lanes\"\n", ["block_format", "int"]),
    ("[daemon]\nblock_format = true\n", ["block_format", "integer"]),
    ("[daemon]\ningest = \"tcp://0.0.0.0:7340\"\n", ["ingest", "curve"]),
    ("[daemon]\nmax_backlog_packets = 0\n", ["max_backlog_packets"]),
    ("[deamon]\n", ["unknown table"]),
    ("[daemon\n", ["not valid TOML"]),
    ("[security]\ncurve = true\n", ["server_secret_key"]),
])
def test_config_errors_name_the_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    for word in words:
        assert word in str(error.value)
    assert str(path) in str(error.value)


def test_block_format_defaults_to_the_lane_format_and_version_1_can_be_chosen(tmp_path):
    from neurowire import codec

    assert load_config().block_format == codec.LANE_FORMAT_VERSION
    assert load_config(block_format=0).block_format == codec.LANE_FORMAT_VERSION
    path = tmp_path / "v1.toml"
    path.write_text(f"[daemon]\nblock_format = {codec.FORMAT_VERSION}\n")
    assert load_config(path).block_format == codec.FORMAT_VERSION
    assert load_config(block_format=codec.LANE_FORMAT_VERSION).block_format == \
        codec.LANE_FORMAT_VERSION


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_example_config_loads():
    config = load_config(os.path.join(REPO, "systemd", "neurowire.toml"))
    assert config.workers == 2  # a value of its own, not just the defaults


def test_cli_refuses_bad_config(tmp_path):
    from neurowire.daemon.cli import main

    path = tmp_path / "bad.toml"
    path.write_text("[daemon]\nnope = 1\n")
    assert main(["--config", str(path)]) == 2


# ---- running daemon ------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_bad_messages_are_counted_and_daemon_carries_on(context):
    config = load_config(**LOOPBACK, max_channels=64, max_packet_samples=64)
    with DaemonThread(config) as running:
        daemon = running.daemon
        sock = pusher(context, daemon.endpoints["ingest"])
        (header, payload), _ = packet_frames(0)
        sock.send_multipart([b"not a header", payload])
        sock.send_multipart([header])
        sock.send_multipart([header, payload[:-2]])
        sock.send_multipart(packet_frames(0, version=99)[0])
        sock.send_multipart([header, bytes(64 * 64 * 2 + 2)])  # bigger than the daemon allows
        sock.send_multipart(packet_frames(0, channels=65)[0])
        wait_for(lambda: sum(daemon.rejected.values()) == 6)
        assert daemon.rejected == {"header": 2, "frames": 1, "payload_size": 1, "version": 1,
                                   "oversized": 1}
        # A frame past MAXMSGSIZE makes libzmq drop that connection; others are unaffected.
        big = pusher(context, daemon.endpoints["ingest"])
        big.send_multipart([header, bytes(config.max_packet_bytes() + 200_000)])
        sock.send_multipart(packet_frames(0)[0])
        wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].packets_in == 1)
        stats = query(daemon.endpoints["control"], "stats")
        assert stats["rejected"]["version"] == 1
        assert stats["streams"]["s0"]["packets_in"] == 1


@pytest.mark.timeout(30)
def test_control_endpoint(context):
    with DaemonThread(load_config(**LOOPBACK)) as running:
        endpoint = running.daemon.endpoints["control"]
        status = query(endpoint, "status", context=context)
        assert status["state"] == "running" and status["pid"] == os.getpid()
        sock = pusher(context, running.daemon.endpoints["ingest"])
        for seq in range(20):
            sock.send_multipart(packet_frames(seq)[0])
        wait_for(lambda: query(endpoint, "stats", context=context)["streams"]
                 .get("s0", {}).get("packets_in") == 20)
        stats = query(endpoint, "stats", context=context)
        for key in ("version", "uptime_s", "time_ns", "rejected", "streams"):
            assert key in stats
        stream = stats["streams"]["s0"]
        for key in ("channels", "rate", "packets_in", "samples_in", "bytes_in", "bytes_out",
                    "ratio", "drops", "keyframes", "subscribers", "latency_us",
                    "channel_ratio"):
            assert key in stream, key
        assert stream["samples_in"] == 200 and stream["bytes_in"] == 200 * 8 * 2
        assert len(stream["channel_ratio"]) == 8 and stream["keyframes"] == 1
        assert set(stream["latency_us"]) == {"ingest", "compress", "publish"}
        assert stream["latency_us"]["compress"]["count"] == 20
        config = query(endpoint, "config", context=context)
        assert config["bound"]["control"] == endpoint
        assert "error" in query(endpoint, "launch", context=context)
        # Requests a client should not send are answered and counted; the daemon carries on.
        sock = context.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(endpoint)
        for frames in ([msgpack.packb({"cmd": ["stats"]})], [msgpack.packb({"cmd": 7})],
                       [msgpack.packb({"cmd": "stats"}), b"more"], [b"\xc1"]):
            sock.send_multipart(frames)
            assert sock.poll(5000), frames
            assert "error" in msgpack.unpackb(sock.recv())
        sock.close()
        assert query(endpoint, "status", context=context)["state"] == "running"
        assert running.daemon.rejected["control"] == 4 and running.daemon.rejected["header"] == 1


@pytest.mark.timeout(30)
def test_metrics_match_daemon_counters(context):
    from prometheus_client.parser import text_string_to_metric_families

    config = load_config(**dict(LOOPBACK, metrics="127.0.0.1:0"))
    with DaemonThread(config) as running, DaemonThread(config) as second:
        daemon = running.daemon
        assert second.daemon.endpoints["metrics"] != daemon.endpoints["metrics"]
        sock = pusher(context, daemon.endpoints["ingest"])
        for seq in range(37):
            sock.send_multipart(packet_frames(seq)[0])
        sock.send_multipart([b"junk", b""])
        wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].packets_in == 37
                 and daemon.rejected.get("header") == 1)
        text = urllib.request.urlopen(f"http://{daemon.endpoints['metrics']}/metrics",
                                      timeout=5).read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        state = daemon.streams["s0"]
        label = (("stream", "s0"),)
        assert samples[("neurowire_packets_received_total", label)] == 37 == state.packets_in
        assert samples[("neurowire_samples_received_total", label)] == 370
        assert samples[("neurowire_bytes_received_total", label)] == state.bytes_in
        assert samples[("neurowire_bytes_published_total", label)] == state.bytes_out
        assert samples[("neurowire_keyframes_total", label)] == state.keyframes
        assert samples[("neurowire_messages_rejected_total", (("reason", "header"),))] == 1
        assert samples[("neurowire_requests_total", (("endpoint", "control"),))] == \
            daemon.reporter.control_answered
        assert samples[("neurowire_requests_total", (("endpoint", "lossless"),))] == 0
        assert samples[("neurowire_packets_dropped_total",
                        (("reason", "backlog"), ("stream", "s0")))] == 0
        for stage in ("ingest", "compress", "publish"):
            key = ("neurowire_stage_latency_seconds_count", (("stage", stage), ("stream", "s0")))
            assert samples[key] == 37
            inf = ("neurowire_stage_latency_seconds_bucket",
                   (("le", "+Inf"), ("stage", stage), ("stream", "s0")))
            assert samples[inf] == 37
        smallest = ("neurowire_stage_latency_seconds_bucket",
                    (("le", "1e-05"), ("stage", "compress"), ("stream", "s0")))
        assert smallest in samples  # microsecond buckets, not the 5 ms default


@pytest.mark.timeout(30)
def test_backlog_drops_are_counted_and_conserved(context):
    from neurowire.clients.subscribe import Subscription

    config = load_config(**LOOPBACK, max_backlog_packets=1)
    with DaemonThread(config) as running:
        daemon = running.daemon
        subscriber = Subscription(daemon.endpoints["publish"], context=context).open()
        wait_for(lambda: daemon.live_subscriptions)
        sock = pusher(context, daemon.endpoints["ingest"])
        sent = 400
        for seq in range(sent):
            sock.send_multipart(packet_frames(seq, channels=256)[0])
        wait_for(lambda: "s0" in daemon.streams and
                 daemon.streams["s0"].packets_in + daemon.streams["s0"].drops_backlog == sent)
        state = daemon.streams["s0"]
        received = 0
        while received < state.packets_in:
            block = subscriber.receive(timeout=5)
            assert block is not None
            received += 1
        subscriber.close()
        missing = sum(gap.samples for gap in subscriber.gaps)
        if state.drops_backlog:
            assert all(gap.reason == "daemon_dropped" for gap in subscriber.gaps)
        # Packets after the last delivered one show no gap yet; the rest are exact ranges.
        assert missing <= state.drops_backlog * 10
        assert subscriber.crc_errors == 0 and subscriber.decode_errors == 0


@pytest.mark.timeout(30)
def test_curve_refuses_unknown_key(tmp_path, context):
    import zmq.auth

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    client_public, client_secret = zmq.auth.create_certificates(allowed, "client")
    stranger_public, stranger_secret = zmq.auth.create_certificates(tmp_path, "stranger")
    config = load_config(**dict(LOOPBACK, ingest="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*"))
    from neurowire.daemon.config import SecurityConfig, validate
    import dataclasses

    config = validate(dataclasses.replace(config, security=SecurityConfig(
        curve=True, server_secret_key=str(server_secret), client_keys_dir=str(allowed))))
    server_key = zmq.auth.load_certificate(server_public)[0]

    def keys(secret_file):
        public, secret = zmq.auth.load_certificate(secret_file)
        return {"server_public": server_key, "public": public, "secret": secret}

    with DaemonThread(config) as running:
        endpoint = running.daemon.endpoints["control"]
        assert query(endpoint, "status", curve=keys(client_secret), timeout=5)["state"] == \
            "running"
        with pytest.raises(ControlTimeout):
            query(endpoint, "status", curve=keys(stranger_secret), timeout=1)
        with pytest.raises(ControlTimeout):
            query(endpoint, "status", timeout=1)  # plain text to a CURVE socket


def test_curve_required_beyond_loopback():
    with pytest.raises(ConfigError, match="curve"):
        load_config(control="tcp://10.1.2.3:7343")


# ---- systemd notify and SIGTERM ---------------------------------------------------------------

def test_notify_reaches_abstract_socket(monkeypatch):
    name = f"neurowire-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert listener.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False


@pytest.mark.timeout(60)
def test_sigterm_flushes_and_notifies(tmp_path, context):
    from neurowire.clients.subscribe import Subscription

    endpoints = {name: f"ipc://{tmp_path}/{name}" for name in
                 ("ingest", "publish", "lossless", "control")}
    config_path = tmp_path / "daemon.toml"
    config_path.write_text("[daemon]\n" + "".join(f'{k} = "{v}"\n' for k, v in endpoints.items())
                           + 'metrics = ""\n')
    notify_path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")
    process = subprocess.Popen([sys.executable, "-m", "neurowire.daemon", "--config",
                                str(config_path)], env=env, stderr=subprocess.PIPE)
    try:
        messages = [listener.recv(4096).decode()]
        assert messages[0].startswith("READY=1")
        env.pop("WATCHDOG_PID", None)
        assert listener.recv(4096) == b"WATCHDOG=1"
        subscriber = Subscription(endpoints["lossless"], lossless=True,
                                  context=context).open()
        wait_for(lambda: query(endpoints["control"], "status")["lossless_subscribers"] == 1)
        sock = pusher(context, endpoints["ingest"])
        sent = []
        for seq in range(50):
            frames, samples = packet_frames(seq)
            sock.send_multipart(frames)
            sent.append(samples)
        wait_for(lambda: query(endpoints["control"], "stats")["streams"]
                 .get("s0", {}).get("packets_in") == 50)
        process.send_signal(signal.SIGTERM)
        received = []
        while len(received) < 50:
            block = subscriber.receive(timeout=10)
            assert block is not None
            received.append(block.samples)
        assert process.wait(timeout=15) == 0
        while True:
            message = listener.recv(4096)
            if message == b"STOPPING=1":
                break
        np.testing.assert_array_equal(np.concatenate(received), np.concatenate(sent))
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        listener.close()


@pytest.mark.timeout(30)
def test_oversized_counted_below_libzmq_limit_and_cut_connections_seen(context):
    config = load_config(**LOOPBACK, max_channels=64, max_packet_samples=64)
    with DaemonThread(config) as running:
        daemon = running.daemon
        accepted_bytes, libzmq_bytes = daemon.ingest_limits()
        assert accepted_bytes < libzmq_bytes
        (header, payload), _ = packet_frames(0)
        sock = pusher(context, daemon.endpoints["ingest"])
        # Between the daemon's limit and libzmq's: it arrives, is counted, the link stays.
        sock.send_multipart([header, bytes(libzmq_bytes - 1024)])
        wait_for(lambda: daemon.rejected.get("oversized") == 1)
        wait_for(lambda: daemon.ingest_connections["accepted"] >= 1)
        # Past libzmq's limit the frame never reaches Python; the cut connection is counted.
        big = pusher(context, daemon.endpoints["ingest"])
        big.send_multipart([header, bytes(libzmq_bytes + 1024)])
        wait_for(lambda: daemon.ingest_connections["disconnected"] >= 1)
        sock.send_multipart(packet_frames(0)[0])
        wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].packets_in == 1)
        stats = query(daemon.endpoints["control"], "stats", context=context)
        assert stats["rejected"] == {"oversized": 1}
        assert stats["ingest_connections"]["disconnected"] >= 1
        assert stats["ingest_limits"] == {"daemon_bytes": accepted_bytes,
                                          "libzmq_bytes": libzmq_bytes}
        big.close(linger=0)
