"""Channel groups coded side by side (GroupEncoder, GroupDecoder, CodecTeam): the same
blocks as one StreamEncoder per group, decoded exactly, and a failed block lost as a whole."""
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import REPO, tile_channels
from neurowire import codec
from neurowire.codec._codec import ffi


def split(samples, groups):
    """Column slices of `samples` for the given group sizes, each contiguous."""
    edges = np.cumsum([0, *groups])
    return [np.ascontiguousarray(samples[:, a:b]) for a, b in zip(edges[:-1], edges[1:])]


def stream(excerpts, channels, n_samples, seed=0):
    return tile_channels(list(excerpts.values()), channels, n_samples, seed)


def check_same_as_stream_encoders(samples, groups, block, keyframe_every, team=None):
    encoder = codec.GroupEncoder(groups, team)
    decoder = codec.GroupDecoder(groups, team)
    singles = [codec.StreamEncoder(count) for count in groups]
    for number, start in enumerate(range(0, len(samples), block)):
        rows = samples[start:start + block]
        keyframe = number % keyframe_every == 0
        blobs = encoder.encode(rows, keyframe)
        assert blobs == [single.encode(part, keyframe)
                         for single, part in zip(singles, split(rows, groups))]
        np.testing.assert_array_equal(decoder.decode(blobs), rows)


@pytest.mark.parametrize("groups", [[64], [32, 32], [21, 22, 21], [1, 63], [5, 7, 11, 13, 28]])
def test_blocks_are_those_of_one_stream_encoder_per_group(excerpts, groups):
    samples = stream(excerpts, sum(groups), 400)
    check_same_as_stream_encoders(samples, groups, block=10, keyframe_every=7)


def test_more_groups_than_threads_share_one_team(excerpts):
    team = codec.CodecTeam(2)
    samples = stream(excerpts, 40, 300, seed=1)
    check_same_as_stream_encoders(samples, [9, 10, 11, 10], block=20, keyframe_every=5, team=team)
    check_same_as_stream_encoders(samples[:, :17], [17], block=7, keyframe_every=3, team=team)


def test_stored_and_off_grid_channels_round_trip():
    rng = np.random.default_rng(3)
    noise = rng.integers(-32768, 32768, size=(60, 6), dtype=np.int16)  # stored blocks
    ramp = np.arange(60 * 5, dtype=np.int16).reshape(60, 5)              # linear domain
    samples = np.ascontiguousarray(np.hstack([noise, ramp]))
    check_same_as_stream_encoders(samples, [6, 5], block=9, keyframe_every=4)
    check_same_as_stream_encoders(samples, [3, 8], block=1, keyframe_every=100)


@given(data=st.data())
def test_any_split_and_block_lengths(data):
    channels = data.draw(st.integers(2, 24))
    cuts = sorted(data.draw(st.sets(st.integers(1, channels - 1), max_size=5)))
    groups = [b - a for a, b in zip([0, *cuts], [*cuts, channels])]
    n = data.draw(st.integers(1, 60))
    seed = data.draw(st.integers(0, 2**31))
    samples = np.random.default_rng(seed).integers(-40, 40, size=(n, channels)).astype(np.int16)
    samples = np.cumsum(samples, axis=0, dtype=np.int16)
    block = data.draw(st.integers(1, 20))
    check_same_as_stream_encoders(samples, groups, block, keyframe_every=data.draw(st.integers(1, 5)))


def test_a_view_with_other_strides_is_taken_as_its_values(excerpts):
    wide = stream(excerpts, 20, 50)
    view = wide[::2, 3:15]  # neither rows nor columns contiguous
    encoder, decoder = codec.GroupEncoder([4, 8]), codec.GroupDecoder([4, 8])
    np.testing.assert_array_equal(decoder.decode(encoder.encode(view)), view)


def make_blocks(excerpts, groups=(6, 10), n_blocks=4):
    samples = stream(excerpts, sum(groups), 10 * n_blocks)
    encoder = codec.GroupEncoder(groups)
    return samples, [encoder.encode(samples[10 * k:10 * k + 10], keyframe=k == 2)
                     for k in range(n_blocks)]


def assert_state_dropped(decoder, blobs):
    with pytest.raises(codec.NeedKeyframeError):
        decoder.decode(blobs)


