"""Declares clients/src/sim_loop.h to cffi and compiles it into neurowire.clients._sim_loop
(API mode, out-of-line). Run by setuptools through ``cffi_modules``; running it as a script
builds the extension under build/ffi/, to debug the build alone.

Nothing is linked but libc: zmq_send is reached through a pointer taken from the libzmq
pyzmq loaded (clients/simulate.py), so no ZeroMQ header is needed to build.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")

sys.path.insert(0, os.path.join(HERE, os.pardir, "codec_c"))
from build_ffi import build_alone, header_extension  # noqa: E402  (the codec's compile flags, ASan included)

sys.path.pop(0)


def make_ffibuilder():
    return header_extension("neurowire.clients._sim_loop", os.path.join(SRC, "sim_loop.h"),
                            [os.path.join(SRC, "sim_loop.c")])


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    build_alone(make_ffibuilder)
