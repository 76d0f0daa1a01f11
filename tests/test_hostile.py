"""Hostile clients against a real daemon on real sockets: bad control requests, sequence
abuse, duplicates and rewinds, stream hijacking and squatting. The daemon answers each with
an error reply or a counted rejection and keeps serving; a subscriber never delivers a
sample index twice within an epoch."""

import os
import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

from neurowire import codec  # noqa: E402
from neurowire.clients.ports import free_loopback_port  # noqa: E402
from neurowire.clients.subscription import Subscription  # noqa: E402
from neurowire.daemon import DaemonThread, fastpath, load_config  # noqa: E402
from neurowire.wire import MAX_INT, pack_ingest, query  # noqa: E402
from conftest import wait_for  # noqa: E402

LOOPBACK = dict(ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                lossless="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", metrics="")
CHANNELS, N = 8, 10


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture(params=[(fast, version) for version in (codec.LANE_FORMAT_VERSION,
                                                       codec.FORMAT_VERSION)
                        for fast in (True, False)],
                ids=[f"{path}-{form}" for form in ("lanes", "v1")
                     for path in ("c_data_path", "python_data_path")])
def daemon(request):
    """Each hostile client against both data paths, each writing either block format: the C
    one hands every unusual packet to the Python one, which must also serve alone where the
    C one cannot load."""
    fast, version = request.param
    with DaemonThread(load_config(**LOOPBACK, fast_path=fast, block_format=version)) as running:
        data = running.daemon.data
        wait_for(lambda: "fast_path" in data.granted)
        assert data.granted["fast_path"] is (fast and fastpath.lib is not None)
        assert data.granted["block_format"] == version
        yield running.daemon


def samples_for(first, n=N, channels=CHANNELS, salt=0):
    rows = np.arange(first, first + n, dtype=np.int64)[:, None]
    return ((rows * 7 + np.arange(channels) * 13 + salt * 1000) % 4000 - 2000).astype(np.int16)


def send(sock, seq, first, session=11, stream="s0", salt=0, n=N, channels=CHANNELS):
    sock.send_multipart([pack_ingest(stream, seq, first, n, channels, 20000.0, time.time_ns(),
                                     session), samples_for(first, n, channels, salt).tobytes()])


def pusher(context, daemon):
    sock = context.socket(zmq.PUSH)
    sock.linger = 2000
    sock.connect(daemon.endpoints["ingest"])
    return sock


def rejected(daemon, reason):
    return daemon.rejected.get(reason, 0)


def control_request(context, daemon, frames):
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(daemon.endpoints["control"])
    sock.send_multipart(frames)
    assert sock.poll(10_000), "the daemon stopped answering"
    reply = msgpack.unpackb(sock.recv())
    sock.close()
    return reply


# ---- class 1: bad input never stops the daemon -------------------------------------------

@pytest.mark.parametrize("frames", [
    [msgpack.packb({"cmd": 5})],
    [msgpack.packb({"cmd": ["status"]})],
    [msgpack.packb({"cmd": {"a": 1}})],
    [msgpack.packb({"cmd": None})],
    [msgpack.packb(["status"])],
    [msgpack.packb({"cmd": "status"}), b"second frame"],
    [b"\xc1\xc1not msgpack"],
    [b"x" * 2000],
])
def test_bad_control_requests_get_an_error_and_the_daemon_serves_on(context, daemon, frames):
    before = rejected(daemon, "control") + rejected(daemon, "header")
    reply = control_request(context, daemon, frames)
    assert "error" in reply
    assert rejected(daemon, "control") + rejected(daemon, "header") == before + 1
    assert query(daemon.endpoints["control"], "status")["state"] == "running"


def test_a_raw_dealer_without_envelope_is_answered_not_fatal(context, daemon):
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.endpoints["control"])
    dealer.send(msgpack.packb({"cmd": "status"}))  # no empty delimiter frame
    assert dealer.poll(10_000)
    assert "error" in msgpack.unpackb(dealer.recv_multipart()[-1])
    assert query(daemon.endpoints["control"], "status")["state"] == "running"


