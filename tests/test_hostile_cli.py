"""Hostile command lines: bad option values, bad endpoints, bad config files and paths that
cannot be used each get one line naming the problem and a non-zero exit, never a traceback,
a hang or a run that starts and then fails somewhere deep."""
import socket
import subprocess
import sys

import pytest

from neurowire import cli, options


def run_main(capsys, *argv):
    try:
        rc = cli.main(list(argv))
    except SystemExit as stop:  # argparse refuses with exit 2
        rc = stop.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--connect", "garbage"], "not a tcp://, ipc:// or inproc:// endpoint"),
    (["simulate", "--control", "tcp://127.0.0.1:99999"], "port '99999' is not a number"),
    (["simulate", "--channels", "100000"], "at most 4096"),
    (["simulate", "--packet-samples", "100000000"], "at most 65536"),
    (["subscribe", "--connect", "tcp://256.1.1.1:7341"], "is not an IPv4 address"),
    (["subscribe", "--republish", "tcp://127.0.0.1"], "port"),
    (["subscribe", "--seconds", "nan"], "not a finite number"),
    (["subscribe", "--batch-ms", "-1"], "at least 0"),
    (["subscribe", "--verify-synth", "1", "--channels", "0"], "at least 1"),
    (["dashboard", "--port", "99999"], "at most 65535"),
    (["dashboard", "--interval", "0"], "at least 0.01"),
    (["dashboard", "--interval", "nan"], "not a finite number"),
    (["dashboard", "--timeout", "-1"], "above 0"),
    (["dashboard", "--history", "-1"], "at least 0"),
    (["dashboard", "--control", "garbage"], "not a tcp://"),
    (["dashboard", "--publish", "ipc://"], "no address after ipc://"),
    (["simulate", "--connect", "inproc://x"], "inproc:// reaches only this process"),
    (["subscribe", "--stream", "bad id!"], "a stream id is 1 to 64"),
    (["subscribe", "--stream", ""], "a stream id is 1 to 64"),
    (["dashboard", "--host", ""], "an empty host"),
    (["subscribe", "--connect", "tcp://127.0.0.1:7341\n"], "control character"),
    (["demo", "--seconds", "nan"], "not a finite number"),
    (["demo", "--seconds", "-1"], "above 0"),
    (["demo", "--channels", "0"], "at least 1"),
    (["demo", "--channels", "4", "--packet-samples", "0"], "at least 1"),
])
def test_bad_option_values_are_refused_before_anything_runs(capsys, argv, message):
    rc, err = run_main(capsys, *argv)
    assert rc == 2
    assert message in err


def test_a_synthetic_table_beyond_memory_is_refused_not_built(capsys):
    rc, err = run_main(capsys, "simulate", "--channels", "4096", "--loop-samples", "1000000",
                       "--control", "")
    assert rc == 2
    assert "use a smaller --loop-samples" in err


@pytest.mark.parametrize("argv", [["simulate", "--report"], ["subscribe", "--npy"],
                                  ["subscribe", "--report"], ["subscribe", "--spool"],
                                  ["subscribe", "--feed", "spikes", "--events"]])
def test_a_folder_given_for_an_output_file_is_refused_before_the_run(capsys, tmp_path, argv):
    # Before: found out when the run ended, with --npy after the samples were received.
    rc, err = run_main(capsys, *argv, str(tmp_path), "--connect", "tcp://127.0.0.1:1")
    assert rc == 2
    assert err.strip().splitlines()[-1].endswith(f"{tmp_path} is a folder; give a file name")


