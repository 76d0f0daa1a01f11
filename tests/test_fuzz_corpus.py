"""Replays the committed fuzz corpus (codec_c/fuzz/corpus) through the Python API, the
way codec_c/fuzz/fuzz_decode.c feeds the C API; with clang present, also runs libFuzzer
briefly (NEUROWIRE_FUZZ_SECONDS, default 10; 0 skips it)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO
from neurowire import codec

CORPUS = sorted((REPO / "codec_c" / "fuzz" / "corpus").iterdir())


def decode_all_blocks(data, channels):
    dec = codec.StreamDecoder(channels)
    out = []
    while data:
        try:
            info = codec.block_info(data)
            out.append(dec.decode(data[:info.block_bytes]))
        except codec.CodecError:
            break
        data = data[info.block_bytes:]
    return out


def test_corpus_is_small_and_present():
    assert len(CORPUS) >= 8
    assert sum(p.stat().st_size for p in CORPUS) < 64 * 1024


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_entry(path):
    data = path.read_bytes()
    try:
        channels = codec.block_info(data).channels
    except codec.CodecError:
        channels = None
    if channels:
        decoded = decode_all_blocks(data, channels)
        if path.name.startswith(("block_real", "stream_", "block_noise", "block_silence", "block_offgrid")):
            assert decoded, "a valid seed must decode"
    decode_all_blocks(data, 1 + (data[-1] % 8 if data else 0))
    try:
        original = codec.decompress(data)
    except codec.CodecError:
        assert not path.name.startswith(("file_wav", "file_text", "file_empty"))
    else:
        if path.name in ("file_wav", "file_wav_extra", "file_text", "file_empty"):
            assert codec.compress_bytes(original) == data  # encoding is deterministic
    # Any bytes are also a file to compress, and samples to stream.
    assert codec.decompress(codec.compress_bytes(data)) == data
    n = len(data) // 2
    if n:
        samples = np.frombuffer(data[:2 * n], "<i2").astype(np.int16).reshape(n, 1)
        enc, dec = codec.StreamEncoder(1), codec.StreamDecoder(1)
        np.testing.assert_array_equal(dec.decode(enc.encode(samples)), samples)


@pytest.mark.skipif(shutil.which("clang") is None, reason="libFuzzer needs clang")
def test_short_libfuzzer_session(tmp_path):
    seconds = int(os.environ.get("NEUROWIRE_FUZZ_SECONDS", "10"))
    if seconds <= 0:
        pytest.skip("NEUROWIRE_FUZZ_SECONDS=0")
    binary = tmp_path / "fuzz_decode"
    # Under `make asan` gcc's runtime is preloaded; clang's fuzzer brings its own.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    sources = [str(p) for p in sorted((REPO / "codec_c" / "src").glob("*.c"))]
    build = subprocess.run(
        ["clang", "-g", "-O1", "-std=c99", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=undefined", f"-I{REPO / 'codec_c' / 'src'}", "-o", str(binary),
         str(REPO / "codec_c" / "fuzz" / "fuzz_decode.c"), *sources],
        capture_output=True, text=True, timeout=300, env=env)
    if build.returncode != 0 and "fuzzer" in build.stderr and "cannot find" in build.stderr:
        pytest.skip("clang has no libFuzzer runtime")
    assert build.returncode == 0, build.stderr
    work = tmp_path / "corpus"
    work.mkdir()
    run = subprocess.run(
        [str(binary), f"-max_total_time={seconds}", "-max_len=8192", "-timeout=10",
         f"-artifact_prefix={tmp_path}/", str(work), str(REPO / "codec_c" / "fuzz" / "corpus")],
        capture_output=True, text=True, timeout=seconds + 120, env=env)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_fuzz_says_what_is_missing_and_skips(tmp_path):
    """A clang that cannot link libFuzzer with ASan (Debian's clang without its compiler-rt
    package, which --no-install-recommends leaves out) failed the fuzz targets with a linker
    error naming a missing .a file; they now say which package is missing and skip."""
    fake = tmp_path / "clang"
    fake.write_text('#!/bin/sh\n[ "$1" = -dumpversion ] && { echo 14.0.6; exit 0; }\nexit 1\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    for target in ("fuzz", "fuzz-spool"):
        done = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), target,
                               "FUZZ_TIME=1"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (f"make {target}: clang cannot link libFuzzer with ASan: its runtime is missing"
                " (Debian: apt-get install -y libclang-rt-14-dev); skipped") in done.stdout
