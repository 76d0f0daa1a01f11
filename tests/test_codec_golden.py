"""Committed encodings (tests/data/golden/) must still decode, and encode identically.

A failure in the decode tests means streams written earlier can no longer be read: a
format break, which needs a new NW_FORMAT_VERSION. A failure only in the re-encode tests
means the encoder now writes different (still readable) bytes: if that is intended,
regenerate with `.venv/bin/python tests/data/golden/regenerate.py` and commit the result.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from neurowire import codec

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
REGENERATE = "intended encoder change? run tests/data/golden/regenerate.py"


def split_blocks(data):
    blocks = []
    while data:
        size = codec.block_info(data).block_bytes
        blocks.append(data[:size])
        data = data[size:]
    return blocks


def test_format_version_matches():
    assert MANIFEST["format_version"] == codec.FORMAT_VERSION, (
        "the format version changed: keep decoding the old golden files or regenerate them")
    assert MANIFEST["lane_format_version"] == codec.LANE_FORMAT_VERSION
    assert MANIFEST["file_format_version"] == codec.FILE_FORMAT_VERSION


@pytest.mark.parametrize("name", MANIFEST["files"])
def test_golden_file_has_its_version(name):
    assert (GOLDEN / f"{name}.nw").read_bytes()[:4] == b"NWF" + bytes([codec.FILE_FORMAT_VERSION])


@pytest.mark.parametrize("name", sorted(MANIFEST["old_files"]))
def test_old_golden_file_decodes(name):
    """Files written by earlier file format versions still read: 1 (the samples as version 1
    blocks), 2 (the analog model's share fixed per context) and 3 (the share learned, the
    contexts not blended)."""
    blob = (GOLDEN / f"{name}.nw").read_bytes()
    assert blob[:3] == b"NWF" and blob[3] == int(name.rsplit("_v", 1)[1]) < codec.FILE_FORMAT_VERSION
    original = (GOLDEN / f"{MANIFEST['old_files'][name]}.orig").read_bytes()
    assert codec.decompress(blob) == original


@pytest.mark.parametrize("old_version", [1, 2, 3])
def test_current_file_format_codes_the_recording_smaller_than_older_ones(old_version):
    old = (GOLDEN / f"short_wav_v{old_version}.nw").read_bytes()
    new = codec.compress_bytes((GOLDEN / "short_wav.orig").read_bytes())
    assert len(new) < len(old)


@pytest.mark.parametrize("name", sorted(MANIFEST["streams"]))
def test_golden_stream_has_its_version(name):
    blob = (GOLDEN / f"{name}.nwb").read_bytes()
    assert blob[2] == MANIFEST["streams"][name]["format_version"]


@pytest.mark.parametrize("name", sorted(MANIFEST["streams"]))
def test_golden_stream_decodes(name):
    spec = MANIFEST["streams"][name]
    samples = np.load(GOLDEN / f"{name}.npy")
    blocks = split_blocks((GOLDEN / f"{name}.nwb").read_bytes())
    assert len(blocks) == len(spec["keyframes"])
    dec = codec.StreamDecoder(samples.shape[1])
    decoded = np.concatenate([dec.decode(b) for b in blocks])
    np.testing.assert_array_equal(decoded, samples)
    for i, (blob, key) in enumerate(zip(blocks, spec["keyframes"])):
        info = codec.block_info(blob)
        assert (info.index, info.keyframe) == (i, key or i == 0)


@pytest.mark.parametrize("name", sorted(MANIFEST["streams"]))
def test_golden_stream_reencodes(name):
    spec = MANIFEST["streams"][name]
    samples = np.load(GOLDEN / f"{name}.npy")
    blocks = split_blocks((GOLDEN / f"{name}.nwb").read_bytes())
    enc = codec.StreamEncoder(samples.shape[1], format_version=spec["format_version"])
    block = spec["block"]
    for i, (blob, key) in enumerate(zip(blocks, spec["keyframes"])):
        assert enc.encode(samples[i * block:(i + 1) * block], keyframe=key) == blob, \
            f"block {i}: {REGENERATE}"


@pytest.mark.parametrize("name", MANIFEST["files"])
def test_golden_file_decodes(name):
    original = (GOLDEN / f"{name}.orig").read_bytes()
    assert codec.decompress((GOLDEN / f"{name}.nw").read_bytes()) == original


@pytest.mark.parametrize("name", MANIFEST["files"])
def test_golden_file_reencodes(name):
    original = (GOLDEN / f"{name}.orig").read_bytes()
    assert codec.compress_bytes(original) == (GOLDEN / f"{name}.nw").read_bytes(), REGENERATE


def test_golden_files_decode_with_native_tool(tools, tmp_path):
    import subprocess
    _, decode = tools
    originals = {name: name for name in MANIFEST["files"]} | MANIFEST["old_files"]
    for name, original in originals.items():
        out = tmp_path / name
        subprocess.run([str(decode), str(GOLDEN / f"{name}.nw"), str(out)], check=True, timeout=60)
        assert out.read_bytes() == (GOLDEN / f"{original}.orig").read_bytes()


@pytest.mark.parametrize("name, other", [("short_wav_v2", 3), ("short_wav_v3", 2), ("short_wav_v3", 4),
                                          ("short_wav", 3), ("short_wav", 2)])
def test_file_read_as_another_analog_version_fails_cleanly(name, other):
    """Versions 2, 3 and 4 differ only in their model: a payload read with another one's model
    decodes to other samples, which the checks reject (never wrong data)."""
    blob = bytearray((GOLDEN / f"{name}.nw").read_bytes())
    blob[3] = other
    with pytest.raises(codec.CodecError):
        codec.decompress(bytes(blob))
