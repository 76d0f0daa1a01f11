"""The daemon's C data path (daemon/src/nw_fastpath.c), from the data thread.

One `drain` call takes every ingest packet waiting and, for the common case (a known stream,
the next seq and sample index, the same session), encodes, stamps, checksums and publishes
it in C, counting into the stream's `hot` array and latency stages in place. Anything else
(a first packet, a new stream or session, a gap, a malformed message) is handed back to the
Python path in datapath.py, which stays the one place where streams, sessions and
rejections are decided. Blocks for lossless subscribers come back to Python too, kept in an
arena, for lossless.py to hold and send against credit.

The C code includes no ZeroMQ, codec or zlib header: it calls the libzmq that pyzmq loaded,
the codec extension and zlib-ng (or zlib: neurowire.checksum) through function pointers
taken here, so the socket and encoder
pointers it is given belong to the very same library instances.

`FastPath.load` returns None, saying why, where that cannot be done (no compiled extension,
a platform without /proc/self/maps, a big-endian host, CURVE, feeds): the Python path then
does the whole job, as it always could.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import zmq

from neurowire.checksum import native_crc32

from .metrics import LatencyStage
from .streams import HOT_FIELDS

log = logging.getLogger("neurowire.daemon")

try:
    from ._fastpath import ffi, lib
except ImportError as error:  # built without it (or a broken build): the Python path serves
    ffi = lib = None
    IMPORT_ERROR: str | None = str(error)
else:
    IMPORT_ERROR = None

# Packets one call takes at most: bounds the time between the data thread's other duties
# (side sockets, housekeeping), as the Python path's 4 x max_backlog_packets does.
BATCH_PACKETS = 256
ARENA_BYTES = 8 * 2**20  # kept blocks of one call, for lossless subscribers
NOTHING, PACKET, FRAMES = range(3)  # enum nwfp_handback (checked at load)


class FastPathUnavailable(Exception):
    pass


def _loaded_library(name: str) -> str | None:
    """The file of a shared library this process already mapped ("libzmq"), so that
    ctypes opens the same instance; None when not exactly one is mapped."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return None
    found = {path for path in paths if path.rsplit("/", 1)[-1].startswith(name + "-")
             or path.rsplit("/", 1)[-1].startswith(name + ".so")}
    return found.pop() if len(found) == 1 else None


def _address(library, name: str) -> int:
    return ctypes.cast(getattr(library, name), ctypes.c_void_p).value


def _check_layout() -> None:
    """The C enums against the Python side's orders (streams.HOT_FIELDS, LatencyStage)."""
    for slot, name in enumerate(HOT_FIELDS):
        if getattr(lib, "NWFP_HOT_" + name.upper()) != slot:
            raise FastPathUnavailable(f"hot slot {name} differs between C and Python")
    if lib.NWFP_HOT_SLOTS != len(HOT_FIELDS):
        raise FastPathUnavailable("hot slots differ between C and Python")
    if (lib.NWFP_TALLY_POSITION, lib.NWFP_TALLY_COUNT, lib.NWFP_TALLY_BUCKETS) != (
            LatencyStage.POSITION, LatencyStage.COUNT, LatencyStage.BUCKETS):
        raise FastPathUnavailable("latency tally slots differ between C and Python")
    if (lib.NWFP_NOTHING, lib.NWFP_PACKET, lib.NWFP_FRAMES) != (NOTHING, PACKET, FRAMES):
        raise FastPathUnavailable("hand-back kinds differ between C and Python")


