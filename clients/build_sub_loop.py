"""Declares clients/src/sub_loop.h and spool_loop.h to cffi and compiles it into neurowire.clients._sub_loop
(API mode, out-of-line). Run by setuptools through ``cffi_modules``; running it as a script
builds the extension under build/ffi/, to debug the build alone.

Only the codec's headers are used (for its types): its functions are reached through
pointers taken from the codec's own cffi module, and libzmq's from the library pyzmq loaded.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
CODEC_SRC = os.path.join(HERE, os.pardir, "codec_c", "src")

sys.path.insert(0, os.path.join(HERE, os.pardir, "codec_c"))
from build_ffi import build_alone, compile_flags, header_cdef, source_path  # noqa: E402

sys.path.pop(0)

# The codec's types, opaque here: the sub loop only passes their pointers on.
CODEC_TYPES = """
typedef struct nw_team nw_team;
typedef struct nw_stream_decoder nw_stream_decoder;
typedef struct nw_block_info nw_block_info;
"""

# libc's, for fastsub.same_bytes (a check of decoded samples without copying them)
LIBC = "int memcmp(const void *a, const void *b, size_t n);\n"


def make_ffibuilder():
    ffi = FFI()
    compile_args, link_args = compile_flags()
    ffi.cdef(CODEC_TYPES + header_cdef(os.path.join(SRC, "sub_loop.h"))
             + header_cdef(os.path.join(SRC, "spool_loop.h")) + LIBC)
    ffi.set_source("neurowire.clients._sub_loop",
                   '#include <string.h>\n#include "sub_loop.h"\n#include "spool_loop.h"',
                   sources=[source_path(os.path.join(SRC, name))
                            for name in ("sub_loop.c", "spool_loop.c")],
                   include_dirs=[source_path(SRC), source_path(CODEC_SRC)],
                   extra_compile_args=compile_args, extra_link_args=link_args)
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    build_alone(make_ffibuilder)
