"""Hostile WAV files: one strict reader (codec_c/_wav.py) behind read_samples, brainwire,
the archive's sources and the benchmarks' folders refuses what cannot be a whole recording
(half a frame, a data chunk longer than the file, a second data chunk, a sample rate of 0)
with a message saying which, and names the file when it was given by name. The file
container (./encode, compress_bytes) still keeps every one of them byte for byte."""
import struct

import numpy as np
import pytest

pytest.importorskip("neurowire.codec")

from neurowire import cli, codec  # noqa: E402
from neurowire.archive.sources import InputError, open_source  # noqa: E402
from neurowire.brainwire import decode  # noqa: E402

SAMPLES = (np.arange(-300, 300, dtype=np.int16) * 7).reshape(-1, 2)


def fmt_chunk(channels=2, rate=20000, bits=16, tag=1):
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8,
                       channels * bits // 8, bits)
    return b"fmt " + struct.pack("<I", len(body)) + body


def chunk(chunk_id: bytes, body: bytes, size=None) -> bytes:
    size = len(body) if size is None else size
    return chunk_id + struct.pack("<I", size) + body + b"\0" * (len(body) & 1)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM = SAMPLES.astype("<i2").tobytes()
GOOD = riff(fmt_chunk(), chunk(b"data", PCM))

BAD = {
    "half frame": (riff(fmt_chunk(), chunk(b"data", PCM + b"\1\2")), "half a frame"),
    "odd byte": (riff(fmt_chunk(channels=1), chunk(b"data", PCM + b"\1")), "half a frame"),
    "data past the end": (riff(fmt_chunk(), chunk(b"data", PCM, size=len(PCM) + 400)),
                          "truncated"),
    "second data chunk": (riff(fmt_chunk(), chunk(b"data", PCM), chunk(b"data", PCM)),
                          "second data chunk"),
    "rate 0": (riff(fmt_chunk(rate=0), chunk(b"data", PCM)), "sample rate of 0"),
    "no data": (riff(fmt_chunk()), "no data chunk"),
    "no fmt": (riff(chunk(b"data", PCM)), "no fmt chunk"),
    "two fmt": (riff(fmt_chunk(), fmt_chunk(), chunk(b"data", PCM)), "second fmt chunk"),
    "8-bit": (riff(fmt_chunk(bits=8), chunk(b"data", PCM)), "16-bit PCM"),
    "0 channels": (riff(fmt_chunk(channels=0), chunk(b"data", PCM)), "0 channels"),
    "noise where a chunk should be": (riff(chunk(b"\0\x01\xfe\0", b"x" * 4), fmt_chunk(),
                                           chunk(b"data", PCM)), "no chunk id"),
    "millions of tiny chunks": (riff(*[chunk(b"JUNK", b"")] * 5000, fmt_chunk(),
                                     chunk(b"data", PCM)), "more than 4096 chunks"),
    "chunk past the end": (riff(fmt_chunk(), chunk(b"LIST", b"x" * 8, size=10**6),
                                chunk(b"data", PCM)), "past the end of the file"),
}


def test_a_good_file_reads():
    read = codec.read_samples(GOOD)
    np.testing.assert_array_equal(read.samples, SAMPLES)
    assert read.rate == 20000


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_wav_bytes_are_refused_saying_why(name):
    data, message = BAD[name]
    with pytest.raises(ValueError, match=message):
        codec.read_samples(data)
    # The container keeps it whole all the same (./encode takes any bytes) ...
    blob = codec.compress_bytes(data)
    assert codec.decompress(blob) == data
    # ... and reading its samples back says the same.
    with pytest.raises(ValueError, match=message):
        codec.read_samples(blob)
    with pytest.raises(ValueError, match=message):
        decode.decompress(blob)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_named_file_is_named(tmp_path, name):
    data, message = BAD[name]
    path = tmp_path / f"{name.replace(' ', '_')}.wav"
    path.write_bytes(data)
    with pytest.raises(codec.WavFileError, match=message) as error:
        codec.read_samples(path)
    assert error.value.filename == str(path)
    assert str(path) in str(error.value)
    with pytest.raises(InputError, match=message) as error:
        open_source(str(path))
    assert path.name in str(error.value)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_a_streaming_data_size_means_the_rest_of_the_file(tmp_path, size):
    data = riff(fmt_chunk(), chunk(b"data", PCM, size=size))
    np.testing.assert_array_equal(codec.read_samples(data).samples, SAMPLES)
    assert codec.decompress(codec.compress_bytes(data)) == data
    path = tmp_path / "streamed.wav"
    path.write_bytes(data)
    source = open_source(str(path))
    assert (source.n_samples, source.channels) == SAMPLES.shape
    np.testing.assert_array_equal(source.samples(), SAMPLES)
    # The rest of the file must still be whole frames.
    with pytest.raises(ValueError, match="half a frame"):
        codec.read_samples(data + b"\1\2")


