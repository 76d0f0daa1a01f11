"""`neurowire compress` / `decompress`: byte-exact round trips of WAV and .npy files,
resumption after an interruption, and damaged or unfinished stores."""

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")

from neurowire.archive import batch, cli  # noqa: E402
from neurowire.archive.batch import ArchiveError, compress, decompress  # noqa: E402
from test_archive_codec import grid_signal  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
EXCERPTS = sorted(DATA.glob("excerpt_*.wav"))
SMALL = dict(chunk_samples=4096, chunk_channels=2, dask="off", progress=False)


def make_wav(samples, rate=19531, before_data=b"", after_data=b""):
    """A 16-bit PCM WAV, with optional extra chunks around the data chunk."""
    samples = np.asarray(samples, dtype="<i2")
    if samples.ndim == 1:
        samples = samples[:, None]
    ch = samples.shape[1]
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, ch, rate, rate * ch * 2, ch * 2, 16)
    data = samples.tobytes()
    body = b"WAVE" + fmt + before_data + b"data" + struct.pack("<I", len(data)) + data + after_data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture
def inputs(tmp_path):
    """Mixed inputs: the bundled excerpts (or synthetic stand-ins), WAVs with odd
    layouts, and .npy arrays in C and Fortran order."""
    d = tmp_path / "in"
    d.mkdir()
    for p in EXCERPTS:
        shutil.copy(p, d / p.name)
    if not EXCERPTS:
        for k in range(3):
            (d / f"synthetic_{k}.wav").write_bytes(make_wav(grid_signal(19531, 1, seed=k)))
    # A shorter file (zero padding in the store must not come back), a LIST chunk before
    # the data, trailing bytes after it and a stereo file.
    (d / "short_list.wav").write_bytes(make_wav(
        grid_signal(5000, 1, seed=7), before_data=b"LIST" + struct.pack("<I", 6) + b"abcdef",
        after_data=b"id3 \x03\x00\x00\x00xyz\x00"))
    (d / "stereo.wav").write_bytes(make_wav(grid_signal(9000, 2, seed=8)))
    np.save(d / "probe.npy", grid_signal(7000, 3, seed=9))
    np.save(d / "probe_f.npy", np.asfortranarray(grid_signal(3000, 2, seed=10)))
    np.save(d / "mono.npy", grid_signal(1234, 1, seed=11)[:, 0])
    return d


def assert_same_files(a, b):
    names = sorted(os.listdir(a))
    assert sorted(os.listdir(b)) == names
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_round_trip_byte_exact(inputs, tmp_path, zarr_format):
    store = tmp_path / "out.zarr"
    s = compress([str(inputs)], str(store), zarr_format=zarr_format, **SMALL)
    assert s.chunks_done == s.chunks_total > 4 and s.chunks_skipped == 0
    assert s.ratio > 1.2
    assert not (store / batch.PROGRESS_DIR).exists()
    back = tmp_path / "back"
    decompress(str(store), str(back), progress=False)
    assert_same_files(inputs, back)


def test_command_line(inputs, tmp_path, capsys):
    store, back = tmp_path / "cli.zarr", tmp_path / "back"
    assert cli.main(["compress", str(inputs), "-o", str(store), "--dask", "off",
                     "--chunk-samples", "8192", "-q"]) == 0
    line = capsys.readouterr().out
    assert "ratio" in line and "MB/s" in line
    assert cli.main(["decompress", str(store), "-o", str(back), "-q"]) == 0
    assert_same_files(inputs, back)
    # Running it again finds the finished store and does nothing.
    assert cli.main(["compress", str(inputs), "-o", str(store), "--dask", "off", "-q",
                     "--chunk-samples", "8192"]) == 0
    assert "0/" in capsys.readouterr().out
    # Decompressing over existing files needs --overwrite.
    assert cli.main(["decompress", str(store), "-o", str(back), "-q"]) == 1
    assert "exists" in capsys.readouterr().err


def test_dispatcher_wiring(inputs, tmp_path):
    """neurowire/cli.py calls configure_parser(sub) and run(args) for both commands."""
    main_cli = pytest.importorskip("neurowire.cli")
    store, back = tmp_path / "d.zarr", tmp_path / "back"
    assert main_cli.main(["compress", str(inputs / "stereo.wav"), "-o", str(store),
                          "--dask", "off", "-q"]) == 0
    assert main_cli.main(["decompress", str(store), "-o", str(back), "-q"]) == 0
    assert (back / "stereo.wav").read_bytes() == (inputs / "stereo.wav").read_bytes()


class Interrupted(Exception):
    pass


