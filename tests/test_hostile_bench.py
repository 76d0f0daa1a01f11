"""Hostile numbers on the benchmark and archive commands: every numeric option goes through
the range-checked type of neurowire/options.py, so zero, negative, huge and NaN values are
one line and exit 2 before anything runs (no traceback, no division by zero, no hour-long
run from a typo)."""
import pytest

from neurowire import cli

BENCH = ["codec", "stream", "feeds", "bounded", "capacity", "challenge"]
COMMANDS = [["bench", name] for name in BENCH] + [["compress"]]
POSITIONALS = {"challenge": ["somewhere"], "compress": ["somewhere", "-o", "out.zarr"]}


def numeric_options(command):
    """(option string, its type) for every option of `command` that takes a number."""
    parser = cli.build_parser(command)
    sub = parser
    for word in command:
        sub = next(a for a in sub._actions if a.dest.endswith("command")).choices[word]
    found = []
    for action in sub._actions:
        if not action.option_strings or action.nargs == 0 or action.choices:
            continue
        if action.type in (int, float) or getattr(action.type, "__qualname__", "").startswith(
                "bounded."):
            found.append((action.option_strings[-1], action.type))
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_numeric_option_is_range_checked(command):
    options = numeric_options(command)
    assert options, "no numeric options found: the introspection is broken"
    unchecked = [name for name, kind in options if kind in (int, float)]
    assert not unchecked, f"{' '.join(command)}: plain int/float options {unchecked}"


def run_main(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return stop.value.code, err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "inf", "-1e30", "1e30", "99999999999999999999",
                                   "-5", "ten"])
def test_absurd_numbers_are_one_line_errors(capsys, command, value):
    for option, _ in numeric_options(command):
        argv = command + POSITIONALS.get(command[-1], []) + [f"{option}={value}"]
        rc, err = run_main(capsys, argv)
        assert rc == 2, argv
        last = err.strip().splitlines()[-1]
        assert f"argument {option}" in last or f"/{option}" in last, (argv, last)
        assert any(word in last for word in ("out of range", "not a finite", "not an integer",
                                             "not a number")), (argv, last)


@pytest.mark.parametrize("argv, message", [
    (["bench", "codec", "--repeats", "0"], "at least 1"),
    (["bench", "codec", "--blocks", "10", "0"], "at least 1"),
    (["bench", "codec", "--channels", "4097"], "at most 4096"),
    (["bench", "stream", "--seconds", "0"], "above 0"),
    (["bench", "stream", "--rate", "0"], "above 0"),
    (["bench", "stream", "--packet-samples", "0"], "at least 1"),
    (["bench", "stream", "--workers", "0"], "at least 1"),
    (["bench", "stream", "--realtime-priority", "100"], "at most 99"),
    (["bench", "stream", "--keyframe-interval", "0"], "above 0"),
    (["bench", "stream", "--block-format", "-1"], "at least 0"),
    (["bench", "capacity", "--calibrate", "0"], "at least 1"),
    (["bench", "capacity", "--seconds", "nan"], "not a finite number"),
    (["bench", "bounded", "--levels", "64"], "at most 63"),
    (["bench", "bounded", "--block", "0"], "at least 1"),
    (["bench", "feeds", "--threshold", "0"], "above 0"),
    (["bench", "feeds", "--link-mbps", "-1"], "above 0"),
    (["bench", "feeds", "--bounded", "0"], "at least 1"),
    (["bench", "challenge", "x", "-j", "0"], "at least 1"),
    (["compress", "x", "-o", "y", "--chunk-channels", "5000"], "at most 4096"),
    (["compress", "x", "-o", "y", "--rate", "nan"], "not a finite number"),
    (["simulate", "--seed", "-1"], "at least 0"),
    (["subscribe", "--verify-synth", "-1"], "at least 0"),
    (["daemon", "--workers", "65"], "at most 64"),
])
def test_named_bounds(capsys, argv, message):
    rc, err = run_main(capsys, argv)
    assert rc == 2
    assert message in err.strip().splitlines()[-1]


def test_a_zero_upper_bound_is_named():
    import argparse

    from neurowire.options import bounded
    with pytest.raises(argparse.ArgumentTypeError, match="at most 0"):
        bounded(int, -5, 0, what="it")("3")
