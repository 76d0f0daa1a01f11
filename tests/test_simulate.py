"""Synthetic signals, the simulator and the subscriber command on real sockets."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest
import zmq

from neurowire.wire import INGEST, pack_ingest, parse_ingest

from neurowire.clients import synth
from helpers import run_subscribe_command

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


# ---- the simulator's packets, whichever loop sends them ----------------------------------------

def _loops():
    from neurowire.clients.simulate import native_available

    return [False, pytest.param(True, marks=pytest.mark.skipif(
        not native_available(), reason="the C send loop is not built or cannot load here"))]


LOOPS = pytest.mark.parametrize("native", _loops(), ids=lambda native: "c" if native else "py")


def _capture(context, count, make, timeout_ms=2000):
    """A Simulator made by make(endpoint) on a real tcp loopback PULL; its first `count`
    packets as (header, payload) after `send(simulator)`."""
    pull = context.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    simulator = make(f"tcp://127.0.0.1:{port}")
    packets = []
    try:
        for _ in range(count):
            assert pull.poll(timeout_ms), f"only {len(packets)} of {count} packets came"
            packets.append(tuple(pull.recv_multipart()))
        assert not pull.poll(100), "more packets than sent"
    finally:
        simulator.close()
        pull.close()
    return simulator, packets


def _send_all(simulator, count):
    for _ in range(count):
        assert simulator.send_packet()
    return simulator


@LOOPS
@pytest.mark.timeout(30)
def test_packets_are_the_synthetic_signal_with_the_wire_header(context, native):
    """Header bytes as neurowire.wire packs them and samples as synth's table gives them,
    across the loop's end (97 rows, 10 per packet) and from a start sample past zero."""
    from neurowire.clients.simulate import Simulator

    table = synth.synthesize(3, 20000.0, 97, seed=4)
    simulator, packets = _capture(context, 250, lambda endpoint: _send_all(
        Simulator(endpoint, table, 20000.0, 10, "imp.7", 5, context=context, native=native),
        250))
    source = synth.LoopingSource(table)
    for k, (header, payload) in enumerate(packets):
        parsed = parse_ingest(header, len(payload), 4096, 4096)
        assert header == pack_ingest(b"imp.7", k, 5 + 10 * k, 10, 3, 20000.0,
                                     parsed.acquired_ns, simulator.session)
        assert payload == source.samples(5 + 10 * k, 10).tobytes()
    assert simulator.native is native
    assert (simulator.sent, simulator.refused, simulator.seq, simulator.next_sample) == (
        250, 0, 250, 5 + 2500)


@LOOPS
@pytest.mark.timeout(30)
def test_packets_are_the_same_bytes_as_before(context, native):
    """The digest of these packets as the simulator sent them before its C loop (commit
    bbd08fb), acquisition time and session (random per run) zeroed: a change to the signal,
    the header or the looping shows here."""
    from neurowire.clients.simulate import Simulator

    table = synth.synthesize(3, 20000.0, 97, seed=4)
    _, packets = _capture(context, 250, lambda endpoint: _send_all(
        Simulator(endpoint, table, 20000.0, 10, "imp.7", 5, context=context, native=native),
        250))
    digest = hashlib.sha256()
    time_and_session = slice(INGEST.size - 16, INGEST.size)
    for header, payload in packets:
        header = bytearray(header)
        header[time_and_session] = bytes(16)
        digest.update(bytes(header) + payload)
    assert digest.hexdigest() == (
        "d84deb4460fcf6b5cc12a6236ded761d6b8d0e88f8b39799f9eb9d82050f00c9")


def test_synthetic_signal_is_the_same_as_before():
    """The subscriber checks every sample against the table it rebuilds from the seed: the
    table must not change (digests taken before the simulator's C loop, commit bbd08fb)."""
    assert hashlib.sha256(synth.synthesize(4, 20000.0, 1000, 1).tobytes()).hexdigest() == (
        "8a95b86dade95867efe1befa3c92fae8ed485dc45e862ce718002f99f16f2486")
    assert hashlib.sha256(synth.synthesize(70, 20000.0, 300, 5).tobytes()).hexdigest() == (
        "8e3588b4eeea449b8bc6e119e65c790684b87023e528f1920f37afd933e6978e")


@LOOPS
@pytest.mark.timeout(30)
def test_packet_longer_than_the_loop_wraps_more_than_once(context, native):
    from neurowire.clients.simulate import Simulator

    table = np.arange(21, dtype=np.int16).reshape(7, 3)  # 7 rows, 3 channels
    _, packets = _capture(context, 4, lambda endpoint: _send_all(
        Simulator(endpoint, table, 1000.0, 16, context=context, native=native), 4))
    for k, (_, payload) in enumerate(packets):
        rows = np.arange(16 * k, 16 * k + 16) % 7
        np.testing.assert_array_equal(np.frombuffer(payload, "<i2").reshape(16, 3), table[rows])


