"""neurowire's wire protocol, version 2: what the daemon and every client put on ZeroMQ.

Both ends import this module; it holds no server code. Headers on the data path are fixed
little-endian structs (one `struct` call to read or write), not msgpack maps: at 2000
packets/s per stream the map's packing and unpacking was a visible share of a core.

Default endpoints (the daemon's built-in config and every client's defaults):
    ingest    tcp://127.0.0.1:7340   implant PUSH -> daemon PULL
    publish   tcp://127.0.0.1:7341   daemon XPUB -> live subscribers (SUB)
    lossless  tcp://127.0.0.1:7342   daemon ROUTER <-> lossless subscribers (DEALER)
    control   tcp://127.0.0.1:7343   REQ/REP, msgpack maps {"cmd": "status"|"stats"|"config"}

Ingest message (implant -> daemon), exactly two frames:
    frame 0  ingest header, INGEST.size (52) bytes, then the stream id (1..64 bytes of
             [A-Za-z0-9_.:-], ASCII, to the end of the frame):
        offset type  field        read by the daemon as
        0      2s    magic        b"NW"; anything else is not this protocol ("header"; a
                                  msgpack map is protocol 1 and counted as "version")
        2      u8    version      PROTOCOL_VERSION, else rejected ("version")
        3      u8    kind         KIND_INGEST
        4      u32   channels     1..max_channels; fixed for the life of a stream
        8      u32   n_samples    time steps in this packet, 1..max_packet_samples
        12     u64   seq          the implant's packet counter, +1 per packet (gaps = loss)
        20     u64   first        index of the packet's first time step in the stream
        28     f64   rate         samples per second per channel, 0 < rate <= 1e6
        36     i64   t_acq        ns since the epoch (CLOCK_REALTIME) the packet was acquired
        44     u64   session      the sender's run: random, non-zero, fixed while it runs. A
                                  stream belongs to one session until it idles out; a new
                                  session is a restart of the source (seq and first start
                                  over), never inferred from the numbers (docs/CONTRACTS.md)
      seq, first, t_acq and session are at most 2**63 - 1.
    frame 1  samples: n_samples x channels int16 little-endian, row = one time step

Published block (daemon -> subscribers, live and lossless alike), 3 or more frames:
    frame 0  topic: stream id + b"\\0" (the NUL keeps "imp1" from matching "imp10");
             feed messages use "<stream>/<feed>\\0" (neurowire.feeds) and are not blocks
    frame 1  block header, BLOCK.size (104) bytes, then one u32 per channel group:
        offset type  field        read by
        0      2s    magic        b"NW"                                 subscriber, tap
        2      u8    version      PROTOCOL_VERSION                      subscriber, tap
        3      u8    kind         KIND_BLOCK                            subscriber, tap
        4      u32   channels     total channels                        subscriber
        8      u32   n_samples    time steps in the block               subscriber, tap
        12     u16   groups       channel groups = codec frames after this header
        14     u8    flags        bit 0: keyframe (decoders may start here)
        15     u8    reserved     0
        16     u64   seq          the daemon's block counter for the stream, +1 per block;
                                  a jump is blocks lost after the daemon  subscriber, tap
        24     i64   epoch        the stream's epoch (ns): a new one when the daemon restarts,
                                  the source starts a new session or the stream idled
                                  out; seq restarts at 0 and `first` may start over
        32     u64   first        index of the first time step          subscriber, tap
        40     f64   rate         samples per second                    subscriber, tap
        48     u32   codec        codec format version                  (reporting)
        52     u32   crc          CRC-32 of the raw samples as received  subscriber, tap
        56     i64   t_acq        acquired (from the ingest header)     latency
        64     i64   t_recv       received by the daemon                latency
        72     i64   t_comp       compressed                            latency
        80     i64   compress_ns  time in the codec                     latency
        88     u64   dropped      packets the daemon dropped or never got for the stream,
                                  so far (tells "daemon_dropped" gaps from "source" ones)
        96     i64   t_pub        stamped as the block is packed, just before
                                  it is handed to libzmq                latency
        104    u32 x groups       channels of each group, in order, summing to channels
    frame 2.. one codec block (neurowire.codec) per channel group

Lossless subscribers (DEALER) send one-frame msgpack maps to the ROUTER: {"cmd": "hello",
"streams": [...] | None, "credit": n}, {"cmd": "credit", "n": k}, {"cmd": "bye"}; the daemon
sends them the published frames above against that credit.
"""

