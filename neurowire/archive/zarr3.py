"""The neurowire codec for zarr format 3, registered as "neurowire" through the
`zarr.codecs` entry point.

In format 3 an array's first real codec turns the chunk array into bytes
(ArrayBytesCodec); neurowire is one, so it takes the place of the default "bytes" codec
and sees the chunk with its shape and dtype, which a BytesBytesCodec would not. 1-D
arrays are coded as one channel. The chunk bytes are exactly what NeurowireCodec (the
numcodecs codec) writes, so a chunk moves between format 2 and 3 stores unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from neurowire.archive.codec import CODEC_ID, NeurowireCodec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer


@dataclass(frozen=True)
class NeurowireZarr3Codec(ArrayBytesCodec):
    """Array-to-bytes codec for 1-D or 2-D int16 arrays (samples x channels)."""

    is_fixed_size = False

    def __init__(self) -> None:
        # No parameters: the chunk shape comes from the array metadata.
        pass

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_ID, require_configuration=False)
        if configuration:
            raise ValueError(f"codec {CODEC_ID!r} takes no configuration, got {configuration}")
        return cls()

    def to_dict(self) -> dict:
        return {"name": CODEC_ID}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        native = np.dtype(dtype.to_native_dtype())
        if native != np.dtype(np.int16):
            raise ValueError(f"codec {CODEC_ID!r} takes int16 arrays, not {native}")
        if len(shape) not in (1, 2):
            raise ValueError(
                f"codec {CODEC_ID!r} takes 1-D or 2-D arrays (samples x channels), "
                f"got {len(shape)}-D")
        chunk_shape = getattr(chunk_grid, "chunk_shape", None)
        if chunk_shape is not None and len(chunk_shape) == 2 and chunk_shape[1] > 4096:
            raise ValueError(
                f"codec {CODEC_ID!r} takes at most 4096 channels per chunk, "
                f"chunks have {chunk_shape[1]}")

    @staticmethod
    def _columns(shape: tuple[int, ...]) -> tuple[int, int]:
        return (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        samples = np.asarray(chunk_array.as_numpy_array(), dtype=np.int16)
        samples = samples.reshape(self._columns(samples.shape))
        return chunk_spec.prototype.buffer.from_bytes(NeurowireCodec().encode(samples))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        samples = NeurowireCodec().decode(chunk_bytes.as_numpy_array())
        expected = self._columns(chunk_spec.shape)
        if samples.shape != expected:
            from neurowire.archive.codec import DamagedChunkError

            raise DamagedChunkError(
                f"neurowire chunk decodes to shape {samples.shape}, array chunks are {expected}")
        return chunk_spec.prototype.nd_buffer.from_numpy_array(samples.reshape(chunk_spec.shape))

    # The C core releases the GIL, so a worker thread per chunk runs chunks in parallel.
    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("neurowire output size depends on the data")


def _register() -> None:
    # The `zarr.codecs` entry point does this for an installed package; registering
    # again under the same qualified name is harmless, and makes a source checkout work.
    import zarr.registry

    zarr.registry.register_codec(CODEC_ID, NeurowireZarr3Codec)


_register()