def test_chunks_after_the_samples_and_a_trailer_are_kept_apart():
    data = riff(fmt_chunk(), chunk(b"data", PCM), chunk(b"LIST", b"INFOabc")) + b"junk"
    np.testing.assert_array_equal(codec.read_samples(data).samples, SAMPLES)


def test_riff_that_is_not_wave_says_so():
    for data in (b"RIFF", b"RIFF\0\0\0\0AVI LIST"):
        with pytest.raises(ValueError, match="not a WAV file: it starts with"):
            codec.read_samples(data)


@pytest.mark.parametrize("data", [b"", b"hello, not a wav file at all",
                                  b"\x89PNG\r\n\x1a\n" + bytes(20)])
def test_non_wav_bytes_say_what_they_start_with(tmp_path, data):
    with pytest.raises(codec.CodecError, match="neither a WAV file"):
        codec.read_samples(data)
    path = tmp_path / "fake.wav"
    path.write_bytes(data)
    with pytest.raises(codec.WavFileError, match="neither a WAV file") as error:
        codec.read_samples(path)
    assert error.value.filename == str(path)
    with pytest.raises(InputError, match="not a WAV file"):
        open_source(str(path))


@pytest.mark.parametrize("command", [["bench", "codec", "--files", "3"],
                                     ["bench", "bounded", "--levels", "1"],
                                     ["bench", "feeds", "--channels", "2", "--no-lossless",
                                      "--no-reference"]])