def test_a_file_given_for_an_output_folder_is_refused_before_the_run(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    rc, err = run_main(capsys, "subscribe", "--wav-dir", str(tmp_path / "f"))
    assert rc == 2
    assert "exists and is not a folder" in err


def test_dashboard_on_a_port_in_use_says_so(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err = run_main(capsys, "dashboard", "--no-tap", "--port", str(port))
    assert rc == 1
    assert f"cannot serve on 127.0.0.1:{port}" in err


def test_dashboard_on_a_host_that_does_not_resolve_says_so(capsys):
    rc, err = run_main(capsys, "dashboard", "--no-tap", "--host", "no-such-host.invalid",
                       "--port", "0")
    assert rc == 1
    assert "cannot serve on no-such-host.invalid:0" in err


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe[daemon]\n", "not valid TOML"),
    (b'[daemon]\nmetrics = "127.0.0.1:notaport"\n', "port 'notaport' is not a number"),
    (b'[daemon]\nmetrics = "127.0.0.1:70000"\n', "port '70000' is not a number"),
    (b'[daemon]\ningest = "tcp://256.1.1.1:7340"\n', "'256.1.1.1' is not an IPv4 address"),
    (b'[daemon]\npublish = "tcp://127.0.0.1:99999"\n', "port '99999' is not a number"),
    (b'[daemon]\ncontrol = "tcp://127.0.0.1"\n', "a tcp endpoint needs HOST:PORT"),
    (b'[daemon]\nlossless = "ipc://"\n', "no address after ipc://"),
    (b"[daemon]\nstream_idle_timeout_s = inf\n", "'stream_idle_timeout_s' must be a finite"),
    (b"[daemon]\nlossless_timeout_s = nan\n", "'lossless_timeout_s' must be a finite"),
    (b"[daemon]\nkeyframe_interval_s = nan\n", "'keyframe_interval_s' must be a finite"),
    # libzmq stops at a NUL: this bound /tmp/a, silently.
    (b'[daemon]\ningest = "ipc:///tmp/a\\u0000b"\n', "holds a control character"),
    (b'[daemon]\ningest = "inproc://x"\n', "inproc:// reaches only the daemon's own threads"),
    (b'[daemon]\ningest = "tcp://127.0.0.1:17399"\npublish = "tcp://127.0.0.1:17399"\n',
     "'ingest' and 'publish' are both 'tcp://127.0.0.1:17399'"),
    (b'[daemon]\nfeeds = "spikes"\n', "'feeds' must be a list of strings, not 'spikes'"),
    (b"[daemon]\nfeed_treshold = 5.0\n", "did you mean 'feed_threshold'?"),
    (b"[daemon]\n[daemon.sub]\nx = 1\n", "'sub' is a table; this table holds keys only"),
    (b"[daemon]\nfoo = {a = 1}\n", "'foo' is a table"),
    (b"[daemon]\nworkers = 1979-05-27\n", "'workers' must be int, not date"),
    (b"[security]\ncurve = \"true\"\n", "'curve' must be bool, not str"),
])
def test_bad_config_files_are_refused_with_the_key(capsys, tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    rc, err = run_main(capsys, "daemon", "--config", str(path), "--print-config")
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1


def test_a_directory_as_config_is_one_line(capsys, tmp_path):
    rc, err = run_main(capsys, "daemon", "--config", str(tmp_path))
    assert rc == 2
    assert err == f"neurowire daemon: {tmp_path}: cannot read: Is a directory\n"


def test_metrics_port_beyond_range_on_the_command_line_is_a_config_error():
    # Before: accepted, then the HTTP server's bind raised OverflowError (exit 70, traceback).
    r = subprocess.run([sys.executable, "-m", "neurowire", "daemon", "--metrics",
                        "127.0.0.1:99999"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "port '99999' is not a number 0..65535" in r.stderr


def all_commands():
    """Every subcommand's words (['simulate'], ['bench', 'codec'], ...), from cli.COMMANDS."""
    words = []
    for name, target in cli.COMMANDS.items():
        if isinstance(target, dict):
            words += [[name, sub] for sub in target]
        else:
            words.append([name])
    return words


def subcommand_parser(command):
    sub = cli.build_parser(command)
    for word in command:
        sub = next(a for a in sub._actions if a.dest.endswith("command")).choices[word]
    return sub


# Positionals each command needs before its options are parsed.
POSITIONALS = {"challenge": ["somewhere"], "compress": ["somewhere", "-o", "out.zarr"],
               "decompress": ["somewhere", "-o", "out"]}


def numeric_options(command):
    """(option, type) of every option of `command` whose type is a neurowire.options.bounded."""
    return [(action.option_strings[-1], action.type)
            for action in subcommand_parser(command)._actions
            if action.option_strings and hasattr(action.type, "high")]


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_numeric_option_has_a_finite_upper_bound(command):
    # A duration without a cap once let `simulate --seconds 1e300` run for ever.
    for action in subcommand_parser(command)._actions:
        if not action.option_strings or action.nargs == 0 or action.choices:
            continue
        assert action.type not in (int, float), f"{command}: {action.option_strings} plain"
        if hasattr(action.type, "high"):
            assert action.type.high is not None, f"{command}: {action.option_strings} no cap"


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_a_huge_value_of_any_numeric_option_is_refused(capsys, command):
    for option, kind in numeric_options(command):
        huge = "1e300" if kind.kind is float else str(10 ** 30)
        argv = command + POSITIONALS.get(command[-1], []) + [f"{option}={huge}"]
        rc, err = run_main(capsys, *argv)
        assert rc == 2, argv
        assert "out of range" in err.strip().splitlines()[-1], (argv, err)


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--seconds", "86401"], "at most 86400"),
    (["subscribe", "--seconds", "1e300"], "at most 86400"),
    (["subscribe", "--idle-timeout", "1e9"], "at most 86400"),
    (["subscribe", "--until-sample", str(2 ** 63)], "at most 9223372036854775807"),
    (["subscribe", "--loop-samples", str(1 << 25)], "at most 16777216"),
    (["dashboard", "--link-mbps", "1e7"], "at most 1e+06"),
])
def test_named_upper_bounds(capsys, argv, message):
    rc, err = run_main(capsys, *argv)
    assert rc == 2
    assert message in err


def test_a_synthetic_table_too_short_for_a_spike_is_built():
    # Before: a table shorter than one spike (30 samples at 20 kHz) crashed in numpy's
    # integers(0, negative) on the first channel that drew a spike.
    from neurowire.clients import synth

    table = synth.synthesize(4096, 20000.0, 29, seed=1)
    assert table.shape == (29, 4096)


def test_subscribe_refuses_a_verification_table_beyond_memory(capsys):
    rc, err = run_main(capsys, "subscribe", "--verify-synth", "1", "--channels", "4096",
                       "--loop-samples", str(1 << 24), "--connect", "tcp://127.0.0.1:1")
    assert rc == 2
    assert "use a smaller --loop-samples" in err


def test_a_metrics_port_in_use_names_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "neurowire", "daemon", "--metrics",
                            f"127.0.0.1:{port}", "--ingest", "tcp://127.0.0.1:*", "--publish",
                            "tcp://127.0.0.1:*", "--lossless", "tcp://127.0.0.1:*",
                            "--control", "tcp://127.0.0.1:*"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"metrics 127.0.0.1:{port}: Address already in use" in r.stderr


PATH_METAVARS = {"FILE", "DIR", "DIR_OR_FILES", "OUT.zarr"}


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_path_option_refuses_an_empty_path(capsys, command):
    # `--wav "$DIR"` with DIR unset once played the synthetic signal instead, and
    # `compress -o ""` emptied the current folder.
    for action in subcommand_parser(command)._actions:
        named = action.metavar in PATH_METAVARS or action.dest in ("data", "encode", "decode",
                                                                   "keep")
        if not named or action.help == "==SUPPRESS==":
            continue
        assert action.type in (options.path, options.output_file, options.output_folder), (
            command, action.dest)
        if action.option_strings:
            argv = command + POSITIONALS.get(command[-1], []) + [action.option_strings[-1], ""]
            rc, err = run_main(capsys, *argv)
            assert rc == 2 and "an empty path" in err, (argv, err)


@pytest.mark.parametrize("device, message", [
    ("/dev/zero", "more than 1048576 bytes: not a config file"),
    ("/dev/null", "nothing to read"),
])
def test_a_config_that_is_a_device_is_refused_not_read_for_ever(capsys, device, message):
    rc, err = run_main(capsys, "daemon", "--config", device, "--print-config")
    assert rc == 2
    assert err == f"neurowire daemon: {device}: {message}" + err.split(message, 1)[1]
    assert err.count("\n") == 1


def test_a_config_fifo_without_a_writer_is_refused_in_time(capsys, tmp_path, monkeypatch):
    import os

    from neurowire.daemon import config

    monkeypatch.setattr(config, "PIPE_WAIT_S", 0.3)
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    rc, err = run_main(capsys, "daemon", "--config", str(fifo), "--print-config")
    assert rc == 2
    assert "nothing complete to read within 0.3 s" in err


def test_a_config_from_a_pipe_is_read(tmp_path):
    # `--config <(...)`: a pipe that is written is as good as a file.
    r = subprocess.run(["bash", "-c", f"'{sys.executable}' -m neurowire daemon --config "
                        "<(sleep 0.2; printf '[daemon]\\nworkers = 3\\n') --print-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"workers": 3' in r.stdout


def test_a_report_to_a_full_disk_is_one_line(capsys):
    rc, err = run_main(capsys, "simulate", "--connect", "tcp://127.0.0.1:1", "--control", "",
                       "--seconds", "0.05", "--channels", "4", "--quiet",
                       "--report", "/dev/full")
    assert rc == 1
    assert err.strip().splitlines()[-1] == "neurowire simulate: /dev/full: No space left on device"


@pytest.mark.parametrize("argv, message", [
    # Before: a ValueError traceback from the library.
    (["--feed", "spikes"], "--feed spikes needs --stream ID"),
    (["--feed", "power", "--lossless"], "--lossless is for --feed lossless, not power"),
    # Before: accepted, and the file silently never written.
    (["--feed", "spikes", "--stream", "s", "--wav-dir", "d"], "--wav-dir is for --feed lossless"),
    (["--feed", "power", "--stream", "s", "--npy", "x.npy"],
     "--npy is for --feed lossless or bounded, not power"),
    (["--events", "e.npz"], "--events is for --feed spikes, not lossless"),
])
def test_subscribe_option_combinations_that_cannot_work_are_refused(capsys, argv, message):
    rc, err = run_main(capsys, "subscribe", "--connect", "tcp://127.0.0.1:1", *argv)
    assert rc == 2
    assert err == f"neurowire subscribe: {message}" + err.split(message, 1)[1]
    assert err.count("\n") == 1


def test_standard_output_on_a_full_disk_is_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "neurowire", "daemon", "--print-config"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "neurowire daemon: standard output: No space left on device\n"


def test_standard_output_into_a_closed_pipe_is_quiet(tmp_path):
    (tmp_path / "a.wav").write_bytes(open(
        __import__("pathlib").Path(__file__).parent / "data" / "excerpt_quiet.wav", "rb").read())
    r = subprocess.run(f"'{sys.executable}' -m neurowire compress '{tmp_path}/a.wav' -o "
                       f"'{tmp_path}/s.zarr' -q | true", shell=True, capture_output=True,
                       text=True, timeout=60)
    assert "Traceback" not in r.stderr and "Broken pipe" not in r.stderr


def test_subscribe_never_spools_over_an_existing_file(capsys, tmp_path):
    # The spool is deleted after the run: an existing file given by mistake was emptied,
    # then removed.
    precious = tmp_path / "recording.npy"
    precious.write_bytes(b"precious")
    rc, err = run_main(capsys, "subscribe", "--connect", "tcp://127.0.0.1:1",
                       "--spool", str(precious))
    assert rc == 2
    assert f"--spool {precious} exists and is not empty" in err
    assert precious.read_bytes() == b"precious"
    from neurowire.clients.writers import Spool

    with pytest.raises(FileExistsError):
        Spool(str(precious))
    assert precious.read_bytes() == b"precious"
