"""Output files the user names (reports, --npy, --wav-dir, --events) are complete or absent:
an interrupt or a full disk during the write leaves the name as it was, never a file that
looks whole (a .npy whose header promises rows that are zeros), and the error names it."""
import os
import types

import numpy as np
import pytest

from neurowire.outfile import open_output, output_path

pytestmark = pytest.mark.timeout(60)


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".partial"))


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError, ValueError])
def test_a_write_cut_short_keeps_the_old_file_and_leaves_no_scratch(tmp_path, fault):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(fault):
        with open_output(str(path)) as handle:
            handle.write("half of the new")
            raise fault()
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_complete_write_replaces_with_ordinary_permissions(tmp_path):
    path = tmp_path / "report.json"
    old_umask = os.umask(0o022)
    try:
        with open_output(str(path)) as handle:
            handle.write("new")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "new"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert leftovers(tmp_path) == []


def test_a_full_device_is_written_directly_and_its_error_names_it():
    with pytest.raises(OSError) as caught:
        with open_output("/dev/full") as handle:
            handle.write("x" * 100000)
    assert caught.value.filename == "/dev/full"
    assert "No space left" in caught.value.strerror


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_name_is_refused(name):
    with pytest.raises(FileNotFoundError):
        with output_path(name):
            pass


def test_a_folder_is_refused_by_name(tmp_path):
    with pytest.raises(IsADirectoryError) as caught:
        with output_path(str(tmp_path)):
            pass
    assert caught.value.filename == str(tmp_path)


def test_an_interrupted_npy_is_not_left_looking_complete(tmp_path, monkeypatch):
    # The subscriber's --npy is filled 65,536 rows at a time from its scratch file: Ctrl-C
    # in between once left a .npy with every row promised and the rest zeros.
    from neurowire.clients import writers

    npy = tmp_path / "samples.npy"
    writer = writers.SampleWriter(str(npy), None)
    samples = np.arange(70000, dtype=np.int16)[:, None]
    writer.write(types.SimpleNamespace(samples=samples, first_sample=0, rate=20000.0, gaps=[]))
    real = np.lib.format.open_memmap

    class Interrupted:
        def __init__(self, target):
            self.target, self.writes = target, 0

        def __setitem__(self, key, value):
            self.writes += 1
            if self.writes == 2:
                raise KeyboardInterrupt
            self.target[key] = value

    monkeypatch.setattr(np.lib.format, "open_memmap",
                        lambda *args, **kwargs: Interrupted(real(*args, **kwargs)))
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    assert not npy.exists()
    assert os.listdir(tmp_path) == []  # neither the scratch rows nor a partial .npy


def test_a_complete_npy_and_wavs_are_written(tmp_path):
    from neurowire.clients import writers
    from neurowire.codec import read_samples

    writer = writers.SampleWriter(str(tmp_path / "s.npy"), str(tmp_path / "wavs"))
    samples = np.arange(-500, 500, dtype=np.int16).reshape(500, 2)
    writer.write(types.SimpleNamespace(samples=samples, first_sample=0, rate=20000.0, gaps=[]))
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), samples)
    for channel in range(2):
        read = read_samples(str(tmp_path / "wavs" / f"ch{channel:04d}.wav"))
        np.testing.assert_array_equal(read.samples[:, 0], samples[:, channel])
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "wavs") == []


def test_a_failed_write_keeps_the_received_samples_and_says_where(tmp_path, monkeypatch):
    from neurowire.clients import writers

    writer = writers.SampleWriter(str(tmp_path / "s.npy"), None)
    samples = np.arange(1000, dtype=np.int16).reshape(500, 2)
    writer.write(types.SimpleNamespace(samples=samples, first_sample=0, rate=20000.0, gaps=[]))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    with pytest.raises(OSError) as caught:
        writer.close()
    assert caught.value.filename == str(tmp_path / "s.npy")
    kept = writer.scratch.name
    assert f"the 500 rows received are kept in {kept}" in caught.value.strerror
    np.testing.assert_array_equal(np.fromfile(kept, "<i2").reshape(500, 2), samples)


def test_nothing_received_leaves_nothing(tmp_path):
    from neurowire.clients import writers

    writers.SampleWriter(str(tmp_path / "s.npy"), str(tmp_path / "w")).close()
    assert os.listdir(tmp_path) == []
