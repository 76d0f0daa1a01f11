"""The unit files pass systemd's own checks."""

import os
import shutil
import subprocess

import debian_packages
import pytest

SYSTEMD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd")


def _find_or_install_analyze():
    """systemd-analyze, installed from Debian's `systemd` package on a fresh CI machine (as
    root), so the units are checked by systemd itself rather than skipped; at the version of
    the installed libsystemd0, so nothing installed is upgraded."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    problem = debian_packages.install("systemd", version_like="libsystemd0")
    if problem:
        print(problem)
    return shutil.which("systemd-analyze")


ANALYZE = _find_or_install_analyze()
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing and not installable (needs root and apt)")


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


@pytest.mark.parametrize("unit", ["neurowire.service", "neurowire@.service"])
def test_unit_lets_the_data_path_set_its_scheduling(unit):
    """The syscall filter drops @resources but must keep what pin_threads and
    realtime_priority call (a filtered call would kill the daemon or, with EPERM, silently
    cost it its CPUs); systemd's own assessment says which calls stay allowed."""
    result = subprocess.run([ANALYZE, "security", "--offline=yes", os.path.join(SYSTEMD, unit)],
                            capture_output=True, text=True, timeout=60)
    resources = [line for line in result.stdout.splitlines() if "~@resources" in line]
    assert resources and "is included" in resources[0], resources
    text = open(os.path.join(SYSTEMD, unit)).read()
    assert "SystemCallFilter=sched_setaffinity sched_setscheduler" in text
    assert "SystemCallErrorNumber=EPERM" in text and "LimitRTPRIO=" in text
