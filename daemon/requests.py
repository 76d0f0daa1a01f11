"""Requests the daemon reads as msgpack maps (control, lossless subscribers): bounded
decoding of untrusted bytes, in one place."""

from __future__ import annotations

import msgpack

from neurowire.wire import Rejected

MAX_REQUEST_BYTES = 1024


def unpack_small_map(data, limit: int = MAX_REQUEST_BYTES) -> dict:
    """Decode a msgpack map from the network with every size bounded; Rejected otherwise."""
    if len(data) > limit:
        raise Rejected("header", f"{len(data)} bytes, limit {limit}")
    try:
        value = msgpack.unpackb(data, max_str_len=256, max_bin_len=256,
                                max_array_len=256, max_map_len=64, max_ext_len=0,
                                strict_map_key=True, raw=False)
    except Exception as error:  # msgpack raises several unrelated types for bad input
        raise Rejected("header", f"not msgpack: {error}") from None
    if not isinstance(value, dict):
        raise Rejected("header", "not a map")
    return value