@LOOPS
@pytest.mark.timeout(30)
@pytest.mark.parametrize("rate, packet_samples, seconds, expected",
                         [(20000.0, 10, 0.15, 300), (10000.0, 20, 0.1, 50), (1000.0, 3, 0.2, 67)])
def test_run_paces_the_packets_the_duration_holds(context, native, rate, packet_samples,
                                                  seconds, expected):
    """run(seconds) sends round(seconds x rate / packet_samples) packets, each with its next
    seq and first sample, and a lateness figure per packet (counts, not timings)."""
    from neurowire.clients.simulate import Simulator

    table = synth.synthesize(2, rate, 100, seed=2)
    reports = {}

    def make(endpoint):
        simulator = Simulator(endpoint, table, rate, packet_samples, context=context,
                              native=native)
        reports["run"] = simulator.run(seconds)
        return simulator

    simulator, packets = _capture(context, expected, make)
    headers = [parse_ingest(header, len(payload), 64, 64) for header, payload in packets]
    assert [h.seq for h in headers] == list(range(expected))
    assert [h.first for h in headers] == list(range(0, expected * packet_samples,
                                                    packet_samples))
    assert all(h.rate == rate and h.n_samples == packet_samples for h in headers)
    report = reports["run"]
    assert report["packets_sent"] == expected and report["packets_refused"] == 0
    assert report["samples_sent"] == expected * packet_samples
    assert len(simulator.lateness_ns) == expected and report["c_loop"] is native
    assert set(report["pacing_lateness"]) == {"p50_us", "p99_us", "max_us"}


@LOOPS
@pytest.mark.timeout(30)
def test_run_until_stop_checks_every_200_packets(context, native):
    from neurowire.clients.simulate import Simulator

    calls = []

    def stop():
        calls.append(1)
        return len(calls) == 2

    table = synth.synthesize(2, 20000.0, 100, seed=2)
    reports = {}

    def make(endpoint):
        simulator = Simulator(endpoint, table, 20000.0, 10, context=context, native=native)
        reports["run"] = simulator.run(0, stop=stop)
        return simulator

    _, packets = _capture(context, 400, make)
    assert reports["run"]["packets_sent"] == 400 and len(calls) == 2


@LOOPS
def test_a_full_queue_refuses_packets_and_counts_them(context, native):
    """Nothing answers and the socket queues 20000 packets: the implant never waits, it
    counts every packet refused beyond that."""
    from neurowire.clients.simulate import Simulator

    port = context.socket(zmq.PULL)  # bound, never connected to: its port is free of peers
    endpoint = f"tcp://127.0.0.1:{port.bind_to_random_port('tcp://127.0.0.1')}"
    port.close(linger=0)
    simulator = Simulator(endpoint, np.zeros((10, 1), np.int16), 20000.0, 10, context=context,
                          native=native)
    try:
        results = [simulator.send_packet() for _ in range(20100)]
    finally:
        simulator.sock.linger = 0
        simulator.close()
    assert results.count(False) == simulator.refused == 20100 - simulator.sent
    assert simulator.refused > 0 and simulator.seq == 20100


@pytest.mark.parametrize("table, arguments, message", [
    (np.zeros((10, 2), np.float32), {}, "int16"),
    (np.zeros((0, 2), np.int16), {}, "non-empty"),
    (np.zeros(10, np.int16), {}, "samples, channels"),
    (np.zeros((10, 2), np.int16), {"rate": 0.0}, "rate"),
    (np.zeros((10, 2), np.int16), {"rate": float("nan")}, "rate"),
    (np.zeros((10, 2), np.int16), {"packet_samples": 0}, "packet_samples"),
    (np.zeros((10, 2), np.int16), {"stream": "a b"}, "stream id"),
    (np.zeros((10, 2), np.int16), {"start_sample": -1}, "start_sample"),
])
def test_simulator_rejects_what_the_daemon_would(context, table, arguments, message):
    from neurowire.clients.simulate import Simulator

    settings = {"rate": 20000.0, "packet_samples": 10, **arguments}
    with pytest.raises(ValueError, match=message):
        Simulator("tcp://127.0.0.1:9", table, context=context, **settings)


@pytest.mark.parametrize("arguments, message", [
    (["--channels", "0"], "argument --channels: 0 is out of range: channels must be at least 1"),
    (["--channels", "x"], "argument --channels: 'x' is not an integer"),
    (["--rate", "0"], "argument --rate: 0 is out of range: the rate must be above 0"),
    (["--rate", "nan"], "argument --rate: nan is not a finite number"),
    (["--rate", "2e6"], "and at most 1e+06"),
    (["--packet-samples", "0"], "time steps per packet must be at least 1"),
    (["--seconds", "-1"], "argument --seconds: -1 is out of range"),
    (["--seconds", "inf"], "argument --seconds: inf is not a finite number"),
    (["--loop-samples", "0"], "argument --loop-samples: 0 is out of range"),
    (["--start-sample", "-3"], "argument --start-sample: -3 is out of range"),
    (["--stream", "no spaces"], "a stream id is 1 to 64 of"),
])
def test_bad_arguments_say_what_is_wrong(capsys, arguments, message):
    from neurowire.clients.simulate import main

    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, "--control", "", "--seconds", "0.01"] if "--seconds" not in arguments
             else [*arguments, "--control", ""])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, "<i2").tobytes())


