"""The native ./encode and ./decode (the challenge's programs), run as subprocesses."""
import subprocess

import numpy as np
import pytest

from conftest import EXCERPTS, challenge_paths, wav_bytes
from neurowire import codec


def run(tool, *args):
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, timeout=60)


def roundtrip(tools, tmp_path, raw, name="in.bin"):
    encode, decode = tools
    src, packed, out = tmp_path / name, tmp_path / "packed.nw", tmp_path / "out.bin"
    src.write_bytes(raw)
    r = run(encode, src, packed)
    assert r.returncode == 0, r.stderr
    r = run(decode, packed, out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == raw
    # The tools and the Python API write the very same bytes.
    assert packed.read_bytes() == codec.compress_bytes(raw)
    return packed.read_bytes()


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_excerpts(tools, tmp_path, path):
    raw = path.read_bytes()
    assert len(roundtrip(tools, tmp_path, raw)) < len(raw) / 2


@pytest.mark.parametrize("raw", [
    b"", b"x", b"RIFF", wav_bytes(np.zeros(5001, np.int16)),
    wav_bytes(np.random.default_rng(1).integers(-32768, 32768, 3001).astype(np.int16)),
    bytes(range(256)) * 40,
], ids=["empty", "one_byte", "riff_only", "silence", "noise", "binary"])
def test_odd_inputs(tools, tmp_path, raw):
    roundtrip(tools, tmp_path, raw)


@pytest.mark.challenge
def test_challenge_sample_of_files(tools, tmp_path):
    paths = challenge_paths()
    if not paths:
        pytest.skip("no challenge recordings")
    for path in paths[::10]:  # every 10th: the Python tests cover all of them
        roundtrip(tools, tmp_path, path.read_bytes())


def test_missing_input(tools, tmp_path):
    for tool in tools:
        r = run(tool, tmp_path / "nope.wav", tmp_path / "out")
        assert r.returncode != 0
        # Each program speaks for itself, though ./decode runs the encode binary.
        assert r.stderr.startswith(tool.name.encode() + b": ") and b"nope.wav" in r.stderr
        assert not (tmp_path / "out").exists()


def test_usage(tools):
    for tool in tools:
        for args in [(), ("only-one",), ("a", "b", "c")]:
            r = run(tool, *args)
            assert r.returncode == 2 and r.stderr == b"usage: %s IN OUT\n" % tool.name.encode()


def test_decode_runs_from_any_folder(tools, tmp_path):
    """./decode finds the binary beside itself, wherever it is called from and however its
    path is spelled; `encode -d` is the same program."""
    encode, decode = tools
    src, packed = tmp_path / "in.wav", tmp_path / "p.nw"
    raw = EXCERPTS[0].read_bytes()
    src.write_bytes(raw)
    assert run(encode, src, packed).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spellings = [(str(decode), None), (f"./{decode.name}", decode.parent),
                 (str(decode.relative_to(decode.parent.parent)), decode.parent.parent)]
    for index, (spelling, cwd) in enumerate(spellings):
        out = elsewhere / f"out{index}.wav"
        r = subprocess.run([spelling, str(packed), str(out)], cwd=cwd or elsewhere,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (spelling, r.stderr)
        assert out.read_bytes() == raw
    r = run(encode, "-d", packed, elsewhere / "direct.wav")
    assert r.returncode == 0 and (elsewhere / "direct.wav").read_bytes() == raw


def test_decode_without_its_binary_fails_loudly(tools, tmp_path):
    _, decode = tools
    lone = tmp_path / "decode"
    lone.write_bytes(decode.read_bytes())
    lone.chmod(0o755)
    (tmp_path / "p.nw").write_bytes(b"NWF")
    r = run(lone, tmp_path / "p.nw", tmp_path / "out")
    assert r.returncode != 0 and b"encode" in r.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_output(tools, tmp_path):
    encode, _ = tools
    src = tmp_path / "in.wav"
    src.write_bytes(EXCERPTS[0].read_bytes())
    r = run(encode, src, tmp_path / "no" / "such" / "dir" / "out")
    assert r.returncode != 0 and r.stderr


def one_line_error(r, tool, path):
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool.name}: {path}: "), lines
    return lines[0]


def test_unwritable_output_is_one_line_and_leaves_nothing(tools, tmp_path):
    encode, decode = tools
    src = tmp_path / "in.wav"
    src.write_bytes(EXCERPTS[0].read_bytes())
    for out, why in [(tmp_path / "no" / "dir" / "out", "No such file or directory"),
                     (tmp_path, "Is a directory")]:
        assert why in one_line_error(run(encode, src, out), encode, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_in_place_encode_and_decode_keep_the_file(tools, tmp_path):
    encode, decode = tools
    raw = EXCERPTS[0].read_bytes()
    path = tmp_path / "same.wav"
    path.write_bytes(raw)
    assert run(encode, path, path).returncode == 0
    assert path.read_bytes() == codec.compress_bytes(raw)
    assert run(decode, path, path).returncode == 0
    assert path.read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir()] == ["same.wav"]


def _limit_file_size(limit):
    def apply():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failed_write_leaves_the_input_and_any_old_output_whole(tools, tmp_path):
    # A full disk, as the file size limit makes it: the write fails part way. The output is
    # written beside OUT and renamed over it only when complete, so IN (when IN is OUT) and
    # an older OUT survive; nothing half-written is left.
    encode, _ = tools
    raw = np.random.default_rng(7).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    path = tmp_path / "data.bin"
    path.write_bytes(raw)
    old = tmp_path / "old.nw"
    old.write_bytes(b"an older output")
    for out in (path, old):
        r = subprocess.run([str(encode), str(path), str(out)], capture_output=True,
                           timeout=60, preexec_fn=_limit_file_size(1_000_000))
        assert "File too large" in one_line_error(r, encode, out)
    assert path.read_bytes() == raw
    assert old.read_bytes() == b"an older output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "old.nw"]


def _limit_memory(limit):
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tool", [0, 1], ids=["encode", "decode"])
@pytest.mark.parametrize("source", ["/dev/zero", "sparse"])
def test_an_endless_or_huge_input_is_refused_at_4_gib(tools, tmp_path, tool, source):
    # /dev/zero never ends and a sparse file can claim any size: both were read until memory
    # ran out. The address-space limit keeps a regression from taking the machine with it
    # (it then fails saying "Cannot allocate memory", not "File too large").
    if source == "sparse":
        source = tmp_path / "huge.wav"
        with open(source, "wb") as f:
            f.truncate(1 << 32)
    out = tmp_path / "out"
    r = subprocess.run([str(tools[tool]), str(source), str(out)], capture_output=True,
                       timeout=110, preexec_fn=_limit_memory(6 << 30))
    assert one_line_error(r, tools[tool], source).endswith(": File too large")
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_a_device_is_written_directly_and_a_full_one_says_so(tools, tmp_path):
    encode, _ = tools
    src = tmp_path / "in.wav"
    src.write_bytes(EXCERPTS[0].read_bytes())
    assert run(encode, src, "/dev/null").returncode == 0
    assert "No space left on device" in one_line_error(run(encode, src, "/dev/full"), encode,
                                                       "/dev/full")


def test_a_leftover_partial_file_is_named_not_overwritten(tools, tmp_path):
    encode, _ = tools
    src = tmp_path / "in.wav"
    src.write_bytes(EXCERPTS[0].read_bytes())
    leftover = tmp_path / "out.nw.partial"
    leftover.write_bytes(b"someone's")
    assert "File exists" in one_line_error(run(encode, src, tmp_path / "out.nw"), encode,
                                           leftover)
    assert leftover.read_bytes() == b"someone's"
    assert not (tmp_path / "out.nw").exists()


@pytest.mark.parametrize("bad", [b"", b"not neurowire", b"NWF", b"NWF\x09\x00\x00"])
def test_decode_rejects_garbage(tools, tmp_path, bad):
    _, decode = tools
    src = tmp_path / "bad.nw"
    src.write_bytes(bad)
    r = run(decode, src, tmp_path / "out")
    assert r.returncode != 0
    assert r.stderr.strip()


def test_decode_rejects_corrupt_stream(tools, tmp_path):
    encode, decode = tools
    src, packed = tmp_path / "in.wav", tmp_path / "p.nw"
    src.write_bytes(EXCERPTS[0].read_bytes())
    assert run(encode, src, packed).returncode == 0
    data = packed.read_bytes()
    for label, bad in [("truncated", data[:-7]), ("flipped", data[:500] + bytes([data[500] ^ 0x10]) + data[501:]),
                       ("appended", data + b"\0")]:
        (tmp_path / "bad.nw").write_bytes(bad)
        r = run(decode, tmp_path / "bad.nw", tmp_path / "out")
        assert r.returncode != 0, label
        assert r.stderr.strip(), label


def test_packed_encode_is_the_program(tools, tmp_path):
    """On x86-64 Linux ./encode is a freestanding loader (codec_c/tools/unpack.c) holding the
    program packed; it runs the very program `make` built, with every argument, from any
    folder, and leaves no file behind."""
    encode, _ = tools
    plain = encode.parent / "build" / "tool" / "encode.elf"
    if not plain.exists() or encode.read_bytes() == plain.read_bytes():
        pytest.skip("./encode is the plain program (PACK_TOOL=0 or not x86-64 Linux)")
    assert len(encode.read_bytes()) < 0.75 * len(plain.read_bytes())
    src = tmp_path / "in.wav"
    src.write_bytes(EXCERPTS[0].read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    for program in (encode, plain):
        out = work / f"{program.name}.nw"
        r = subprocess.run([str(program), str(src), out.name], cwd=work, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert (work / "encode.nw").read_bytes() == (work / "encode.elf.nw").read_bytes()
    assert sorted(p.name for p in work.iterdir()) == ["encode.elf.nw", "encode.nw"]
    for args in [(), ("-d",), ("-d", "a", "b", "c")]:
        assert run(encode, *args).stderr == run(plain, *args).stderr


@pytest.mark.parametrize("raw", [b"x", bytes(5000), bytes(range(256)) * 20,
                                 np.random.default_rng(2).bytes(3000)], ids=["one", "zeros", "ramp", "noise"])
def test_packer_unpacks_what_it_packs(tmp_path, raw):
    """build/tool/pack checks that the loader's decoder gives its input back, else fails."""
    from conftest import REPO
    pack = REPO / "build" / "tool" / "pack"
    if not pack.exists():
        pytest.skip("the packer is built by `make tools`")
    (tmp_path / "in").write_bytes(raw)
    r = subprocess.run([str(pack), str(tmp_path / "in"), str(tmp_path / "out.h")], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"#define UNPACKED_SIZE %d\n" % len(raw) in (tmp_path / "out.h").read_bytes()
