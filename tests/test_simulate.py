"""Synthetic signals, the simulator and the subscriber command on real sockets."""

import json
import os
import threading
import time
import wave

import numpy as np
import pytest
import zmq

from neurowire.wire import parse_ingest

from neurowire.clients import synth

CHALLENGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                         "shared", "data", "challenge")


def test_synthetic_signal_looks_like_recordings():
    table = synth.synthesize(channels=8, rate=20000, loop_samples=20000, seed=9)
    assert table.dtype == np.int16 and table.shape == (20000, 8)
    grid = set(synth.level_grid().tolist())
    assert set(np.unique(table).tolist()) <= grid  # 10-bit levels only
    assert sorted(grid)[:2] == [-32768, -32703] and 31 in grid and -545 in grid
    assert 200 < table.std() < 3000
    assert (table.min(axis=0) < table.mean(axis=0) - 4 * table.std(axis=0)).any()  # spikes
    np.testing.assert_array_equal(table, synth.synthesize(8, 20000, 20000, seed=9))
    assert not np.array_equal(table, synth.synthesize(8, 20000, 20000, seed=10))


def test_looping_source_wraps():
    table = np.arange(30, dtype=np.int16).reshape(15, 2)
    source = synth.LoopingSource(table)
    np.testing.assert_array_equal(source.samples(14, 3)[:, 0], [28, 0, 2])
    assert np.shares_memory(source.samples(3, 4), table)


@pytest.mark.skipif(not os.path.isdir(CHALLENGE), reason="../shared/data/challenge not here")
def test_wav_source_uses_recordings():
    table, rate = synth.load_wav_dir(CHALLENGE, channels=4, loop_seconds=0.5)
    assert rate == 19531 and table.shape == (int(0.5 * rate), 4)


@pytest.mark.timeout(30)
def test_simulator_paces_and_stamps(tmp_path):
    from neurowire.clients.simulate import main

    context = zmq.Context.instance()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    report = tmp_path / "sim.json"
    started = time.time_ns()
    assert main(["--connect", f"tcp://127.0.0.1:{port}", "--channels", "4", "--seconds", "0.2",
                 "--loop-samples", "1000", "--report", str(report), "--quiet"]) == 0
    headers = []
    while pull.poll(1000):
        header, payload = pull.recv_multipart()
        headers.append(parse_ingest(header, len(payload), 4096, 4096))
        assert len(payload) == 10 * 4 * 2
    pull.close()
    assert len(headers) == 400  # 0.2 s x 20 kHz / 10 samples
    assert [h.seq for h in headers] == list(range(400))
    assert [h.first for h in headers] == list(range(0, 4000, 10))
    assert all(started <= h.acquired_ns <= time.time_ns() for h in headers)
    result = json.loads(report.read_text())
    assert result["packets_sent"] == 400 and "p99_us" in result["pacing_lateness"]
    elapsed = (headers[-1].acquired_ns - headers[0].acquired_ns) / 1e9
    assert 0.15 < elapsed < 0.6  # real-time pacing, not a burst


def run_subscribe_command(tmp_path, channels, extra_arguments, workers=1):
    """`neurowire subscribe --lossless` against a real daemon fed 3000 time steps of
    synthetic data; returns (exit status, the synthetic table, the report path)."""
    from neurowire.clients.simulate import Simulator
    from neurowire.clients.subscribe import main
    from neurowire.daemon import DaemonThread, load_config

    config = load_config(ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                         lossless="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", metrics="",
                         max_backlog_packets=100_000, workers=workers)
    table = synth.synthesize(channels=channels, rate=20000, loop_samples=2000, seed=1)
    report = tmp_path / "sub.json"
    with DaemonThread(config) as running:
        endpoints = running.daemon.endpoints
        arguments = ["--control", endpoints["control"], "--lossless", "--until-sample", "3000",
                     "--npy", str(tmp_path / "out.npy"), *extra_arguments,
                     "--verify-synth", "1", "--channels", str(channels), "--loop-samples", "2000",
                     "--idle-timeout", "10", "--report", str(report), "--quiet"]
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("rc", main(arguments)))
        thread.start()
        deadline = time.monotonic() + 20
        while not running.daemon.lossless_subscribers:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        simulator = Simulator(endpoints["ingest"], table, 20000.0, 10)
        for _ in range(300):
            simulator.send_packet()
        thread.join(30)
        simulator.close()
    return result.get("rc"), table, report


@pytest.mark.timeout(60)
def test_subscribe_command_writes_npy_and_wav(tmp_path):
    pytest.importorskip("neurowire.codec")
    rc, table, report = run_subscribe_command(tmp_path, 3, ["--wav-dir", str(tmp_path / "wav")])
    assert rc == 0
    samples = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(samples, synth.LoopingSource(table).samples(0, 3000))
    with wave.open(str(tmp_path / "wav" / "ch0002.wav")) as handle:
        assert handle.getframerate() == 20000
        channel = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
    np.testing.assert_array_equal(channel, samples[:, 2])
    summary = json.loads(report.read_text())
    assert summary["verified_samples"] == 3000 * 3 and summary["gaps"] == []


@pytest.mark.timeout(60)
def test_subscribe_command_spools_then_checks_every_block(tmp_path):
    pytest.importorskip("neurowire.codec")
    spool = tmp_path / "spool.bin"
    rc, table, report = run_subscribe_command(tmp_path, 6, ["--spool", str(spool)], workers=2)
    assert rc == 0 and not spool.exists()  # the scratch file goes once replayed
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  synth.LoopingSource(table).samples(0, 3000))
    summary = json.loads(report.read_text())
    assert summary["deferred_decode"] and summary["verified_samples"] == 3000 * 6
    assert summary["gaps"] == [] and summary["mismatches"] == 0
    # Decoding happened after the stream, yet its time is in each block's end-to-end figure.
    latency = summary["latency_us"]
    assert latency["end_to_end"]["p50"] >= latency["decode"]["p50"] > 0