@pytest.mark.parametrize("setup, message", [
    (lambda folder: None, "no .wav files in"),
    (lambda folder: _write_wav(folder / "a.wav", np.zeros(20), channels=2), "mono 16-bit"),
    (lambda folder: (folder / "a.wav").write_bytes(b"RIFF junk"), "cannot play"),
    (lambda folder: _write_wav(folder / "a.wav", []), "no samples in it"),
])
def test_bad_recordings_say_what_is_wrong(tmp_path, capsys, setup, message):
    from neurowire.clients.simulate import main

    setup(tmp_path)
    assert main(["--wav", str(tmp_path), "--channels", "2", "--control", "",
                 "--seconds", "0.01", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@LOOPS
@pytest.mark.timeout(30)
def test_recordings_play_at_their_own_rate(tmp_path, context, native, monkeypatch):
    """--wav: one file per channel, cycled (and shifted) past the files, at the files' rate;
    the packets carry exactly synth.load_wav_dir's table."""
    import neurowire.clients.simulate as simulate

    rng = np.random.default_rng(0)
    for name in ("b.wav", "a.wav"):
        _write_wav(tmp_path / name, rng.integers(-2000, 2000, 3000))
    made = []
    original = simulate.Simulator

    def recording(*args, **kwargs):
        kwargs["native"] = native if kwargs.get("native") is None else kwargs["native"]
        made.append(original(*args, context=context, **kwargs))
        return made[-1]

    monkeypatch.setattr(simulate, "Simulator", recording)
    table, rate = synth.load_wav_dir(str(tmp_path), 3)
    assert rate == 8000 and table.shape == (3000, 3)

    def run(endpoint):
        assert simulate.main(["--connect", endpoint, "--wav", str(tmp_path), "--channels", "3",
                              "--seconds", "0.05", "--control", "", "--quiet"]) == 0
        return made[-1]

    _, packets = _capture(context, 40, run)  # 0.05 s x 8000 Hz / 10
    source = synth.LoopingSource(table)
    for k, (header, payload) in enumerate(packets):
        parsed = parse_ingest(header, len(payload), 64, 64)
        assert parsed.rate == 8000.0 and parsed.channels == 3 and parsed.first == 10 * k
        assert payload == source.samples(10 * k, 10).tobytes()


@pytest.mark.timeout(60)
def test_ctrl_c_ends_the_c_loop_with_its_report(tmp_path, context):
    """SIGINT wakes the C loop from its sleep; Python's handler ends the run, and the report
    counts what went (the same as --python-loop does)."""
    pull = context.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    report = tmp_path / "sim.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "neurowire.clients.simulate", "--connect",
         f"tcp://127.0.0.1:{port}", "--channels", "2", "--loop-samples", "100", "--control", "",
         "--report", str(report), "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        received = 0
        while received < 300:  # the loop runs: interrupt it mid-stream
            assert pull.poll(20000), "no packets from the simulator"
            pull.recv_multipart()
            received += 1
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    while pull.poll(500):
        pull.recv_multipart()
        received += 1
    pull.close()
    assert process.returncode == 0, error
    result = json.loads(report.read_text())
    assert result["packets_sent"] == received >= 300


def test_the_c_loop_refuses_a_struct_that_does_not_describe_its_memory(context):
    """A header too short for the fields it patches, or an empty table, is an error from C
    (EINVAL), not a write past the header or a division by zero."""
    from neurowire.clients.simulate import Simulator, native_available

    if not native_available():
        pytest.skip("the C send loop is not built or cannot load here")
    simulator = Simulator("tcp://127.0.0.1:9", np.zeros((10, 2), np.int16), 20000.0, 10,
                          context=context)
    try:
        state = simulator._state
        for field, bad in (("header_len", 40), ("loop_rows", 0), ("acquired_at", 10**6)):
            good = getattr(state, field)
            setattr(state, field, bad)
            with pytest.raises(zmq.ZMQError) as error:
                simulator.send_packet()
            assert error.value.errno == errno.EINVAL
            with pytest.raises(zmq.ZMQError):
                simulator.run(0.01)
            setattr(state, field, good)
        assert simulator.sent == simulator.refused == simulator.seq == 0
    finally:
        simulator.sock.linger = 0
        simulator.close()
