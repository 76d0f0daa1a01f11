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

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")

sys.path.insert(0, os.path.join(HERE, os.pardir, "codec_c"))
from build_ffi import build_alone, header_extension  # noqa: E402  (the codec's compile flags, ASan included)

sys.path.pop(0)


def make_ffibuilder():
    return header_extension("neurowire.daemon._fastpath", os.path.join(SRC, "nw_fastpath.h"),
                            [os.path.join(SRC, "nw_fastpath.c")])


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    build_alone(make_ffibuilder)
