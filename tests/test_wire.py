"""The wire module from both ends: what a sender packs, the receiver reads back exactly, and
every malformed header is rejected with its reason."""

import struct

import msgpack
import pytest
from hypothesis import given, strategies as st

from neurowire.wire import (BLOCK, INGEST, MAX_INT, PROTOCOL_VERSION, Rejected, feed_topic,
                            group_suffix, is_feed_topic, pack_block, pack_ingest,
                            parse_block, parse_ingest, topic_for)

LIMITS = dict(max_channels=64, max_samples=32)


def ingest(stream=b"imp0", seq=3, first=30, n=10, channels=4, rate=20000.0, t_acq=123,
           session=5, version=PROTOCOL_VERSION):
    return pack_ingest(stream, seq, first, n, channels, rate, t_acq, session, version=version)


def block(channels=8, n=10, groups=(3, 5), key=True, seq=7, first=70, rate=20000.0,
          version=PROTOCOL_VERSION):
    return pack_block(channels, n, len(groups), key, seq, 11, first, rate, 5, 0xDEADBEEF, 1,
                      2, 3, 4, 6, 8, group_suffix(groups), version=version)


@given(stream=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
       seq=st.integers(0, MAX_INT), first=st.integers(0, MAX_INT),
       n=st.integers(1, 32), channels=st.integers(1, 64),
       rate=st.floats(1e-3, 1e6), t_acq=st.integers(0, MAX_INT),
       session=st.integers(1, MAX_INT))
def test_ingest_round_trip(stream, seq, first, n, channels, rate, t_acq, session):
    header = parse_ingest(pack_ingest(stream, seq, first, n, channels, rate, t_acq, session),
                          n * channels * 2, **LIMITS)
    assert header == (stream.encode(), channels, n, seq, first, rate, t_acq, session)


@given(groups=st.lists(st.integers(1, 4096), min_size=1, max_size=16),
       key=st.booleans(), seq=st.integers(0, MAX_INT), epoch=st.integers(-2**63, MAX_INT),
       first=st.integers(0, MAX_INT), n=st.integers(1, 4096), crc=st.integers(0, 2**32 - 1),
       dropped=st.integers(0, 2**64 - 1))
def test_block_round_trip(groups, key, seq, epoch, first, n, crc, dropped):
    data = pack_block(sum(groups), n, len(groups), key, seq, epoch, first, 30000.0, 9, crc,
                      1, 2, 3, 4, dropped, 5, group_suffix(groups))
    header = parse_block(data, len(groups))
    assert header == (sum(groups), n, key, seq, epoch, first, 30000.0, 9, crc, 1, 2, 3, 4,
                      dropped, 5, tuple(groups))


def test_simulator_and_daemon_agree_on_sizes():
    assert INGEST.size == 52 and BLOCK.size == 104  # as documented in neurowire.wire


def _replace(data: bytes, fmt: str, offset: int, value) -> bytes:
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize("header, payload, reason", [
    (b"", 80, "header"),
    (b"\xc1garbage" * 8, 80, "header"),
    (msgpack.packb({"v": 1, "stream": "imp0", "seq": 0}), 80, "version"),  # protocol 1
    (ingest()[:30], 80, "header"),  # cut short
    (ingest(version=PROTOCOL_VERSION + 1), 80, "version"),
    (_replace(ingest(), "B", 3, 2), 80, "header"),  # a block header sent to ingest
    (ingest(stream=b""), 80, "stream_id"),
    (ingest(stream=b"bad id!"), 80, "stream_id"),
    (ingest(stream=b"x" * 65), 80, "stream_id"),
    (ingest(stream=b"imp\0"), 80, "stream_id"),
    (ingest(channels=0), 0, "header"),
    (ingest(channels=65), 65 * 20, "header"),
    (ingest(n=0), 0, "header"),
    (ingest(n=33), 33 * 8, "header"),
    (ingest(seq=2**63), 80, "header"),
    (ingest(first=2**64 - 1), 80, "header"),
    (ingest(t_acq=-1), 80, "header"),
    (ingest(session=0), 80, "header"),  # a session is never 0
    (_replace(ingest(), "Q", 44, 2**63), 80, "header"),
    (ingest(rate=0.0), 80, "header"),
    (ingest(rate=float("nan")), 80, "header"),
    (ingest(rate=2e6), 80, "header"),
    (ingest(), 82, "payload_size"),
    (ingest(), 78, "payload_size"),
])
def test_ingest_rejects(header, payload, reason):
    with pytest.raises(Rejected) as error:
        parse_ingest(header, payload, **LIMITS)
    assert error.value.reason == reason
    assert str(error.value)  # says what is wrong


@pytest.mark.parametrize("header, blobs, reason", [
    (b"", 2, "header"),
    (msgpack.packb({"v": 1, "stream": "imp", "seq": 0}), 2, "version"),
    (block()[:100], 2, "header"),
    (block(version=1), 2, "version"),
    (_replace(block(), "B", 3, 1), 2, "header"),  # an ingest header published
    (block() + b"\0\0\0\0", 2, "header"),  # more group sizes than it says
    (block(), 1, "groups"),
    (block(), 3, "groups"),
    (block(groups=(0, 8)), 2, "groups"),
    (block(channels=9), 2, "groups"),
    (block(n=0), 2, "header"),
    (block(rate=float("nan")), 2, "header"),
    (block(rate=-1.0), 2, "header"),
    (block(seq=2**63), 2, "header"),
])
def test_block_rejects(header, blobs, reason):
    with pytest.raises(Rejected) as error:
        parse_block(header, blobs)
    assert error.value.reason == reason


def test_topics():
    assert topic_for("imp1") == b"imp1\0"
    assert not topic_for("imp10").startswith(topic_for("imp1"))
    assert feed_topic("imp1", "spikes") == b"imp1/spikes\0"
    assert is_feed_topic(feed_topic("imp1", "power")) and not is_feed_topic(topic_for("imp1"))
    with pytest.raises(ValueError, match="feeds"):
        feed_topic("imp1", "nope")
