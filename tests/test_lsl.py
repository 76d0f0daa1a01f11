"""clients/lsl.py: decoded blocks published as an LSL outlet, received by a real pylsl inlet
over loopback; time stamps follow the sample index, gaps included.

liblsl binds its outlet's data and time servers to every interface (its ListenAddress only
covers multicast), and servers a test starts must listen on loopback only. So the cases run
in a child pytest inside a network namespace of its own, whose only interface is loopback;
where no namespace can be made (not root), they are skipped with that reason."""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pylsl = pytest.importorskip("pylsl")
IN_PRIVATE_NETWORK = os.environ.get("NEUROWIRE_TEST_NETNS") == "1"


@pytest.mark.skipif(IN_PRIVATE_NETWORK, reason="already inside the namespace")
def test_lsl_cases_in_a_loopback_only_network_namespace():
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    script = f'{ip} link set lo up && exec "$0" -m pytest -q -p no:cacheprovider -k "not namespace" "$1"'
    result = subprocess.run(
        [unshare, "--net", "sh", "-c", script, sys.executable, __file__],
        env={**os.environ, "NEUROWIRE_TEST_NETNS": "1"}, capture_output=True, text=True,
        timeout=180)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # Every case ran and passed: none skipped (pylsl or a resolve failing to find the outlet).
    assert re.search(r"^\d+ passed, \d+ deselected in ", result.stdout, re.M), result.stdout[-2000:]


# The cases themselves: run by the test above, inside the namespace.
inside_namespace = pytest.mark.skipif(
    not IN_PRIVATE_NETWORK, reason="run inside a loopback-only network namespace by the test above")

from neurowire.clients.lsl import LslWriter, configure_loopback  # noqa: E402
from neurowire.clients.subscribe import Block, Gap  # noqa: E402

RATE = 19531.0
configure_loopback()  # before this process's first LSL call


def block(first, samples, gaps=()):
    return Block("imp1", first, samples, RATE, first // 20, first == 0, {}, list(gaps))


def receive(inlet, count, timeout=15.0):
    rows, stamps = [], []
    deadline = time.monotonic() + timeout
    while len(rows) < count and time.monotonic() < deadline:
        chunk, chunk_stamps = inlet.pull_chunk(timeout=0.5)
        rows += chunk
        stamps += chunk_stamps
    return np.array(rows, np.int16), np.array(stamps)


@pytest.fixture
def outlet_and_inlet():
    name = f"neurowire-test-{time.time_ns()}"
    writer = LslWriter(name)
    rng = np.random.default_rng(3)
    first = block(0, rng.integers(-2000, 2000, (20, 6)).astype(np.int16))
    writer.write(first)  # the outlet appears with its first block
    (info,) = pylsl.resolve_byprop("name", name, timeout=10)
    inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=0)
    inlet.open_stream(timeout=10)
    yield writer, inlet, rng
    inlet.close_stream()
    writer.close()


@inside_namespace
def test_blocks_arrive_exact_with_stamps_from_the_sample_index(outlet_and_inlet):
    writer, inlet, rng = outlet_and_inlet
    full = inlet.info(timeout=10)
    assert (full.channel_count(), full.nominal_srate(), full.channel_format()) == \
        (6, RATE, pylsl.cf_int16)
    description = full.desc()
    assert description.child("channels").child("channel").child_value("label") == "ch0000"
    stamp0 = float(description.child("acquisition").child_value("stamp_of_sample_0"))
    assert stamp0 == writer.stamp_of_sample_0

    blocks = [block(20 * i, rng.integers(-2000, 2000, (20, 6)).astype(np.int16))
              for i in range(1, 6)]
    # Samples 120..159 never arrived (a gap reported on the next block).
    late = block(160, rng.integers(-2000, 2000, (30, 6)).astype(np.int16),
                 [Gap("imp1", 120, 160, "delivery")])
    for b in blocks + [late]:
        writer.write(b)
    rows, stamps = receive(inlet, 130)
    expected = np.concatenate([b.samples for b in blocks + [late]])
    np.testing.assert_array_equal(rows, expected)
    index = np.concatenate([np.arange(20, 120), np.arange(160, 190)])
    np.testing.assert_allclose(stamps, stamp0 + index / RATE, rtol=0, atol=1e-6)
    assert np.isclose(stamps[100] - stamps[99], 41 / RATE)  # the 40 lost samples' time
    assert writer.samples_pushed == 20 + 130


@inside_namespace
def test_a_block_of_another_shape_is_refused(outlet_and_inlet):
    writer, _, _ = outlet_and_inlet
    with pytest.raises(ValueError, match="7 channels"):
        writer.write(block(20, np.zeros((10, 7), np.int16)))
    with pytest.raises(ValueError, match="name"):
        LslWriter("")


@inside_namespace
def test_subscribe_lsl_makes_one_outlet_per_stream_named_after_it():
    from neurowire.clients.lsl import LslOutlets

    prefix = f"nw-outlets-{time.time_ns()}"
    outlets = LslOutlets(prefix, single_stream=False)
    samples = np.arange(40, dtype=np.int16).reshape(10, 4)
    for stream in ("imp1", "imp2"):
        outlets.write(Block(stream, 0, samples, RATE, 0, True, {}, []))
    names = sorted(info.name() for info in pylsl.resolve_byprop("type", "ExG", minimum=2,
                                                                 timeout=10)
                   if info.name().startswith(prefix))
    assert names == [f"{prefix}-imp1", f"{prefix}-imp2"]
    outlets.close()
    single = LslOutlets(prefix + "-one", single_stream=True)
    single.write(Block("imp1", 0, samples, RATE, 0, True, {}, []))
    assert [info.name() for info in pylsl.resolve_byprop("name", prefix + "-one", timeout=10)] \
        == [prefix + "-one"]
    single.close()


def test_subscribe_accepts_lsl():
    import argparse

    from neurowire.clients import subscribe

    args = subscribe.configure_parser(argparse.ArgumentParser()).parse_args(["--lsl", "lab"])
    assert args.lsl == "lab"