from __future__ import annotations

import math
import re
import struct
from typing import NamedTuple

PROTOCOL_VERSION = 2
MAGIC = b"NW"
KIND_INGEST = 1
KIND_BLOCK = 2
FLAG_KEYFRAME = 1

DEFAULT_INGEST = "tcp://127.0.0.1:7340"
DEFAULT_PUBLISH = "tcp://127.0.0.1:7341"
DEFAULT_LOSSLESS = "tcp://127.0.0.1:7342"
DEFAULT_CONTROL = "tcp://127.0.0.1:7343"

# Feeds beyond lossless blocks (docs/FEEDS.md), published under "<stream>/<feed>\0".
FEEDS = ("spikes", "power", "bounded")

INGEST = struct.Struct("<2sBBIIQQdqQ")
INGEST_FIELDS = ("magic", "version", "kind", "channels", "n_samples", "seq", "first", "rate",
                 "acquired_ns", "session")
BLOCK = struct.Struct("<2sBBIIHBxQqQdIIqqqqQq")
STREAM_ID = re.compile(rb"[A-Za-z0-9_.:-]{1,64}\Z")
_stream_id = STREAM_ID.match
_unpack_ingest = INGEST.unpack_from
MAX_INT = 2**63 - 1
MAX_RATE = 1e6
MAX_GROUPS = 1024


class Rejected(Exception):
    """A message that will not be used; `reason` names the counter it goes to."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def topic_for(stream: str) -> bytes:
    return stream.encode() + b"\0"


def feed_topic(stream: str, feed: str) -> bytes:
    if feed not in FEEDS:
        raise ValueError(f"unknown feed {feed!r}; feeds: {', '.join(FEEDS)}")
    return f"{stream}/{feed}".encode() + b"\0"


def is_feed_topic(topic) -> bool:
    """'/' never occurs in a stream id, so a topic holding one is a feed's."""
    return b"/" in topic


def _wrong_protocol(header) -> Rejected:
    if len(header) >= 1 and (0x80 <= header[0] <= 0x8F or header[0] in (0xDE, 0xDF)):
        return Rejected("version", "a msgpack map: protocol 1, this end speaks "
                                   f"{PROTOCOL_VERSION}")
    return Rejected("header", f"not a neurowire header ({bytes(header[:8])!r}...)")


def _check_prefix(header, size: int, kind: int) -> None:
    if len(header) < size or header[:2] != MAGIC:
        if len(header) >= 2 and header[:2] == MAGIC:
            raise Rejected("header", f"{len(header)} bytes, a header has at least {size}")
        raise _wrong_protocol(header)
    if header[2] != PROTOCOL_VERSION:
        raise Rejected("version", f"protocol version {header[2]}, this end speaks "
                                  f"{PROTOCOL_VERSION}")
    if header[3] != kind:
        raise Rejected("header", f"message kind {header[3]}, expected {kind}")


# ---- ingest ---------------------------------------------------------------------------------

def pack_ingest(stream: bytes | str, seq: int, first: int, n_samples: int, channels: int,
                rate: float, acquired_ns: int, session: int = 1,
                version: int = PROTOCOL_VERSION) -> bytes:
    """The ingest header frame (a sender may pass the id encoded once, as bytes). A real
    sender passes `new_session()` once per run; the default 1 suits tests only."""
    if isinstance(stream, str):
        stream = stream.encode()
    return INGEST.pack(MAGIC, version, KIND_INGEST, channels, n_samples, seq, first, rate,
                       acquired_ns, session) + stream


def _field_offsets(layout: struct.Struct, names) -> dict:
    codes = re.findall(r"\d*[a-zA-Z?]", layout.format)
    return {name: struct.calcsize(layout.format[0] + "".join(codes[:k]))
            for k, name in enumerate(names)}


# Where each ingest field starts in the header: a sender that packs one header with
# `pack_ingest` and patches seq, first and acquired_ns per packet (the simulator's C loop)
# takes the offsets from here.
INGEST_OFFSETS = _field_offsets(INGEST, INGEST_FIELDS)


