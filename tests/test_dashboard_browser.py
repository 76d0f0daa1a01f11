"""The live page in headless Chromium against a real daemon fed by the simulator.

Chromium is Debian's (browser downloads are impossible here): installed with apt-get when
missing, which needs root, as CI has, with its dependencies only and no upgrade of installed
packages (tests/debian_packages.py). Playwright drives it through executable_path.
"""
import json
import os
import re
import time

import debian_packages
import pytest

from neurowire.clients.dashboard.testing import CHROMIUM, CHROMIUM_ARGS, Pipeline

# Generous: the first test may have to apt-get install chromium on a fresh machine.
pytestmark = pytest.mark.timeout(900)

# A tenth of the real rate: the page does not care, and the machine is shared.
SIM_RATE = 2000.0


def ensure_chromium() -> str:
    if not os.path.exists(CHROMIUM):
        problem = debian_packages.install("chromium")
        if problem:
            pytest.skip(problem)
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright (PyPI) is not installed")
    path = ensure_chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def pipeline(tmp_path):
    # NW_DASHBOARD_FAKE_DAEMON=1 is for working on the page alone; CI never sets it.
    p = Pipeline(tmp_path, stream="implant7", rate=SIM_RATE, timeout=0.5,
                 fake=os.environ.get("NW_DASHBOARD_FAKE_DAEMON") == "1")
    try:
        yield p.start()
    finally:
        p.stop()


def ticks(page) -> int:
    return int(page.evaluate("document.body.dataset.ticks"))


def figures(page) -> dict:
    return page.evaluate("""() => {
        const t = (id) => document.getElementById(id).textContent;
        const rows = {};
        for (const tr of document.querySelectorAll('#lat-table tbody tr'))
            rows[tr.cells[0].textContent] = [...tr.cells].slice(1).map(c => c.textContent);
        return {pps: t('v-pps'), mbps_in: t('v-mbps-in'), mbps_out: t('v-mbps-out'),
                ratio: t('v-ratio'), keyframes: t('v-keyframes'), subs: t('v-subscribers'),
                e2e: t('v-e2e'), noise: t('v-noise'), rows,
                points: +document.body.dataset.points, lastT: +document.body.dataset.lastT,
                elements: document.getElementsByTagName('*').length};
    }""")


def test_live_page_moves_maps_1024_channels_and_survives_a_daemon_restart(browser, pipeline):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(pipeline.url)
        page.wait_for_selector("#daemon-status[data-state=up]", timeout=20000)
        # Figures appear once the simulator's packets have gone through the daemon.
        page.wait_for_function(
            "document.getElementById('v-mbps-in').textContent.includes('Mb/s') && "
            "document.getElementById('v-e2e').textContent.includes('s')", timeout=30000)
        assert page.locator("#stream-select option").first.get_attribute("value") == "implant7"

        # The channel map: one cell per channel, coloured from the daemon's per-channel ratios.
        assert page.locator("#chanmap .cell").count() == 1024
        page.wait_for_function(
            "[...document.querySelectorAll('#chanmap .cell')]"
            ".filter(c => c.style.background).length === 1024", timeout=10000)

        a = figures(page)
        t0, n0 = time.monotonic(), ticks(page)
        time.sleep(3.0)
        b = figures(page)
        rate = (ticks(page) - n0) / (time.monotonic() - t0)
        assert rate >= 4, f"{rate:.1f} updates per second"
        assert b["pps"] != a["pps"], "packet count does not move"
        assert b["points"] > a["points"] and b["lastT"] > a["lastT"], "charts do not move"
        for f in ("mbps_in", "mbps_out", "ratio", "e2e", "noise"):
            assert re.search(r"\d", b[f]), (f, b[f])
        assert float(b["ratio"]) > 1.5
        ingest = next(v for k, v in b["rows"].items() if k.startswith("ingest"))
        assert re.search(r"\d+(\.\d+)? (µs|ms)", ingest[0]), ingest
        assert b["elements"] == a["elements"], "the page's DOM grows"
        assert page.locator("#down-banner").is_hidden()

        # Kill the daemon: the page must say so plainly.
        pipeline.procs["daemon"].kill()
        pipeline.procs["daemon"].wait(10)
        page.wait_for_selector("#daemon-status[data-state=down]", timeout=10000)
        assert page.locator("#down-banner").is_visible()
        assert "unreachable" in page.locator("#down-banner").inner_text().lower()
        n_down = ticks(page)
        time.sleep(1.0)
        assert ticks(page) > n_down, "the page stopped updating while the daemon is down"

        # Restart it on the same endpoints: the page recovers with no help.
        pipeline.start_daemon()
        page.wait_for_selector("#daemon-status[data-state=up]", timeout=20000)
        page.wait_for_function("document.getElementById('down-banner').hidden", timeout=5000)
        c = figures(page)
        page.wait_for_function(
            f"document.getElementById('v-pps').textContent !== {c['pps']!r}", timeout=20000)
        # What the simulator sent while the daemon was away is a gap for the subscriber,
        # reported as a sample range.
        page.wait_for_function(
            "(() => { const r = document.querySelector('#subs-table tbody tr');"
            " return r && +r.cells[4].textContent.replace(/,/g, '') >= 1"
            " && /\\d+–\\d+/.test(r.cells[5].textContent); })()", timeout=20000)
        # The dashboard's subscriber decoded blocks, and each equals what the daemon received.
        snap = json.loads(page.evaluate("fetch('/api/snapshot').then(r => r.text())"))
        assert snap["tap"]["verified_blocks"] > 0, snap["tap"]
        assert snap["tap"]["mismatched_blocks"] == 0 and snap["tap"]["decode_errors"] == 0
        assert not errors, errors
    except Exception:
        print(pipeline.logs())
        shot = os.path.join(pipeline.dir, "failure.png")
        page.screenshot(path=shot, full_page=True)
        print("screenshot:", shot)
        raise
    finally:
        page.close()


