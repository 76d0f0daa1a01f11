"""The dashboard's server side without a browser: control client, windows, monitor, HTTP."""
import asyncio
import json
import threading
import time

import msgpack
import pytest
import zmq
import zmq.asyncio

pytest.importorskip("aiohttp")
pytest.importorskip("aiohttp_sse")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from neurowire.clients.dashboard import cli  # noqa: E402
from neurowire.clients.dashboard.control import ControlClient, ControlError  # noqa: E402
from neurowire.clients.dashboard.noise import NoiseFloor  # noqa: E402
from neurowire.clients.dashboard.server import (  # noqa: E402
    Monitor, _data_endpoint_from_config, make_app)
from neurowire.clients.dashboard.testing import FakeDaemon, free_port  # noqa: E402
from neurowire.clients.dashboard.window import HIST_EDGES_US, LatencyWindow  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def endpoints():
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


def test_window_percentiles_and_histogram_forget_old_samples():
    w = LatencyWindow(capacity=100)
    for v in range(1, 101):
        w.add(float(v), now=10.0)
    s = w.summary(1.0, now=10.5)
    assert s["count"] == 100 and s["max"] == 100 and 49 <= s["p50"] <= 52
    assert w.summary(1.0, now=12.0) is None  # older than the span
    # Capacity bounds memory: the oldest samples are overwritten.
    for _ in range(50):
        w.add(5000.0, now=15.0)
    assert w.summary(1.0, now=15.0)["count"] == 50
    hist = w.histogram(10.0, now=15.0)
    assert len(hist) == len(HIST_EDGES_US) + 1 and sum(hist) == 100
    assert hist[1 + 26] == 50  # 5000 us lies in [3981, 5012)


def test_noise_floor_measures_wakeups():
    nf = NoiseFloor()
    nf.start()
    time.sleep(0.3)
    nf.stop()
    s = nf.window.summary(1.0)
    assert s is not None and s["count"] >= 50 and s["p50"] >= 0


def test_config_reply_gives_the_bound_publish_endpoint():
    assert _data_endpoint_from_config(
        {"publish": "tcp://127.0.0.1:0", "bound": {"publish": "tcp://127.0.0.1:4444"}}
    ) == "tcp://127.0.0.1:4444"
    assert _data_endpoint_from_config({"publish": "ipc:///run/x"}) == "ipc:///run/x"
    assert _data_endpoint_from_config({"other": 1}) is None


def test_cli_defaults_to_the_daemons_control_endpoint():
    import argparse
    args = cli.configure_parser(argparse.ArgumentParser()).parse_args([])
    assert args.control is None and args.host == "127.0.0.1"
    assert cli.default_control().startswith("tcp://127.0.0.1:")


def test_control_client_times_out_then_recovers_on_a_fresh_socket():
    control, _ = endpoints()

    async def main():
        client = ControlClient(control, timeout_s=0.3)
        # Nobody listening: a timeout, and the wedged REQ socket is replaced.
        with pytest.raises(ControlError):
            await client.request("stats")
        with pytest.raises(ControlError):
            await client.request("stats")
        assert client.recreated == 2
        client.timeout_s = 3.0  # generous now: the machine is shared and may be busy
        # The daemon turns up, in its own thread as it would be in its own process.
        ready = threading.Event()

        def serve():
            rep = zmq.Context.instance().socket(zmq.REP)
            rep.bind(control)
            ready.set()
            try:
                for reply in ({"echo": "stats"}, {"error": "nope"}):
                    if not rep.poll(10000):
                        return
                    rep.recv()
                    rep.send(msgpack.packb(reply))
            finally:
                rep.close(0)

        server = threading.Thread(target=serve)
        server.start()
        ready.wait(5)
        try:
            assert await client.request("stats") == {"echo": "stats"}
            with pytest.raises(ControlError, match="nope"):
                await client.request("bogus")
        finally:
            client.close()
            server.join(15)

    asyncio.run(main())


