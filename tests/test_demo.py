"""`make run`'s parts: the capacity check (neurowire.capacity) and the demo (neurowire.demo)."""
import json
import subprocess
import sys

import pytest

from neurowire import capacity, demo


def test_plan_fits_only_within_the_margin_of_the_free_cores():
    # 300 us of encoding plus 6 hops of 50 us per 0.5 ms packet: 600 x 1.25 ... in cores.
    small = capacity.plan(64, 10, cpus=2, cores=2.0, encode_us=20, hop_us=50)
    assert small.fits and small.workers == 2
    assert small.demand_cores == pytest.approx((20 * capacity.TEAM_CPU_FACTOR
                                                + capacity.PER_PACKET_HOPS * 50) / 500)
    big = capacity.plan(1024, 10, cpus=2, cores=2.0, encode_us=500, hop_us=50)
    assert not big.fits
    # The same big stream on a machine with many free cores: total CPU fits, but the
    # daemon's data thread would still be busier than a packet period allows.
    serial = capacity.plan(1024, 10, cpus=2, cores=64.0, encode_us=900, hop_us=50)
    assert serial.demand_cores < 64 * capacity.HEADROOM
    assert serial.daemon_thread_share > capacity.SERIAL_LIMIT and not serial.fits
    # One CPU: one encoder thread, no team overhead.
    single = capacity.plan(64, 10, cpus=1, cores=1.0, encode_us=20, hop_us=10)
    assert single.workers == 1
    assert single.demand_cores == pytest.approx((20 + capacity.PER_PACKET_HOPS * 10) / 500)


def test_one_encoder_thread_where_it_keeps_up_alone_else_the_team():
    # No team hand-off where the data thread keeps up alone: less CPU for the same stream.
    small = capacity.cheapest_plan(256, 10, cpus=2, cores=2.0, encode_us=80, hop_us=50)
    assert small.fits and small.workers == 1
    assert small.demand_cores < capacity.plan(256, 10, cpus=2, cores=2.0, encode_us=80,
                                              hop_us=50).demand_cores
    # A block one thread cannot encode within the packet period's serial share: the team.
    wide = capacity.cheapest_plan(1024, 10, cpus=2, cores=4.0, encode_us=400, hop_us=20)
    assert capacity.plan(1024, 10, cpus=2, cores=4.0, encode_us=400, hop_us=20,
                         workers=1).daemon_thread_share > capacity.SERIAL_LIMIT
    assert wide.workers == 2 and wide.fits
    # Neither fits: the team's plan, whose figures the sentence then gives.
    assert capacity.cheapest_plan(1024, 10, cpus=2, cores=1.0, encode_us=320,
                                  hop_us=50).workers == 2


def test_longer_packets_divide_the_per_packet_cost():
    short = capacity.plan(256, 10, cpus=2, cores=2.0, encode_us=100, hop_us=80)
    long = capacity.plan(256, 40, cpus=2, cores=2.0, encode_us=400, hop_us=80)
    assert long.demand_cores < short.demand_cores


def test_measure_picks_the_first_size_that_fits_and_says_so():
    measured = capacity.measure(packet_options=(10, 20), channel_ladder=(1024, 64))
    assert measured.cpus >= 1 and 0 < measured.cores_available <= measured.cpus
    assert all(v > 0 for v in measured.encode_us.values())
    assert all(v > 0 for v in measured.hop_us.values())
    # Every size tried before the chosen one did not fit; nothing after it was tried.
    if measured.chosen is not None:
        assert measured.plans[-1] is measured.chosen
        assert not any(p.fits for p in measured.plans[:-1])
    sentence = capacity.describe(measured)
    assert sentence.count(". ") == 0 and sentence.endswith(".")
    assert "1024 channels" in sentence and f"{measured.cpus} CPUs" in sentence
    if measured.chosen is not None and measured.chosen is not measured.plans[0]:
        assert f"running {measured.chosen.channels} channels" in sentence


def test_describe_names_what_runs_instead():
    plans = [capacity.Plan(1024, 10, 2, 3.1, 1.2, False), capacity.Plan(512, 10, 2, 1.0, 0.5, True)]
    measured = capacity.Capacity(2, 1.9, {"1024x10": 430.0, "512x10": 210.0},
                                 {"1024x10": 169.0, "512x10": 120.0}, plans, plans[1])
    sentence = capacity.describe(measured)
    assert sentence.startswith("This machine cannot sustain the default stream now")
    assert "~3.10 cores" in sentence and "1.90 of its 2 CPUs" in sentence
    assert "430 us" in sentence and "running 512 channels in 0.5 ms packets" in sentence
    assert not measured.default_fits


def test_summary_of_a_loss_says_what_and_the_advice_says_what_to_change():
    report = {"exact": False, "packets_sent": 20000, "packets_lost": 4433, "daemon_drops": 4433,
              "load_average": {"start": [1.1, 0, 0], "end": [2.3, 0, 0]},
              "latency_us": {"end_to_end": {"p50": 1200000.0, "p99": 2300000.0}}}
    lines, ok = demo.summary(report, 1024, 10, 2, 10)
    assert not ok
    assert lines[1] == "lost: 4,433 of 20,000 packets (4,433 dropped by the daemon, which fell behind)"
    text = demo.advice(report, 1024, 10)
    assert "load average 1.10 at the start, 2.30 at the end" in text
    assert "neurowire demo --channels 512" in text


