"""End to end on real sockets: implant -> daemon -> subscribers, lossless and live."""

import os
import threading
import time

import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

import neurowire  # noqa: E402
from neurowire import codec  # noqa: E402
from neurowire.clients.simulate import Simulator  # noqa: E402
from neurowire.clients.subscribe import Subscription  # noqa: E402
from neurowire.clients.synth import LoopingSource, load_wav_dir, synthesize  # noqa: E402
from neurowire.daemon import DaemonThread, load_config  # noqa: E402
from conftest import wait_for  # noqa: E402
import helpers  # noqa: E402
from helpers import check_exact, collect, published_block  # noqa: E402

CHALLENGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                         "shared", "data", "challenge")
LOOPBACK = dict(helpers.LOOPBACK, max_backlog_packets=100_000)


def send_packets(simulator, count, pause_every=50, pause=0.002):
    """As fast as the test allows, with short pauses so a loaded machine keeps up."""
    for number in range(count):
        simulator.send_packet()
        if number % pause_every == pause_every - 1:
            time.sleep(pause)


def run_lossless(table, rate, context, packet_samples=10, packets=600, workers=1,
                 block_format=None, ipc_dir=None):
    """`packets` packets of `table` through a daemon (block_format: its config's, None for
    the default; ipc_dir: ipc:// endpoints there instead of tcp), checked exact and in order
    at a lossless subscriber."""
    endpoints = LOOPBACK if ipc_dir is None else dict(
        LOOPBACK, **{name: f"ipc://{ipc_dir}/{name}" for name in
                     ("ingest", "publish", "lossless", "control")})
    options = {} if block_format is None else {"block_format": block_format}
    config = load_config(**endpoints, workers=workers, **options)
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        # the notebook form of the API: neurowire.subscribe
        with neurowire.subscribe(endpoints["lossless"], lossless=True,
                                 context=context) as subscription:
            wait_for(lambda: running.daemon.lossless_subscribers)
            simulator = Simulator(endpoints["ingest"], table, rate, packet_samples,
                                  context=context)
            send_packets(simulator, packets)
            blocks = collect(subscription, packets * packet_samples)
            simulator.close()
        stats = running.daemon.stats()["streams"]["implant0"]
        data_path = dict(running.daemon.data_path)
    check_exact(blocks, LoopingSource(table))
    assert [b.first_sample for b in blocks] == list(range(0, packets * packet_samples,
                                                          packet_samples))
    assert subscription.gaps == [] and subscription.crc_errors == 0
    assert stats["drops"] == 0 and stats["packets_in"] == packets
    if block_format is not None:
        assert data_path["block_format"] == block_format
    return stats, data_path


@pytest.mark.timeout(60)
@pytest.mark.skipif(not os.path.isdir(CHALLENGE), reason="../shared/data/challenge not here")
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("block_format", helpers.block_formats())
def test_lossless_end_to_end_real_recordings(context, tmp_path, block_format, transport):
    table, rate = load_wav_dir(CHALLENGE, channels=32)
    stats, _ = run_lossless(table, rate, context, packet_samples=20, packets=500,
                            block_format=block_format,
                            ipc_dir=tmp_path if transport == "ipc" else None)
    assert stats["ratio"] > 1.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block_format", helpers.block_formats())
def test_lossless_end_to_end_synthetic_parallel_groups(context, block_format):
    # 64 channels or more per group (fewer cost more to wake a thread for than to code)
    table = synthesize(channels=192, rate=20000, loop_samples=3000, seed=5)
    stats, _ = run_lossless(table, 20000.0, context, packets=400, workers=3,
                            block_format=block_format)
    assert stats["workers"] == 3


@pytest.mark.timeout(60)
def test_streams_default_to_the_lane_format(context):
    table = synthesize(channels=16, rate=20000, loop_samples=3000, seed=6)
    _, data_path = run_lossless(table, 20000.0, context, packets=50)
    assert data_path["block_format"] == codec.LANE_FORMAT_VERSION


@pytest.mark.timeout(60)
def test_late_joiner_resumes_at_keyframe(context):
    table = synthesize(channels=16, rate=20000, loop_samples=5000, seed=2)
    config = load_config(**LOOPBACK, keyframe_interval_s=0.05)  # every 1000 samples
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        simulator = Simulator(endpoints["ingest"], table, 20000.0, 10, context=context)
        send_packets(simulator, 250)  # 2500 samples before anyone listens
        # The stream exists from its first packet on: until then there is nothing to read.
        wait_for(lambda: "implant0" in running.daemon.streams
                 and running.daemon.streams["implant0"].packets_in == 250)
        late = Subscription(endpoints["publish"], context=context).open()
        wait_for(lambda: running.daemon.live_subscriptions)
        send_packets(simulator, 320)
        blocks = collect(late, 1100)
        late.close()
        simulator.close()
    # Its subscription made the daemon send the next block as a keyframe: no waiting for
    # the periodic one, and nothing undecodable in between.
    assert blocks[0].keyframe and blocks[0].first_sample == 2500
    assert late.skipped_blocks == 0 and late.gaps == []
    assert [b.keyframe for b in blocks].count(True) == 2  # 2500 (joined), 3500 (periodic)
    check_exact(blocks, LoopingSource(table))