def test_bench_folder_runs_name_the_bad_file(tmp_path, capsys, command):
    (tmp_path / "a_good.wav").write_bytes(GOOD)
    bad = tmp_path / "b_bad.wav"
    bad.write_bytes(BAD["half frame"][0])
    rc = cli.main(command + ["--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert str(bad) in last and "half a frame" in last


@pytest.mark.parametrize("files, message", [
    ({"a.wav": riff(fmt_chunk(channels=1), chunk(b"data", PCM + b"\1"))}, "half a frame"),
    ({"a.wav": riff(fmt_chunk(channels=1), chunk(b"data", PCM)),
      "b.wav": riff(fmt_chunk(channels=1, rate=30000), chunk(b"data", PCM))}, "30000 Hz"),
    ({"a.wav": codec.compress_bytes(GOOD)[:-9]}, "a.wav"),
])
def test_simulate_wav_folders_use_the_strict_reader(tmp_path, capsys, files, message):
    from neurowire.clients.simulate import main

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert main(["--wav", str(tmp_path), "--channels", "2", "--control", "",
                 "--seconds", "0.01", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot play the recordings" in err and "Traceback" not in err
    assert message in err


def test_a_damaged_neurowire_file_in_a_bench_folder_is_named(tmp_path, capsys):
    bad = tmp_path / "a.wav"
    bad.write_bytes(codec.compress_bytes(GOOD)[:-9])
    rc = cli.main(["bench", "bounded", "--levels", "1", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert str(bad) in err.strip().splitlines()[-1]


def test_bench_feeds_on_a_folder_without_recordings_says_so(tmp_path, capsys):
    rc = cli.main(["bench", "feeds", "--data", str(tmp_path / "none"), "--no-reference"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.strip() == f"neurowire bench feeds: {tmp_path / 'none'}: no .wav recordings in it"


@pytest.fixture
def fifo(tmp_path):
    import os

    path = tmp_path / "b_fifo.wav"
    os.mkfifo(path)
    return path


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reader", ["read_samples", "compress", "brainwire"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null"])
def test_a_pipe_or_device_is_refused_not_read_for_ever(fifo, reader, special):
    # Opening a FIFO nobody writes to blocked for ever; /dev/zero never ends.
    from neurowire.brainwire import encode

    path = str(fifo) if special == "fifo" else special
    call = {"read_samples": codec.read_samples, "compress": codec.compress,
            "brainwire": encode.compress}[reader]
    with pytest.raises(OSError, match="not a regular file") as caught:
        call(path)
    assert caught.value.filename == path


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reader", ["read_samples", "compress", "brainwire"])
def test_a_file_beyond_4_gib_is_refused_unread(tmp_path, reader):
    # A 50 GB file was read whole into memory: it is refused by its size, before reading.
    from neurowire.brainwire import encode

    call = {"read_samples": codec.read_samples, "compress": codec.compress,
            "brainwire": encode.compress}[reader]
    path = tmp_path / "huge.wav"
    with open(path, "wb") as f:
        f.truncate(50 << 30)
    with pytest.raises(OSError, match="larger than the 4 GiB") as caught:
        call(str(path))
    assert caught.value.filename == str(path)


@pytest.mark.timeout(30)
def test_an_archive_source_with_a_huge_trailer_is_refused_unread(tmp_path):
    # The samples are mapped, but the bytes after them were read whole into memory. (One
    # ~4 GiB chunk after the samples: a run of zeros would end the chunk walk at once.)
    path = tmp_path / "huge.wav"
    path.write_bytes(GOOD + b"junk" + struct.pack("<I", 0xFFFFFFF0))
    with open(path, "r+b") as f:
        f.truncate(len(GOOD) + 8 + 0xFFFFFFF0)
    with pytest.raises(InputError, match="besides the samples; at most 67108864"):
        open_source(str(path))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tail", [b"\0", b"\xff", b"JUNK\0\0\0\0"])
def test_a_huge_tail_after_the_samples_is_not_walked_8_bytes_at_a_time(tail):
    # A recording followed by 50 GB of zeros (a sparse file) or noise: the chunk walk
    # stepped through it 8 bytes at a time; it now stops at the first bytes that are no
    # chunk, and a run of tiny chunks ends at the chunk bound.
    from neurowire.codec._wav import wav_layout

    size = len(GOOD) + (50 << 30)

    def read(offset, count):
        if offset >= len(GOOD):
            return (tail * (count // len(tail) + 1))[:count]
        return GOOD[offset:offset + count]

    layout = wav_layout(read, size)
    assert (layout.channels, layout.data_bytes) == (2, len(PCM))
    assert bytes(GOOD[layout.data_offset:layout.data_offset + layout.data_bytes]) == PCM


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", [["bench", "codec", "--files", "3"],
                                     ["bench", "bounded", "--levels", "1"]])
def test_a_fifo_among_a_folders_recordings_is_named(tmp_path, fifo, capsys, command):
    (tmp_path / "a_good.wav").write_bytes(GOOD)
    rc = cli.main(command + ["--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"{fifo}: not a regular file (a pipe, "
                                                 "socket or device)")


@pytest.mark.timeout(30)
def test_simulate_and_compress_refuse_a_fifo(tmp_path, fifo, capsys):
    from neurowire.clients.simulate import main

    assert main(["--wav", str(tmp_path), "--channels", "1", "--control", "",
                 "--seconds", "0.01", "--quiet"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert cli.main(["compress", str(fifo), "-o", str(tmp_path / "o.zarr"), "-q"]) == 1
    assert "not a regular file or folder" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_bench_challenge_refuses_a_fifo_among_the_recordings(tmp_path, fifo, capsys, tools):
    (tmp_path / "a_good.wav").write_bytes(GOOD)
    rc = cli.main(["bench", "challenge", str(tmp_path), "--encode", str(tools[0]),
                   "--decode", str(tools[1])])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == f"neurowire bench challenge: {fifo} is not a regular file"


def test_bench_challenge_stops_a_program_that_hangs(tmp_path, capsys, monkeypatch):
    from neurowire import challenge

    (tmp_path / "a.wav").write_bytes(GOOD)
    hanging = tmp_path / "hang"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(challenge, "time_limit_s", lambda source: 0.5)
    rc = cli.main(["bench", "challenge", str(tmp_path), "--encode", str(hanging),
                   "--decode", str(hanging)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "a.wav: encode did not finish within 0.5 s" in err


def test_a_finished_file_with_no_samples_and_chunks_after_reads_empty():
    # Before: a data size of 0 meant "the rest of the file", so the LIST chunk after an
    # empty data chunk came back as 5 frames of garbage.
    data = riff(fmt_chunk(), chunk(b"data", b""), chunk(b"LIST", b"INFOISFT" + b"x" * 4))
    read = codec.read_samples(data)
    assert read.samples.shape == (0, 2)
    assert codec.decompress(codec.compress_bytes(data)) == data
