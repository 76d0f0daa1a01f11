"""Hostile daemon configs and requests: every numeric config key has a range (daemon/config.py
RANGES) and a value outside it, or NaN, is refused with a message naming the key and the
range; oversized control and lossless requests are answered and counted, never a hang."""
import dataclasses
import math

import pytest

pytest.importorskip("neurowire.codec")

from neurowire.daemon import ConfigError, load_config  # noqa: E402
from neurowire.daemon.config import RANGES, DaemonConfig  # noqa: E402

NUMERIC = [f.name for f in dataclasses.fields(DaemonConfig)
           if type(f.default) in (int, float)]


def test_every_numeric_key_has_a_range():
    assert NUMERIC, "no numeric keys found"
    assert sorted(RANGES) == sorted(NUMERIC)


def test_the_defaults_are_within_their_ranges():
    load_config()  # raises if a default were outside its own range


def outside(key):
    """Values just outside each end of `key`'s range, and far outside, of its own type."""
    allowed = RANGES[key]
    kind = type(getattr(DaemonConfig(), key))
    low = allowed.low if allowed.low_open else allowed.low - (1 if kind is int else 1e-3)
    values = [kind(low), kind(allowed.high + 1), kind(-1e12), kind(1e15)]
    if kind is float:
        values += [math.nan, math.inf, -math.inf]
    return values


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_key_outside_its_range_is_refused_naming_key_and_range(tmp_path, key):
    allowed = RANGES[key]
    for value in outside(key):
        with pytest.raises(ConfigError) as error:
            load_config(**{key: value})
        message = str(error.value)
        assert f"'{key}'" in message, message
        if math.isfinite(value):
            assert f"at most {allowed.high}" in message, message
            assert f"{allowed.low:g}" in message, message


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_key_at_its_ends_is_taken(key):
    allowed = RANGES[key]
    kind = type(getattr(DaemonConfig(), key))
    ends = [allowed.high] + ([] if allowed.low_open else [allowed.low])
    if key == "block_format":  # the ends are checked again against the codec's versions
        return
    for value in ends:
        assert getattr(load_config(**{key: kind(value)}), key) in (kind(value), *(
            [load_config().workers] if key == "workers" and value == 0 else []))


def test_out_of_range_in_a_file_names_the_file_key_and_range(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[daemon]\nkeyframe_interval_s = 36000\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "'keyframe_interval_s' = 36000.0 is out of range" in message
    assert "at least 0 and at most 3600" in message


def test_a_64_bit_integer_is_refused_by_range_not_overflow(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("[daemon]\nblock_format = 9223372036854775807\nworkers = 2\n")
    with pytest.raises(ConfigError, match="'block_format' .* out of range"):
        load_config(path)
