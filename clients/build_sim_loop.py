"""Declares clients/src/sim_loop.h to cffi and compiles it into neurowire.clients._sim_loop
(API mode, out-of-line). Run by setuptools through ``cffi_modules``; running it as a script
builds the extension under build/ffi/, to debug the build alone.

Nothing is linked but libc: zmq_send is reached through a pointer taken from the libzmq
pyzmq loaded (clients/simulate.py), so no ZeroMQ header is needed to build.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
HEADER = os.path.join(SRC, "sim_loop.h")

sys.path.insert(0, os.path.join(HERE, os.pardir, "codec_c"))
# The codec's compile flags (ASan included), and its reader of a header's cdef part.
from build_ffi import _cdef_between_markers, _flags, _rel  # noqa: E402

sys.path.pop(0)


def make_ffibuilder():
    ffi = FFI()
    ffi.cdef(_cdef_between_markers(HEADER))
    compile_args, link_args = _flags()
    ffi.set_source("neurowire.clients._sim_loop", '#include "sim_loop.h"',
                   sources=[_rel(os.path.join(SRC, "sim_loop.c"))],
                   include_dirs=[_rel(SRC)],
                   extra_compile_args=compile_args, extra_link_args=link_args)
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(HERE, os.pardir, "build", "ffi"), verbose=True)
