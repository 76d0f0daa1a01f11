"""Feeds served by a real daemon over loopback ZeroMQ: lossless, spikes and power at once;
the spike feed equals the offline detector on the same samples; counters match receipts."""
import re
import time
import urllib.request

import numpy as np
import pytest
import zmq

pytest.importorskip("neurowire.codec")

import neurowire  # noqa: E402
from neurowire.daemon import ConfigError, DaemonThread, load_config  # noqa: E402
from neurowire.daemon.control import query  # noqa: E402
from neurowire.wire import pack_ingest as pack_ingest_header  # noqa: E402
from neurowire.feeds import DetectorConfig, detect  # noqa: E402
from neurowire.feeds.spikes import decode_spikes  # noqa: E402

from test_feeds import RATE, synthetic  # noqa: E402
from conftest import wait_for  # noqa: E402

LOOPBACK = dict(ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                lossless="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*",
                metrics="127.0.0.1:0")
ORIGIN = 3_000_000  # the implant's sample index when the daemon first hears of the stream
PACKET = 100


def push_recording(endpoint, samples, stream="imp1", origin=ORIGIN, skip=()):
    context = zmq.Context.instance()
    sock = context.socket(zmq.PUSH)
    sock.linger = 5000
    sock.connect(endpoint)
    for start in range(0, samples.shape[0], PACKET):
        seq = (origin - ORIGIN + start) // PACKET  # one session: seq carries on across calls
        if seq in skip:
            continue
        chunk = np.ascontiguousarray(samples[start:start + PACKET])
        sock.send_multipart([pack_ingest_header(stream, seq, origin + start, chunk.shape[0],
                                                chunk.shape[1], float(RATE), time.time_ns()),
                             chunk.tobytes()])
        if seq % 20 == 19:
            time.sleep(0.005)  # about 4x real time: a burst, but not one packet per syscall
    sock.close()


def drain(subscription, quiet=1.0):
    return list(iter(lambda: subscription.receive(quiet), None))


def receive_until(subscription, enough, timeout=30.0):
    """Messages until enough(messages) holds: on a loaded host the feed process may pause
    longer than any fixed quiet time, so the test waits for what it expects, not for a lull."""
    got, deadline = [], time.monotonic() + timeout
    while not enough(got) and time.monotonic() < deadline:
        message = subscription.receive(0.2)
        if message is not None:
            got.append(message)
    return got


@pytest.fixture(scope="module")
def recording():
    samples, _ = synthetic(channels=16, seconds=1.5, seed=11)
    return samples


@pytest.fixture
def daemon():
    runner = DaemonThread(load_config(**LOOPBACK, feeds=["spikes", "power"])).start()
    yield runner.daemon
    runner.stop()


def test_config_feeds_default_none_and_checked(tmp_path):
    assert load_config().feeds == ()
    path = tmp_path / "feeds.toml"
    path.write_text('[daemon]\nfeeds = ["spikes", "power"]\nfeed_threshold = 5\n')
    config = load_config(path)
    assert config.feeds == ("spikes", "power") and config.feed_threshold == 5.0
    for text, word in (('feeds = ["spikez"]', "spikez"), ('feeds = "spikes"', "feeds"),
                       ('feeds = ["power", "power"]', "twice"), ("feed_batch_ms = 0", "feed_batch_ms")):
        path.write_text(f"[daemon]\n{text}\n")
        with pytest.raises(ConfigError, match=word):
            load_config(path)