@pytest.mark.timeout(60)
def test_slow_subscriber_does_not_slow_others(context):
    table = synthesize(channels=512, rate=20000, loop_samples=4000, seed=3)
    config = load_config(**dict(LOOPBACK, live_hwm=300), keyframe_interval_s=0.01)
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        fast = Subscription(endpoints["publish"], context=context).open()
        # Small kernel buffers too, so that its backlog overflows within the test.
        slow = Subscription(endpoints["publish"], context=context, live_hwm=10,
                            socket_options={zmq.RCVBUF: 4096}).open()
        wait_for(lambda: sum(running.daemon.live_subscriptions.values()) == 2)
        simulator = Simulator(endpoints["ingest"], table, 20000.0, 10, context=context)
        packets = 1500
        received = []
        reader = threading.Thread(target=lambda: received.extend(collect(fast, packets * 10)))
        reader.start()
        send_packets(simulator, packets, pause_every=10)  # `slow` reads nothing meanwhile
        reader.join(30)
        assert not reader.is_alive()
        assert fast.gaps == [] and fast.lost_blocks == 0
        check_exact(received, LoopingSource(table))
        # The slow one lost blocks at its high-water mark; once it reads again it says exactly
        # which samples it missed, and resumes at the next keyframe.
        slow_blocks = []
        for _ in range(2):
            while True:
                block = slow.receive(timeout=1)
                if block is None:
                    break
                slow_blocks.append(block)
            send_packets(simulator, 100)
        simulator.close()
        fast.close()
        slow.close()
    assert slow.lost_blocks > 0 and slow.gaps
    check_exact(slow_blocks, LoopingSource(table))
    covered = sum(b.samples.shape[0] for b in slow_blocks) + sum(g.samples for g in slow.gaps)
    assert covered == slow_blocks[-1].stop_sample - slow_blocks[0].first_sample
    assert all(g.reason == "delivery" for g in slow.gaps)


@pytest.mark.timeout(60)
def test_restarted_subscriber_reports_gap(context):
    table = synthesize(channels=16, rate=20000, loop_samples=5000, seed=4)
    config = load_config(**LOOPBACK, keyframe_interval_s=0.02)
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        simulator = Simulator(endpoints["ingest"], table, 20000.0, 10, context=context)
        first = Subscription(endpoints["publish"], context=context).open()
        wait_for(lambda: running.daemon.live_subscriptions)
        send_packets(simulator, 100)
        before = collect(first, 1000)
        stopped_at = before[-1].stop_sample
        first.close()  # "killed"
        send_packets(simulator, 100)  # missed while down
        wait_for(lambda: running.daemon.streams["implant0"].packets_in == 200)
        second = Subscription(endpoints["publish"], context=context,
                              resume_from=stopped_at).open()
        wait_for(lambda: running.daemon.live_subscriptions)
        send_packets(simulator, 200)
        after = collect(second, 500)
        second.close()
        simulator.close()
    gap = after[0].gaps[0]
    assert (gap.start, gap.stop) == (stopped_at, after[0].first_sample)
    assert after[0].first_sample >= 2000 and after[0].keyframe
    check_exact(before + after, LoopingSource(table))


@pytest.mark.timeout(60)
def test_restarted_daemon_recovers_and_reports_gap(tmp_path, context):
    table = synthesize(channels=16, rate=20000, loop_samples=5000, seed=6)
    endpoints = {name: f"ipc://{tmp_path}/{name}" for name in
                 ("ingest", "publish", "lossless", "control")}
    config = load_config(**endpoints, metrics="", max_backlog_packets=100_000)
    simulator = Simulator(endpoints["ingest"], table, 20000.0, 10, context=context)
    with Subscription(endpoints["lossless"], lossless=True, context=context) as subscription:
        with DaemonThread(config) as running:
            wait_for(lambda: running.daemon.lossless_subscribers, timeout=15)
            send_packets(simulator, 100)
            before = collect(subscription, 1000)
        send_packets(simulator, 50)  # the daemon is down: these are lost on the way
        with DaemonThread(config) as running:
            # The subscriber re-announces itself when idle, so the new daemon learns of it.
            wait_for(lambda: subscription.receive(timeout=0.2) is None and
                     running.daemon.lossless_subscribers, timeout=15)
            time.sleep(0.2)  # the implant's PUSH reconnects to the new daemon on its own
            send_packets(simulator, 100)
            after = collect(subscription, 500)
    simulator.close()
    assert len(subscription.gaps) == 1
    gap = subscription.gaps[0]
    assert gap.start == 1000 and gap.stop == after[0].first_sample
    assert gap.stop >= 1500  # what was sent while no daemon listened cannot come back
    check_exact(before + after, LoopingSource(table))


