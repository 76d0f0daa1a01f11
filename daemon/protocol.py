"""Wire formats: a small msgpack header frame, then the payload as raw frame(s).

Ingest (implant PUSH -> daemon PULL), two frames:
    header  msgpack map {"v": 1, "stream": str, "seq": int, "first": int, "n": int,
                         "ch": int, "rate": float, "t_acq": int (ns, CLOCK_REALTIME)}
    samples n x ch int16 little-endian, row = one time step

Publish (daemon -> subscribers), frames:
    topic   stream id + b"\\0" (the NUL stops "imp1" from matching "imp10")
    header  msgpack map, see `publish_header`
    blob..  one codec block per channel group (one frame with the default workers = 1)

Lossless subscribers speak to a ROUTER: they send msgpack maps {"cmd": "hello", "streams":
[...] | None, "credit": n}, {"cmd": "credit", "n": k}, {"cmd": "bye"}, and get the publish
frames above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1024
STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_MAX_INT = 2**63 - 1


class Rejected(Exception):
    """An input message the daemon will not use; `reason` is the counter it goes to."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Packet:
    stream: str
    seq: int
    first_sample: int
    n_samples: int
    channels: int
    rate: float
    acquired_ns: int
    received_ns: int
    samples: memoryview  # n_samples * channels little-endian int16, still inside the zmq frame


def topic_for(stream: str) -> bytes:
    return stream.encode() + b"\0"


def pack_ingest_header(stream: str, seq: int, first_sample: int, n_samples: int,
                       channels: int, rate: float, acquired_ns: int,
                       version: int = PROTOCOL_VERSION) -> bytes:
    return msgpack.packb({"v": version, "stream": stream, "seq": seq, "first": first_sample,
                          "n": n_samples, "ch": channels, "rate": float(rate),
                          "t_acq": acquired_ns})


def unpack_small_map(data, limit: int = MAX_HEADER_BYTES) -> dict:
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


def _int_field(header: dict, key: str, low: int, high: int) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Rejected("header", f"'{key}' = {value!r} is not an integer in [{low}, {high}]")
    return value


def parse_ingest(frames, received_ns: int, max_channels: int, max_samples: int) -> Packet:
    """Validate one ingest message (a list of zmq Frames or bytes); Rejected on any fault."""
    if len(frames) != 2:
        raise Rejected("frames", f"{len(frames)} frames, expected 2")
    header_bytes = frames[0].bytes if hasattr(frames[0], "bytes") else frames[0]
    payload = frames[1].buffer if hasattr(frames[1], "buffer") else memoryview(frames[1])
    if payload.nbytes > max_channels * max_samples * 2:
        raise Rejected("oversized", f"{payload.nbytes} byte payload")
    header = unpack_small_map(header_bytes)
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise Rejected("version", f"protocol version {version!r}, this daemon speaks "
                                  f"{PROTOCOL_VERSION}")
    stream = header.get("stream")
    if not isinstance(stream, str) or not STREAM_ID.match(stream):
        raise Rejected("stream_id", f"{stream!r}")
    seq = _int_field(header, "seq", 0, _MAX_INT)
    first_sample = _int_field(header, "first", 0, _MAX_INT)
    n_samples = _int_field(header, "n", 1, max_samples)
    channels = _int_field(header, "ch", 1, max_channels)
    acquired_ns = _int_field(header, "t_acq", 0, _MAX_INT)
    rate = header.get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 1e6:
        raise Rejected("header", f"'rate' = {rate!r}")
    if payload.nbytes != n_samples * channels * 2:
        raise Rejected("payload_size", f"{payload.nbytes} bytes for {n_samples} x {channels} "
                                       "int16")
    return Packet(stream, seq, first_sample, n_samples, channels, float(rate), acquired_ns,
                  received_ns, payload)


def publish_header(packet: Packet, *, seq: int, epoch: int, keyframe: bool, codec_version: int,
                   crc32: int, compress_ns: int, compressed_ns: int, group_channels: list[int],
                   dropped: int) -> dict:
    """Header of one published block; 't_pub' is filled in just before it is sent."""
    return {"v": PROTOCOL_VERSION, "stream": packet.stream, "seq": seq, "epoch": epoch,
            "first": packet.first_sample, "n": packet.n_samples, "ch": packet.channels,
            "rate": packet.rate, "key": keyframe, "codec": codec_version, "crc": crc32,
            "t_acq": packet.acquired_ns, "t_recv": packet.received_ns,
            "t_comp": compressed_ns, "compress_ns": compress_ns, "groups": group_channels,
            "dropped": dropped, "t_pub": 0}
