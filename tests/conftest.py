"""Shared fixtures: bundled excerpts, the challenge recordings when present, the tools.

Hypothesis profiles: the default one is cheap enough for every `make test`;
HYPOTHESIS_PROFILE=thorough runs many more and larger examples.
"""
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
CHALLENGE = REPO.parent / "shared" / "data" / "challenge"

settings.register_profile(
    "default", max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Polls `predicate` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@pytest.fixture
def context():
    """A ZeroMQ context of the test's own. Terminated at the end with a time-out: a socket the
    test (or the code under test) left open keeps term() waiting, and fails the test."""
    import threading

    import zmq

    ctx = zmq.Context()
    yield ctx
    terminated = threading.Event()

    def term():
        ctx.term()
        terminated.set()

    threading.Thread(target=term, daemon=True).start()
    if not terminated.wait(5.0):
        # Left to its thread: destroying it here would close sockets another thread may be
        # using (a daemon the failed test never stopped) and block this one for good.
        pytest.fail("a ZeroMQ socket was left open: the context did not terminate in 5 s")


def read_wav(path):
    """(int16 array (n, channels), rate) via the stdlib, independent of neurowire."""
    with wave.open(str(path)) as w:
        raw = w.readframes(w.getnframes())
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        return samples.reshape(-1, w.getnchannels()), w.getframerate()


def wav_bytes(samples, rate=19531, extra_chunks=b"", sampwidth=2):
    """A canonical WAV file; extra_chunks are put between fmt and data."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    channels = samples.shape[1]
    data = samples.astype("<i2").tobytes() if sampwidth == 2 else samples.astype(np.uint8).tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
           + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * channels * sampwidth).to_bytes(4, "little")
           + (channels * sampwidth).to_bytes(2, "little") + (8 * sampwidth).to_bytes(2, "little"))
    body = b"WAVE" + fmt + extra_chunks + b"data" + len(data).to_bytes(4, "little") + data
    if len(data) % 2:
        body += b"\0"
    return b"RIFF" + len(body).to_bytes(4, "little") + body


EXCERPTS = sorted(DATA.glob("excerpt_*.wav"))


@pytest.fixture(scope="session")
def excerpts():
    """{name: int16 array (n,)} of the bundled 1 s excerpts of real recordings."""
    return {p.stem: read_wav(p)[0][:, 0] for p in EXCERPTS}


@pytest.fixture(scope="session")
def grid_values():
    """Every sample value seen in the challenge recordings (the ADC's 10-bit grid)."""
    return np.load(DATA / "grid_values.npy").astype(np.int16)


def challenge_paths():
    return sorted(CHALLENGE.glob("*.wav")) if CHALLENGE.is_dir() else []


@pytest.fixture(scope="session")
def challenge_files():
    paths = challenge_paths()
    if not paths:
        pytest.skip(f"no challenge recordings at {CHALLENGE}")
    return paths


@pytest.fixture(scope="session")
def challenge_stack(challenge_files):
    """All challenge recordings as the channels of one stream, cut to the shortest."""
    recs = [read_wav(p)[0][:, 0] for p in challenge_files]
    n = min(len(r) for r in recs)
    return np.ascontiguousarray(np.stack([r[:n] for r in recs], axis=1))


def tile_channels(recordings, channels, n_samples, seed=0):
    """`channels` channels made of the given recordings at random time offsets, so that
    neighbouring channels are not copies of each other."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_samples, channels), dtype=np.int16)
    for c in range(channels):
        rec = recordings[c % len(recordings)]
        start = int(rng.integers(0, max(1, len(rec) - n_samples)))
        seg = rec[start:start + n_samples]
        out[:, c] = np.resize(seg, n_samples)
    return out


@pytest.fixture(scope="session")
def tools():
    """Paths of the native ./encode and ./decode (built by `make tools`)."""
    encode, decode = REPO / "encode", REPO / "decode"
    if not (encode.exists() and decode.exists()):
        pytest.skip("./encode and ./decode are not built (run `make tools`)")
    return encode, decode
