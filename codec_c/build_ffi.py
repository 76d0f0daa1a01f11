"""Declares the C interface of neurowire.h to cffi and compiles it (API mode, out-of-line).

Run by setuptools through ``cffi_modules`` (``pip install .``); running it as a script
builds the extension under build/ffi/, to debug the build alone.

Constants and enum values are written as ``...`` so the compiler reads them from the
header: the header is the only place that owns those numbers.
"""
import glob
import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")

CDEF = """
#define NW_FORMAT_VERSION ...
#define NW_FILE_FORMAT_VERSION ...
#define NW_MAX_CHANNELS ...
#define NW_MAX_BLOCK_SAMPLES ...
#define NW_BLOCK_HEADER_BYTES ...
#define NW_MAX_ERROR_LIMIT ...
#define NW_GRID_CODES ...

enum nw_status {
    NW_OK, NW_ERR_ARGUMENT, NW_ERR_NOMEM, NW_ERR_OUTPUT_FULL, NW_ERR_MAGIC,
    NW_ERR_VERSION, NW_ERR_TRUNCATED, NW_ERR_CORRUPT, NW_ERR_CHECKSUM,
    NW_ERR_CHANNELS, NW_ERR_NEED_KEYFRAME, NW_ERR_SEQUENCE, ...
};

const char *nw_strerror(int status);

typedef struct nw_block_info {
    uint32_t channels;
    uint32_t n_samples;
    uint32_t index;
    uint32_t block_bytes;
    uint32_t crc32;
    int keyframe;
    int stored;
    uint32_t max_error;
    ...;
} nw_block_info;

typedef struct nw_encoder nw_encoder;
typedef struct nw_decoder nw_decoder;

nw_encoder *nw_encoder_new(uint32_t channels);
void nw_encoder_free(nw_encoder *encoder);
size_t nw_encode_bound(uint32_t channels, uint32_t n_samples);
int64_t nw_encode_block(nw_encoder *encoder, const int16_t *samples, uint32_t n_samples,
                        int keyframe, uint8_t *out, size_t out_cap);
int64_t nw_encode_block_strided(nw_encoder *encoder, const int16_t *samples, uint32_t n_samples,
                                size_t stride, int keyframe, uint8_t *out, size_t out_cap);
uint32_t nw_encoder_channels(const nw_encoder *encoder);
void nw_grid_values(int16_t *values);
void nw_prepare(void);
int nw_encoder_set_max_error(nw_encoder *encoder, uint32_t max_error);
uint32_t nw_encoder_channel_bytes(const nw_encoder *encoder, uint64_t *totals,
                                  uint32_t count);

nw_decoder *nw_decoder_new(uint32_t channels);
void nw_decoder_free(nw_decoder *decoder);
void nw_decoder_reset(nw_decoder *decoder);
int nw_block_peek(const uint8_t *in, size_t in_len, nw_block_info *info);
int nw_decode_block(nw_decoder *decoder, const uint8_t *in, size_t in_len,
                    int16_t *samples, size_t samples_cap, nw_block_info *info);
int nw_decode_block_strided(nw_decoder *decoder, const uint8_t *in, size_t in_len,
                            int16_t *samples, size_t rows_cap, size_t stride,
                            nw_block_info *info);
uint32_t nw_decoder_channels(const nw_decoder *decoder);

#define NW_LANE_FORMAT_VERSION ...
#define NW_LANES ...
#define NW_LANE_CODERS ...
typedef struct nw_stream_encoder nw_stream_encoder;
typedef struct nw_stream_decoder nw_stream_decoder;
nw_stream_encoder *nw_stream_encoder_new(uint32_t channels, uint32_t version);
void nw_stream_encoder_free(nw_stream_encoder *encoder);
uint32_t nw_stream_encoder_channels(const nw_stream_encoder *encoder);
int nw_stream_encoder_set_max_error(nw_stream_encoder *encoder, uint32_t max_error);
uint32_t nw_stream_encoder_channel_bytes(const nw_stream_encoder *encoder, uint64_t *totals,
                                         uint32_t count);
int64_t nw_stream_encode_block(nw_stream_encoder *encoder, const int16_t *samples,
                               uint32_t n_samples, size_t stride, int keyframe,
                               uint8_t *out, size_t out_cap);
nw_stream_decoder *nw_stream_decoder_new(uint32_t channels);
void nw_stream_decoder_free(nw_stream_decoder *decoder);
uint32_t nw_stream_decoder_channels(const nw_stream_decoder *decoder);
void nw_stream_decoder_reset(nw_stream_decoder *decoder);
int nw_stream_block_peek(const uint8_t *in, size_t in_len, nw_block_info *info);
int nw_stream_decode_block(nw_stream_decoder *decoder, const uint8_t *in, size_t in_len,
                           int16_t *samples, size_t rows_cap, size_t stride,
                           nw_block_info *info);
enum nw_simd { NW_SIMD_AUTO, NW_SIMD_SCALAR, NW_SIMD_SSE2, NW_SIMD_AVX2, NW_SIMD_AVX512, ... };
int nw_lanes_set_simd(int simd);

typedef struct nw_team nw_team;
#define NW_TEAM_SPIN_LIMIT_US ...
nw_team *nw_team_new(uint32_t helpers, const int *cpus);
void nw_team_free(nw_team *team);
uint32_t nw_team_helpers(const nw_team *team);
int nw_team_set_spin(nw_team *team, uint32_t microseconds);
int nw_team_encode(nw_team *team, uint32_t groups, nw_stream_encoder *const *encoders,
                   const int16_t *samples, uint32_t n_samples, size_t stride, int keyframe,
                   uint8_t *out, size_t out_cap, const size_t *offsets, int64_t *sizes);
int nw_team_decode(nw_team *team, uint32_t groups, nw_stream_decoder *const *decoders,
                   const uint8_t *const *blocks, const size_t *lengths, int16_t *samples,
                   size_t rows_cap, size_t stride, int *statuses, nw_block_info *infos);

size_t nw_file_bound(size_t in_len);
int64_t nw_file_compress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);
int nw_file_original_size(const uint8_t *in, size_t in_len, uint64_t *size);
int64_t nw_file_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);
"""


