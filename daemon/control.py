"""Client side of the control endpoint, kept here for existing imports: it lives in
neurowire.wire, which clients import instead of the daemon."""

from neurowire.wire import ControlTimeout, query, wait_ready

__all__ = ["ControlTimeout", "query", "wait_ready"]
