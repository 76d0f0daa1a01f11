"""The neurowire codec as a numcodecs codec (zarr format 2 compressor, Dask, anything
that speaks numcodecs).

A chunk is a 2-D int16 array (time steps x channels). Each chunk is coded by a fresh
StreamEncoder, so it starts with a keyframe block and decodes without any other chunk:
chunks can be written in any order, by any process, and read one at a time. A fresh
encoder per chunk also keeps block indices at 0, so the same chunk always encodes to the
same bytes whichever worker (or how many chunks before it) encoded it.

Encoded chunk = one or more neurowire blocks, back to back, nothing else: the block
header already carries magic, format version, shape and a CRC of the samples. More than
one block appears only when a chunk is longer than the C core's block limit; the
continuation blocks are ordinary non-keyframe blocks of the same stream.
"""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

CODEC_ID = "neurowire"

# Mirrors NW_MAX_BLOCK_SAMPLES in codec_c/src/neurowire.h; the Python wrapper may expose
# its own value, which wins (see _max_block_samples).
_DEFAULT_MAX_BLOCK_SAMPLES = 1 << 20
_MAX_CHANNELS = 4096


class DamagedChunkError(ValueError):
    """A chunk that does not decode: truncated, bit-flipped, or not neurowire data.

    numcodecs does not tell a codec which chunk it is decoding; readers that know the
    chunk key (neurowire.archive.cli) re-raise this with the key in the message.
    """


def _codec_module():
    # Imported on first use, not at import time: registering the codec (entry point
    # scan, zarr metadata parsing, unpickling on a Dask worker) must not need the
    # compiled core, only encoding and decoding do.
    from neurowire import codec

    return codec


def _max_block_samples(mod) -> int:
    return int(getattr(mod, "MAX_BLOCK_SAMPLES", _DEFAULT_MAX_BLOCK_SAMPLES))


class NeurowireCodec(Codec):
    """Lossless codec for int16 electrode samples, one independent keyframe per chunk.

    Parameters
    ----------
    channels : int or None
        Only used when a chunk arrives as flat bytes or a 1-D array (zarr format 2
        flattens nothing, but filters in front of this codec may): the number of
        interleaved channels. A 2-D input always uses its own column count.
    """

    codec_id = CODEC_ID

    def __init__(self, channels: int | None = None):
        if channels is not None:
            # A store's config comes from anywhere: 2.5, "4" or true is no channel count
            # (int() took them as 2, 4 and 1).
            if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
                raise TypeError(f"channels must be an int, not {type(channels).__name__} "
                                f"{channels!r}")
            channels = int(channels)
            if not 1 <= channels <= _MAX_CHANNELS:
                raise ValueError(f"channels must be in 1..{_MAX_CHANNELS}, got {channels}")
        self.channels = channels

    # numcodecs' default get_config/from_config/__repr__ use the public attributes,
    # which are exactly the constructor arguments; nothing else lives on the instance.

    def _as_samples(self, buf) -> np.ndarray:
        if isinstance(buf, np.ndarray) and buf.dtype == np.int16 and buf.ndim == 2:
            return np.ascontiguousarray(buf)
        if isinstance(buf, np.ndarray) and buf.dtype.kind in "iuf" and buf.dtype != np.int16 \
                and buf.dtype.itemsize != 1:
            raise TypeError(
                f"neurowire codec takes int16 samples, got dtype {buf.dtype}; "
                "store electrode data as int16")
        if isinstance(buf, np.ndarray) and buf.ndim > 2:
            raise ValueError(
                f"neurowire codec takes 2-D chunks (samples x channels), got shape {buf.shape}")
        flat = ensure_contiguous_ndarray(buf).reshape(-1)
        if flat.dtype != np.int16:
            flat = flat.view(np.uint8)
            if flat.size % 2:
                raise ValueError("raw chunk has an odd number of bytes: not int16 samples")
            flat = flat.view("<i2").astype(np.int16, copy=False)
        channels = self.channels or 1
        if flat.size % channels:
            raise ValueError(
                f"{flat.size} samples do not split into {channels} channels")
        return flat.reshape(-1, channels)

    def encode(self, buf):
        samples = self._as_samples(buf)
        n, channels = samples.shape
        if n == 0:
            # The block format has no empty block; an empty chunk is empty bytes.
            return b""
        if channels > _MAX_CHANNELS:
            raise ValueError(
                f"chunk has {channels} channels; the codec takes at most {_MAX_CHANNELS} "
                "per chunk: chunk the channel axis")
        mod = _codec_module()
        step = _max_block_samples(mod)
        encoder = mod.StreamEncoder(channels)
        parts = [encoder.encode(samples[start:start + step], keyframe=(start == 0))
                 for start in range(0, n, step)]
        return b"".join(parts)

    def decode(self, buf, out=None):
        # A flat uint8 array, no copy: the C wrapper reads any contiguous buffer. (Not a
        # memoryview: slices of one, exported to cffi and caught in a traceback, crashed
        # CPython 3.11 on release.)
        data = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        if len(data) == 0:
            samples = np.empty((0, self.channels or 1), dtype=np.int16)
            return ndarray_copy(samples, out) if out is not None else samples
        mod = _codec_module()
        parts = []
        decoder = None
        pos = 0
        while pos < len(data):
            try:
                rest = data if pos == 0 else data[pos:]
                info = mod.block_info(rest)
                if pos == 0 and not info.keyframe:
                    raise mod.NeedKeyframeError("chunk does not start with a keyframe block")
                if pos + info.block_bytes > len(data):
                    raise mod.CorruptStreamError(
                        f"block needs {info.block_bytes} bytes, chunk has {len(data) - pos} left")
                if decoder is None:
                    decoder = mod.StreamDecoder(info.channels)
                block = rest if info.block_bytes == len(rest) else rest[:info.block_bytes]
                parts.append(decoder.decode(block))
            except mod.CodecError as err:
                raise DamagedChunkError(
                    f"damaged neurowire chunk ({len(data)} bytes): block {len(parts)} "
                    f"at byte {pos}: {type(err).__name__}: {err}") from err
            except ValueError as err:
                raise DamagedChunkError(
                    f"damaged neurowire chunk ({len(data)} bytes): block {len(parts)} "
                    f"at byte {pos}: {err}") from err
            pos += info.block_bytes
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if out is not None:
            return ndarray_copy(samples, out)
        return samples
