"""What the tests may install: tests/debian_packages.py reads apt's plan before acting."""
import shutil
import subprocess

import pytest

import debian_packages

# Lines of `apt-get -s install chromium` (with recommends) on Debian 12, where the recommended
# udev needed a newer libudev1 than the installed one.
PLAN_WITH_UPGRADES = """\
Inst libudev1 [252.38-1~deb12u1] (252.39-1~deb12u2 Debian:12.15/oldstable [amd64])
Inst udev (252.39-1~deb12u2 Debian:12.15/oldstable [amd64])
Inst libgtk-3-0 (3.24.38-2~deb12u3 Debian:12.15/oldstable [amd64])
Inst systemd [252.38-1~deb12u1] (252.39-1~deb12u2 Debian:12.15/oldstable [amd64]) []
Conf udev (252.39-1~deb12u2 Debian:12.15/oldstable [amd64])
"""


def test_upgrades_are_read_from_apts_plan():
    assert debian_packages.upgrades_in(PLAN_WITH_UPGRADES) == [
        "libudev1 252.38-1~deb12u1", "systemd 252.38-1~deb12u1"]
    only_new = "\n".join(line for line in PLAN_WITH_UPGRADES.splitlines() if "[2" not in line)
    assert debian_packages.upgrades_in(only_new) == []


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="not a Debian system")
def test_installed_version_of_a_package_and_of_none():
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dpkg"],
                             capture_output=True, text=True).stdout
    assert debian_packages.installed_version("dpkg") == version
    assert debian_packages.installed_version("no-such-package-neurowire") is None