def test_resume_after_interruption(inputs, tmp_path, monkeypatch):
    store = tmp_path / "r.zarr"
    seen = []

    def stop_after_three(chunk):
        seen.append(chunk)
        if len(seen) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        compress([str(inputs)], str(store), _after_chunk=stop_after_three, workers=1, **SMALL)
    progress = store / batch.PROGRESS_DIR
    done = sorted(os.listdir(progress))
    assert len(done) >= 3
    # An unfinished store is refused, not read as if it were whole; a plain zarr reader
    # finds no `samples` array in it (not zeros where chunks are missing).
    with pytest.raises(ArchiveError, match="unfinished"):
        decompress(str(store), str(tmp_path / "nope"), progress=False)
    import zarr

    group = zarr.open_group(str(store), mode="r")
    assert batch.ARRAY_NAME not in group and batch.UNFINISHED_NAME in group

    # A writer killed mid-chunk: the chunk is cut short and its marker never made;
    # zarr's temporary file is left behind.
    chunk_dir = store / batch.UNFINISHED_NAME / "c"
    victim_key = done[-1]
    (progress / victim_key).unlink()
    victim = chunk_dir.joinpath(*victim_key.split("."))
    victim.write_bytes(victim.read_bytes()[:10])
    (victim.parent / "0.1234.partial").write_bytes(b"junk")

    written = []
    s = compress([str(inputs)], str(store), _after_chunk=written.append, **SMALL)
    assert s.chunks_skipped == len(done) - 1
    assert s.chunks_done == s.chunks_total - s.chunks_skipped == len(written)
    assert not list(store.rglob("*.partial"))
    back = tmp_path / "back"
    decompress(str(store), str(back), progress=False)
    assert_same_files(inputs, back)

    # The resumed store is the store an uninterrupted run writes.
    fresh = tmp_path / "fresh.zarr"
    compress([str(inputs)], str(fresh), **SMALL)
    for p in fresh.rglob("*"):
        if p.is_file() and p.name != "zarr.json":
            assert p.read_bytes() == (store / p.relative_to(fresh)).read_bytes(), p


def test_changed_inputs_are_not_resumed(inputs, tmp_path):
    store = tmp_path / "c.zarr"
    compress([str(inputs)], str(store), **SMALL)
    (inputs / "extra.npy").write_bytes((inputs / "mono.npy").read_bytes())
    with pytest.raises(ArchiveError, match="other inputs"):
        compress([str(inputs)], str(store), **SMALL)
    s = compress([str(inputs)], str(store), overwrite=True, **SMALL)
    assert s.files == len(os.listdir(inputs))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_damaged_chunk_is_named(inputs, tmp_path, zarr_format, capsys):
    store = tmp_path / "dmg.zarr"
    compress([str(inputs)], str(store), zarr_format=zarr_format, **SMALL)
    key = "1.0" if zarr_format == 2 else os.path.join("c", "1", "0")
    path = store / "samples" / key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x55
    path.write_bytes(bytes(blob[: len(blob) - 3]))
    rc = cli.main(["decompress", str(store), "-o", str(tmp_path / "back"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"chunk samples/{key.replace(os.sep, '/')} is damaged" in err
    # Nothing half-written is left under a real file name.
    assert not [p for p in (tmp_path / "back").iterdir() if not p.name.startswith(".")] \
        or all(p.stat().st_size for p in (tmp_path / "back").iterdir())


def test_missing_chunk_is_named(inputs, tmp_path):
    store = tmp_path / "miss.zarr"
    compress([str(inputs)], str(store), **SMALL)
    (store / "samples" / "c" / "0" / "1").unlink()
    with pytest.raises(ArchiveError, match="chunk samples/c/0/1 is missing"):
        decompress(str(store), str(tmp_path / "back"), progress=False)


def test_unsupported_inputs(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    wav8 = bytearray(make_wav(np.zeros(10, np.int16)))
    wav8[34:36] = struct.pack("<H", 8)  # bits per sample
    (d / "eight_bit.wav").write_bytes(bytes(wav8))
    with pytest.raises(ValueError, match="16-bit PCM"):
        compress([str(d)], str(tmp_path / "x.zarr"), **SMALL)
    (d / "eight_bit.wav").unlink()
    np.save(d / "floats.npy", np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="int16"):
        compress([str(d)], str(tmp_path / "x.zarr"), **SMALL)


@pytest.mark.parametrize("fmt", [2, 3])
def test_golden_store_still_decompresses(tmp_path, fmt):
    """Stores written by an earlier neurowire (tests/data/archive/make_golden.py) must
    keep giving back their files: layout, manifest and chunk format together."""
    golden = DATA / "archive"
    back = tmp_path / "back"
    decompress(str(golden / f"golden_v{fmt}.zarr"), str(back), progress=False)
    assert_same_files(golden / "store_inputs", back)
