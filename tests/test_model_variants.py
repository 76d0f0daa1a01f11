"""codec_c/tables/model_variants.c, the study of cheaper lane-format models
(docs/MODEL_MEASUREMENTS.md): its reference row must stay the format-2 model itself, or its
figures say nothing about the codec."""
import shutil
import subprocess

import pytest

from conftest import EXCERPTS, REPO
from neurowire.codec import StreamEncoder

HEADER = 22  # a block's header bytes


@pytest.fixture(scope="module")
def model_variants(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("variants") / "model_variants"
    subprocess.run([cc, "-O2", "-std=c99", "-I", str(REPO / "codec_c/src"), "-o", str(exe),
                    str(REPO / "codec_c/tables/model_variants.c"),
                    str(REPO / "codec_c/src/nw_codec.c"), "-lm"], check=True)
    return exe


def rows(exe, paths):
    out = subprocess.run([str(exe), *map(str, paths)], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    table = {}
    for line in out[1:]:
        name, numbers = line[:48].strip(), line[48:].split()
        table[name] = [float(v) for v in numbers[:3]]
    return table


def test_reference_row_is_the_lane_encoder(model_variants, excerpts):
    table = rows(model_variants, EXCERPTS)
    ideal = table["format 2 model (reference)"][2]
    signals = [excerpts[p.stem] for p in EXCERPTS]
    raw = sum(2 * len(s) for s in signals)
    coded = sum(len(StreamEncoder(1, format_version=2).encode(s.reshape(-1, 1))) - HEADER
                for s in signals)
    # ideal code lengths: above the coder's bytes by its flushes and rounding only
    assert raw / coded <= ideal <= raw / coded * 1.003


def test_every_variant_reported_on_both_halves(model_variants):
    table = rows(model_variants, EXCERPTS)
    assert len(table) >= 10
    for name, (half_a, half_b, both) in table.items():
        assert min(half_a, half_b) <= both <= max(half_a, half_b), name
    assert table["no code-width weighting"][2] < table["format 2 model (reference)"][2]


def test_refuses_what_is_not_a_wav_file(model_variants, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    result = subprocess.run([str(model_variants), str(bad), str(bad)], capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "not a 16-bit PCM WAV file" in result.stderr
