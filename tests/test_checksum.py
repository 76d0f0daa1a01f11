"""neurowire.checksum: zlib-ng's CRC-32 (Python and the C loops' pointer) is zlib's, value for
value, so switching to it leaves every block header on the wire as it was."""

import ctypes
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurowire import checksum


def test_zlib_ng_is_installed_and_chosen():
    """A dependency of the package: a missing one would quietly cost ~10 us per packet."""
    assert checksum.crc32 is not zlib.crc32
    assert checksum.native_crc32()[0] == "zlib-ng"


@given(st.binary(max_size=5000), st.integers(0, 2**32 - 1))
def test_python_crc32_is_zlibs(data, start):
    assert checksum.crc32(data) == zlib.crc32(data)
    assert checksum.crc32(data, start) == zlib.crc32(data, start)


def test_python_crc32_takes_sample_arrays_as_zlib_does():
    samples = np.random.default_rng(1).integers(-2**15, 2**15, (10, 1024), dtype=np.int16)
    assert checksum.crc32(samples) == zlib.crc32(samples.tobytes())
    assert checksum.crc32(memoryview(samples.tobytes())[3:]) == zlib.crc32(samples.tobytes()[3:])


@pytest.mark.parametrize("kind", ["zlib-ng", "zlib"])
def test_the_native_function_given_to_the_c_loops_is_zlibs_crc32(kind):
    found = checksum.native_crc32((kind,))
    assert found is not None and found[0] == kind
    if kind == "zlib-ng":
        function = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p,
                                    ctypes.c_size_t)(found[1])
    else:
        function = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p,
                                    ctypes.c_uint)(found[1])
    rng = np.random.default_rng(2)
    # around the folding widths (16, 64, 256 bytes) and a whole 1024-channel packet, at odd
    # offsets into the buffer
    for length in (0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 20480, 20481):
        data = rng.integers(0, 256, length + 3, dtype=np.uint8).tobytes()
        for offset in (0, 1, 3):
            part = data[offset:offset + length]
            assert function(0, part, len(part)) == zlib.crc32(part)


def test_no_native_function_when_none_agrees(monkeypatch):
    """A library whose crc32 gives other values is never handed to C."""
    monkeypatch.setitem(checksum._FINDERS, "zlib-ng", lambda: None)
    monkeypatch.setattr(checksum, "_agrees", lambda function: False)
    assert checksum.native_crc32(("zlib-ng", "zlib")) is None