def test_one_daemon_serves_lossless_spikes_and_power_at_once(daemon, recording):
    endpoints = daemon.endpoints
    control = endpoints["control"]
    lossless = neurowire.subscribe(endpoints["lossless"], lossless=True, streams=["imp1"])
    spikes = neurowire.subscribe(endpoints["publish"], feed="spikes", streams="imp1")
    power = neurowire.subscribe(endpoints["publish"], feed="power", streams=["imp1"])
    # Every stream's lossless topic: its prefix "" matches the feed topics too.
    everything = neurowire.subscribe(endpoints["publish"])
    try:
        # Slow joiner: the daemon must have seen the live subscriptions before data flows.
        wait_for(lambda: len(daemon.live_subscriptions) == 3 and daemon.lossless_subscribers)
        push_recording(endpoints["ingest"], recording)
        n = recording.shape[0]
        blocks = []
        while sum(b.samples.shape[0] for b in blocks) < n:
            block = lossless.receive(10.0)
            assert block is not None, "lossless stream stalled"
            blocks.append(block)
        # The feed process reports each batch after its messages, on the same pipe: once
        # every packet is reported, every feed message is out, however slow the host.
        wait_for(lambda: daemon._feeds.queued() == 0, timeout=60)
        got_spikes = drain(spikes)
        got_power = drain(power, 0.5)
        live = drain(everything, 0.5)
        stats = query(control, "stats")
        metrics = urllib.request.urlopen(
            f"http://{endpoints['metrics']}/metrics", timeout=5).read().decode()
    finally:
        for sub in (lossless, spikes, power, everything):
            sub.close()

    # Lossless is untouched by the feeds: every sample, in order, CRC-checked.
    assert blocks[0].first_sample == ORIGIN
    assert np.array_equal(np.concatenate([b.samples for b in blocks]), recording)
    assert lossless.crc_errors == 0 and not lossless.gaps
    # A live subscriber to every stream passes over the feed messages it also receives.
    assert np.array_equal(np.concatenate([b.samples for b in live]), recording)
    assert everything.decode_errors == 0 and everything.crc_errors == 0
    assert everything.feed_messages == len(got_spikes) + len(got_power)

    # Each feed subscriber got its own feed only, nothing lost.
    assert got_spikes and all(m["kind"] == "spikes" and m["stream"] == "imp1"
                              for m in got_spikes)
    assert got_power and all(m["kind"] == "power" for m in got_power)
    assert spikes.lost == 0 and power.lost == 0

    # Spike events are the offline detector's on the same samples, snippets the raw samples.
    config = DetectorConfig(power_bin_ms=20)
    offline = detect(recording, RATE, config)
    decoded = decode_spikes(got_spikes, first=ORIGIN, n_samples=n)
    covered_to = decoded.covered[-1][1]
    assert decoded.covered[0][0] == ORIGIN
    keep = offline.sample + ORIGIN < covered_to
    assert keep.sum() > 100  # 16 channels x 8 Hz x ~1.4 s after warm-up
    assert np.array_equal(decoded.events.sample, offline.sample[keep] + ORIGIN)
    assert np.array_equal(decoded.events.channel, offline.channel[keep])
    assert np.array_equal(decoded.events.snippets, offline.snippets[keep])
    rows = (decoded.events.sample - ORIGIN - decoded.events.pre)[:, None] + np.arange(
        decoded.events.snippets.shape[1])
    assert np.array_equal(decoded.events.snippets,
                          recording[rows, decoded.events.channel[:, None]])
    # Power: one message per complete 20 ms bin, as offline.
    width = round(0.02 * RATE)
    assert sum(len(m["power"].power) for m in got_power) == n // width

    # The daemon's counters are what the subscribers received.
    feeds = stats["streams"]["imp1"]["feeds"]
    assert set(feeds) == {"spikes", "power"}
    assert feeds["spikes"]["messages"] == spikes.messages == len(got_spikes)
    assert feeds["spikes"]["bytes"] == spikes.bytes
    assert feeds["spikes"]["events"] == len(decoded.events)
    assert feeds["power"]["messages"] == power.messages == len(got_power)
    assert feeds["power"]["bytes"] == power.bytes
    assert feeds["spikes"]["drops"] == feeds["power"]["drops"] == 0
    seconds = n / RATE
    assert feeds["spikes"]["bits_per_s"] == pytest.approx(8 * spikes.bytes / seconds)
    # The every-stream subscriber counts for the feeds too (it receives them); a feed
    # subscriber does not count for the lossless stream.
    assert feeds["spikes"]["subscribers"] == 2 and feeds["power"]["subscribers"] == 2
    assert stats["streams"]["imp1"]["subscribers"] == 2
    for feed, entry in feeds.items():
        for metric, key in (("messages", "messages"), ("bytes", "bytes"), ("events", "events"),
                            ("drops", "drops")):
            found = re.search(rf'^neurowire_feed_{metric}_total\{{feed="{feed}",stream="imp1"\}} '
                              rf'(\S+)$', metrics, re.M)
            assert found and float(found.group(1)) == entry[key], (metric, feed)
    assert re.search(r'^neurowire_feed_bits_per_second\{feed="spikes",stream="imp1"\} ',
                     metrics, re.M)


