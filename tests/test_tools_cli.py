"""The `neurowire` command's dispatcher and the codec benchmark's entry points."""
import json
import subprocess
import sys
import types

import pytest

from neurowire import cli


@pytest.fixture
def fake_commands(monkeypatch):
    calls = []
    mod = types.ModuleType("fake_nw_cmd")
    mod.configure_parser = lambda p: p.add_argument("--value", type=int, default=1)
    mod.run = lambda args: calls.append((args.command, args.value)) or 3
    monkeypatch.setitem(sys.modules, "fake_nw_cmd", mod)
    broken = types.ModuleType("fake_nw_broken")

    def explode(parser):
        raise AssertionError("imported a subcommand module that was not asked for")

    broken.configure_parser = explode
    monkeypatch.setitem(sys.modules, "fake_nw_broken", broken)
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if name.startswith("fake_nw_") and name != "fake_nw_missing"
                                          else real_find_spec(name, *a)))
    monkeypatch.setattr(cli, "COMMANDS", {
        "alpha": ("fake_nw_cmd", "the alpha command"),
        "other": ("fake_nw_broken", "never imported unless chosen"),
        "gone": ("fake_nw_missing", "module not installed"),
        "group": {"inner": ("fake_nw_cmd", "nested"), "gone": ("fake_nw_missing", "x")},
        "empty_group": {"gone": ("fake_nw_missing", "x")},
    })
    return calls


def test_dispatch_runs_only_the_chosen_module(fake_commands):
    assert cli.main(["alpha", "--value", "7"]) == 3
    assert fake_commands == [("alpha", 7)]


def test_nested_group(fake_commands):
    assert cli.main(["group", "inner"]) == 3
    assert fake_commands == [("group", 1)]


def test_missing_modules_are_not_listed(fake_commands, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "group" in out and "other" in out
    assert "gone" not in out and "empty_group" not in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["gone"])
    assert exit_.value.code == 2


def test_no_command_is_an_error(fake_commands, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2


def test_table_targets_are_well_formed():
    def walk(table):
        for name, target in table.items():
            assert name.isidentifier() or name.replace("-", "_").isidentifier()
            if isinstance(target, dict):
                walk(target)
            else:
                module, help_text = target
                assert module.startswith("neurowire.") and help_text

    walk(cli.COMMANDS)


def test_installed_script_and_module_entry():
    for cmd in ([sys.executable, "-m", "neurowire", "--version"],):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("neurowire ")
    r = subprocess.run([sys.executable, "-m", "neurowire", "bench", "codec", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--json" in r.stdout


def test_bench_codec_json_on_bundled_excerpts(tmp_path):
    from conftest import DATA
    r = subprocess.run(
        [sys.executable, "-m", "neurowire", "bench", "codec", "--data", str(DATA), "--repeats", "1",
         "--channels", "1024", "--latency-samples", "100", "--skip", "flac", "lzma-6", "--json"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["files"] == 3
    assert report["files_results"]["neurowire"]["ratio"] > report["files_results"]["zlib-6"]["ratio"]
    for key in ("1024x10", "1024x20"):
        for name in ("neurowire", "neurowire lanes"):   # both block formats, in the same run
            row = report["latency"][key][name]
            assert row["blocks"] > 0 and 0 < row["encode_us"]["p50"] <= row["encode_us"]["p99"]
    # A 1024-channel stream cut into 0.5-1 ms blocks keeps the whole-recording ratio
    # within 1% (the requirement); only the per-block header and flush cost.
    stream = report["stream_vs_whole"]
    assert stream["channels"] == 1024
    for block in ("10-sample blocks", "20-sample blocks", "10-sample blocks lanes",
                  "20-sample blocks lanes"):
        assert abs(stream["blocks"][block]["change_percent"]) < 1


def test_instructions_counted_by_single_steps_on_the_kernel_in_use():
    """What `bench codec --instructions` reports for the AVX-512 code, which callgrind cannot
    run: bench/lane_steps.c single-steps the C core's encoder and decoder (and checks they
    round-trip, or reports nothing)."""
    import shutil
    from conftest import DATA
    from neurowire.codec import bench, set_simd
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    simd = set_simd("auto")
    counts = bench.instructions_by_stepping(8, 10, 3, str(DATA), simd)
    assert counts["blocks"] == "8x10"
    for key in ("encode", "decode"):   # the lane format: some tens to a few hundred a sample
        assert 20 < counts[key] < 2000, (key, counts)
