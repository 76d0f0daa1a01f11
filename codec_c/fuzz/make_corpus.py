"""Writes the seed corpus for fuzz_decode.c: small valid streams and files of each kind,
plus a few damaged ones, so the fuzzer starts past the header checks.

    .venv/bin/python codec_c/fuzz/make_corpus.py
"""
import wave
from pathlib import Path

import numpy as np

from neurowire import codec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def excerpt(n, offset=0):
    with wave.open(str(REPO / "tests" / "data" / "excerpt_medium.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")[offset:offset + n].astype(np.int16)


def wav(samples, rate=19531):
    data = samples.astype("<i2").tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + b"\x01\x00\x01\x00" + rate.to_bytes(4, "little")
           + (2 * rate).to_bytes(4, "little") + b"\x02\x00\x10\x00")
    body = b"WAVE" + fmt + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def stream(samples, block, keys=(), version=codec.FORMAT_VERSION, max_error=0):
    enc = codec.StreamEncoder(samples.shape[1], max_error=max_error, format_version=version)
    return b"".join(enc.encode(samples[i:i + block], keyframe=(i // block) in keys)
                    for i in range(0, len(samples), block))


def main():
    rng = np.random.default_rng(1)
    real4 = np.stack([excerpt(60, 500 * c) for c in range(4)], axis=1)
    seeds = {
        "block_real_4ch": stream(real4[:20], 20),
        "stream_real_4ch": stream(real4, 20, keys={2}),
        "stream_real_1ch": stream(excerpt(200)[:, None], 50),
        "block_noise_stored": stream(rng.integers(-32768, 32768, (16, 2), dtype=np.int16), 16),
        "block_silence_9ch": stream(np.zeros((30, 9), np.int16), 30),
        "block_offgrid": stream((np.arange(40, dtype=np.int16) * 7)[:, None], 40),
        "lanes_real_4ch": stream(real4, 20, keys={2}, version=codec.LANE_FORMAT_VERSION),
        "lanes_real_11ch": stream(np.stack([excerpt(40, 300 * c) for c in range(11)], axis=1), 10,
                                  version=codec.LANE_FORMAT_VERSION),
        "lanes_bounded_3ch": stream(real4[:, :3], 15, version=codec.LANE_FORMAT_VERSION,
                                    max_error=2),
        "lanes_noise_stored": stream(rng.integers(-32768, 32768, (8, 9), dtype=np.int16), 8,
                                     version=codec.LANE_FORMAT_VERSION),
        "lanes_offgrid": stream(np.stack([np.arange(30, dtype=np.int16) * 7] * 2, axis=1), 30,
                                version=codec.LANE_FORMAT_VERSION),
        "file_wav": codec.compress_bytes(wav(excerpt(300))),
        "file_wav_extra": codec.compress_bytes(wav(excerpt(100))[:36] + b"LIST\x02\x00\x00\x00ab"
                                               + wav(excerpt(100))[36:] + b"\x01"),
        "file_text": codec.compress_bytes(b"not a wav file\n" * 4),
        "file_empty": codec.compress_bytes(b""),
        # A file of file format version 1 (samples as blocks), which decoders still read.
        "file_wav_v1": (REPO / "tests" / "data" / "golden" / "short_wav_v1.nw").read_bytes(),
        "plain_wav": wav(excerpt(64)),
    }
    seeds["block_truncated"] = seeds["block_real_4ch"][:-5]
    seeds["lanes_truncated"] = seeds["lanes_real_11ch"][:-3]
    seeds["file_truncated"] = seeds["file_wav"][: len(seeds["file_wav"]) // 2]
    for name, data in seeds.items():
        (HERE / "corpus" / name).write_bytes(data)


if __name__ == "__main__":
    main()