def thread_name(tid):
    with open(f"/proc/self/task/{tid}/comm") as handle:
        return handle.read().strip()


def thread_affinities():
    """{thread id: CPUs it may run on} for every thread of this process (Linux); a thread
    that ends between the listing and the query (one a previous test left ending) is left
    out."""
    affinities = {}
    for task in os.listdir("/proc/self/task"):
        try:
            affinities[int(task)] = os.sched_getaffinity(int(task))
        except ProcessLookupError:
            pass
    return affinities


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
@pytest.mark.parametrize("pin, priority, spin_us", [(True, 0, 0), (False, 0, 0), (True, 5, 300)])
def test_data_path_threads_scheduling(context, pin, priority, spin_us):
    """pin_threads: the data thread and the encoder thread on CPUs of their own;
    realtime_priority: both, and libzmq's I/O thread, SCHED_FIFO (where allowed; else
    ordinary, as the status says); spin_us: reported as set."""
    allowed = sorted(os.sched_getaffinity(0))
    before = set(thread_affinities())
    config = load_config(**LOOPBACK, workers=2, pin_threads=pin, realtime_priority=priority,
                         spin_us=spin_us)
    with DaemonThread(config) as running:
        wait_for(lambda: running.daemon.data_path)  # the data thread has set itself up
        # The daemon's threads only: the simulator's context starts threads of its own.
        new = {tid: cpus for tid, cpus in thread_affinities().items() if tid not in before}
        table = synthesize(channels=32, rate=20000, loop_samples=2000, seed=3)
        simulator = Simulator(running.daemon.endpoints["ingest"], table, 20000.0, 10,
                              context=context)
        send_packets(simulator, 20)
        wait_for(lambda: running.daemon.stats()["streams"].get("implant0", {})
                 .get("packets_in", 0) == 20)
        simulator.close()
        data_thread = running.daemon._data_thread.native_id
        data_path = running.daemon.status()["data_path"]
        helpers = [tid for tid, cpus in new.items() if tid != data_thread and cpus == {allowed[1]}]
        if pin:
            assert new[data_thread] == {allowed[0]} and len(helpers) == 1
            assert data_path["cpus"] == allowed[:2]
        else:
            assert all(cpus == set(allowed) for cpus in new.values())
            assert data_path["cpus"] is None
        assert data_path["encoder_threads"] == 2 and data_path["spin_us"] == spin_us
        granted = data_path["realtime_priority"]
        assert granted in (0, priority)
        expected = os.SCHED_FIFO if granted else os.SCHED_OTHER
        assert os.sched_getscheduler(data_thread) == expected
        for helper in helpers:  # the encoder thread inherits the data thread's scheduling
            assert os.sched_getscheduler(helper) == expected
            if granted:
                assert os.sched_getparam(helper).sched_priority == priority
        # libzmq's I/O thread carries every packet: it runs at the data path's priority...
        io_threads = [tid for tid in new if thread_name(tid).startswith("ZMQbg/IO")]
        assert io_threads and all(os.sched_getscheduler(t) == expected for t in io_threads)
        # ...while the control and metrics side stays ordinary.
        assert os.sched_getscheduler(running.thread.native_id) == os.SCHED_OTHER


