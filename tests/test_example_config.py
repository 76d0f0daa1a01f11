"""The example config (systemd/neurowire.toml) starts by hand from a clone as well as under
the units, on the endpoints every client connects to by default."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = os.path.join(REPO, "systemd", "neurowire.toml")
ENDPOINTS = ("ingest", "publish", "lossless", "control")


def test_example_config_uses_the_endpoints_every_client_defaults_to():
    import argparse

    from neurowire import wire
    from neurowire.clients import simulate
    from neurowire.clients.dashboard.cli import DEFAULT_CONTROL
    from neurowire.daemon.config import DaemonConfig, load_config

    config = load_config(EXAMPLE)
    built_in = DaemonConfig()
    for name in ENDPOINTS:
        assert getattr(config, name) == getattr(built_in, name), name
    simulator = simulate.configure_parser(argparse.ArgumentParser()).parse_args([])
    assert config.ingest == simulator.connect
    # The subscriber connects to the wire module's defaults when given no endpoint.
    assert (config.publish, config.lossless) == (wire.DEFAULT_PUBLISH, wire.DEFAULT_LOSSLESS)
    assert config.control == DEFAULT_CONTROL


def _ports_free():
    import socket

    for port in range(7340, 7345):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def test_example_config_starts_by_hand(tmp_path):
    """`neurowire daemon --config systemd/neurowire.toml` from a clone, outside systemd."""
    from neurowire.daemon.control import wait_ready

    if not _ports_free():
        pytest.skip("another daemon holds the default ports 7340-7344")
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "neurowire.cli", "daemon", "--config",
                               EXAMPLE], stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_ready("tcp://127.0.0.1:7343", timeout=20)
        assert status  # the control endpoint answers: every socket is bound
    finally:
        daemon.terminate()
        exit_code = daemon.wait(timeout=30)
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert exit_code == 0, text
    assert "listening: ingest=tcp://127.0.0.1:7340" in text
