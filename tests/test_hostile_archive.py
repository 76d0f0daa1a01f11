"""Hostile archive paths and stores: `neurowire compress` never deletes what is not its own
archive (an empty -o once emptied the current folder: zarr took "" as ".", and mode "w"
cleared it), and `neurowire decompress` checks a store's manifest before it writes a byte
(a manifest naming "/x.wav" once wrote /x.wav, outside the -o folder)."""
import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("zarr")

from neurowire import cli  # noqa: E402
from neurowire.archive.batch import ARCHIVE_ATTR  # noqa: E402

pytestmark = pytest.mark.timeout(60)

EXCERPT = Path(__file__).resolve().parent / "data" / "excerpt_quiet.wav"


def run_main(capsys, *argv):
    try:
        rc = cli.main(list(argv))
    except SystemExit as stop:
        rc = stop.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder holding an input and a file of the user's, as the current folder."""
    (tmp_path / "in.wav").write_bytes(EXCERPT.read_bytes())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text("mine too")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("output, overwrite", [
    ("", False), ("", True), (" ", True), (".", True), ("sub", True), ("notes.txt", True),
    ("in.wav", True)])
def test_compress_never_deletes_what_is_not_its_archive(capsys, folder, output, overwrite):
    before = listing(folder)
    rc, err = run_main(capsys, "compress", "in.wav", "-o", output, "-q",
                       *(["--overwrite"] if overwrite else []))
    if output.strip():
        assert rc == 1
        assert err.count("\n") == 1
        assert "is not a neurowire archive" in err
    else:  # refused by the option's type, before anything runs
        assert rc == 2
        assert "argument -o/--output: an empty path" in err
    assert listing(folder) == before
    assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_still_replaces_an_archive(capsys, folder):
    assert run_main(capsys, "compress", "in.wav", "-o", "s.zarr", "-q")[0] == 0
    (folder / "s.zarr" / "stale").write_text("x")
    assert run_main(capsys, "compress", "in.wav", "-o", "s.zarr", "-q", "--overwrite")[0] == 0
    assert not (folder / "s.zarr" / "stale").exists()


def damaged_store(folder, capsys, change):
    """A store of in.wav whose first manifest entry went through change(entry)."""
    import zarr

    store = str(folder / "s.zarr")
    assert run_main(capsys, "compress", "in.wav", "-o", store, "-q")[0] == 0
    group = zarr.open_group(store, mode="r+")
    manifest = dict(group.attrs[ARCHIVE_ATTR])
    manifest["files"] = [dict(entry) for entry in manifest["files"]]
    change(manifest)
    group.attrs[ARCHIVE_ATTR] = manifest
    return store


def set_entry(key, value):
    def change(manifest):
        manifest["files"][0][key] = value
    return change


def duplicate(manifest):
    manifest["files"].append(dict(manifest["files"][0]))


