"""Writing a file the user named, all or nothing (reports, .npy, WAVs, events).

A file written in place and cut short (Ctrl-C twice, SIGTERM during the write, a full disk)
would be left looking complete: a .npy whose header promises rows that are zeros, half a
JSON report. So each is written to a scratch file beside it and renamed over the name only
once complete, as ./encode does; on any failure the scratch goes and the name keeps what it
held before. A device or pipe given as the name (/dev/stdout, a FIFO) is written directly:
it cannot be renamed onto. Every OSError names the path, so `neurowire` prints it in one
line (a full disk's ENOSPC at close carries no file name of its own)."""

from __future__ import annotations

import contextlib
import os
import stat


def _is_special(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path)
    except FileNotFoundError:
        return False


def _scratch(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    for attempt in range(100):
        scratch = os.path.join(folder, f".{name}.{os.getpid()}.{attempt}.partial")
        try:
            # 0o666 less the umask, as open(path, "w") would have made the file.
            os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return scratch
        except FileExistsError:
            continue
    raise FileExistsError(17, "no free scratch name beside it", path)


@contextlib.contextmanager
def output_path(path: str):
    """Yields the path to write to (a scratch file beside `path`, or `path` itself for a
    device or pipe); once the block ends without an exception the scratch becomes `path`."""
    path = os.fspath(path)
    if not path.strip():
        raise FileNotFoundError(2, "an empty file name", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory", path)
    try:
        if _is_special(path):
            yield path
            return
        scratch = _scratch(path)
    except OSError as error:
        raise _named(error, path) from None
    try:
        yield scratch
        os.replace(scratch, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        if isinstance(error, OSError):
            raise _named(error, path) from None
        raise


@contextlib.contextmanager
def open_output(path: str, mode: str = "w", **kwargs):
    """open() of `path` for writing through output_path: complete or not there at all."""
    with output_path(path) as target:
        try:
            with open(target, mode, **kwargs) as handle:
                yield handle
        except OSError as error:
            raise _named(error, path) from None


def _named(error: OSError, path: str) -> OSError:
    """`error` with `path` as its file name (a write or close error carries none)."""
    if error.filename == path:
        return error
    return type(error)(error.errno, error.strerror or str(error), path)
