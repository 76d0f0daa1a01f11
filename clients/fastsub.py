"""The subscriber's receive loop in C (clients/src/sub_loop.c), seen from Python.

`Receiver(sock).drain(timeout_ms)` takes every message waiting on a pyzmq socket in one call
(holding the frames, not copying them), and `decode_block` decodes a block's codec frames
straight from there. Per message that saves pyzmq's Frame objects and the Python work around
each codec call, which were most of the subscriber's CPU at 16 channels.

The C side links neither libzmq nor the codec: it calls the libzmq pyzmq loaded (the same
instance that owns the socket; its address comes from /proc/self/maps, so Linux only) and the
codec's functions through pointers taken from the codec's cffi module. `available()` says
whether this works here; Subscription falls back to pyzmq when not.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from neurowire.codec import MAX_BLOCK_SAMPLES, CorruptStreamError
from neurowire.checksum import native_crc32
from neurowire.codec._codec import _error as codec_error

from .native_zmq import libzmq_functions, loads

_LIBZMQ_FUNCTIONS = {"msg_init": "zmq_msg_init", "msg_recv": "zmq_msg_recv",
                     "msg_data": "zmq_msg_data", "msg_size": "zmq_msg_size",
                     "msg_more": "zmq_msg_more", "msg_close": "zmq_msg_close",
                     "poll": "zmq_poll", "errno_value": "zmq_errno"}


@functools.lru_cache(maxsize=None)
def _native():
    """(ffi, lib, zmq table, codec table), made once per process."""
    from neurowire.codec._native import ffi as codec_ffi
    from neurowire.codec._native import lib as codec_lib

    from ._sub_loop import ffi, lib

    lib.nw_sub_prepare()
    zmq_api = libzmq_functions(ffi, "nw_sub_zmq", _LIBZMQ_FUNCTIONS)
    codec_api = ffi.new("nw_sub_codec *")
    for field, symbol in (("team_decode", "nw_team_decode"),
                          ("decoder_reset", "nw_stream_decoder_reset")):
        address = int(codec_ffi.cast("uintptr_t", codec_ffi.addressof(codec_lib, symbol)))
        setattr(codec_api, field, ffi.cast(ffi.typeof(getattr(codec_api, field)), address))
    crc = native_crc32()
    if crc is not None:  # else both NULL: the C side's own table loop
        kind, address = crc
        field = "crc32_z" if kind == "zlib-ng" else "crc32"
        setattr(codec_api, field, ffi.cast(ffi.typeof(getattr(codec_api, field)), address))
    return ffi, lib, zmq_api, codec_api, codec_ffi


def available() -> bool:
    """Whether the C loop can run here (built, on Linux, one libzmq loaded)."""
    return loads(_native)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool | None:
    """Whether two C-contiguous arrays of one size hold the same bytes, compared in place
    (a.tobytes() == b.tobytes() copies both first: at 1024 channels that was most of a
    checking subscriber's libc time); None when the extension is missing."""
    try:
        from ._sub_loop import ffi, lib
        memcmp = lib.memcmp
    except (ImportError, AttributeError):
        return None
    if a.nbytes != b.nbytes:
        return False
    return memcmp(ffi.from_buffer(a), ffi.from_buffer(b), a.nbytes) == 0


class Receiver:
    """Every message waiting on one pyzmq socket per drain(). The socket stays pyzmq's (the
    caller still sends on it and closes it); only this object receives from it."""

    def __init__(self, sock, max_messages: int = 1024, frame_cap: int = 8192):
        ffi, lib, self._zmq, _, _ = _native()
        self._ffi, self._lib = ffi, lib
        self._socket = ffi.cast("void *", sock.underlying)
        frame_cap = max(frame_cap, lib.NW_SUB_MAX_MESSAGE_FRAMES + 1)
        batch = self._batch = ffi.new("nw_sub_batch *")
        # The arrays live as long as this object (cffi frees them with their owners).
        self._arrays = [ffi.new("uint64_t[]", frame_cap * lib.NW_SUB_MSG_BYTES // 8),
                        ffi.new("uint8_t *[]", frame_cap), ffi.new("size_t[]", frame_cap),
                        ffi.new("uint32_t[]", max_messages + 1),
                        ffi.new("int64_t[]", max_messages), ffi.new("uint32_t[]", max_messages),
                        ffi.new("uint64_t[]", max_messages)]
        (msgs, batch.data, batch.size, batch.message_first, batch.received_ns,
         batch.excess, batch.tail_bytes) = self._arrays
        batch.msgs = ffi.cast("unsigned char *", msgs)
        batch.frame_cap, batch.message_cap = frame_cap, max_messages
        self.data, self.size = batch.data, batch.size
        self.message_first, self.received_ns = batch.message_first, batch.received_ns
        self.excess, self.tail_bytes = batch.excess, batch.tail_bytes

    def drain(self, timeout_ms: int) -> int:
        """Gives back the previous batch's frames, then takes every waiting message (waiting
        up to timeout_ms, -1 without limit, when none is). The number taken; 0 when none came
        or a signal interrupted the wait. zmq.ZMQError on a socket error."""
        taken = self._lib.nw_sub_drain(self._zmq, self._socket, timeout_ms, self._batch)
        if taken >= 0:
            return taken
        import errno

        import zmq

        if -taken == errno.EINTR:
            return 0  # back to Python, where the signal's handler runs
        raise zmq.ZMQError(-taken)

    @property
    def messages(self) -> int:
        """Messages in the current batch."""
        return self._batch.messages

    def frame(self, k: int) -> bytes:
        """A copy of frame k of the current batch."""
        return self._ffi.buffer(self.data[k], self.size[k])[:]

    def release(self) -> None:
        """Gives every held frame back to libzmq (before the socket closes)."""
        self._lib.nw_sub_release(self._zmq, self._batch)


class NativeGroupDecoder:
    """Decodes a block's codec frames, as held by a Receiver, with a codec GroupDecoder's
    decoders and team: the same decoder state, one C call per block."""

    def __init__(self, decoder):
        ffi, lib, _, self._codec, codec_ffi = _native()
        self._lib = lib
        self.decoder = decoder
        self.channels = decoder.channels
        self.groups = len(decoder.group_channels)

        def address(cdata):
            return int(codec_ffi.cast("uintptr_t", cdata))

        self._pointers = ffi.cast("nw_stream_decoder *const *", address(decoder._pointers))
        self._team = ffi.cast("nw_team *", address(decoder.team._team))
        self._crc = ffi.new("uint32_t *")
        self._ffi = ffi

    def decode(self, receiver: Receiver, first_blob: int, n_samples: int):
        """(samples, CRC-32 of them) of the block whose codec frames are frames first_blob..
        of the receiver's batch; neurowire.codec.CodecError when it does not decode (every
        group's state is then dropped: resume at a keyframe)."""
        if not 1 <= n_samples <= MAX_BLOCK_SAMPLES:
            self.decoder.reset()
            raise CorruptStreamError(f"a block of {n_samples} time steps")
        out = np.empty((n_samples, self.channels), dtype=np.int16)
        decoder = self.decoder
        with decoder._lock, decoder.team.lock:
            status = self._lib.nw_sub_decode(
                self._codec, self._team, self.groups, self._pointers,
                receiver.data + first_blob, receiver.size + first_blob, n_samples,
                self.channels, self._ffi.from_buffer("int16_t[]", out, require_writable=True),
                self._crc)
        if status < 0:
            raise codec_error(status)
        return out, self._crc[0]


class FastStream:
    """One stream's blocks decoded by the C fast path (nw_sub_run) as long as nothing about
    them is unusual; the rest is left to Subscription's general path, and the tracker is the
    judge of what is usual (the caller passes its position in and reads it back)."""

    def __init__(self, native_decoder: NativeGroupDecoder, topic: bytes, header_bytes: bytes,
                 header):
        ffi, lib, _, self._codec, _ = _native()
        self._ffi, self._lib = ffi, lib
        self.channels = native_decoder.channels
        # Kept referenced: the C struct points into them.
        self._topic = ffi.from_buffer("uint8_t[]", topic)
        self._suffix = ffi.new("uint8_t[]", bytes(header_bytes[lib.NW_SUB_BLOCK_HEADER_BYTES:])
                               or b"\0")
        stream = self.stream = ffi.new("nw_sub_stream *")
        stream.topic, stream.topic_len = self._topic, len(topic)
        stream.group_suffix = self._suffix
        stream.groups, stream.channels = native_decoder.groups, native_decoder.channels
        stream.rate = header.rate
        stream.team, stream.decoders = native_decoder._team, native_decoder._pointers
        self._native_decoder = native_decoder  # keeps the decoders (and team) alive
        self._status, self._drain_status = ffi.new("int *"), ffi.new("int *")
        self._leftover = ffi.new("uint32_t *")

    def _arrays(self, blocks: int, block_rows: int):
        """Room for `blocks` blocks: samples, rows, flags (keyframe, crc_bad), stages; and the
        C views of them."""
        ffi = self._ffi
        out = np.empty((blocks * block_rows, self.channels), dtype=np.int16)
        rows = np.empty(blocks, dtype=np.uint32)
        flags = np.empty((2, blocks), dtype=np.uint8)
        stages = np.empty((blocks, self._lib.NW_SUB_STAGES), dtype=np.int64)
        views = (ffi.from_buffer("int16_t[]", out, require_writable=True), out.shape[0],
                 blocks, ffi.from_buffer("uint32_t[]", rows, require_writable=True),
                 ffi.from_buffer("uint8_t[]", flags[0], require_writable=True),
                 ffi.from_buffer("uint8_t[]", flags[1], require_writable=True),
                 ffi.from_buffer("int64_t[]", stages, require_writable=True))
        return (out, rows, flags, stages), views

    def _start(self, epoch: int, next_seq: int, next_sample: int) -> None:
        stream = self.stream
        stream.epoch, stream.next_seq, stream.next_sample = epoch, next_seq, next_sample
        stream.codec_bytes = 0

    @staticmethod
    def _accepted(arrays, accepted: int):
        out, rows, flags, stages = arrays
        rows = rows[:accepted]
        return (out[:int(rows.sum())], rows, flags[0, :accepted], flags[1, :accepted],
                stages[:accepted])

    def run(self, receiver: Receiver, first: int, messages: int, block_rows: int, epoch: int,
            next_seq: int, next_sample: int):
        """Decodes messages first.. while they are the stream's next ordinary blocks. Returns
        (accepted, decode_status, samples, rows, keyframe, crc_bad, stages): arrays for the
        accepted blocks; decode_status < 0 when the message after them failed to decode (its
        decoders are reset and it is spent), else 0."""
        self._start(epoch, next_seq, next_sample)
        arrays, views = self._arrays(messages, block_rows)
        decoder = self._native_decoder.decoder
        with decoder._lock, decoder.team.lock:
            accepted = self._lib.nw_sub_run(self._codec, receiver._batch, first, self.stream,
                                            *views, self._status)
        return (accepted, self._status[0], *self._accepted(arrays, accepted))

    def gather(self, receiver: Receiver, deadline_ns: int, max_blocks: int, block_rows: int,
               epoch: int, next_seq: int, next_sample: int):
        """run() on the messages as they arrive, until deadline_ns (time.monotonic_ns), or
        max_blocks, or a message the fast path leaves alone, or a socket error. Returns
        (accepted, decode_status, samples, rows, keyframe, crc_bad, stages, leftover,
        drain_status): messages leftover.. of the receiver's batch are the caller's."""
        self._start(epoch, next_seq, next_sample)
        arrays, views = self._arrays(max_blocks, block_rows)
        decoder = self._native_decoder.decoder
        with decoder._lock, decoder.team.lock:
            accepted = self._lib.nw_sub_gather(
                receiver._zmq, receiver._socket, self._codec, receiver._batch, self.stream,
                deadline_ns, *views, self._status, self._leftover, self._drain_status)
        return (accepted, self._status[0], *self._accepted(arrays, accepted),
                self._leftover[0], self._drain_status[0])


class SpoolLoop:
    """The spooling loop in C (clients/src/spool_loop.c): receives on a Receiver's socket
    and appends to a file descriptor (writers.Spool.attach), with the rules and counters of
    neurowire.clients.spooling.PythonSpoolLoop, which it stands in for."""

    c_loop = True

    def __init__(self, receiver: Receiver, fd: int, *, until_sample: int = 0,
                 resume_from: int | None = None, buffer_bytes: int = 1 << 20):
        ffi, lib, _, _, _ = _native()
        self._ffi, self._lib, self._receiver = ffi, lib, receiver
        self._buffer = ffi.new("uint8_t[]", buffer_bytes)  # lives as long as this object
        state = self._state = ffi.new("nw_spool *")
        state.fd, state.buffer, state.buffer_cap = fd, self._buffer, buffer_bytes
        state.until_sample = until_sample
        if resume_from is not None:
            state.has_resume, state.resume_from = 1, resume_from

    def run(self, deadline_ns: int, max_messages: int) -> int:
        """Receives and spools until deadline_ns (time.monotonic_ns), max_messages taken,
        stop() or until_sample; the messages taken (0 when a signal came: back to Python,
        where its handler runs). zmq.ZMQError on a socket error, OSError on a write error."""
        receiver = self._receiver
        before = self._state.taken
        status = self._lib.nw_spool_run(receiver._zmq, receiver._socket, receiver._batch,
                                        self._state, deadline_ns, min(max_messages, 2**31))
        if status < 0:
            import errno

            import zmq

            if self._state.write_error:
                raise OSError(-status, f"writing the spool: {os.strerror(-status)}")
            if -status == errno.EINTR:
                return self._state.taken - before
            raise zmq.ZMQError(-status)
        return status

    def stop(self) -> None:
        """From another thread: the loop returns within NW_SPOOL_STOP_CHECK_MS."""
        self._state.stop = 1

    @property
    def stopped(self) -> bool:
        return bool(self._state.stop)

    @property
    def reached(self) -> bool:
        return bool(self._state.reached)

    @property
    def taken(self) -> int:
        return self._state.taken

    @property
    def last_data_ns(self) -> int:
        return self._state.last_data_ns

    def counts(self, reject_reasons, gap_reasons) -> dict:
        """The C counters under the Python loop's names."""
        c = self._state.counts
        return {"spooled": c.spooled, "spooled_bytes": c.spooled_bytes,
                "feed_messages": c.feed_messages,
                "rejected": {reason: c.rejected[k] for k, reason in enumerate(reject_reasons)},
                "lost_blocks": c.lost_blocks, "duplicates": c.duplicates,
                "keyframe_waits": c.keyframe_waits, "untracked": c.untracked,
                "gaps": {reason: c.gaps[k] for k, reason in enumerate(gap_reasons)},
                "gap_samples": c.gap_samples}
