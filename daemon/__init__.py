"""neurowire daemon: takes raw implant packets in, compresses them once, fans them out.

Data path: implant (PUSH) -> daemon ingest (PULL) -> StreamEncoder -> live subscribers (XPUB,
topic = stream id) and lossless subscribers (ROUTER with credit).  Control is REQ/REP msgpack,
metrics are Prometheus text on HTTP.
"""

from .config import ConfigError, DaemonConfig, load_config
from .service import Daemon, DaemonThread

__all__ = ["ConfigError", "DaemonConfig", "load_config", "Daemon", "DaemonThread"]