def test_feed_bandwidth_against_the_link_from_a_daemon_with_feeds(browser, tmp_path):
    """A real daemon serving spikes and power: the page shows each feed's kbit/s and share
    of the configured link, the lossless stream beside them, with the daemon's counts."""
    from neurowire.daemon.control import query

    # 32 channels at the real rate (the detector's windows are in ms) in 5 ms packets: light.
    pipeline = Pipeline(tmp_path, stream="imp3", channels=32, rate=20000.0, timeout=0.5,
                        feeds=("spikes", "power"), packet_samples=100, link_mbps=0.25)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pipeline.start()
        page.goto(pipeline.url)
        page.wait_for_selector("#daemon-status[data-state=up]", timeout=20000)
        assert "0.25" in page.locator("#feeds-link").inner_text()
        for feed in ("spikes", "power"):
            page.wait_for_function(
                f"(() => {{ const r = document.querySelector('#feeds-table tr[data-feed={feed}]');"
                " return r && /kbit\\/s/.test(r.cells[1].textContent)"
                " && /\\d %/.test(r.cells[3].textContent)"
                " && +r.cells[5].textContent.replace(/,/g, '') > 0; })()", timeout=30000)
        # The lossless row's rate needs two of the daemon's counter readings: wait for it too.
        page.wait_for_function(
            "(() => { const r = document.querySelector('#feeds-table tr[data-feed=lossless]');"
            " return r && r.dataset.fits !== ''; })()", timeout=30000)
        rows = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
            '#feeds-table tbody tr')].map(tr => [tr.dataset.feed, {
                cells: [...tr.cells].map(c => c.textContent), fits: tr.dataset.fits,
                bar: tr.querySelector('.meter span').style.width}]))""")
        assert list(rows) == ["lossless", "power", "spikes"], rows
        # 32 channels of lossless at 20 kHz are ~3 Mbit/s: far over a 0.25 Mbit/s link.
        assert rows["lossless"]["fits"] == "false" and rows["lossless"]["bar"] == "100%"
        stats = query(pipeline.ep["control"], "stats")["streams"]["imp3"]["feeds"]
        for feed in ("spikes", "power"):
            kbps = float(re.match(r"([\d,.]+) kbit/s", rows[feed]["cells"][1])[1]
                         .replace(",", ""))
            share = float(rows[feed]["cells"][3].rstrip(" %").replace(",", ""))
            assert kbps > 0 and share == pytest.approx(kbps / 250 * 100, rel=0.02, abs=0.02)
            # The page's figure is the daemon's average at an earlier tick; it grows early on
            # (no events during the detector's warm-up), so only its order is compared.
            assert stats[feed]["messages"] > 0 and 0.2 < stats[feed]["bits_per_s"] / 1e3 / kbps < 5
        assert int(rows["spikes"]["cells"][6].replace(",", "")) > 0  # spike events counted
        assert "no feeds" not in page.locator("#feeds-info").inner_text()
        assert not errors, errors
    except Exception:
        print(pipeline.logs())
        page.screenshot(path=os.path.join(pipeline.dir, "failure.png"), full_page=True)
        raise
    finally:
        page.close()
        pipeline.stop()


def test_page_reaches_a_steady_state_that_does_not_grow_and_switches_streams(browser,
                                                                             tmp_path):
    """An hour at 5 updates/s is 18000 updates; what matters is that past the history length
    nothing grows any more. A short history and a fast tick get there in seconds: after the
    charts are full, the DOM size, the JS heap and the cost of an update must stay put."""
    from neurowire.clients.dashboard.testing import (
        FakeDaemon, free_port, start_process, stop_process, wait_for_line)

    control = f"tcp://127.0.0.1:{free_port()}"
    fake = FakeDaemon(control, f"tcp://127.0.0.1:{free_port()}", publish_hz=50).start()
    log = str(tmp_path / "dashboard.log")
    dash = start_process(["-m", "neurowire.cli", "dashboard", "--control", control,
                          "--port", "0", "--interval", "0.04", "--history", "8",
                          "--no-tap"], log)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    cdp = page.context.new_cdp_session(page)
    try:
        url = re.search(r"(http://\S+)", wait_for_line(log, "dashboard: http://", 30, dash))[1]
        page.goto(url)
        page.wait_for_function("+document.body.dataset.points >= 200", timeout=60000)

        def sample():
            cdp.send("HeapProfiler.collectGarbage")
            return page.evaluate("""() => ({ticks: +document.body.dataset.ticks,
                elements: document.getElementsByTagName('*').length,
                heap: performance.memory.usedJSHeapSize,
                ms: +document.body.dataset.tickMs})""")

        first = sample()
        page.wait_for_function(f"+document.body.dataset.ticks >= {first['ticks'] + 400}",
                               timeout=90000)
        last = sample()
        print("steady state:", first, last)
        assert page.evaluate("+document.body.dataset.points") == 200
        assert last["elements"] == first["elements"]
        assert last["heap"] < first["heap"] * 1.5 + 2e6, (first, last)
        assert last["ms"] < first["ms"] * 3 + 5, (first, last)

        # The stream selector: the fake's second implant has its own ratio (3.5).
        assert page.locator("#stream-select option").count() == 2
        assert page.locator("#v-ratio").inner_text() == "3.400"
        page.select_option("#stream-select", "imp1")
        page.wait_for_function("document.getElementById('v-ratio').textContent === '3.500'",
                               timeout=10000)
        assert page.evaluate("location.hash") == "#imp1"
        page.reload()  # the choice survives a reload
        page.wait_for_function("document.getElementById('v-ratio').textContent === '3.500'",
                               timeout=10000)

        # The dashboard server itself goes away and comes back on the same port.
        stop_process(dash)
        page.wait_for_selector("#server-banner", state="visible", timeout=10000)
        port = url.rstrip("/").rsplit(":", 1)[1]
        dash = start_process(["-m", "neurowire.cli", "dashboard", "--control", control,
                              "--port", port, "--no-tap"], str(tmp_path / "dashboard2.log"))
        n = ticks(page)
        page.wait_for_function(f"+document.body.dataset.ticks > {n}", timeout=30000)
        page.wait_for_selector("#server-banner", state="hidden", timeout=5000)
        assert page.locator("#v-ratio").inner_text() == "3.500"
    finally:
        page.close()
        stop_process(dash)
        fake.stop()
