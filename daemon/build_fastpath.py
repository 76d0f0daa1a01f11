"""Declares daemon/src/nw_fastpath.h to cffi and compiles the daemon's C data path
(API mode, out-of-line), as codec_c/build_ffi.py does for the codec.

Run by setuptools through ``cffi_modules`` (``pip install .``); running it as a script
builds the extension under build/ffi/, to debug the build alone.

Nothing is linked but libc: libzmq, the codec and zlib are reached through function
pointers that daemon/fastpath.py takes from the libraries the process already loaded, so
no ZeroMQ or zlib headers are needed to build, and the sockets and encoders handed over
belong to the same library instances as their pointers.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
HEADER = os.path.join(SRC, "nw_fastpath.h")

sys.path.insert(0, os.path.join(HERE, os.pardir, "codec_c"))
# The codec's compile flags (ASan included), and its reader of a header's cdef part.
from build_ffi import _cdef_between_markers, _flags, _rel  # noqa: E402

sys.path.pop(0)


def make_ffibuilder():
    ffi = FFI()
    ffi.cdef(_cdef_between_markers(HEADER))
    compile_args, link_args = _flags()
    ffi.set_source(
        "neurowire.daemon._fastpath",
        '#include "nw_fastpath.h"',
        sources=[_rel(os.path.join(SRC, "nw_fastpath.c"))],
        include_dirs=[_rel(SRC)],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(HERE, os.pardir, "build", "ffi"), verbose=True)
