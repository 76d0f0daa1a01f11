"""neurowire daemon: takes raw implant packets in, compresses them once, fans them out.

Data path: implant (PUSH) -> daemon ingest (PULL) -> GroupEncoder -> live subscribers (XPUB,
topic = stream id) and lossless subscribers (ROUTER with credit); the wire format is
neurowire.wire's. Control is REQ/REP msgpack, metrics are Prometheus text on HTTP.

Threads: one data thread owns the data sockets (datapath.py); `workers - 1` encoder threads
code channel groups 1.. of each block; the asyncio loop serves control, the watchdog and
shutdown (service.py). One file per concern: see service.py's docstring.
"""

from .config import ConfigError, DaemonConfig, load_config
from .service import Daemon, DaemonThread

__all__ = ["ConfigError", "DaemonConfig", "load_config", "Daemon", "DaemonThread"]