def test_monitor_derives_rates_counts_gaps_and_notices_a_dead_daemon():
    control, publish = endpoints()
    fake = FakeDaemon(control, publish, publish_hz=200)
    fake.skip_every = 50
    fake.start()

    async def main():
        mon = Monitor(control, interval_s=0.1, timeout_s=0.3, decode_ms=50)
        mon.start()
        try:
            mon.want_tap("imp0")
            await asyncio.sleep(2.5)
            p = json.loads(mon.payload("imp0"))
            assert p["daemon"]["up"] and p["stream"] == "imp0"
            assert [s["id"] for s in p["streams"]] == ["imp0", "imp1"]
            s = p["s"]
            assert len(s["channel_ratio"]) == 1024
            # 2000 packets/s of 10 x 1024 int16 = 327.68 Mb/s in the fake's counters.
            assert 250 < s["mbps_in"] < 400 and s["ratio_now"] == pytest.approx(3.4, rel=0.01)
            assert p["tap"]["state"] == "running" and p["tap"]["messages"] > 100
            assert p["tap"]["lost_packets"] >= 1 and p["tap"]["gaps"] >= 1
            assert p["tap"]["latency"]["received"]["p50"] > 0
            assert p["tick"]["lat"]["ingest"][0] > 0 and p["tick"]["noise"][0] is not None
            assert len(mon.history["imp0"]) >= 15
            fake.stop()
            await asyncio.sleep(1.0)
            p = json.loads(mon.payload("imp0"))
            assert not p["daemon"]["up"] and "no reply" in p["daemon"]["error"]
            assert p["s"] is None and p["tick"]["up"] is False
        finally:
            await mon.stop()

    asyncio.run(main())


def test_history_is_bounded():
    mon = Monitor("tcp://127.0.0.1:9", interval_s=0.1, history_s=2.0)
    mon.stats = {"streams": {"a": {"ratio": 2.0}}}
    mon.daemon["up"] = True
    for _ in range(100):
        mon._record_tick()
    assert len(mon.history["a"]) == 20


def test_http_page_assets_snapshot_and_event_stream():
    control, publish = endpoints()
    fake = FakeDaemon(control, publish).start()

    async def main():
        mon = Monitor(control, interval_s=0.1, timeout_s=0.3, tap=False)
        async with TestClient(TestServer(make_app(mon))) as client:
            r = await client.get("/")
            html = await r.text()
            assert r.status == 200 and "/static/vendor/uPlot.iife.min.js" in html
            assert "http://" not in html.replace("http://www.w3", "")  # nothing from a CDN
            for path in ("/static/vendor/uPlot.iife.min.js", "/static/vendor/uPlot.min.css",
                         "/static/vendor/uPlot.LICENSE", "/static/dashboard.js",
                         "/static/dashboard.css"):
                assert (await client.get(path)).status == 200, path
            assert "MIT" in await (await client.get("/static/vendor/uPlot.LICENSE")).text()
            await asyncio.sleep(0.5)
            snap = await (await client.get("/api/snapshot?stream=imp1")).json()
            assert snap["stream"] == "imp1" and snap["daemon"]["up"]
            r = await client.get("/events")
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events, buf = [], b""
            deadline = time.monotonic() + 5
            while len(events) < 4 and time.monotonic() < deadline:
                buf += await asyncio.wait_for(r.content.readany(), 5)
                *done, buf = buf.split(b"\r\n\r\n")
                events += [e for e in done if e.strip()]
            r.close()
            kinds = [next(line[7:] for line in e.decode().splitlines()
                          if line.startswith("event: ")) for e in events]
            assert kinds[0] == "hello" and kinds[1:] == ["tick"] * (len(kinds) - 1)
            tick = json.loads(next(line[6:] for line in events[1].decode().splitlines()
                                   if line.startswith("data: ")))
            assert tick["stream"] == "imp0"  # no choice made: the first stream

    try:
        asyncio.run(main())
    finally:
        fake.stop()


METRICS_TEXT = """\
# HELP neurowire_stage_latency_seconds Latency per pipeline stage
# TYPE neurowire_stage_latency_seconds histogram
neurowire_stage_latency_seconds_bucket{stream="a",stage="ingest",le="0.0001"} %d
neurowire_stage_latency_seconds_bucket{stream="a",stage="ingest",le="0.001"} %d
neurowire_stage_latency_seconds_bucket{stream="a",stage="ingest",le="+Inf"} %d
neurowire_stage_latency_seconds_count{stream="a",stage="ingest"} %d
neurowire_stage_latency_seconds_sum{stream="a",stage="ingest"} 0.5
"""


def test_stage_histograms_are_windowed_differences_of_cumulative_buckets():
    from neurowire.clients.dashboard.stagehist import StageHistograms, parse_stage_buckets

    sh = StageHistograms(span_s=10)
    sh.add(parse_stage_buckets(METRICS_TEXT % (10, 15, 16, 16)), now=0.0)
    assert sh.window("a") is None  # one scrape is no window
    sh.add(parse_stage_buckets(METRICS_TEXT % (30, 45, 50, 50)), now=5.0)
    w = sh.window("a")
    assert w["bounds_us"] == [100.0, 1000.0, None]
    assert w["stages"]["ingest"] == [20, 10, 4] and w["span_s"] == 5.0
    # A restarted daemon's counters start again from zero: no negative counts.
    sh.add(parse_stage_buckets(METRICS_TEXT % (1, 1, 1, 1)), now=6.0)
    assert sh.window("a") is None
    sh.add(parse_stage_buckets(METRICS_TEXT % (3, 4, 4, 4)), now=7.0)
    assert sh.window("a")["stages"]["ingest"] == [2, 1, 0]
    assert sh.window("other") is None


