"""Writes the spool fuzz target's seeds (clients/fuzz/corpus): a keyframe block, the block
after a gap, a feed's message, and a crash the fuzzer found, in fuzz_spool.c's input layout
(tests/test_fuzz_spool.py replays them). Run from the repository."""
import os
import struct

from neurowire.wire import group_suffix, pack_block

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def encoded(frames, excess=0):
    return bytes([len(frames), excess]) + b"".join(struct.pack("<H", len(frame)) + frame
                                                   for frame in frames)


def block(seq, first, keyframe):
    return pack_block(8, 10, 2, keyframe, seq, 1, first, 20000.0, 0, 0, 1, 2, 3, 1, 0, 4,
                      group_suffix([3, 5]))


if __name__ == "__main__":
    os.makedirs(HERE, exist_ok=True)
    seeds = {"keyframe": [b"imp\0", block(0, 0, True), b"a", b"b"],
             "after_gap": [b"imp\0", block(5, 50, False), b"a", b"b"],
             "feed": [b"imp/spikes\0", b"x"]}
    # What the fuzzer's first run found: fewer than three frames kept, more beyond the
    # limit (an out-of-bounds read before the fix).
    excess = {"few_frames_excess": ([b"imp\0", block(0, 0, True)], 2)}
    for name, frames in seeds.items():
        with open(os.path.join(HERE, name), "wb") as handle:
            handle.write(encoded(frames))
    for name, (frames, beyond) in excess.items():
        with open(os.path.join(HERE, name), "wb") as handle:
            handle.write(encoded(frames, beyond))
