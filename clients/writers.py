"""What `neurowire subscribe` writes: the spool (received messages, decoded after the
stream) and the sample writer (.npy, one WAV per channel)."""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np

from neurowire.outfile import open_output, output_path


def _view(frame) -> memoryview:
    """A zmq Frame or any bytes-like object as a memoryview, without copying."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def spool_problem(path: str) -> str | None:
    """Why `path` cannot be a spool: the spool is removed after the run, so a file holding
    anything (a recording given by mistake) must not be emptied and then deleted."""
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return "exists and is not empty: a spool is scratch space, removed after the run"
    return None


class Spool:
    """Received messages in a scratch file, to be decoded after the stream: for machines that
    cannot decode in real time next to the daemon, yet every sample must still be checked.
    Record: int64 received_ns, uint32 frame count, then (uint32 length, bytes) per frame."""

    def __init__(self, path: str):
        self.path = path
        if spool_problem(path):
            raise FileExistsError(17, spool_problem(path), path)
        self.handle = open(path, "wb", buffering=1 << 20)
        self.messages = 0

    def write(self, frames, received_ns: int) -> None:
        write = self.handle.write
        write(struct.pack("<qI", received_ns, len(frames)))
        for frame in frames:
            view = _view(frame)
            write(struct.pack("<I", view.nbytes))
            write(view)
        self.messages += 1

    def attach(self) -> int:
        """The file descriptor, for a writer outside Python (the C spooling loop) that
        appends records at the file's offset: what Python buffered is written first, and
        from here on that writer alone appends (telling `appended` how many it wrote)."""
        self.handle.flush()
        return self.handle.fileno()

    def appended(self, messages: int) -> None:
        self.messages += messages

    def replay(self):
        """(frames, received_ns) in the order received; the file is removed afterwards."""
        self.handle.close()
        try:
            with open(self.path, "rb") as handle:
                data = memoryview(handle.read())
            offset = 0
            while offset < len(data):
                received_ns, count = struct.unpack_from("<qI", data, offset)
                offset += 12
                frames = []
                for _ in range(count):
                    (length,) = struct.unpack_from("<I", data, offset)
                    offset += 4
                    frames.append(data[offset:offset + length])
                    offset += length
                yield frames, received_ns
        finally:
            os.unlink(self.path)


class SampleWriter:
    """Appends raw int16 rows to a scratch file; at close writes .npy and/or WAV per channel.
    Gaps are written as zeros so that row i is always sample (first + i)."""

    def __init__(self, npy_path: str | None, wav_dir: str | None, max_gap_s: float = 60.0):
        self.npy_path, self.wav_dir = npy_path, wav_dir
        self.max_gap_s = max_gap_s
        self.next_sample = None  # the index the next row stands for
        self.rows_not_written = 0  # rows a restarted source sent again (never written twice)
        self.ended_at = None  # (sample, gap) where a gap too long to fill ended the file
        directory = os.path.dirname(os.path.abspath(npy_path or os.path.join(wav_dir, "x")))
        os.makedirs(directory, exist_ok=True)
        self.scratch = tempfile.NamedTemporaryFile(dir=directory, suffix=".raw", delete=False)
        self.rows = 0
        self.channels = None
        self.rate = None

    def write(self, block) -> None:
        """Row i of the file is always sample (first written + i): a gap is zeros (up to
        `max_gap_s`; a longer one ends the file), samples at or below a row already written
        (a source that started over) are not written again."""
        if self.ended_at is not None or (self.channels is not None
                                         and block.samples.shape[1] != self.channels):
            self.rows_not_written += block.samples.shape[0]
            return
        self.channels = block.samples.shape[1]
        self.rate = block.rate
        samples = block.samples
        first = block.first_sample
        if self.next_sample is None and block.gaps:  # missed since --resume-from: zeros
            self.next_sample = block.gaps[0].start
        if self.next_sample is not None:
            if first < self.next_sample:
                skip = min(self.next_sample - first, samples.shape[0])
                self.rows_not_written += skip
                samples, first = samples[skip:], first + skip
            missing = first - self.next_sample
            if missing > self.max_gap_s * self.rate:
                self.ended_at = (self.next_sample, missing)
                self.rows_not_written += samples.shape[0]
                return
            if missing > 0:
                # Zeros keep every later sample at its true time; the report lists the ranges.
                self.scratch.write(bytes(missing * self.channels * 2))
                self.rows += missing
        self.scratch.write(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        self.rows += samples.shape[0]
        self.next_sample = first + samples.shape[0]

    def close(self) -> None:
        import wave

        self.scratch.close()
        if not self.rows:
            os.unlink(self.scratch.name)
            return
        try:
            raw = np.memmap(self.scratch.name, dtype="<i2", mode="r",
                            shape=(self.rows, self.channels))
            # Each file complete or absent (neurowire.outfile): cut short, a .npy would
            # still promise all its rows.
            if self.npy_path:
                with output_path(self.npy_path) as target:
                    out = np.lib.format.open_memmap(target, mode="w+", dtype="<i2",
                                                    shape=raw.shape)
                    for start in range(0, self.rows, 65536):
                        out[start:start + 65536] = raw[start:start + 65536]
                    out.flush()
                    del out
            if self.wav_dir:
                os.makedirs(self.wav_dir, exist_ok=True)
                for channel in range(self.channels):
                    with open_output(os.path.join(self.wav_dir, f"ch{channel:04d}.wav"),
                                     "wb") as handle, wave.open(handle, "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(round(self.rate))
                        w.writeframes(np.ascontiguousarray(raw[:, channel]).tobytes())
            del raw
        except OSError as error:
            # A full disk or a vanished folder at the end of a long run: the samples stay in
            # the scratch file, and the one-line error says where.
            kept = self.scratch.name
            raise type(error)(error.errno, f"{error.strerror}; the {self.rows} rows received "
                              f"are kept in {kept} (raw little-endian int16, {self.channels} "
                              "channels)", error.filename) from None
        except BaseException:
            os.unlink(self.scratch.name)
            raise
        else:
            os.unlink(self.scratch.name)
