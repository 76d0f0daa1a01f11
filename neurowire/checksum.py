"""The CRC-32 a block header carries of its samples: zlib's (reflected polynomial 0xEDB88320),
computed by zlib-ng where it is installed.

Every packet is checked twice, by the daemon over the raw samples and by the subscriber over
the decoded ones: ~20 KB each at 1024 channels. zlib 1.2's table loop takes ~10 us for that
on the CI kind of host; zlib-ng folds with carry-less multiplies (PCLMUL, VPCLMULQDQ) and
takes under 1 us, giving the same values, so the wire is unchanged.

`crc32` is for Python code; `native_crc32` hands the C loops (the daemon's data path, the
subscriber's) the address of the same function in the library already loaded, checked
against zlib before use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import zlib

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # an optional speed-up: zlib gives the same values
    _zlib_ng = None

crc32 = zlib.crc32 if _zlib_ng is None else _zlib_ng.crc32

# Values both libraries must give, lengths around their vector widths and fold sizes.
_CHECKS = [b"123456789", bytes(range(256)) * 3 + b"\x01", os.urandom(20480 + 7)]


def _agrees(function) -> bool:
    return all(function(0, data, len(data)) == zlib.crc32(data) for data in _CHECKS)


def _zlib_ng_function():
    """zlib-ng's zng_crc32_z(crc, buf, size_t len) in the zlib_ng module this process
    loaded (its wheel links zlib-ng in and exports it), or None."""
    if _zlib_ng is None:
        return None
    try:
        function = ctypes.CDLL(_zlib_ng.__file__).zng_crc32_z
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_uint32
    function.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    return function if _agrees(function) else None


def _zlib_function():
    """zlib's crc32(crc, buf, unsigned len) in the zlib this process loaded (Python's zlib
    module links it) or, failing that, the system's; None when there is none."""
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split()[-1] for line in handle
                     if line.rstrip().rsplit("/", 1)[-1].startswith(("libz.so", "libz-"))}
        path = paths.pop() if len(paths) == 1 else ctypes.util.find_library("z")
        if path is None:
            return None
        function = ctypes.CDLL(path).crc32
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_ulong
    function.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint]
    return function if _agrees(function) else None


_FINDERS = {"zlib-ng": _zlib_ng_function, "zlib": _zlib_function}


def native_crc32(kinds=("zlib-ng", "zlib")) -> tuple[str, int] | None:
    """("zlib-ng", address of zng_crc32_z) or, without zlib-ng, ("zlib", address of zlib's
    crc32), the first of `kinds` found: two signatures, so the C side keeps a field for each.
    None when none is found or agrees with zlib.crc32 (a C loop then uses its own table
    loop)."""
    for kind in kinds:
        function = _FINDERS[kind]()
        if function is not None:
            return kind, ctypes.cast(function, ctypes.c_void_p).value
    return None