def _functions():
    """(nwfp_zmq, nwfp_codec) filled with the addresses of the loaded libraries' functions."""
    from neurowire.codec._codec import native_function

    zmq_path = _loaded_library("libzmq")
    if zmq_path is None:
        raise FastPathUnavailable("cannot tell which libzmq pyzmq loaded")
    libzmq = ctypes.CDLL(zmq_path)  # already loaded: the same instance as pyzmq's
    crc = native_crc32()
    if crc is None:
        raise FastPathUnavailable("no zlib or zlib-ng crc32 that agrees with zlib.crc32")
    functions = ffi.new("nwfp_zmq *")
    for field, symbol in (("msg_init", "zmq_msg_init"), ("msg_recv", "zmq_msg_recv"),
                          ("msg_close", "zmq_msg_close"), ("msg_data", "zmq_msg_data"),
                          ("msg_size", "zmq_msg_size"), ("msg_more", "zmq_msg_more"),
                          ("send", "zmq_send"), ("errno_", "zmq_errno"), ("poll", "zmq_poll")):
        setattr(functions, field,
                ffi.cast(ffi.typeof(getattr(functions, field)), _address(libzmq, symbol)))
    codec = ffi.new("nwfp_codec *")
    codec.team_encode = ffi.cast(ffi.typeof(codec.team_encode),
                                 native_function("nw_team_encode"))
    codec.encode_bound = ffi.cast(ffi.typeof(codec.encode_bound),
                                  native_function("nw_encode_bound"))
    kind, address = crc
    field = "crc32_z" if kind == "zlib-ng" else "crc32"
    setattr(codec, field, ffi.cast(ffi.typeof(getattr(codec, field)), address))
    return functions, codec, (libzmq,)


