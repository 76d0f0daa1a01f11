"""neurowire.codec: lossless compression of 16-bit electrode samples (C core via cffi).

See docs/CONTRACTS.md for the interface and docs/FORMAT.md for the bytes."""
from ._codec import (
    BLOCK_HEADER_BYTES,
    FORMAT_VERSION,
    LANE_CODERS,
    LANE_FORMAT_VERSION,
    MAX_BLOCK_SAMPLES,
    MAX_CHANNELS,
    MAX_ERROR_LIMIT,
    BlockInfo,
    CodecError,
    CodecMemoryError,
    CodecTeam,
    CorruptStreamError,
    GroupDecoder,
    GroupEncoder,
    InvalidArgumentError,
    NeedKeyframeError,
    OutputFullError,
    SequenceError,
    StreamDecoder,
    StreamEncoder,
    VersionError,
    WavSamples,
    block_info,
    compress,
    compress_bytes,
    decompress,
    grid_values,
    read_samples,
    set_simd,
    team_cpus,
)

__all__ = [
    "BLOCK_HEADER_BYTES", "FORMAT_VERSION", "LANE_CODERS", "LANE_FORMAT_VERSION", "MAX_BLOCK_SAMPLES", "MAX_CHANNELS", "MAX_ERROR_LIMIT",
    "BlockInfo", "CodecError", "CodecMemoryError", "CodecTeam", "CorruptStreamError", "GroupDecoder",
    "GroupEncoder",
    "InvalidArgumentError", "NeedKeyframeError", "OutputFullError", "SequenceError",
    "StreamDecoder", "StreamEncoder", "VersionError", "WavSamples", "block_info", "compress",
    "compress_bytes", "decompress", "grid_values", "read_samples", "set_simd", "team_cpus",
]
