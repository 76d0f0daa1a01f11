"""The two blobs neurowire.brainwire writes, and reading WAV samples for both.

lossless  neurowire's file container (./encode's bytes, "NWF..."): the WAV file, exactly.
spikes    b"NWSK" + version (1 byte) + n_samples (uint64 LE) + CRC-32 of the message
          (uint32 LE) + one spike-feed message (neurowire.feeds.spikes) covering
          [0, n_samples): every event's channel, sample index and snippet of original
          samples.  n_samples gives decompress the input's length; snippet samples outside
          it (events at either end) are dropped on decoding.  The CRC makes a damaged blob
          an error, never events at wrong times (the message itself has no check of its own
          beyond the snippets' codec block).
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

SPIKES_MAGIC = b"NWSK"
SPIKES_VERSION = 1
_SPIKES_HEADER = struct.Struct("<4sBQI")


class Recording(NamedTuple):
    """brainwire's (rate, samples), with names."""
    rate: int
    samples: np.ndarray


def wav_samples(data_or_path) -> tuple[np.ndarray, int]:
    """(int16 (n, channels), rate) of a WAV file or neurowire blob of one."""
    from neurowire.codec import read_samples

    read = read_samples(os.fspath(data_or_path) if isinstance(data_or_path, os.PathLike)
                        else data_or_path)
    return read.samples, read.rate


def as_brainwire(samples: np.ndarray) -> np.ndarray:
    """brainwire's shape: 1-D for one channel, (n, channels) otherwise."""
    return samples[:, 0].copy() if samples.shape[1] == 1 else samples


def pack_spikes_blob(n_samples: int, message: bytes) -> bytes:
    return _SPIKES_HEADER.pack(SPIKES_MAGIC, SPIKES_VERSION, n_samples,
                               zlib.crc32(message)) + message


def unpack_spikes_blob(data: bytes) -> tuple[int, bytes]:
    if len(data) < _SPIKES_HEADER.size:
        raise ValueError(f"spike blob of {len(data)} bytes is shorter than its header")
    magic, version, n_samples, crc = _SPIKES_HEADER.unpack_from(data)
    if magic != SPIKES_MAGIC:
        raise ValueError("not a neurowire spike blob")
    if version != SPIKES_VERSION:
        raise ValueError(f"spike blob version {version}, this neurowire reads {SPIKES_VERSION}")
    message = bytes(data[_SPIKES_HEADER.size:])
    if zlib.crc32(message) != crc:
        raise ValueError("damaged spike blob: CRC mismatch (truncated or altered)")
    return n_samples, message


def is_spikes_blob(data) -> bool:
    return bytes(data[:4]) == SPIKES_MAGIC