def new_session() -> int:
    """A sender's session token: random, so another process cannot guess it and send into
    (or take over) this sender's stream."""
    import secrets

    return secrets.randbelow(MAX_INT) + 1


class IngestHeader(NamedTuple):
    stream: bytes
    channels: int
    n_samples: int
    seq: int
    first: int
    rate: float
    acquired_ns: int
    session: int


def parse_ingest(header, payload_bytes: int, max_channels: int,
                 max_samples: int) -> IngestHeader:
    """Check one ingest header frame (bytes) against its payload's size; Rejected with the
    reason otherwise. Every check a hostile sender could trip is here, in one place."""
    try:
        (magic, version, kind, channels, n_samples, seq, first, rate, acquired_ns,
         session) = _unpack_ingest(header)
    except struct.error:
        magic = None
    if magic != MAGIC or version != PROTOCOL_VERSION or kind != KIND_INGEST:
        _check_prefix(header, INGEST.size, KIND_INGEST)  # raises, with the reason
    stream = header[INGEST.size:]
    if not _stream_id(stream):
        raise Rejected("stream_id", repr(bytes(stream[:80])))
    if not 1 <= channels <= max_channels:
        raise Rejected("header", f"channels = {channels}, allowed 1..{max_channels}")
    if not 1 <= n_samples <= max_samples:
        raise Rejected("header", f"n_samples = {n_samples}, allowed 1..{max_samples}")
    if seq > MAX_INT or first > MAX_INT or acquired_ns < 0 or not 0 < session <= MAX_INT:
        raise Rejected("header", f"seq {seq}, first {first}, t_acq {acquired_ns} or session "
                                 f"{session} out of range 0..{MAX_INT} (session 1..)")
    if not 0 < rate <= MAX_RATE:  # NaN fails this too
        raise Rejected("header", f"rate = {rate!r}")
    if payload_bytes != n_samples * channels * 2:
        raise Rejected("payload_size", f"{payload_bytes} bytes for {n_samples} x {channels} "
                                       "int16")
    return IngestHeader(stream, channels, n_samples, seq, first, rate, acquired_ns, session)


# ---- published blocks -----------------------------------------------------------------------

def group_suffix(group_channels) -> bytes:
    """The header's per-group tail; constant for a stream, so packed once."""
    return struct.pack(f"<{len(group_channels)}I", *group_channels)


def pack_block(channels: int, n_samples: int, n_groups: int, keyframe: bool, seq: int,
               epoch: int, first: int, rate: float, codec_version: int, crc: int,
               acquired_ns: int, received_ns: int, compressed_ns: int, compress_ns: int,
               dropped: int, published_ns: int, groups_suffix: bytes,
               version: int = PROTOCOL_VERSION) -> bytes:
    return BLOCK.pack(MAGIC, version, KIND_BLOCK, channels, n_samples, n_groups,
                      FLAG_KEYFRAME if keyframe else 0, seq, epoch, first, rate, codec_version,
                      crc, acquired_ns, received_ns, compressed_ns, compress_ns, dropped,
                      published_ns) + groups_suffix


class BlockHeader(NamedTuple):
    channels: int
    n_samples: int
    keyframe: bool
    seq: int
    epoch: int
    first: int
    rate: float
    codec_version: int
    crc: int
    acquired_ns: int
    received_ns: int
    compressed_ns: int
    compress_ns: int
    dropped: int
    published_ns: int
    groups: tuple


def parse_block(header, n_blobs: int) -> BlockHeader:
    """Check one block header frame against the number of codec frames that came with it;
    Rejected with the reason otherwise."""
    _check_prefix(header, BLOCK.size, KIND_BLOCK)
    (_, _, _, channels, n_samples, n_groups, flags, seq, epoch, first, rate, codec_version,
     crc, t_acq, t_recv, t_comp, compress_ns, dropped, t_pub) = BLOCK.unpack_from(header)
    if len(header) != BLOCK.size + 4 * n_groups:
        raise Rejected("header", f"{len(header)} bytes for {n_groups} groups")
    if not 1 <= n_groups <= MAX_GROUPS or n_groups != n_blobs:
        raise Rejected("groups", f"{n_groups} groups in the header, {n_blobs} codec frames")
    groups = struct.unpack_from(f"<{n_groups}I", header, BLOCK.size)
    if 0 in groups or sum(groups) != channels:
        raise Rejected("groups", f"group sizes {groups[:8]} do not make {channels} channels")
    if n_samples < 1 or not 0 < rate <= MAX_RATE or math.isnan(rate):
        raise Rejected("header", f"n_samples {n_samples}, rate {rate!r}")
    if seq > MAX_INT or first > MAX_INT:
        raise Rejected("header", f"seq {seq} or first {first} beyond {MAX_INT}")
    return BlockHeader(channels, n_samples, bool(flags & FLAG_KEYFRAME), seq, epoch, first,
                       rate, codec_version, crc, t_acq, t_recv, t_comp, compress_ns, dropped,
                       t_pub, groups)