def test_a_gap_restarts_the_feed_at_the_implant_index(daemon, recording):
    """A packet that never reached the daemon: spike messages resume after it with the
    implant's own sample indices (events equal those of a detector started there)."""
    spikes = neurowire.subscribe(feed="spikes", control=daemon.endpoints["control"],
                                 streams=["imp1"])
    try:
        wait_for(lambda: daemon.live_subscriptions)
        skipped = 5
        push_recording(daemon.endpoints["ingest"], recording, skip={skipped})
        got = drain(spikes)
    finally:
        spikes.close()
    resume = (skipped + 1) * PACKET
    after = detect(recording[resume:], RATE, DetectorConfig())
    decoded = decode_spikes([m for m in got if m["from"] >= ORIGIN + resume])
    keep = after.sample + ORIGIN + resume < decoded.covered[-1][1]
    assert keep.sum() > 50
    assert np.array_equal(decoded.events.sample, after.sample[keep] + ORIGIN + resume)
    assert np.array_equal(decoded.events.snippets, after.snippets[keep])


def test_without_feeds_nothing_is_published_and_stats_keep_their_shape(recording):
    with DaemonThread(load_config(**LOOPBACK)) as runner:
        spikes = neurowire.subscribe(runner.daemon.endpoints["publish"], feed="spikes",
                                     streams="imp1")
        try:
            wait_for(lambda: runner.daemon.live_subscriptions)
            push_recording(runner.daemon.endpoints["ingest"], recording[:20 * PACKET])
            wait_for(lambda: "imp1" in runner.daemon.streams
                     and runner.daemon.streams["imp1"].samples_in == 20 * PACKET)
            assert spikes.receive(0.3) is None
            stats = query(runner.daemon.endpoints["control"], "stats")
        finally:
            spikes.close()
    assert "feeds" not in stats["streams"]["imp1"]
    assert stats["feeds"]["enabled"] == []


