"""`neurowire daemon [--config FILE]`: run the daemon in the foreground (systemd, a terminal)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from neurowire import options
from neurowire.options import bounded


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Compress implant packets and publish them to subscribers. "
                          "Logs go to stderr (journald).")
    parser.add_argument("--config", type=options.path, metavar="FILE",
                        help="TOML config (see systemd/neurowire.toml); default: built-in "
                             "loopback endpoints")
    parser.add_argument("--ingest", help="override [daemon] ingest endpoint")
    parser.add_argument("--publish", help="override [daemon] publish endpoint")
    parser.add_argument("--lossless", help="override [daemon] lossless endpoint")
    parser.add_argument("--control", help="override [daemon] control endpoint")
    parser.add_argument("--metrics", help="override [daemon] metrics HOST:PORT ('' = off)")
    parser.add_argument("--workers", type=bounded(int, 0, 64, what="the workers"),
                        help="channel groups encoded in parallel (0: one per CPU)")
    parser.add_argument("--feeds", type=lambda text: [f for f in text.split(",") if f],
                        metavar="LIST", help="override [daemon] feeds, e.g. spikes,power,bounded "
                                             "('' = none)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the configuration in effect as JSON and exit")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    overrides = {key: getattr(args, key) for key in
                 ("ingest", "publish", "lossless", "control", "metrics", "workers", "log_level",
                  "feeds")
                 if getattr(args, key, None) is not None}
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as error:
        print(f"neurowire daemon: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        try:
            print(json.dumps(config.to_dict(), indent=2), flush=True)
        except BrokenPipeError:  # `| head`: the reader has all it wanted
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from .service import Daemon

    try:
        asyncio.run(Daemon(config, install_signal_handlers=True).run())
    except zmq_error_types() as error:
        logging.getLogger("neurowire.daemon").error("cannot start: %s", error)
        return 1
    except Exception:  # an internal fault: non-zero, so Restart=on-failure restarts it
        logging.getLogger("neurowire.daemon").critical("daemon failed", exc_info=True)
        return 70  # EX_SOFTWARE
    return 0


def zmq_error_types():
    import zmq

    return (zmq.ZMQError, OSError)


def main(argv=None) -> int:
    return run(configure_parser(argparse.ArgumentParser(prog="neurowire daemon"))
               .parse_args(argv))
