"""The unit files pass systemd's own checks."""

import os
import shutil
import subprocess

import pytest

SYSTEMD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd")
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)")


@pytest.mark.parametrize("unit", ["neurowire.service", "neurowire@.service"])
def test_unit_verifies_cleanly(unit):
    # verify exits 0 even on unknown keys; anything on stderr is a finding.
    result = subprocess.run([ANALYZE, "verify", os.path.join(SYSTEMD, unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("unit", ["neurowire.service", "neurowire@.service"])
def test_unit_is_hardened(unit):
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=20",
                             os.path.join(SYSTEMD, unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


@pytest.mark.parametrize("unit", ["neurowire.service", "neurowire@.service"])
def test_unit_is_notify_with_watchdog(unit):
    text = open(os.path.join(SYSTEMD, unit)).read()
    for line in ("Type=notify", "WatchdogSec=", "DynamicUser=yes", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "RuntimeDirectory=", "KillSignal=SIGTERM"):
        assert line in text, line
