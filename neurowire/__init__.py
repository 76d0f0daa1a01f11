"""neurowire: lossless real-time compression of raw electrode data from brain implants.

Parts: neurowire.codec (C core), neurowire.daemon (streaming service),
neurowire.clients (simulator, subscribers, dashboard), neurowire.archive (files)."""
try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("neurowire")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