def test_huge_sequence_jumps_are_resyncs_not_drops(context, daemon):
    sock = pusher(context, daemon)
    send(sock, 0, 0)
    for step in range(1, 5):  # jumps of ~2**61 each, up to the largest allowed
        send(sock, min(MAX_INT, step * 2**61), min(MAX_INT - N, step * 2**61))
    send(sock, MAX_INT, MAX_INT - N + 1, n=N - 1)  # the highest seq and sample index
    wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].packets_in
             + daemon.streams["s0"].duplicates >= 6, timeout=20)
    state = daemon.streams["s0"]
    assert state.drops == 0  # nothing was lost, so nothing is counted as lost
    assert state.resyncs >= 4
    stats = query(daemon.endpoints["control"], "stats")
    assert stats["streams"]["s0"]["drops"] == 0
    assert daemon._data_thread.is_alive()


def test_a_plausible_jump_counts_exactly_the_missing_packets(context, daemon):
    sock = pusher(context, daemon)
    for seq in (0, 1, 2, 7, 8):
        send(sock, seq, seq * N)
    wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].packets_in == 5,
             timeout=20)
    assert daemon.streams["s0"].drops_sequence == 4
    assert daemon.streams["s0"].resyncs == 0


def test_an_internal_fault_stops_the_daemon_with_an_error():
    """A fault of the daemon's own (not bad input) ends it with an exception, which the CLI
    turns into a non-zero exit status."""
    from neurowire.daemon.service import InternalError

    running = DaemonThread(load_config(**LOOPBACK))

    def broken():
        raise RuntimeError("a bug in reporting")

    running.daemon.reporter.status = broken
    running.start()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(running.daemon.endpoints["control"])
    sock.send(msgpack.packb({"cmd": "status"}))
    running.thread.join(20)
    sock.close()
    assert not running.thread.is_alive()
    assert isinstance(running.error, InternalError)


# ---- class 2: duplicates and rewinds ------------------------------------------------------

def _received(subscription, count, timeout=20.0):
    blocks = []
    deadline = time.monotonic() + timeout
    while len(blocks) < count and time.monotonic() < deadline:
        block = subscription.receive(timeout=0.5)
        if block is not None:
            blocks.append(block)
    return blocks


def test_duplicates_and_rewinds_are_dropped_counted_and_never_delivered(context, daemon):
    with Subscription(daemon.endpoints["publish"], context=context) as subscription:
        wait_for(lambda: daemon.live_subscriptions, timeout=10)
        sock = pusher(context, daemon)
        for seq in range(5):
            send(sock, seq, seq * N)
        send(sock, 4, 4 * N)               # the same packet again
        send(sock, 2, 2 * N, salt=1)       # a rewind with other samples
        send(sock, 5, 3 * N, salt=1)       # a new seq over samples already taken
        send(sock, 5, 5 * N)               # and on it goes
        blocks = _received(subscription, 6)
        time.sleep(0.3)
        assert subscription.receive(timeout=0.5) is None  # nothing more
    firsts = [block.first_sample for block in blocks]
    assert firsts == [0, 10, 20, 30, 40, 50]
    for block in blocks:
        assert np.array_equal(block.samples, samples_for(block.first_sample))
    assert subscription.gaps == []
    assert rejected(daemon, "duplicate") == 3
    assert daemon.streams["s0"].duplicates == 3
    assert daemon.streams["s0"].drops == 0


def test_subscriber_drops_a_republished_block(daemon, context):
    """Even if a block reaches the subscriber twice (here: replayed by hand), its samples are
    delivered once."""
    with Subscription(daemon.endpoints["publish"], context=context) as subscription:
        wait_for(lambda: daemon.live_subscriptions, timeout=10)
        sock = pusher(context, daemon)
        for seq in range(3):
            send(sock, seq, seq * N)
        raws = []
        while len(raws) < 3:
            raw = subscription.receive_raw(timeout=10)
            assert raw is not None
            raws.append(raw)
        delivered = [subscription.handle(*raw) for raw in raws + raws[1:]]
    assert [b.first_sample for b in delivered if b is not None] == [0, 10, 20]
    assert subscription.duplicates == 2


