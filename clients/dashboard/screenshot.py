"""Screenshot of the live dashboard: ``python -m neurowire.clients.dashboard.screenshot OUT.png``.

Without ``--url`` it starts a daemon, the simulator and the dashboard on free loopback ports,
lets the figures fill for ``--warmup`` seconds, saves a full-page PNG and stops them all.
Uses Debian's Chromium through Playwright (``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from neurowire import options
from neurowire.options import bounded

from .testing import CHROMIUM, CHROMIUM_ARGS, Pipeline


def shoot(url: str, out: str, width: int, height: int, settle_s: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_selector("#daemon-status[data-state=up]", timeout=30000)
            time.sleep(settle_s)  # let the time charts gather some history
            page.mouse.move(1, 1)  # no hover highlight in the picture
            page.screenshot(path=out, full_page=True)
        finally:
            browser.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurowire.clients.dashboard.screenshot",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("out", help="PNG to write (the README uses docs/dashboard.png)")
    ap.add_argument("--url", help="an already running dashboard; default: start a pipeline")
    ap.add_argument("--warmup", type=bounded(float, 0, 3600, what="the warm-up"), default=15.0, metavar="S",
                    help="seconds of live data before the picture (default: %(default)s)")
    ap.add_argument("--rate", type=bounded(float, 0, 1e6, low_open=True, what="the rate"), default=20000.0,
                    help="simulator sample rate (default: %(default)s)")
    ap.add_argument("--channels", type=options.channels, default=1024)
    ap.add_argument("--workers", type=options.workers, help="the daemon's --workers (channel groups)")
    ap.add_argument("--width", type=bounded(int, 100, 10_000, what="the width"), default=1500)
    ap.add_argument("--height", type=bounded(int, 100, 10_000, what="the height"), default=1100)
    args = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if args.url:
        shoot(args.url, out, args.width, args.height, args.warmup)
    else:
        with tempfile.TemporaryDirectory(prefix="nw-shot-") as tmp:
            pipe = Pipeline(tmp, channels=args.channels, rate=args.rate, workers=args.workers)
            try:
                pipe.start()
                shoot(pipe.url, out, args.width, args.height, args.warmup)
            except Exception:
                print(pipe.logs(), file=sys.stderr)
                raise
            finally:
                pipe.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
