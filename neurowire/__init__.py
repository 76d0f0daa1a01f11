"""neurowire: lossless real-time compression of raw electrode data from brain implants.

Parts: neurowire.codec (C core), neurowire.daemon (streaming service),
neurowire.clients (simulator, subscribers, dashboard), neurowire.archive (files)."""
try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("neurowire")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def subscribe(*args, **kwargs):
    """Decoded blocks of a daemon's stream: ``for block in neurowire.subscribe(...)``.

    Imported on first use so that ``import neurowire`` stays light (no ZeroMQ) for users
    of the codec alone; see neurowire.clients.subscribe.subscribe for the arguments."""
    from neurowire.clients.subscribe import subscribe as _subscribe

    return _subscribe(*args, **kwargs)
