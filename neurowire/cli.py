"""The `neurowire` command.

Each subcommand lives in its own module, which provides ``configure_parser(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so one broken
or heavy part never slows down or breaks the others, and a subcommand whose module is not
installed is simply not offered. A module serving several subcommands reads
``args.command`` (or ``args.<group>_command`` inside a group).
"""
import argparse
import importlib
import importlib.util
import signal
import sys
import threading

# The one table of subcommands: name -> (module, help), or name -> {nested table}.
COMMANDS = {
    "daemon": ("neurowire.daemon.cli", "run the compression daemon"),
    "simulate": ("neurowire.clients.simulate", "stream simulated electrode data to a daemon"),
    "subscribe": ("neurowire.clients.subscribe", "receive and decode a compressed stream"),
    "dashboard": ("neurowire.clients.dashboard.cli", "serve the live monitoring page"),
    "compress": ("neurowire.archive.cli", "compress recordings into an archive"),
    "decompress": ("neurowire.archive.cli", "restore recordings from an archive"),
    "demo": ("neurowire.demo", "check capacity, then stream at a size this machine sustains"),
    "bench": {
        "codec": ("neurowire.codec.bench", "measure codec ratio, speed and latency"),
        "stream": ("neurowire.clients.bench_stream", "measure end-to-end streaming"),
        "feeds": ("neurowire.feeds.bandwidth", "bits/s of the lossless, spike and power feeds"),
        "bounded": ("neurowire.codec.bench_bounded", "ratio and error of bounded-error coding"),
        "capacity": ("neurowire.capacity", "which stream size this machine sustains now"),
        "challenge": ("neurowire.challenge", "the challenge score over a folder of WAVs"),
    },
}

_GROUP_HELP = {"bench": "benchmarks"}


def _available(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package raises here
        return False


def _any_available(table):
    return any(_any_available(t) if isinstance(t, dict) else _available(t[0])
               for t in table.values())


def _first_positional(argv):
    # Options before a subcommand take no values (-h, --version), so the first word
    # not starting with '-' is the subcommand's name.
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            return word, argv[i + 1:]
    return None, []


def _add_commands(parser, table, argv, dest):
    subparsers = parser.add_subparsers(dest=dest, metavar="COMMAND")
    subparsers.required = True
    chosen, rest = _first_positional(argv)
    for name, target in table.items():
        if isinstance(target, dict):
            if not _any_available(target):
                continue
            sub = subparsers.add_parser(name, help=_GROUP_HELP.get(name, name))
            if name == chosen:
                _add_commands(sub, target, rest, f"{name}_command")
            continue
        module_name, help_text = target
        if not _available(module_name):
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure_parser(sub)
            sub.set_defaults(_run=module.run)


def build_parser(argv):
    from neurowire import __version__

    parser = argparse.ArgumentParser(
        prog="neurowire",
        description="Lossless real-time compression of raw electrode data.")
    parser.add_argument("--version", action="version", version=f"neurowire {__version__}")
    _add_commands(parser, COMMANDS, argv, "command")
    return parser


def _terminate_as_interrupt(signum, frame):
    _terminate_as_interrupt.received = True
    raise KeyboardInterrupt


_terminate_as_interrupt.received = False


class _NamedStdout:
    """sys.stdout whose write errors name it, as a file's do, so a full disk or a closed
    pipe under `neurowire ... > out` is the one-line error of any file, not a traceback."""

    NAME = "standard output"

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as error:
            raise type(error)(error.errno, error.strerror, self.NAME) from None

    def flush(self):
        try:
            self._stream.flush()
        except OSError as error:
            raise type(error)(error.errno, error.strerror, self.NAME) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _drop_stdout(stream) -> None:
    """After standard output failed: what is still buffered goes to /dev/null, so the
    interpreter's own flush at exit does not fail a second time."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    name = " ".join(word for word in (args.command, getattr(args, "bench_command", None))
                    if word)
    stdout = sys.stdout
    sys.stdout = _NamedStdout(stdout)
    on_main = threading.current_thread() is threading.main_thread()
    # SIGTERM ends a command as Ctrl-C does: its `finally` blocks remove scratch files and
    # stop child processes (commands with handlers of their own, the daemon's, replace it).
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if on_main else None
    try:
        result = args._run(args)
        sys.stdout.flush()  # here, where a full disk or closed pipe can still be reported
    except KeyboardInterrupt:
        # What a command leaves behind when interrupted is its own contract (a resumable
        # store, no partial output); here it only must not end in a traceback.
        terminated = _terminate_as_interrupt.received
        print(f"neurowire {name}: {'terminated' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except OSError as error:
        # A file the user named that cannot be opened or written (a directory given for
        # a file, no permission, a full disk; standard output `> /dev/full`): one line
        # naming it, not a traceback. Faults without a file name are not the user's input
        # and keep their traceback.
        if error.filename is None:
            raise
        if error.filename == _NamedStdout.NAME:
            _drop_stdout(stdout)
            if isinstance(error, BrokenPipeError):
                return 1  # `| head`: the reader left with what it wanted; nothing to say
        print(f"neurowire {name}: {error.filename}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    except Exception as error:
        # A file the user named whose contents are wrong: neurowire's own errors that carry
        # its path (neurowire.codec.WavFileError, a damaged neurowire file read by name) are
        # one line, the message names it. Any other error is a fault and keeps its traceback.
        if getattr(error, "filename", None) is None or not type(error).__module__.startswith(
                "neurowire."):
            raise
        print(f"neurowire {name}: {error}", file=sys.stderr)
        return 1
    finally:
        if isinstance(sys.stdout, _NamedStdout):
            sys.stdout = stdout
        if on_main:
            signal.signal(signal.SIGTERM, previous)
            _terminate_as_interrupt.received = False
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