def test_a_new_session_is_a_new_epoch_and_may_start_over(context):
    config = load_config(**LOOPBACK, stream_idle_timeout_s=0.5)
    with DaemonThread(config) as running, Subscription(running.daemon.endpoints["publish"],
                                                       context=context) as subscription:
        daemon = running.daemon
        wait_for(lambda: daemon.live_subscriptions, timeout=10)
        sock = pusher(context, daemon)
        for seq in range(3):
            send(sock, seq, seq * N, session=1)
        first_run = _received(subscription, 3)
        epoch = daemon.streams["s0"].epoch
        time.sleep(1.0)  # the first session idles out
        for seq in range(3):
            send(sock, seq, seq * N, session=2, salt=2)
        second_run = _received(subscription, 3)
    assert [b.first_sample for b in first_run] == [0, 10, 20]
    assert [b.first_sample for b in second_run] == [0, 10, 20]
    assert np.array_equal(second_run[0].samples, samples_for(0, salt=2))
    assert daemon.streams["s0"].epoch > epoch
    assert subscription.gaps == [] and subscription.duplicates == 0


# ---- class 4: the stream table ----------------------------------------------------------

def test_another_session_cannot_inject_into_or_take_a_live_stream(context, daemon):
    owner, intruder = pusher(context, daemon), pusher(context, daemon)
    send(owner, 0, 0, session=100)
    wait_for(lambda: "s0" in daemon.streams, timeout=10)
    send(intruder, 1, N, session=666)
    send(intruder, 0, 0, session=666, channels=4)
    wait_for(lambda: rejected(daemon, "stream_owned") == 2, timeout=10)
    send(owner, 1, N, session=100)
    wait_for(lambda: daemon.streams["s0"].packets_in == 2, timeout=10)
    assert daemon.streams["s0"].session == 100


def test_idle_streams_expire_and_free_their_slots(context):
    config = load_config(**LOOPBACK, max_streams=4, stream_idle_timeout_s=0.5)
    with DaemonThread(config) as running:
        daemon = running.daemon
        sock = pusher(context, daemon)
        for junk in range(4):
            send(sock, 0, 0, stream=f"junk{junk}", session=5)
        wait_for(lambda: len(daemon.streams) == 4, timeout=10)
        send(sock, 0, 0, stream="real", session=7)
        wait_for(lambda: rejected(daemon, "too_many_streams") == 1, timeout=10)
        wait_for(lambda: len(daemon.streams) == 0, timeout=10)  # the junk idled out
        send(sock, 0, 0, stream="real", session=7)
        wait_for(lambda: "real" in daemon.streams, timeout=10)
        assert daemon.table.expired == 4


# ---- class 5: control never starves data --------------------------------------------------

def test_control_requests_beyond_the_rate_are_refused_and_counted(context):
    config = load_config(**LOOPBACK, control_rate=5.0)
    with DaemonThread(config) as running:
        daemon = running.daemon
        sock = context.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(daemon.endpoints["control"])
        replies = []
        for _ in range(40):  # back to back, far faster than 5 per second
            sock.send(msgpack.packb({"cmd": "stats"}))
            assert sock.poll(10_000)
            replies.append(msgpack.unpackb(sock.recv(), strict_map_key=False))
        sock.close()
    refused = [r for r in replies if "error" in r]
    assert refused and len(refused) < len(replies)
    assert daemon.rejected["control_rate"] == len(refused)


# ---- class 7: clients never lose data silently ------------------------------------------

def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "neurowire", *args], capture_output=True,
                          text=True, timeout=kwargs.pop("timeout", 60), **kwargs)