def test_a_damaged_group_loses_the_whole_block(excerpts):
    samples, blocks = make_blocks(excerpts)
    decoder = codec.GroupDecoder([6, 10])
    decoder.decode(blocks[0])
    damaged = bytearray(blocks[1][1])
    damaged[codec.BLOCK_HEADER_BYTES + 2] ^= 0x40  # early in the coded payload
    with pytest.raises(codec.CorruptStreamError):
        decoder.decode([blocks[1][0], bytes(damaged)])
    # Group 0 decoded fine, yet its state went with the block: both resume at a keyframe.
    with pytest.raises(codec.NeedKeyframeError):
        decoder.decode([blocks[2][0], blocks[1][1]])  # group 1's block is not a keyframe
    np.testing.assert_array_equal(decoder.decode(blocks[2]), samples[20:30])
    np.testing.assert_array_equal(decoder.decode(blocks[3]), samples[30:40])


@pytest.mark.parametrize("wrong", ["count", "lengths", "swapped", "truncated", "not a block"])
def test_malformed_block_sets_are_refused_and_lose_the_state(excerpts, wrong):
    _, blocks = make_blocks(excerpts)
    short = codec.GroupEncoder([6, 10]).encode(np.zeros((3, 16), np.int16))
    bad = {"count": blocks[0][:1],
           "lengths": [blocks[0][0], short[1]],
           "swapped": blocks[0][::-1],
           "truncated": [blocks[0][0], blocks[0][1][:-5]],
           "not a block": [blocks[0][0], b"hello"]}[wrong]
    decoder = codec.GroupDecoder([6, 10])
    decoder.decode(blocks[0])
    with pytest.raises(codec.CodecError):
        decoder.decode(bad)
    assert_state_dropped(decoder, blocks[1])
    decoder.decode(blocks[2])  # a keyframe


def test_encoder_argument_checks():
    with pytest.raises(ValueError):
        codec.GroupEncoder([])
    with pytest.raises(ValueError):
        codec.GroupEncoder([4, 0])
    with pytest.raises(ValueError):
        codec.GroupDecoder([codec.MAX_CHANNELS, 1])
    with pytest.raises(TypeError):
        codec.GroupEncoder([2.5])
    encoder = codec.GroupEncoder([3, 4])
    with pytest.raises(ValueError, match=r"\(n_samples, 7\)"):
        encoder.encode(np.zeros((5, 6), np.int16))
    with pytest.raises(TypeError, match="int16"):
        encoder.encode(np.zeros((5, 7), np.int32))


@pytest.mark.parametrize("threads, cpus, error", [(0, None, ValueError), (True, None, TypeError),
                                                  (2.0, None, TypeError), (3, [0, 1], ValueError)])
def test_team_argument_checks(threads, cpus, error):
    with pytest.raises(error):
        codec.CodecTeam(threads, cpus)


@pytest.mark.parametrize("spin_us, error", [(-1, ValueError), (1_000_001, ValueError),
                                            (1.5, TypeError), (True, TypeError)])
def test_team_spin_argument_checks(spin_us, error):
    with pytest.raises(error, match="spin_us"):
        codec.CodecTeam(2, spin_us=spin_us)


def test_polling_team_codes_the_same_blocks(excerpts):
    team = codec.CodecTeam(3, spin_us=2000)
    assert team.spin_us == 2000
    check_same_as_stream_encoders(stream(excerpts, 48, 300, seed=6), [16, 16, 16], 10, 7, team)


def process_cpu_share(seconds):
    """CPU time the whole process spent while this thread slept, per second of sleep."""
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_helpers_poll_for_spin_us_then_sleep_and_stop_at_once():
    """After a block, a polling helper keeps its CPU busy for spin_us, then sleeps; one that
    does not poll sleeps at once; freeing a team stops a polling helper without waiting."""
    x = np.arange(4000, dtype=np.int16).reshape(100, 40)
    # Shares are compared with each other, not with fixed figures: on a loaded machine a
    # polling helper gets well under a whole CPU, but still far more than a sleeping one.
    quiet = codec.CodecTeam(2)
    codec.GroupEncoder([20, 20], quiet).encode(x)
    asleep_at_once = process_cpu_share(0.2)
    polling = codec.CodecTeam(2, spin_us=600_000)
    codec.GroupEncoder([20, 20], polling).encode(x)
    while_polling = process_cpu_share(0.2)   # the helper, polling (ideally 1.0)
    time.sleep(0.5)
    after_spin = process_cpu_share(0.2)      # past spin_us: asleep
    assert while_polling > 0.05
    assert asleep_at_once < while_polling / 3 and after_spin < while_polling / 3
    polling = codec.CodecTeam(2, spin_us=1_000_000)
    codec.GroupEncoder([20, 20], polling).encode(x)
    start = time.perf_counter()
    ffi.release(polling._team)               # joins the helper, mid-poll
    assert time.perf_counter() - start < 0.9  # not after the rest of its 1 s spin


