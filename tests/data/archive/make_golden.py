"""Writes the golden chunks test_archive_codec.py checks: NAME.input.npy (samples),
NAME.chunk (encoded bytes), NAME.json (codec config).

Run only when the chunk format changes on purpose (and then keep the old files too, if
old archives must still read): python tests/data/archive/make_golden.py
"""
import json
from pathlib import Path

import numpy as np

from neurowire.archive import NeurowireCodec

HERE = Path(__file__).resolve().parent


def cases():
    rng = np.random.default_rng(20261125)
    walk = np.cumsum(rng.normal(0, 3, (3000, 4)), axis=0) + rng.normal(0, 8, (3000, 4))
    yield "grid4ch", (np.clip(np.round(walk / 4), -512, 511) * 4).astype(np.int16)
    yield "mono", (np.round(200 * np.sin(np.arange(1500) / 9.0)) * 2).astype(np.int16)[:, None]
    yield "extremes", np.array([[-32768, 32767, 0]] * 40 + [[1, -1, 5]] * 40, dtype=np.int16)
    data = HERE.parent / "excerpt_medium.wav"
    if data.exists():
        raw = data.read_bytes()
        pos = raw.index(b"data") + 8
        yield "excerpt", np.frombuffer(raw[pos:pos + 8000], "<i2").astype(np.int16)[:, None]


def golden_stores():
    """A small WAV (stereo, with a LIST chunk) and .npy archived in both zarr formats:
    pins the store layout and manifest as well as the chunk bytes."""
    import shutil
    import struct

    from neurowire.archive.batch import compress

    rng = np.random.default_rng(7)
    x = (np.clip(np.round(np.cumsum(rng.normal(0, 4, (2500, 2)), axis=0) / 4), -512, 511)
         * 4).astype("<i2")
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 19531, 19531 * 4, 4, 16)
    extra = b"LIST" + struct.pack("<I", 4) + b"INFO"
    body = b"WAVE" + fmt + extra + b"data" + struct.pack("<I", x.nbytes) + x.tobytes()
    src = HERE / "store_inputs"
    src.mkdir(exist_ok=True)
    (src / "stereo.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    np.save(src / "probe.npy", x[:1700, ::-1].copy())
    for fmt_version in (2, 3):
        out = HERE / f"golden_v{fmt_version}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        compress([str(src)], str(out), chunk_samples=1024, chunk_channels=2,
                 zarr_format=fmt_version, dask="off", progress=False)
        print(out.name, sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), "bytes")


def main():
    golden_stores()
    codec = NeurowireCodec()
    for name, x in cases():
        np.save(HERE / f"{name}.input.npy", x)
        (HERE / f"{name}.chunk").write_bytes(codec.encode(x))
        (HERE / f"{name}.json").write_text(json.dumps(codec.get_config()) + "\n")
        print(name, x.shape, len(codec.encode(x)), "bytes")


if __name__ == "__main__":
    main()