DAMAGE = {
    "absolute name": (set_entry("name", "/nw_hostile_escape.wav"), "plain file name"),
    "parent name": (set_entry("name", "../escape.wav"), "plain file name"),
    "folder in name": (set_entry("name", "a/b.wav"), "plain file name"),
    "dot dot": (set_entry("name", ".."), "plain file name"),
    "empty name": (set_entry("name", ""), "plain file name"),
    "name not a string": (set_entry("name", 5), "plain file name"),
    "negative samples": (set_entry("n_samples", -1), "non-negative integer"),
    "channels a string": (set_entry("channels", "1"), "non-negative integer"),
    "size that disagrees": (set_entry("size", 10), "is not header"),
    "header not base64": (set_entry("header", "!!"), "not base64"),
    "unknown key": (set_entry("extra", 1), "has keys"),
    "columns past the array": (set_entry("column", 7), "reaches past"),
    "entry not a map": (lambda m: m.__setitem__("files", [5]), "not a map"),
    "no files": (lambda m: m.__setitem__("files", []), "no list of files"),
    "files not a list": (lambda m: m.__setitem__("files", "x"), "no list of files"),
    "a name twice": (duplicate, "appears twice"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_manifest_is_refused_before_anything_is_written(capsys, folder, name):
    change, message = DAMAGE[name]
    store = damaged_store(folder, capsys, change)
    out = folder / "out"
    rc, err = run_main(capsys, "decompress", store, "-o", str(out), "-q")
    assert rc == 1
    assert err.count("\n") == 1
    assert "damaged manifest" in err and message in err
    assert not os.path.exists("/nw_hostile_escape.wav")
    assert not (folder / "escape.wav").exists()
    assert not out.exists() or not any(out.iterdir())


def test_the_checks_pass_every_good_archive(capsys, folder):
    # The bundled excerpts, a .npy and a raw file with a trailer: the manifest check must
    # not refuse what compress itself wrote.
    import numpy as np

    np.save("a.npy", np.arange(600, dtype=np.int16).reshape(200, 3))
    Path("r.dat").write_bytes(np.arange(101, dtype="<i2").tobytes() + b"\1")
    for excerpt in EXCERPT.parent.glob("excerpt_*.wav"):
        shutil.copy(excerpt, excerpt.name)
    inputs = ["in.wav", "a.npy", "r.dat"] + [e.name for e in EXCERPT.parent.glob("excerpt_*.wav")]
    assert run_main(capsys, "compress", *inputs, "--channels", "1", "--rate", "1000",
                    "-o", "s.zarr", "-q")[0] == 0
    assert run_main(capsys, "decompress", "s.zarr", "-o", "out", "-q")[0] == 0
    for name in inputs:
        assert (folder / "out" / name).read_bytes() == (folder / name).read_bytes()


def test_a_store_with_a_header_that_is_base64_of_the_right_size_round_trips(capsys, folder):
    # validate=True base64 must take what b64encode wrote, padding and all.
    store = damaged_store(folder, capsys, lambda m: None)
    header = base64.b64decode(__import__("zarr").open_group(store).attrs[ARCHIVE_ATTR]
                              ["files"][0]["header"])
    assert len(header) == 44
    assert run_main(capsys, "decompress", store, "-o", "out", "-q")[0] == 0


@pytest.mark.parametrize("output", ["", " "])
def test_the_library_refuses_an_empty_output_too(folder, output):
    from neurowire.archive.batch import ArchiveError, compress

    before = listing(folder)
    with pytest.raises(ArchiveError, match="no output path given"):
        compress(["in.wav"], output, progress=False, overwrite=True)
    assert listing(folder) == before


def _start(argv, cwd):
    import signal
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "neurowire", *argv], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _when(predicate, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


@pytest.fixture
def big_npy(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "big.npy", rng.integers(-300, 300, (600_000, 4), dtype=np.int16))
    return tmp_path / "big.npy"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_compress_says_so_and_resumes(tmp_path, big_npy, sig):
    import signal

    store = tmp_path / "s.zarr"
    argv = ["compress", str(big_npy), "-o", str(store), "-q", "--chunk-samples", "4096",
            "--workers", "1"]
    run = _start(argv, tmp_path)
    progress = store / ".neurowire-progress"
    _when(lambda: progress.is_dir() and any(progress.iterdir()) or run.poll() is not None)
    run.send_signal(getattr(signal, sig))
    _, err = run.communicate(timeout=60)
    assert "Traceback" not in err
    if run.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert run.returncode == 128 + getattr(signal, sig)
    assert f"neurowire compress: {'terminated' if sig == 'SIGTERM' else 'interrupted'}" in err
    assert not (store / "samples").exists()  # unfinished, and recognisably so
    finish = _start(argv, tmp_path)
    assert finish.wait(120) == 0, finish.stderr.read()
    finish = _start(["decompress", str(store), "-o", str(tmp_path / "out"), "-q"], tmp_path)
    assert finish.wait(120) == 0
    assert (tmp_path / "out" / "big.npy").read_bytes() == big_npy.read_bytes()


def test_a_terminated_decompress_leaves_no_partial_file(tmp_path, big_npy, capsys):
    import signal

    assert run_main(capsys, "compress", str(big_npy), "-o", str(tmp_path / "s.zarr"), "-q",
                    "--chunk-samples", "4096")[0] == 0
    out = tmp_path / "out"
    run = _start(["decompress", str(tmp_path / "s.zarr"), "-o", str(out), "-q"], tmp_path)
    _when(lambda: out.is_dir() and any(out.iterdir()) or run.poll() is not None)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    if run.returncode == 0:
        assert names == ["big.npy"]
    else:
        assert run.returncode == 128 + signal.SIGTERM
        assert names == []  # never a big.npy that is cut short, nor its scratch file


@pytest.mark.parametrize("channels", [2.5, "4", True, [4]])
def test_a_store_codec_config_with_a_channel_count_that_is_no_int_is_refused(channels):
    import numcodecs

    with pytest.raises(TypeError, match="channels must be an int"):
        numcodecs.get_codec({"id": "neurowire", "channels": channels})


def test_numpy_integer_channel_counts_are_taken():
    import numpy as np

    from neurowire.archive.codec import NeurowireCodec

    assert NeurowireCodec(np.int64(4)).channels == 4