@pytest.mark.timeout(180)
@pytest.mark.parametrize("claims", [[], ["-DNW_TEAM_LOCKED_CLAIMS"]], ids=["atomic", "locked"])
def test_team_under_thread_sanitizer(tmp_path, claims):
    """codec_c/stress/team_stress.c (`make tsan`): the team's hand-over and everything its
    threads share, checked by ThreadSanitizer over sleeping and polling helpers, uneven
    groups claimed by one to four threads, with coders of both block formats; the groups
    claimed with atomics and, as where there are none, under the lock."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    src = REPO / "codec_c" / "src"
    binary = tmp_path / "team_stress"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # `make asan` preloads ASan
    build = subprocess.run(
        [cc, "-g", "-O1", "-std=c99", "-pthread", "-fsanitize=thread", *claims, f"-I{src}", "-o", str(binary),
         str(REPO / "codec_c" / "stress" / "team_stress.c"), *map(str, sorted(src.glob("*.c")))],
        capture_output=True, text=True, env=env)
    if build.returncode != 0:
        pytest.skip(f"{cc} cannot build with -fsanitize=thread: {build.stderr[-300:]}")
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=170, env=env)
    if "FATAL: ThreadSanitizer" in result.stderr:  # e.g. a memory layout it cannot run in
        pytest.skip(f"ThreadSanitizer cannot run here: {result.stderr[-300:]}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.count(" 0 failed") == 4
    assert result.stdout.count("version 2,") == 2


def test_team_threads_and_cpus():
    assert codec.CodecTeam(1).threads == 1
    assert codec.CodecTeam(3).threads == 3
    allowed = sorted(os.sched_getaffinity(0))
    assert codec.team_cpus(1) is None
    assert codec.team_cpus(len(allowed) + 1) is None
    if len(allowed) >= 2:
        assert codec.team_cpus(2) == allowed[:2]
        team = codec.CodecTeam(2, codec.team_cpus(2))
        encoder = codec.GroupEncoder([3, 3], team)
        x = np.arange(60, dtype=np.int16).reshape(10, 6)
        np.testing.assert_array_equal(codec.GroupDecoder([3, 3], team).decode(encoder.encode(x)), x)


def test_one_team_used_from_several_threads(excerpts):
    team = codec.CodecTeam(2)
    samples = stream(excerpts, 24, 400, seed=5)
    failures = []

    def run(columns):
        try:
            check_same_as_stream_encoders(samples[:, columns], [5, 7], 10, 6, team)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    workers = [threading.Thread(target=run, args=(slice(a, a + 12),)) for a in (0, 12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures and not any(w.is_alive() for w in workers)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_codes_alone_and_exits(excerpts):
    """A child forked after the team started has none of its threads: it must neither wait
    for them nor hang in freeing the team."""
    team = codec.CodecTeam(2)
    encoder = codec.GroupEncoder([8, 8], team)
    samples = stream(excerpts, 16, 30, seed=2)
    expected = codec.GroupEncoder([8, 8]).encode(samples)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        ok = False
        try:
            ok = encoder.encode(samples) == expected
            del encoder, team
        finally:
            os.write(write_end, b"1" if ok else b"0")
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert answer == b"1" and os.WIFEXITED(status)


@pytest.mark.parametrize("threads, spin_us", [(1, 0), (2, 0), (2, 1000)])
def test_codec_bench_block_run_codes_every_block_and_restores_affinity(excerpts, threads, spin_us):
    """`neurowire bench codec`'s live-block run (timings are its business, not a test's):
    every block round-trips, sizes add up, and the caller's CPU set comes back."""
    from neurowire.codec.bench import neurowire_blocks

    data = stream(excerpts, 24, 200, seed=4)
    before = os.sched_getaffinity(0)
    t_enc, t_dec, size, raw = neurowire_blocks(data, 10, threads, spin_us)
    assert len(t_enc) == len(t_dec) == 20 and raw == data.size * 2
    groups = [12, 12] if threads == 2 else [24]
    encoder = codec.GroupEncoder(groups)
    assert size == sum(len(b) for i in range(0, 200, 10) for b in encoder.encode(data[i:i + 10]))
    assert os.sched_getaffinity(0) == before