def test_demo_streams_and_ends_with_what_ran_what_was_lost_and_the_latency():
    """The real pipeline through `neurowire bench stream`'s command line, small and short."""
    result = subprocess.run(
        [sys.executable, "-m", "neurowire.cli", "demo", "--seconds", "1", "--channels", "16"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("checking this machine's capacity")
    assert lines[1].startswith("This machine can")
    tail = "\n".join(lines[-4:])
    assert "ran: implant simulator -> daemon" in tail and "16 channels x 20 kHz" in tail
    assert "lost: nothing (2,000 of 2,000 packets arrived, all 320,000 samples exact)" in tail
    assert "latency: end to end p50 " in tail


def test_when_nothing_fits_the_smallest_size_is_tried_and_said_so(monkeypatch, capsys):
    smallest = capacity.Plan(16, 10, 1, 0.9, 0.5, False)
    too_busy = capacity.Capacity(1, 0.1, {"1024x10": 900.0, "16x10": 30.0},
                                 {"1024x10": 200.0, "16x10": 100.0},
                                 [capacity.Plan(1024, 10, 1, 9.0, 4.0, False), smallest], None)
    monkeypatch.setattr(capacity, "measure", lambda **_: too_busy)
    assert demo.main(["--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "cannot sustain even 16 channels in 0.5 ms packets now" in out
    assert "trying 16 channels in 0.5 ms packets anyway, beyond the margin" in out
    assert "--channels 16 --workers 1" in out
    assert "lost: nothing (2,000 of 2,000 packets arrived" in out


def test_the_serial_check_counts_the_daemons_share_of_the_hops_alone():
    one = capacity.plan(1024, 10, cpus=2, cores=2.0, encode_us=300, hop_us=50, workers=1)
    assert one.daemon_thread_share == pytest.approx((300 + capacity.DAEMON_HOPS * 50) / 500)
    two = capacity.plan(1024, 10, cpus=2, cores=2.0, encode_us=300, hop_us=50, workers=2)
    assert two.daemon_thread_share == pytest.approx(
        (300 * capacity.TEAM_CPU_FACTOR / 2 + capacity.DAEMON_HOPS * 50) / 500)


def _stream_report(streaming_us: dict, whole_run_cpu_s: dict, packets: int) -> dict:
    """The parts of a `neurowire bench stream --json` report that calibration reads."""
    return {"config": {"channels": 1024}, "packets_sent": packets, "packets_lost": 0,
            "cpu": {part: {"cpu_s": cpu_s} for part, cpu_s in whole_run_cpu_s.items()},
            "cpu_streaming": {part: {"us_per_packet": us} for part, us in streaming_us.items()}}


def test_calibration_counts_only_the_streaming_window_as_per_packet_work():
    # Start-up imports and the subscriber's reference table are in the whole run's CPU, not
    # in the window: they must not be taken for work each packet costs.
    report = _stream_report({"daemon": 350.0, "subscriber": 80.0, "simulator": 40.0},
                            {"daemon": 8.0, "subscriber": 3.0, "simulator": 1.5}, 20000)
    figures = capacity.calibration(report, encode_us=290.0, hop_us=60.0, workers=1)
    assert figures["hops_per_packet"] == pytest.approx((470 - 290) / 60, abs=0.01)
    assert figures["daemon_hops_per_packet"] == pytest.approx((350 - 290) / 60, abs=0.01)
    assert figures["whole_run_us_per_packet"] == pytest.approx(625.0)
    assert figures["whole_run_hops_per_packet"] == pytest.approx((625 - 290) / 60, abs=0.01)
    # A team's encoding costs TEAM_CPU_FACTOR times one thread's.
    team = capacity.calibration(report, encode_us=200.0, hop_us=60.0, workers=2)
    assert team["daemon_hops_per_packet"] == pytest.approx(
        (350 - 200 * capacity.TEAM_CPU_FACTOR) / 60, abs=0.01)
    # A daemon that did not answer its control endpoint at the end: its whole-run CPU is
    # unknown (None in bench stream's report), and so are the whole-run figures; the
    # streaming window's, measured from outside the daemon, stand.
    unanswered = _stream_report({"daemon": 350.0, "subscriber": 80.0, "simulator": 40.0},
                                {"daemon": None, "subscriber": 3.0, "simulator": 1.5}, 20000)
    figures = capacity.calibration(unanswered, encode_us=290.0, hop_us=60.0, workers=1)
    assert figures["whole_run_us_per_packet"] is None
    assert figures["whole_run_hops_per_packet"] is None
    assert figures["hops_per_packet"] == pytest.approx((470 - 290) / 60, abs=0.01)


def test_calibration_reads_a_real_stream_in_hops():
    result = subprocess.run(
        [sys.executable, "-m", "neurowire.cli", "bench", "capacity", "--calibrate", "16",
         "--seconds", "1"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["channels"] == 16 and figures["packets_lost"] == 0 and figures["workers"] == 1
    streaming = figures["streaming_us_per_packet"]
    assert set(streaming) == {"daemon", "simulator", "subscriber"}
    # The pipeline's CPU per packet covers at least its codec work and some hops' worth more.
    assert sum(streaming.values()) > figures["encode_us"]
    assert figures["hops_per_packet"] > 0 and figures["daemon_hops_per_packet"] > 0
