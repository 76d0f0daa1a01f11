"""neurowire for archives: a numcodecs codec (zarr format 2, Dask), a zarr format 3
codec, and the `neurowire compress` / `neurowire decompress` commands.

Installed packages find the codecs through the `numcodecs.codecs` and `zarr.codecs`
entry points; importing this package also registers the numcodecs codec, so a source
checkout without installed metadata works too.
"""

import numcodecs

from neurowire.archive.codec import CODEC_ID, DamagedChunkError, NeurowireCodec

numcodecs.register_codec(NeurowireCodec, CODEC_ID)


def register_zarr3() -> None:
    """Register the zarr format 3 codec by hand (the entry point does it when installed)."""
    import neurowire.archive.zarr3  # noqa: F401  (registers on import)


__all__ = ["CODEC_ID", "DamagedChunkError", "NeurowireCodec", "register_zarr3"]
