"""Writes the golden inputs and their encodings, streams in both block formats (version 1
and the lane format) and files in the current file format. Run only for a deliberate format
change (and then bump the version if streams or files written before no longer decode).
Files written by earlier file format versions (OLD_FILES) are kept as they are: they are
what a decoder must still read.

    .venv/bin/python tests/data/golden/regenerate.py
"""
import json
import wave
from pathlib import Path

import numpy as np

from neurowire import codec

HERE = Path(__file__).resolve().parent
DATA = HERE.parent

# name: (block length, keyframe flags per block, format version)
V1, LANES = codec.FORMAT_VERSION, codec.LANE_FORMAT_VERSION
STREAMS = {
    "real_8ch": (20, [False, False, True, False], V1),
    "noise_3ch": (10, [False, True, False], V1),
    "silence_5ch": (7, [False, False], V1),
    "lanes_real_8ch": (20, [False, False, True, False], LANES),
    "lanes_real_20ch": (10, [False, False, False, True], LANES),
    "lanes_noise_3ch": (10, [False, True, False], LANES),
    "lanes_silence_5ch": (7, [False, False], LANES),
}


# Encodings by earlier file format versions -> the input they hold: version 1 (samples as
# version 1 blocks), version 2 (the analog model's share fixed per context) and version 3
# (the share learned, contexts not blended).
OLD_FILES = {"short_wav_v1": "short_wav", "text_v1": "text", "short_wav_v2": "short_wav", "text_v2": "text",
             "short_wav_v3": "short_wav", "text_v3": "text"}


def stream_inputs():
    with wave.open(str(DATA / "excerpt_medium.wav")) as w:
        medium = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    with wave.open(str(DATA / "excerpt_loud.wav")) as w:
        loud = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    real = np.stack([(medium if c % 2 else loud)[1000 * c:1000 * c + 80] for c in range(8)], axis=1)
    noise = np.random.default_rng(20261125).integers(-32768, 32768, size=(30, 3), dtype=np.int16)
    real20 = np.stack([(medium if c % 3 else loud)[700 * c:700 * c + 40] for c in range(20)], axis=1)
    streams = {"real_8ch": real.astype(np.int16), "noise_3ch": noise,
               "silence_5ch": np.zeros((14, 5), np.int16), "lanes_real_20ch": real20.astype(np.int16)}
    for name in ("real_8ch", "noise_3ch", "silence_5ch"):
        streams["lanes_" + name] = streams[name]
    return streams


def file_inputs():
    raw = (DATA / "excerpt_quiet.wav").read_bytes()
    # A 0.2 s WAV cut from an excerpt (header rewritten), and bytes that are not WAV.
    n = 3906
    data = raw[44:44 + 2 * n]
    header = bytearray(raw[:44])
    header[4:8] = (36 + len(data)).to_bytes(4, "little")
    header[40:44] = len(data).to_bytes(4, "little")
    return {"short_wav": bytes(header) + data, "text": b"neurowire golden file\n" * 20}


def encode_stream(samples, block, keys, version):
    enc = codec.StreamEncoder(samples.shape[1], format_version=version)
    return [enc.encode(samples[i * block:(i + 1) * block], keyframe=k) for i, k in enumerate(keys)]


def main():
    manifest = {"format_version": codec.FORMAT_VERSION,
                "lane_format_version": codec.LANE_FORMAT_VERSION,
                "file_format_version": codec.FILE_FORMAT_VERSION, "streams": {}, "files": [],
                "old_files": OLD_FILES}
    for name, samples in stream_inputs().items():
        block, keys, version = STREAMS[name]
        np.save(HERE / f"{name}.npy", samples)
        (HERE / f"{name}.nwb").write_bytes(b"".join(encode_stream(samples, block, keys, version)))
        manifest["streams"][name] = {"block": block, "keyframes": keys, "format_version": version}
    for name, raw in file_inputs().items():
        (HERE / f"{name}.orig").write_bytes(raw)
        (HERE / f"{name}.nw").write_bytes(codec.compress_bytes(raw))
        manifest["files"].append(name)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