@pytest.mark.timeout(120)
def test_bench_stream_json_checks_every_sample(tmp_path, capsys):
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "neurowire.cli", "bench", "stream", "--seconds", "1",
         "--channels", "64", "--workers", "2", "--verify", "after", "--realtime-priority", "3",
         "--spin-us", "200", "--json"],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["exact"] and report["complete"] and report["packets_lost"] == 0
    # CPU over the streaming window, per packet, beside the bare C relay's (same packets).
    window = report["cpu_streaming"]
    assert 0 < window["packets"] <= 2000
    for name in ("daemon", "subscriber", "simulator", "bare_c_relay"):
        assert window[name]["us_per_packet"] > 0, (name, window[name])
    assert window["bare_c_relay"]["packets"] > 0
    from neurowire.clients.simulate import native_available

    assert report["config"]["simulator_c_loop"] is native_available()  # which loop sent
    from neurowire.clients import fastsub

    assert report["config"]["subscriber_c_loop"] is fastsub.available()  # which spooled
    # What the daemon was granted, as it reports it: realtime where allowed, and with two
    # CPUs or more, its two data-path threads on CPUs of their own.
    granted = report["daemon_data_path"]
    assert granted["encoder_threads"] == 2 and granted["realtime_priority"] in (0, 3)
    assert granted["spin_us"] == report["config"]["spin_us"] == 200
    allowed = sorted(os.sched_getaffinity(0))
    assert granted["cpus"] == (allowed[:2] if len(allowed) >= 2 else None)
    assert report["samples_compared"] == 20000 * 64
    assert report["config"]["verify"] == "after" and len(report["load_average"]["end"]) == 3
    assert report["config"]["block_format"] == codec.LANE_FORMAT_VERSION  # the default
    # Keyframes every second cost ratio (a figure, not an error the run swallowed).
    cost = report["keyframe_cost"]
    assert "error" not in cost, cost
    assert cost["first_only"] > cost["with_keyframes"] > 1
    for stage in ("ingest", "publish", "delivery", "decode", "end_to_end"):
        assert report["latency_us"][stage]["count"] == 2000
    assert report["daemon_stats_error"] is None
    from neurowire.clients import bench_stream

    bench_stream._print_human(report)
    assert f"ratio: {report['ratio']:.3f}" in capsys.readouterr().out
    # An overloaded daemon that does not answer its control endpoint at the end leaves its
    # figures unknown: the report says so instead of failing on them (it did, formatting a
    # ratio of None, after a 4096-channel run of 1-sample packets).
    unanswered = {**report, "ratio": None, "keyframes": None, "daemon_drops": None,
                  "cpu": {**report["cpu"], "daemon": {"cpu_s": None, "percent_of_core": None}},
                  "daemon_stats_error": "the daemon's control endpoint did not answer"}
    bench_stream._print_human(unanswered)
    out = capsys.readouterr().out
    assert "daemon figures: the daemon's control endpoint did not answer" in out
    assert "ratio: not known" in out and "daemon not known" in out


def test_bench_stream_refuses_a_block_format_the_daemon_would_not_start_with(capsys):
    from neurowire.clients import bench_stream

    assert bench_stream.main(["--block-format", "7", "--seconds", "1"]) == 2
    assert "--block-format 7" in capsys.readouterr().err


def test_unreadable_block_headers_are_counted_and_skipped(context):
    """A published message whose header cannot be read is counted as a decode error and
    skipped; the blocks around it decode, and the gap it leaves is reported."""
    from neurowire import codec

    encoder = codec.GroupEncoder([3, 5])
    samples = np.arange(10 * 8 * 4, dtype=np.int16).reshape(40, 8) * 64
    subscription = Subscription("tcp://127.0.0.1:1", context=context)  # nobody there: unused
    try:
        good = subscription.handle(published_block(encoder, samples[:10], 0, 0), 0)
        assert good is not None and np.array_equal(good.samples, samples[:10])
        bad = [published_block(encoder, samples[10:20], 1, 10)[:1] + [b"\xc1"] + [b"x"],
               [b"imp\0", b"\x82\xa1v\x01\xa1n\x01", b"x"],  # a protocol 1 (msgpack) header
               published_block(encoder, samples[10:20], 1, 10)[:3],  # a group frame missing
               # a new stream whose channel groups cannot exist
               published_block(encoder, samples[10:20], 0, 10, stream="imp2", groups=[0, 8])]
        for frames in bad:
            assert subscription.handle(frames, 0) is None
        assert subscription.decode_errors == len(bad)
        later = subscription.handle(published_block(encoder, samples[20:30], 2, 20), 0)
        assert later is not None and np.array_equal(later.samples, samples[20:30])
        assert [(g.start, g.stop) for g in later.gaps] == [(10, 20)]
    finally:
        subscription.close()


def test_subscription_constructor_does_no_network_io(context):
    """Made without a daemon (even with a control endpoint to ask): nothing is opened or
    asked until open(), `with`, or the first receive."""
    subscription = Subscription(control="tcp://127.0.0.1:1", lossless=True, context=context)
    assert subscription.sock is None and subscription.endpoint is None
    with pytest.raises(TimeoutError):
        subscription.open()  # now it asks the control endpoint, where nothing answers
    assert subscription.sock is None
    subscription.close()
    quiet = Subscription("tcp://127.0.0.1:1", context=context)
    assert quiet.receive(timeout=0.05) is None and quiet.sock is not None
    quiet.close()