# ---- CURVE, client side -----------------------------------------------------------------------

def apply_curve(sock, curve: dict | None) -> None:
    """Client side of CURVE, as a daemon bound beyond loopback requires. `curve`:
    {"server_public", "public", "secret"} (bytes, z85), the shape every client takes."""
    if curve:
        sock.curve_serverkey = curve["server_public"]
        sock.curve_publickey = curve["public"]
        sock.curve_secretkey = curve["secret"]


# ---- control requests (REQ/REP, msgpack maps) --------------------------------------------------

class ControlReplyError(ValueError):
    """A control endpoint answered, but not as a neurowire daemon does (not msgpack, not a
    map, a field missing or of the wrong kind)."""


class ControlTimeout(TimeoutError):
    """The daemon did not answer in time (stopped, or unreachable)."""


def query(endpoint: str, command: str = "stats", *, timeout: float = 2.0, context=None,
          curve: dict | None = None) -> dict:
    """One control request on a fresh REQ socket, so a lost reply never wedges the next."""
    import msgpack
    import zmq

    context = context or zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    try:
        apply_curve(sock, curve)
        sock.connect(endpoint)
        sock.send(msgpack.packb({"cmd": command}))
        if not sock.poll(int(timeout * 1000)):
            raise ControlTimeout(f"no reply from {endpoint} within {timeout} s")
        raw = sock.recv()
    finally:
        sock.close()
    try:
        reply = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as error:  # noqa: BLE001 - whatever the bytes were, they are no reply
        raise ControlReplyError(f"{endpoint} answered {len(raw)} bytes that are not msgpack "
                                f"({error.__class__.__name__})") from None
    if not isinstance(reply, dict):
        raise ControlReplyError(f"{endpoint} answered a {type(reply).__name__}, not a map")
    return reply


def reply_field(reply: dict, key: str, kinds, endpoint: str):
    """reply[key] when it is one of `kinds`; else ControlReplyError saying what came (the
    daemon's own error, when it sent one)."""
    value = reply.get(key)
    if not isinstance(value, kinds):
        why = f": {reply['error']}" if "error" in reply else ""
        raise ControlReplyError(f"{endpoint} answered without a usable {key!r}{why}")
    return value


def bound_endpoint(control: str, name: str, curve: dict | None = None) -> str:
    """The endpoint the daemon at `control` bound for `name` (its `config` reply's "bound"),
    checked as an endpoint: a client connects where the daemon says, so a reply that is no
    endpoint is refused here."""
    from neurowire.options import endpoint_problem

    bound = reply_field(query(control, "config", curve=curve), "bound", dict, control)
    value = bound.get(name)
    if not isinstance(value, str) or endpoint_problem(value):
        raise ControlReplyError(f"{control} named {value!r} as its {name} endpoint")
    return value


def stream_ids(control: str, curve: dict | None = None) -> list[str]:
    """The stream ids the daemon at `control` serves now (its `status` reply), checked."""
    streams = reply_field(query(control, "status", curve=curve), "streams", (list, dict),
                          control)
    ids = list(streams)
    if not all(isinstance(i, str) and STREAM_ID.match(i.encode()) for i in ids):
        raise ControlReplyError(f"{control} listed streams that are no stream ids")
    return ids


def wait_ready(endpoint: str, timeout: float = 10.0, **kwargs) -> dict:
    """Poll `status` until the daemon answers; ControlTimeout after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return query(endpoint, "status", timeout=0.5, **kwargs)
        except ControlTimeout:
            if time.monotonic() > deadline:
                raise
