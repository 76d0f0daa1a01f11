"""`neurowire bench challenge DIR`: the challenge's eval.sh formula over any folder."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHALLENGE, DATA, REPO
from neurowire import codec

EVAL_RATIO = REPO.parent / "shared" / "tools" / "eval-ratio"


def challenge(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "neurowire.cli", "bench", "challenge", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def expected_ratio(folder, tools):
    """The formula computed here from the files and the library (same bytes as ./encode)."""
    wavs = sorted(Path(folder).glob("*.wav"))
    raw = sum(p.stat().st_size for p in wavs)
    compressed = sum(len(codec.compress(str(p))) for p in wavs)
    return raw / (compressed + sum(os.path.getsize(t) for t in tools))


def test_score_of_the_bundled_excerpts(tools):
    result = challenge("tests/data", "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"ratio {expected_ratio(DATA, tools):.4f}"
    assert "files 3, every one byte-exact after encode and decode" in lines
    assert sum(line.startswith("excerpt_") for line in lines) == 3


def test_a_round_trip_that_differs_fails_naming_the_file(tools, tmp_path):
    for name in ("a.wav", "b.wav"):
        shutil.copy(DATA / "excerpt_quiet.wav", tmp_path / name)
    # A decoder that loses the last byte of b.wav's copy only.
    bad = tmp_path / "bad_decode"
    bad.write_text(f'#!/bin/sh\n"{tools[1]}" "$1" "$2" || exit $?\n'
                   'case "$1" in *b.wav.nw) truncate -s -1 "$2";; esac\n')
    bad.chmod(0o755)
    result = challenge(str(tmp_path), "--encode", str(tools[0]), "--decode", str(bad), "-j", "2")
    assert result.returncode == 1
    assert "b.wav: differs from the original after encode and decode" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ratio FAILED"


def test_a_failing_program_and_a_folder_without_recordings_are_reported(tools, tmp_path):
    shutil.copy(DATA / "excerpt_loud.wav", tmp_path / "x.wav")
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'no space left' >&2\nexit 3\n")
    failing.chmod(0o755)
    result = challenge(str(tmp_path), "--encode", str(failing), "--decode", str(tools[1]))
    assert result.returncode == 1
    assert "x.wav: encode exited 3 (no space left)" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = challenge(str(empty))
    assert result.returncode == 1 and "no .wav files in" in result.stderr
    result = challenge(str(tmp_path), "--encode", str(tmp_path / "missing"))
    assert result.returncode == 1 and "is not an executable file" in result.stderr


@pytest.mark.challenge
@pytest.mark.skipif(not (CHALLENGE.is_dir() and EVAL_RATIO.exists()),
                    reason="needs ../shared/data/challenge and ../shared/tools/eval-ratio")
def test_same_ratio_as_eval_ratio_on_recordings(tools, tmp_path):
    for path in sorted(CHALLENGE.glob("*.wav"))[:6]:
        shutil.copy(path, tmp_path / path.name)
    ours = challenge(str(tmp_path), "-j", "2")
    theirs = subprocess.run([str(EVAL_RATIO), "-j", "2", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert ours.stdout.strip().splitlines()[-1] == theirs.stdout.strip().splitlines()[-1]
