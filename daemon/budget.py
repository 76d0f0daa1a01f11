"""The daemon's worst-case memory, from its config: every queue it keeps is bounded, in
packets or messages and in bytes, so the sum below is a bound, not an estimate.

What it cannot bound by config alone is said in its arguments: the largest packet senders
really use (`packet_bytes`, at most the config's), how many implant connections and live
subscribers are open at once (libzmq queues per connection). `status` reports the bound for
one of each at the largest packet; the README shows the formula and an example."""

from __future__ import annotations

# Measured: RSS of an idle daemon (interpreter, numpy, libzmq, the codec) is about 50 MiB;
# this is that, doubled.
BASE_BYTES = 96 * 2**20
# Measured: codec state (encoder and per-channel predictors) grows RSS by about 1.4 KB per
# channel (`GroupEncoder`, 4096 channels); rounded up.
CODEC_BYTES_PER_CHANNEL = 2048
HEADER_BYTES = 256  # an ingest or block header frame with its topic, and libzmq's framing
LOSSLESS_IN_FLIGHT = 1000  # the lossless ROUTER's sndhwm (sockets.py), per subscriber


def memory_bound(config, packet_bytes: int | None = None, connections: int = 1,
                 live_subscribers: int = 1) -> dict:
    """{part: bytes} and "total"; `packet_bytes`: the largest packet payload (default the
    largest the daemon accepts)."""
    packet = min(packet_bytes or config.max_packet_bytes(), config.max_packet_bytes())
    message = packet + HEADER_BYTES
    # A block is never larger than its packet by more than the codec's framing (stored).
    block = packet + HEADER_BYTES + 64 * (config.workers + 1)
    streams = config.max_streams
    in_flight = min(config.lossless_max_messages, LOSSLESS_IN_FLIGHT)
    parts = {
        "base": BASE_BYTES,
        "ingest_queue": connections * config.ingest_hwm * message,
        # the byte limit may be passed by one packet: the newest is always kept
        "backlogs": streams * min(config.max_backlog_bytes + message,
                                  config.max_backlog_packets * message),
        "codec_state": streams * config.max_channels * CODEC_BYTES_PER_CHANNEL,
        "latency_windows": streams * 4 * config.latency_window * 8,
        "lossless": config.lossless_max_subscribers * (
            min(config.lossless_max_bytes + block, config.lossless_max_messages * block)
            + in_flight * block),
        "live": live_subscribers * config.live_hwm * block,
        "feeds": config.feed_queue_packets * message if config.feeds else 0,
    }
    parts["total"] = sum(parts.values())
    return parts