class FastPath:
    """The C data path on one daemon's ingest and publish sockets (the data thread's)."""

    @classmethod
    def load(cls, config, sockets) -> FastPath | None:
        """The fast path, or None (logged) when only the Python path can serve here."""
        reason = None
        if not config.fast_path:
            reason = "off in the config (fast_path = false)"
        elif lib is None:
            reason = f"not built ({IMPORT_ERROR})"
        elif sys.byteorder != "little":
            reason = "a big-endian host (the samples on the wire are little-endian)"
        elif config.security.curve:
            reason = "CURVE is on (a stream's owner key is checked per packet in Python)"
        elif config.feeds:
            reason = "feeds are on (each packet goes to the feed process from Python)"
        elif zmq.zmq_version_info()[0] != 4:
            reason = f"libzmq {zmq.zmq_version()} (the C side knows the 4.x message layout)"
        elif config.lossless_max_subscribers > lib.NWFP_MAX_SUBSCRIBERS:
            reason = (f"lossless_max_subscribers is over {lib.NWFP_MAX_SUBSCRIBERS}, what one "
                      "call serves")
        if reason is None:
            try:
                return cls(config, sockets)
            except (FastPathUnavailable, OSError, AttributeError) as error:
                reason = str(error)  # e.g. a library or symbol not found
        log.info("data path: Python only: %s", reason)
        return None

    def __init__(self, config, sockets):
        _check_layout()
        self._functions, self._codec, self._libraries = _functions()
        limits = ffi.new("nwfp_limits *")
        limits.max_channels = config.max_channels
        limits.max_packet_samples = config.max_packet_samples
        limits.max_payload = config.max_packet_bytes()
        limits.max_backlog_packets = config.max_backlog_packets
        limits.max_backlog_bytes = config.max_backlog_bytes
        limits.batch_packets = BATCH_PACKETS
        limits.latency_window = config.latency_window
        bounds = ffi.new("int64_t[]", LatencyStage.BOUNDS_NS)
        limits.n_bounds = len(LatencyStage.BOUNDS_NS)
        limits.bounds_ns = bounds
        path = lib.nwfp_new(self._functions, self._codec, limits,
                            ffi.cast("void *", sockets.ingest.underlying),
                            ffi.cast("void *", sockets.publisher.underlying),
                            ffi.cast("void *", sockets.router.underlying))
        if path == ffi.NULL:
            raise FastPathUnavailable("nwfp_new failed (out of memory)")
        self._path = ffi.gc(path, lib.nwfp_free)
        self._sockets = sockets  # the C side holds their addresses: they must outlive it
        self.call = ffi.new("nwfp_call *")
        self.call.blocks_cap = BATCH_PACKETS
        self.call.blocks = self._blocks = ffi.new("nwfp_block[]", BATCH_PACKETS)
        self.call.blobs_cap = BATCH_PACKETS * max(1, config.workers)
        self.call.blobs = self._blobs = ffi.new("int64_t[]", 2 * self.call.blobs_cap)
        self.call.arena_cap = ARENA_BYTES
        self.call.arena = self._arena = ffi.new("uint8_t[]", ARENA_BYTES)
        self.generation = (-1, -1)  # of the stream table and lossless router handed to C
        self.states: list = []
        self.subscribers: list = []
        self._c_subscribers = None
        self._locks: list = []
        self._keep: list = []  # what the C stream array points into
        self._keep_subscribers: list = []

    def set_side(self, sockets) -> None:
        """The data thread's other sockets: a run (drain with until_ns) returns as soon as
        one has a message (`call.side_ready`)."""
        if len(sockets) > lib.NWFP_MAX_SIDE:
            raise ValueError(f"at most {lib.NWFP_MAX_SIDE} side sockets")
        handles = ffi.new("void *[]", [ffi.cast("void *", sock.underlying) for sock in sockets]
                          or [ffi.NULL])
        lib.nwfp_set_side(self._path, handles, len(sockets))
        self._side = list(sockets)  # the C side holds their addresses

    def update(self, table, lossless) -> None:
        """Hand C the streams and lossless subscribers, when any came or went."""
        if self.generation != (table.generation, lossless.generation):
            self.set_streams(table)
            self.set_subscribers(lossless)
            self.generation = (table.generation, lossless.generation)

    def set_streams(self, table) -> None:
        """Hand the table's streams to C (after any came or went)."""
        states = table.states()
        streams = ffi.new("nwfp_stream[]", max(1, len(states)))
        keep, locks, team_locks = [streams], [], []
        for stream, state in zip(streams, states):
            wire_id = state.stream_id.encode()
            handles = state.encoder.native_handles()
            group_channels = ffi.new("uint32_t[]", list(state.group_channels))
            keep += [wire_id, state.topic, group_channels, state.hot]
            stream.id = ffi.from_buffer(wire_id)
            stream.id_len = len(wire_id)
            stream.topic = ffi.from_buffer(state.topic)
            stream.topic_len = len(state.topic)
            stream.session = state.session
            stream.channels = state.channels
            stream.rate = state.rate
            stream.epoch = state.epoch
            stream.codec_version = state.codec_version
            stream.keyframe_every = -1 if state.keyframe_every is None else state.keyframe_every
            stream.groups = len(state.group_channels)
            stream.group_channels = group_channels
            stream.encoders = ffi.cast("void *const *", handles["encoders"])
            stream.team = ffi.cast("void *", handles["team"])
            stream.hot = ffi.from_buffer("uint64_t[]", state.hot, require_writable=True)
            for index, stage in enumerate(state.latency.values()):
                keep += [stage.ring, stage.tally, stage.total_s]
                stream.latency[index].ring = ffi.from_buffer("double[]", stage.ring,
                                                             require_writable=True)
                stream.latency[index].tally = ffi.from_buffer("int64_t[]", stage.tally,
                                                              require_writable=True)
                stream.latency[index].sum_s = ffi.from_buffer("double[]", stage.total_s,
                                                              require_writable=True)
            encoder_lock, team_lock = handles["locks"]
            locks.append(encoder_lock)
            if team_lock not in team_locks:
                team_locks.append(team_lock)
        lib.nwfp_set_streams(self._path, streams, len(states))
        # encoders' locks before the team's, the order GroupEncoder.encode takes them in
        self.states, self._locks, self._keep = states, locks + team_locks, keep

    def set_subscribers(self, lossless) -> None:
        """Hand C the lossless subscribers (after set_streams: `wants` follows its order)."""
        subscribers = list(lossless.subscribers.values())  # at most NWFP_MAX_SUBSCRIBERS (load)
        array = ffi.new("nwfp_subscriber[]", max(1, len(subscribers)))
        keep = [array]
        for entry, subscriber in zip(array, subscribers):
            wants = ffi.new("uint8_t[]", [subscriber.wants(state.stream_id)
                                          for state in self.states] or [0])
            keep += [subscriber.identity, subscriber.counts, wants]
            entry.identity = ffi.from_buffer(subscriber.identity)
            entry.identity_len = len(subscriber.identity)
            entry.counts = ffi.from_buffer("int64_t[]", subscriber.counts,
                                           require_writable=True)
            entry.wants = wants
        lib.nwfp_set_subscribers(self._path, array, len(subscribers))
        self.subscribers, self._c_subscribers = subscribers, array
        self._keep_subscribers = keep

    def drain(self, wait: bool, live: bool, until_ns: int | None = None) -> int:
        """Take what is waiting (`wait`: the first receive waits up to the socket's RCVTIMEO),
        publishing live when `live`, serving the lossless subscribers given last; blocks
        one of them must wait for are in `kept_blocks` after. With `until_ns` (a
        time.monotonic_ns), it goes on taking packets as they come until then, unless one
        needs Python first or a side socket (set_side) has a message (nwfp_run): one return
        per many packets, not one per packet.
        Returns what is handed back: NOTHING, PACKET (`held_packet`) or FRAMES
        (`call.frames`). The encoders' and team's locks are held while it takes and encodes,
        as encode holds them, but not during the first wait."""
        call = self.call
        if wait:
            # The wait needs no encoder: the locks are not held while it lasts, so the
            # control thread's readers of the encoders (per-channel ratios) never starve.
            status = lib.nwfp_wait(self._path)
            if status < 0:
                self._fail(status)
            if status == 0:
                call.handback = NOTHING
                call.packets = call.dropped = call.n_blocks = call.side_ready = 0
                return NOTHING
        subscribers = self.subscribers
        call.wait, call.live, call.lossless = False, live, bool(subscribers)
        for entry, subscriber in zip(self._c_subscribers, subscribers):
            entry.queued = bool(subscriber.queue)
        locks = self._locks
        for lock in locks:
            lock.acquire()
        try:
            if until_ns is None:
                status = lib.nwfp_drain(self._path, call)
            else:
                status = lib.nwfp_run(self._path, call, until_ns)
        finally:
            for lock in locks:
                lock.release()
        if status < 0:
            self._fail(status)
        return call.handback

    @staticmethod
    def _fail(status: int) -> None:
        if status <= lib.NWFP_CODEC_ERROR:
            from neurowire.codec._codec import _error

            raise _error(status - lib.NWFP_CODEC_ERROR)
        errno = -status
        if errno == zmq.ETERM:
            raise zmq.ContextTerminated()
        raise zmq.ZMQError(errno)

    def held_packet(self) -> tuple[bytes, bytes]:
        """(header, samples) of the packet handed back, copied; C lets go of it."""
        size = ffi.new("size_t *")
        frames = []
        for frame in (0, 1):
            data = lib.nwfp_held_frame(self._path, frame, size)
            frames.append(ffi.buffer(data, size[0])[:])
        lib.nwfp_release_held(self._path)
        return frames[0], frames[1]

    def kept_blocks(self):
        """(state, frames, subscribers) of each block the last call kept for lossless
        subscribers it could not send it to, in order."""
        call, arena, blobs, states = self.call, ffi.buffer(self._arena), self._blobs, self.states
        subscribers = self.subscribers
        for index in range(call.n_blocks):
            block = self._blocks[index]
            state = states[block.stream]
            pending = block.pending
            waiting = [subscriber for bit, subscriber in enumerate(subscribers)
                       if pending >> bit & 1]
            head = arena[block.head_offset:block.head_offset + block.head_len]
            frames = [state.topic, head]
            for blob in range(block.first_blob, block.first_blob + block.n_blobs):
                offset = blobs[2 * blob]
                frames.append(arena[offset:offset + blobs[2 * blob + 1]])
            yield state, frames, waiting


def ingest_valid(head: bytes, payload_bytes: int, max_channels: int,
                 max_packet_samples: int) -> bool:
    """The C side's check of an ingest header (for tests: it must agree with
    wire.parse_ingest on every header)."""
    return bool(lib.nwfp_ingest_valid(head, len(head), payload_bytes, max_channels,
                                      max_packet_samples))
