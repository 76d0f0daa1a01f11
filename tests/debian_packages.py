"""Installing a Debian package a test needs, and nothing more (used by the browser and systemd
tests on a fresh CI machine, which runs as root with apt reachable).

Only the package's own dependencies (`--no-install-recommends`: Chromium's recommends pulled
~100 more packages, avahi-daemon, cups and samba helpers among them), and never an upgrade of
an installed package: apt is asked first with `-s` and when its plan upgrades anything (a
newly installed package wanting a newer library than the one installed) nothing is installed
and the caller gets the reason.
"""
import os
import re
import shutil
import subprocess

# "Inst libudev1 [252.38-1~deb12u1] (252.39-1~deb12u2 ...)": the bracket is the installed
# version, so the line is an upgrade.
_UPGRADE = re.compile(r"^Inst (\S+) \[([^\]]+)\]", re.M)
_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def installed_version(package: str):
    """The installed version of `package`, or None."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
                            capture_output=True, text=True)
    status, _, version = result.stdout.partition(" ")
    return version.strip() if result.returncode == 0 and status.startswith("ii") else None


def _apt(*arguments, timeout=900):
    return subprocess.run(["apt-get", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=_ENV)


def upgrades_in(simulation: str) -> list:
    """Installed packages an `apt-get -s install` plan would upgrade."""
    return [f"{name} {version}" for name, version in _UPGRADE.findall(simulation)]


def install(package: str, version_like: str = None):
    """Installs `package` (with `version_like`: at the version of that installed package, as
    systemd must match libsystemd0).  Returns None when done, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{package} is missing and apt-get cannot install it here (needs root)"
    update = _apt("update", "-qq")
    if update.returncode:
        return f"apt-get update failed: {update.stderr.strip()[-300:]}"
    target = package
    if version_like and installed_version(version_like):
        target = f"{package}={installed_version(version_like)}"
    flags = ["-y", "-qq", "--no-install-recommends", "--no-upgrade"]
    plan = _apt("-s", "install", *flags, target)
    if plan.returncode:
        return f"apt-get cannot install {target}: {plan.stderr.strip()[-300:]}"
    upgrades = upgrades_in(plan.stdout)
    if upgrades:
        return (f"installing {target} would upgrade installed packages ({', '.join(upgrades)});"
                f" not done: install it by hand (apt-get install --no-install-recommends "
                f"{package}) if that is fine on this machine")
    result = _apt("install", *flags, target)
    if result.returncode:
        return f"apt-get install {target} failed: {result.stderr.strip()[-300:]}"
    return None