def test_metrics_url_from_config():
    from neurowire.clients.dashboard.server import _metrics_url_from_config

    assert _metrics_url_from_config({"metrics": "127.0.0.1:7344"}) == \
        "http://127.0.0.1:7344/metrics"
    assert _metrics_url_from_config({"metrics": "127.0.0.1:0",
                                     "bound": {"metrics": "127.0.0.1:5555"}}) == \
        "http://127.0.0.1:5555/metrics"
    assert _metrics_url_from_config({"metrics": ""}) is None


def test_rates_and_cpu_over_a_second_survive_a_daemon_restart():
    mon = Monitor("tcp://127.0.0.1:9")
    for i in range(11):  # 2.0 s of polls, 1 MB in and 0.25 s of CPU per second
        t = 100 + i * 0.2
        d = mon._derive("a", t, {"bytes_in": int(i * 0.2e6), "bytes_out": int(i * 0.05e6),
                                 "packets_in": i * 100, "keyframes": i // 5, "drops": 0})
        mon._derive_process(t, {"pid": 1, "cpu_user_s": i * 0.04, "cpu_system_s": i * 0.01})
    assert d["mbps_in"] == pytest.approx(8.0) and d["ratio_now"] == pytest.approx(4.0)
    assert d["pps"] == pytest.approx(500)
    assert mon.daemon_cpu_pct == pytest.approx(25.0)
    # A new daemon: counters and CPU time start again, never a negative rate.
    d = mon._derive("a", 103.0, {"bytes_in": 1000, "bytes_out": 10})
    assert d["mbps_in"] is None
    mon._derive_process(103.0, {"pid": 2, "cpu_user_s": 0.1})
    assert mon.daemon_cpu_pct is None


def test_control_client_speaks_curve(tmp_path):
    import zmq.auth

    server_public, server_secret = zmq.curve_keypair()
    _, client_cert = zmq.auth.create_certificates(str(tmp_path), "client")
    srv_pub_file, _ = zmq.auth.create_certificates(str(tmp_path), "server")
    curve_files = cli.load_curve(srv_pub_file, client_cert)
    assert curve_files["secret"] and curve_files["server_public"]
    control, _ = endpoints()

    async def main():
        ctx = zmq.asyncio.Context.instance()
        rep = ctx.socket(zmq.REP)
        rep.curve_server = True
        rep.curve_secretkey = server_secret
        rep.bind(control)

        async def serve():
            await rep.recv()
            await rep.send(msgpack.packb({"ok": 1}))

        task = asyncio.create_task(serve())
        pub, sec = zmq.curve_keypair()
        good = ControlClient(control, timeout_s=3.0, curve={
            "server_public": server_public, "public": pub, "secret": sec})
        assert await good.request("stats") == {"ok": 1}
        await task
        # Plain text to a CURVE server gets no answer: reported, not hung.
        plain = ControlClient(control, timeout_s=0.3)
        with pytest.raises(ControlError):
            await plain.request("stats")
        good.close()
        plain.close()
        rep.close(0)

    asyncio.run(main())


def test_tap_decodes_and_verifies_either_block_format_and_a_switch_at_a_keyframe():
    """The tap's decoders follow the version inside each codec block: version 1 blocks, then
    (a daemon restarted with another `block_format`) lane blocks from a keyframe on."""
    import numpy as np

    pytest.importorskip("neurowire.codec")
    from neurowire import codec
    from neurowire.clients.dashboard.tap import Tap
    from helpers import codec_versions, published_block

    rows = np.random.default_rng(3).integers(-3000, 3000, (200, 8), dtype=np.int16)
    tap = Tap("tcp://127.0.0.1:1", "imp", decode_ms=1000.0)
    tap.BEHIND_NS = 2**62  # the blocks' publish stamps are fake
    decoders, until = None, -1
    for version, seqs in ((codec.FORMAT_VERSION, range(0, 10)),
                          (codec.LANE_FORMAT_VERSION, range(10, 20))):
        encoder = codec.GroupEncoder([3, 5], format_version=version)
        for seq in seqs:
            frames = published_block(encoder, rows[seq * 10:seq * 10 + 10], seq, seq * 10,
                                     key=seq % 10 == 0)
            assert codec_versions(frames) == ({version}, version)
            decoders, until = tap._handle(frames, decoders, until)
    assert (tap.decoded_blocks, tap.verified_blocks) == (20, 20)
    assert tap.decode_errors == tap.mismatched_blocks == tap.lost_packets == 0
