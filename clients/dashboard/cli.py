"""``neurowire dashboard``: the live latency dashboard, served on localhost."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys

from aiohttp import web

from neurowire.wire import DEFAULT_CONTROL
from neurowire import options
from neurowire.options import bounded, endpoint, port

from .control import load_curve
from .server import Monitor, make_app

DEFAULT_PORT = 8765

log = logging.getLogger(__name__)


def default_control() -> str:
    """The daemon's own default control endpoint (neurowire.wire), so both agree."""
    return DEFAULT_CONTROL


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--control", default=None, metavar="ENDPOINT", type=endpoint,
                        help="daemon control endpoint (default: the daemon's default, "
                             f"{DEFAULT_CONTROL} if unknown)")
    parser.add_argument("--publish", default=None, metavar="ENDPOINT", type=endpoint,
                        help="daemon publish endpoint for the dashboard's own subscriber "
                             "(default: asked from the daemon's config)")
    parser.add_argument("--host", default="127.0.0.1", type=_host,
                        help="address to serve the page on (default: %(default)s)")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT,
                        help="port to serve the page on; 0 picks a free one "
                             "(default: %(default)s)")
    parser.add_argument("--interval", type=bounded(float, 0.01, 3600, what="the interval"), default=0.2, metavar="S",
                        help="seconds between updates (default: %(default)s)")
    parser.add_argument("--timeout", type=bounded(float, 0, 3600, low_open=True, what="the timeout"), default=1.0, metavar="S",
                        help="seconds to wait for a daemon reply (default: %(default)s)")
    parser.add_argument("--history", type=bounded(float, 0, 86400, what="the history"), default=120.0, metavar="S",
                        help="seconds of history kept for a newly opened page "
                             "(default: %(default)s)")
    parser.add_argument("--no-tap", action="store_true",
                        help="do not subscribe to the stream (no receive/decode latency)")
    parser.add_argument("--decode-ms", type=bounded(float, 0, 60_000, what="the decoded span"), default=25.0, metavar="MS",
                        help="ms of signal decoded after each keyframe by the dashboard's "
                             "subscriber (default: %(default)s)")
    parser.add_argument("--link-mbps", type=bounded(float, 0, 1e6, low_open=True, what="the link capacity"), default=1.0, metavar="MBPS",
                        help="link capacity each feed's bandwidth is shown against "
                             "(default: %(default)s, an implant radio)")
    parser.add_argument("--server-key", type=options.path, metavar="FILE",
                        help="the daemon's public CURVE certificate (zmq.auth format), for a "
                             "daemon bound beyond loopback")
    parser.add_argument("--client-cert", type=options.path, metavar="FILE",
                        help="this client's CURVE certificate with its secret key; its public "
                             "key must be in the daemon's client_keys_dir")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


async def _serve(args, curve) -> int:
    monitor = Monitor(args.control or default_control(), interval_s=args.interval,
                      timeout_s=args.timeout, data_endpoint=args.publish,
                      tap=not args.no_tap, decode_ms=args.decode_ms, history_s=args.history,
                      curve=curve, link_mbps=args.link_mbps)
    runner = web.AppRunner(make_app(monitor), handle_signals=False, access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as error:  # a port in use, a host that does not resolve or is not ours
        await runner.cleanup()
        print(f"neurowire dashboard: cannot serve on {args.host}:{args.port}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    port = site._server.sockets[0].getsockname()[1]  # the real port when --port 0
    # One parseable line, so scripts and tests that start us can find the page.
    print(f"dashboard: http://{args.host}:{port}/ (daemon control {monitor.control.endpoint})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def run(args) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    curve = None
    if args.server_key or args.client_cert:
        if not (args.server_key and args.client_cert):
            print("neurowire dashboard: --server-key and --client-cert go together",
                  file=sys.stderr)
            return 2
        try:
            curve = load_curve(args.server_key, args.client_cert)
        except (OSError, ValueError) as e:
            print(f"neurowire dashboard: {e}", file=sys.stderr)
            return 2
    if not _is_loopback(args.host):
        log.warning("serving on %s: the page has no authentication; anyone who can reach "
                    "this address sees the daemon's figures", args.host)
    return asyncio.run(_serve(args, curve))


def _host(text: str) -> str:
    """An argparse type: an empty host would serve on every interface without saying so."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty host; give 127.0.0.1, or 0.0.0.0 to serve "
                                         "on every interface")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="neurowire dashboard",
                                                      description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