_absolute_paths = False   # set by build_alone


def source_path(path):
    """A source or include path as cffi is to be given it: relative to the project root
    setuptools runs from (absolute when run from elsewhere), and absolute in a build run as
    a script, which cffi compiles inside its tmpdir."""
    if _absolute_paths:
        return os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def build_alone(make_builder):
    """What a build script does when run as one (`python codec_c/build_ffi.py [DIR]`): the
    extension built under DIR (default build/ffi/), to debug the build alone."""
    global _absolute_paths
    _absolute_paths = True
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, os.pardir, "build", "ffi")
    make_builder().compile(tmpdir=out, verbose=True)


def compile_flags():
    """The codec's compile and link flags, which every extension beside it builds with too
    (so that `make asan` instruments them all)."""
    # -O3: the model loops are vectorised there (measured ~1.3x over -O2)
    compile_args = ["-O3", "-std=c99", "-pthread"]   # -pthread: the thread team (nw_team.c)
    link_args = ["-pthread"]
    if os.environ.get("NEUROWIRE_SANITIZE") == "1":
        # Opt-in: the tests must then run with libasan preloaded into python
        # (see `make asan`). Aborting on the first UB report makes it a test failure
        # rather than a line lost in the log.
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g"]
        compile_args += san
        link_args += san
    return compile_args, link_args


def header_cdef(header):
    """The part of `header` between its cdef markers, as cffi declarations, so the header is
    the one place that owns its interface. A #define whose value is not a plain integer
    becomes ``...``: cffi cannot evaluate an expression there, and the compiler reads it."""
    with open(header) as handle:
        text = handle.read().split("/* cdef begin */", 1)[1].split("/* cdef end */", 1)[0]
    # Comments go first so that one after a #define's value does not hide a plain integer.
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"^(\s*#\s*define\s+\w+)\s+(?!\d+\s*$)\S.*$", r"\1 ...", text, flags=re.M)


def header_extension(module, header, sources):
    """A cffi builder for a C file beside the codec (the daemon's data path, the simulator's
    send loop), with the codec's compile flags: its declarations are the header's part
    between its cdef markers, so one place owns the interface."""
    ffi = FFI()
    ffi.cdef(header_cdef(header))
    compile_args, link_args = compile_flags()
    ffi.set_source(module, f'#include "{os.path.basename(header)}"',
                   sources=[source_path(path) for path in sources],
                   include_dirs=[source_path(os.path.dirname(header))],
                   extra_compile_args=compile_args, extra_link_args=link_args)
    return ffi


def make_ffibuilder():
    ffi = FFI()
    ffi.cdef(CDEF)
    compile_args, link_args = compile_flags()
    ffi.set_source(
        "neurowire.codec._native",
        '#include "neurowire.h"\n#include "nw_lanes.h"\n#include "nw_team.h"',
        sources=[source_path(p) for p in sorted(glob.glob(os.path.join(SRC, "*.c")))],
        include_dirs=[source_path(SRC)],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    build_alone(make_ffibuilder)
