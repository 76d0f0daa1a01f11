"""Requests the daemon reads as msgpack maps (control, lossless subscribers): bounded
decoding of untrusted bytes, in one place."""

from __future__ import annotations

import collections
import time

import msgpack

from neurowire.wire import Rejected

# A request (control, lossless) is a small map. One of up to this many bytes is decoded and
# answered, whatever it holds (padding, a long list: an error reply at worst, counted); a
# larger frame is refused unread and counted as "request_size".
MAX_REQUEST_BYTES = 64 * 1024
# libzmq cuts the connection of a peer whose frame exceeds the socket's MAXMSGSIZE, which the
# daemon never sees (nothing to count, no reply): so the sockets take frames far larger than
# any request, and only a deliberately huge one meets that limit.
REQUEST_FRAME_LIMIT = 16 * MAX_REQUEST_BYTES


def unpack_small_map(data, limit: int = MAX_REQUEST_BYTES) -> dict:
    """Decode a msgpack map from the network with every size bounded; Rejected otherwise."""
    if len(data) > limit:
        raise Rejected("request_size", f"a request of {len(data)} bytes, limit {limit}")
    try:
        # Each length is bounded by the request's size, so nothing is allocated ahead.
        value = msgpack.unpackb(data, max_str_len=limit, max_bin_len=limit,
                                max_array_len=limit, max_map_len=limit, max_ext_len=0,
                                strict_map_key=True, raw=False)
    except Exception as error:  # msgpack raises several unrelated types for bad input
        raise Rejected("header", f"not msgpack: {error}") from None
    if not isinstance(value, dict):
        raise Rejected("header", "not a map")
    return value


class RateLimit:
    """Requests per second per client (a token bucket of one second's worth each), and four
    times that for all clients together, so neither one client nor many reconnecting ones
    keep the daemon busy answering. Remembers at most `max_clients` clients."""

    def __init__(self, per_second: float, max_clients: int = 1024):
        self.per_second = per_second
        self.max_clients = max_clients
        self.buckets: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self.everyone = [4 * per_second, time.monotonic()]

    def allow(self, client: bytes) -> bool:
        now = time.monotonic()
        bucket = self.buckets.pop(client, None) or [self.per_second, now]
        self.buckets[client] = bucket  # most recent last
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return self._refill_take(bucket, 1, now) and self._refill_take(self.everyone, 4, now)

    def _refill_take(self, bucket: list, scale: int, now: float) -> bool:
        capacity = scale * self.per_second
        bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * capacity)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False
