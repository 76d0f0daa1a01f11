"""The libzmq this process's pyzmq loaded, for the C loops that call it through pointers (the
subscriber's receive loop, the simulator's send loop): the same library instance that owns
the pyzmq sockets handed to them, found in /proc/self/maps (so Linux only). Nothing here
needs the codec."""

from __future__ import annotations

import ctypes


def loaded_libzmq() -> str:
    """Path of the libzmq this process's pyzmq loaded (Linux: /proc/self/maps)."""
    import zmq  # noqa: F401  (loads the library)

    with open("/proc/self/maps") as handle:
        paths = {line.split()[-1] for line in handle if "libzmq" in line.rsplit("/", 1)[-1]}
    if len(paths) != 1:
        raise OSError(f"expected one libzmq loaded by pyzmq, found {sorted(paths) or 'none'}")
    return paths.pop()


def libzmq_functions(ffi, ctype: str, functions: dict):
    """A new `ctype` struct (cffi) whose function-pointer fields point into the libzmq this
    process's pyzmq loaded; `functions` maps field -> libzmq symbol."""
    # dlopen of a path already loaded returns that instance: the socket's own library.
    libzmq = ctypes.CDLL(loaded_libzmq())
    table = ffi.new(ctype + " *")
    for field, symbol in functions.items():
        address = ctypes.cast(getattr(libzmq, symbol), ctypes.c_void_p).value
        setattr(table, field, ffi.cast(ffi.typeof(getattr(table, field)), address))
    return table


def loads(set_up) -> bool:
    """Whether a C loop's one-time `set_up()` works here (its extension built, on Linux, one
    libzmq loaded); its callers fall back to their Python loops when not."""
    try:
        set_up()
    except (ImportError, OSError, AttributeError):
        return False
    return True