def test_feed_queue_full_drops_and_counts_but_lossless_goes_on(recording):
    """A one-packet feed queue under a burst: the feeds skip packets and count them; every
    lossless block is still published."""
    config = load_config(**LOOPBACK, feeds=["spikes"], feed_queue_packets=1)
    with DaemonThread(config) as runner:
        daemon = runner.daemon
        push_recording(daemon.endpoints["ingest"], recording)
        packets = -(-recording.shape[0] // PACKET)
        wait_for(lambda: "imp1" in daemon.streams and daemon.streams["imp1"].packets_in == packets)
        wait_for(lambda: daemon._feeds.queued() == 0)
        time.sleep(0.2)
        feed = query(daemon.endpoints["control"], "stats")["streams"]["imp1"]["feeds"]["spikes"]
        state = daemon.streams["imp1"]
        assert state.blocks_out == packets
        assert feed["drops"] > 0 and daemon.stats()["feeds"]["error"] is None
        assert state.feed_samples + feed["drops"] * PACKET >= recording.shape[0] - PACKET
        assert state.feed_samples <= recording.shape[0]


def test_subscribe_command_reads_the_spike_feed(daemon, recording, tmp_path):
    import json
    import subprocess
    import sys

    report, events = tmp_path / "report.json", tmp_path / "events.npz"
    ready = tmp_path / "ready"
    command = subprocess.Popen(
        [sys.executable, "-m", "neurowire", "subscribe", "--feed", "spikes", "--stream", "imp1",
         "--connect", daemon.endpoints["publish"], "--idle-timeout", "2", "--quiet",
         "--report", str(report), "--events", str(events), "--ready-file", str(ready)])
    try:
        wait_for(lambda: ready.exists(), 20)
        wait_for(lambda: daemon.live_subscriptions, 10)
        push_recording(daemon.endpoints["ingest"], recording)
        assert command.wait(30) == 0
    finally:
        if command.poll() is None:
            command.kill()
    got = json.loads(report.read_text())
    stats = query(daemon.endpoints["control"], "stats")["streams"]["imp1"]["feeds"]["spikes"]
    assert got["messages"] == stats["messages"] and got["events"] == stats["events"] > 0
    saved = np.load(events)
    offline = detect(recording, RATE, DetectorConfig())
    count = len(saved["sample"])
    assert np.array_equal(saved["sample"], offline.sample[:count] + ORIGIN)
    assert np.array_equal(saved["channel"], offline.channel[:count])
    assert np.array_equal(saved["snippets"], offline.snippets[:count])


def test_bounded_feed_within_k_of_every_sample_and_smaller_than_lossless(recording):
    """feeds = ["bounded"]: every sample arrives, each within k of the raw one (the synthetic
    signal is off the ADC grid, so k codes are k int16 units), in fewer bytes than lossless;
    after a missing packet the feed resumes at once with a keyframe."""
    k = 3
    config = load_config(**LOOPBACK, feeds=["bounded"], feed_max_error=k)
    with DaemonThread(config) as runner:
        daemon = runner.daemon
        bounded = neurowire.subscribe(daemon.endpoints["publish"], feed="bounded",
                                      streams="imp1")
        try:
            wait_for(lambda: daemon.live_subscriptions)
            skipped = 7
            push_recording(daemon.endpoints["ingest"], recording, skip={skipped})
            got = drain(bounded)
            stats = query(daemon.endpoints["control"], "stats")["streams"]["imp1"]
        finally:
            bounded.close()
    assert got and all(m["kind"] == "bounded" and m["k"] == k for m in got)
    assert got[0]["key"] and got[0]["first"] == ORIGIN
    received = np.zeros(recording.shape, bool)
    for m in got:
        rows = slice(m["first"] - ORIGIN, m["first"] - ORIGIN + m["n"])
        error = np.abs(m["samples"].astype(np.int32) - recording[rows])
        assert error.max() <= k
        received[rows] = True
    hole = slice(skipped * PACKET, (skipped + 1) * PACKET)
    assert not received[hole].any() and received.sum() == received.size - received[hole].size
    assert any(m["key"] and m["first"] == ORIGIN + (skipped + 1) * PACKET for m in got)
    feed = stats["feeds"]["bounded"]
    assert feed["messages"] == bounded.messages == len(got) and feed["bytes"] == bounded.bytes
    assert feed["bytes"] < stats["bytes_out"]
    assert bounded.lost == 0


def test_late_feed_subscribers_get_a_keyframe_at_once(recording):
    """Power and bounded are codec streams with a keyframe a second: a subscriber joining
    mid-stream makes the daemon key the next bin / block, so it decodes from there (streams
    found through the control endpoint)."""
    config = load_config(**LOOPBACK, feeds=["power", "bounded"])
    head = 5 * PACKET
    with DaemonThread(config) as runner:
        daemon = runner.daemon
        push_recording(daemon.endpoints["ingest"], recording[:head])
        wait_for(lambda: "imp1" in daemon.streams and daemon._feeds.queued() == 0)
        power = neurowire.subscribe(feed="power", control=daemon.endpoints["control"])
        bounded = neurowire.subscribe(feed="bounded", control=daemon.endpoints["control"])
        try:
            assert power.streams == bounded.streams == ["imp1"]
            wait_for(lambda: len(daemon.live_subscriptions) == 2)
            # The key request goes down the same pipe as the packets, ahead of the tail's.
            tail = recording[head:int(0.5 * RATE)]  # half a second: before any regular key
            push_recording(daemon.endpoints["ingest"], tail, origin=ORIGIN + head)
            width = round(0.02 * RATE)
            bins = (head + tail.shape[0]) // width - head // width - 1
            got_power = receive_until(power, lambda got: len(got) >= bins)
            got_bounded = receive_until(
                bounded, lambda got: sum(m["n"] for m in got) >= tail.shape[0])
        finally:
            power.close()
            bounded.close()
    assert got_bounded and got_bounded[0]["first"] == ORIGIN + head
    assert sum(m["n"] for m in got_bounded) == tail.shape[0]
    assert len(got_power) >= bins
