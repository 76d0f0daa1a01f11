"""Live latency dashboard for a neurowire daemon (``neurowire dashboard``)."""