def test_subscribe_npy_on_sigterm_writes_the_file_and_removes_scratch(tmp_path, daemon,
                                                                      context):
    out, ready = tmp_path / "out.npy", tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "neurowire", "subscribe", "--connect",
         daemon.endpoints["publish"], "--npy", str(out), "--ready-file", str(ready),
         "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready.exists() and daemon.live_subscriptions, timeout=30)
        sock = pusher(context, daemon)
        for seq in range(6):
            send(sock, seq, seq * N)
        wait_for(lambda: "s0" in daemon.streams and daemon.streams["s0"].blocks_out == 6,
                 timeout=20)
        time.sleep(0.5)  # delivered to the subscriber (loopback)
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    written = np.load(out)
    assert np.array_equal(written, np.concatenate([samples_for(seq * N) for seq in range(6)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "ready"]


def test_a_second_daemon_on_the_same_ipc_paths_fails_and_leaves_the_first(tmp_path):
    endpoints = {name: f"ipc://{tmp_path}/{name}"
                 for name in ("ingest", "publish", "lossless", "control")}
    with DaemonThread(load_config(**endpoints, metrics="")) as first:
        inode = os.stat(tmp_path / "control").st_ino
        second = _cli("daemon", *(f"--{name}={endpoint}"
                                   for name, endpoint in endpoints.items()), "--metrics=")
        assert second.returncode != 0
        assert "in use" in second.stderr
        assert os.stat(tmp_path / "control").st_ino == inode  # its socket file untouched
        assert query(endpoints["control"], "status")["pid"] == first.daemon.status()["pid"]


def test_a_subscriber_pointed_at_nothing_says_so(tmp_path):
    port = free_loopback_port()
    result = _cli("subscribe", "--connect", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    assert "nothing answers" in result.stderr and "Traceback" not in result.stderr
    dead_control = _cli("subscribe", "--control", f"tcp://127.0.0.1:{port}")
    assert dead_control.returncode == 1
    assert "does not answer" in dead_control.stderr
    assert "Traceback" not in dead_control.stderr
    assert len(dead_control.stderr.strip().splitlines()) == 1


def test_simulate_with_no_daemon_says_nothing_answered():
    port = free_loopback_port()
    result = _cli("simulate", "--connect", f"tcp://127.0.0.1:{port}", "--control", "",
                  "--channels", "8", "--seconds", "0.3", "--loop-samples", "2000")
    assert result.returncode == 1
    assert "nothing answered" in result.stderr


def test_simulate_says_when_the_daemon_rejects_every_packet():
    config = load_config(**LOOPBACK, max_channels=64)
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        result = _cli("simulate", "--connect", endpoints["ingest"], "--control",
                      endpoints["control"], "--channels", "128", "--seconds", "0.3",
                      "--loop-samples", "2000")
    assert result.returncode == 1, result.stderr
    assert "rejected" in result.stderr and "header" in result.stderr


def test_simulate_normal_exit_logs_no_frame_size_warning(daemon):
    result = _cli("simulate", "--connect", daemon.endpoints["ingest"], "--control",
                  daemon.endpoints["control"], "--channels", "8", "--seconds", "0.3",
                  "--loop-samples", "2000")
    assert result.returncode == 0, result.stderr
    assert "rejected" not in result.stderr and "frame over" not in result.stderr
    assert "the daemon took" in result.stderr  # its own account of the packets


def test_print_config_into_a_closed_pipe_is_quiet():
    result = subprocess.run(f"{sys.executable} -m neurowire daemon --print-config | head -1",
                            shell=True, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "{"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


# ---- class 3: memory bounded in bytes ------------------------------------------------------

def _peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(180)
def test_rss_stays_under_the_stated_bound_under_a_flood_and_a_stalled_subscriber(tmp_path):
    from neurowire.daemon.budget import memory_bound

    ports = [free_loopback_port() for _ in range(4)]
    endpoints = dict(zip(("ingest", "publish", "lossless", "control"),
                         (f"tcp://127.0.0.1:{port}" for port in ports)))
    path = tmp_path / "daemon.toml"
    path.write_text("[daemon]\n" + "".join(f'{k} = "{v}"\n' for k, v in endpoints.items())
                    + 'metrics = ""\nmax_channels = 256\nmax_packet_samples = 64\n'
                      "max_streams = 4\nlossless_max_bytes = 8388608\n"
                      "lossless_max_subscribers = 2\nlive_hwm = 1000\n")
    config = load_config(path)
    channels, n = 256, 40  # 20 KB packets, sent as fast as Python can: ~10x real time
    bound = memory_bound(config, packet_bytes=channels * n * 2)["total"]
    daemon = subprocess.Popen([sys.executable, "-m", "neurowire", "daemon", "--config",
                               str(path)], stderr=subprocess.DEVNULL)
    context = zmq.Context()
    try:
        from neurowire.wire import wait_ready

        status = wait_ready(endpoints["control"], timeout=60, context=context)
        assert status["memory_bound_bytes"] == memory_bound(config)["total"]
        stalled = context.socket(zmq.DEALER)  # asks for a million blocks and never reads
        stalled.rcvhwm = 10
        stalled.linger = 0
        stalled.connect(endpoints["lossless"])
        stalled.send(msgpack.packb({"cmd": "hello", "streams": None, "credit": 10**6}))
        for _ in range(20):
            stalled.send(msgpack.packb({"cmd": "credit", "n": 10**6}))
        sock = context.socket(zmq.PUSH)
        sock.sndhwm = 1000
        sock.linger = 0
        sock.connect(endpoints["ingest"])
        payload = samples_for(0, n, channels).tobytes()
        started, seq = time.monotonic(), 0
        while time.monotonic() - started < 3.0:  # as fast as Python sends: > 10x real rate
            header = pack_ingest("flood", seq, seq * n, n, channels, 20000.0, time.time_ns(),
                                 9)
            try:
                sock.send(header, zmq.SNDMORE | zmq.NOBLOCK)
                sock.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.0005)
                continue
            seq += 1
        rate = seq * n / (time.monotonic() - started)
        time.sleep(1.0)
        stats = query(endpoints["control"], "stats", context=context, timeout=30)
        peak = _peak_rss_bytes(daemon.pid)
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        daemon.wait(30)
        context.destroy(linger=0)
    lossless = stats["lossless"]
    assert lossless and lossless[0]["credit"] <= config.lossless_max_messages
    assert lossless[0]["held_bytes"] <= config.lossless_max_bytes
    print(f"peak RSS {peak / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB, flood at "
          f"{rate / 20000:.1f}x real time")
    assert peak < bound, f"peak RSS {peak / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB"


# ---- class 6: ports inside the security model ----------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0:9100", "[::]:9100", "10.1.2.3:9100"])
def test_metrics_beyond_loopback_needs_an_explicit_opt_in(address):
    from neurowire.daemon import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(metrics=address)
    assert "metrics_beyond_loopback" in str(error.value)
    assert load_config(metrics=address, metrics_beyond_loopback=True).metrics == address


def test_feed_process_sockets_are_private_ipc_and_checked(context):
    config = load_config(**LOOPBACK, feeds=["spikes"])
    with DaemonThread(config) as running:
        feeds = running.daemon._feeds
        assert all(endpoint.startswith("ipc://") for endpoint in feeds.endpoints)
        assert os.stat(feeds.runtime_dir).st_mode & 0o777 == 0o700
        forger = context.socket(zmq.PUSH)  # the same user could; nobody else can enter
        forger.linger = 1000
        forger.connect(feeds.endpoints[1])
        forger.send_multipart([b"no-slash\0", b"x"])          # killed the daemon before
        forger.send_multipart([b"ghost/spikes\0", b"x"])      # a stream that does not exist
        forger.send_multipart([b"", b"\xc1\xc1"])             # a report that is not msgpack
        forger.send_multipart([b"", msgpack.packb({"stream": "s", "packets": -5,
                                                   "samples": 1, "events": 0})])
        forger.send_multipart([b"a", b"b", b"c"])
        wait_for(lambda: feeds.bad_messages == 5, timeout=20)
        assert running.daemon._data_thread.is_alive()
        assert query(running.daemon.endpoints["control"], "status")["state"] == "running"
        runtime_dir = feeds.runtime_dir
    assert not os.path.exists(runtime_dir)


# ---- issue 15: workers from the CPUs, and a warning before a stream falls behind -----------

def test_default_workers_come_from_the_cpus_and_channels():
    cpus = len(os.sched_getaffinity(0))
    assert load_config().workers == max(1, min(cpus, 4096 // 64, 64))
    assert load_config(max_channels=64).workers == 1  # one group of 64 channels at most
    assert load_config(workers=3).workers == 3


def test_a_stream_faster_than_its_coding_sustains_is_reported(context):
    config = load_config(**LOOPBACK, workers=1, max_backlog_packets=100_000)
    with DaemonThread(config) as running:
        daemon = running.daemon
        sock = pusher(context, daemon)
        channels = 1024
        payload = samples_for(0, N, channels).tobytes()
        for seq in range(250):  # declared at 1e6 samples/s: no codec here keeps up with that
            sock.send_multipart([pack_ingest("fast", seq, seq * N, N, channels, 1e6,
                                             time.time_ns(), 3), payload])
        wait_for(lambda: "fast" in query(daemon.endpoints["control"], "status")["overloaded"],
                 timeout=60, interval=0.5)
        entry = query(daemon.endpoints["control"], "status")["overloaded"]["fast"]
        assert entry["rate"] == 1e6 and 0 < entry["sustainable_rate"] < 1e6


def test_costly_stats_are_computed_at_most_once_per_interval_whoever_asks(context):
    from neurowire.daemon.reporting import STATS_MAX_AGE_S

    config = load_config(**LOOPBACK, control_rate=10_000)
    with DaemonThread(config) as running:
        daemon = running.daemon
        send(pusher(context, daemon), 0, 0)
        wait_for(lambda: "s0" in daemon.streams, timeout=10)
        started = time.monotonic()
        for _ in range(200):
            reply = query(daemon.endpoints["control"], "stats", context=context, timeout=10)
            assert "latency_us" in reply["streams"]["s0"]
        elapsed = time.monotonic() - started
    assert 1 <= daemon.reporter.slow_computed <= elapsed / STATS_MAX_AGE_S + 1


def test_reused_percentiles_come_with_counts_that_agree_with_the_counters(context):
    config = load_config(**LOOPBACK, control_rate=10_000)
    with DaemonThread(config) as running:
        daemon, control = running.daemon, running.daemon.endpoints["control"]
        sock = pusher(context, daemon)
        send(sock, 0, 0)
        wait_for(lambda: daemon.streams.get("s0") is not None
                 and daemon.streams["s0"].packets_in == 1, timeout=10)
        query(control, "stats", context=context)  # percentiles taken now, at one packet
        for seq in range(1, 20):
            send(sock, seq, seq * N)
        wait_for(lambda: daemon.streams["s0"].packets_in == 20, timeout=10)
        stream = query(control, "stats", context=context)["streams"]["s0"]
        assert stream["packets_in"] == 20
        assert all(stage["count"] == 20 for stage in stream["latency_us"].values())


def test_lossless_subscribers_beyond_the_limit_are_refused_and_counted(context):
    config = load_config(**LOOPBACK, lossless_max_subscribers=1)
    with DaemonThread(config) as running:
        daemon = running.daemon
        dealers = []
        for _ in range(2):
            dealer = context.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(daemon.endpoints["lossless"])
            dealer.send(msgpack.packb({"cmd": "hello", "streams": None, "credit": 5}))
            dealers.append(dealer)
        wait_for(lambda: rejected(daemon, "lossless_full") == 1, timeout=10)
        assert len(daemon.lossless_subscribers) == 1
        for dealer in dealers:
            dealer.send(msgpack.packb({"cmd": "credit", "n": True}))  # a bool is no count
            dealer.send(msgpack.packb({"cmd": ["hello"]}))
        wait_for(lambda: rejected(daemon, "lossless_request") == 4, timeout=10)
        assert daemon._data_thread.is_alive()


def test_with_curve_a_stream_is_bound_to_its_senders_key(tmp_path, context):
    import dataclasses

    import zmq.auth

    from neurowire.daemon.config import SecurityConfig, validate
    from neurowire.wire import apply_curve

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    secrets = {name: zmq.auth.create_certificates(allowed, name)[1] for name in ("a", "b")}
    config = validate(dataclasses.replace(load_config(**LOOPBACK), security=SecurityConfig(
        curve=True, server_secret_key=str(server_secret), client_keys_dir=str(allowed))))
    server_key = zmq.auth.load_certificate(server_public)[0]

    def sender(name):
        public, secret = zmq.auth.load_certificate(secrets[name])
        sock = context.socket(zmq.PUSH)
        sock.linger = 2000
        apply_curve(sock, {"server_public": server_key, "public": public, "secret": secret})
        sock.connect(daemon.endpoints["ingest"])
        return sock

    with DaemonThread(config) as running:
        daemon = running.daemon
        owner, other = sender("a"), sender("b")
        send(owner, 0, 0, session=1)
        wait_for(lambda: "s0" in daemon.streams, timeout=10)
        epoch = daemon.streams["s0"].epoch
        send(other, 0, 0, session=2)  # another authorised key, a new session: refused
        wait_for(lambda: rejected(daemon, "stream_owned") == 1, timeout=10)
        send(owner, 0, 0, session=3)  # the owner's key restarts its source at once
        wait_for(lambda: daemon.streams["s0"].session == 3, timeout=10)
        assert daemon.streams["s0"].epoch > epoch
        assert daemon.streams["s0"].owner_key  # the key ZAP authenticated


def test_the_subscriber_library_logs_when_nothing_answers(context, caplog):
    port = free_loopback_port()
    with Subscription(f"tcp://127.0.0.1:{port}", context=context) as subscription:
        assert not subscription.answering(0.2)
        with caplog.at_level("WARNING", logger="neurowire.subscribe"):
            assert subscription.receive(timeout=4.0) is None
    assert any("nothing answers" in record.getMessage() for record in caplog.records)
