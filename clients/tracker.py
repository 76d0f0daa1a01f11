"""Where one stream stands, block by block: sequence, sample index, keyframe sync, epoch.

Shared by the subscriber (neurowire.clients.subscription) and the dashboard's tap, so both
count lost blocks and gap ranges the same way. Fed neurowire.wire.BlockHeader values.

Semantics: `seq` is the daemon's block counter within an epoch (the daemon's start time); a
jump forward is blocks lost after the daemon. Sample indices come from the implant, so a gap
in them is a sample range lost anywhere, whose reason is told apart as: "delivery" (blocks
lost between daemon and us), "daemon_dropped" (the daemon's dropped counter grew), or
"source" (packets that never reached the daemon). After any loss the decoder has to wait for
a keyframe: until then `synced` is False.

Within an epoch a sample index is delivered at most once: a block whose seq or samples were
seen already (a duplicate, or a rewind) is dropped and counted in `duplicates`. A new epoch
(the daemon restarted, the source began a new session, or the stream idled out) may start
its indices over: that is the one place they go back, and it is no gap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    stream: str
    start: int  # first missing sample index
    stop: int   # first sample index received again (exclusive end)
    reason: str  # "delivery" (blocks lost after the daemon), "daemon_dropped", "source"

    @property
    def samples(self) -> int:
        return self.stop - self.start


class SequenceTracker:
    __slots__ = ("stream", "epoch", "next_seq", "next_sample", "synced", "lost_delivery",
                 "dropped_seen", "joined_at", "duplicates", "epoch_start")

    def __init__(self, stream: str, resume_from: int | None = None):
        self.stream = stream
        self.epoch = None
        self.next_seq: int | None = None
        self.next_sample: int | None = resume_from
        self.joined_at: int | None = resume_from
        self.synced = False
        self.lost_delivery = resume_from is not None  # what came since is missed delivery
        self.dropped_seen = 0
        self.duplicates = 0
        self.epoch_start = False  # the next block delivered is its epoch's first

    def new_epoch(self, header) -> bool:
        """True when `header` is from another daemon run than the blocks before it (then
        block numbers start over; sample indices carry on across it)."""
        return self.epoch is None or header.epoch > self.epoch

    def on_block(self, header) -> int:
        """Every block, first thing: the number of blocks lost just before it, or -1 for a
        block to drop (seen already in this epoch, or from an epoch older than the one
        followed)."""
        lost = 0
        if header.epoch != self.epoch:
            if self.epoch is not None and header.epoch < self.epoch:
                self.duplicates += 1  # a stale block from before the restart
                return -1
            if self.epoch is not None:
                self.lost_delivery = True  # whatever the restart cost shows as a gap
                self.synced = False
                self.epoch_start = True
            self.dropped_seen = header.dropped  # the daemon counts drops per epoch
            self.epoch = header.epoch
            self.next_seq = None
        elif self.next_seq is not None and (
                header.seq < self.next_seq or (self.next_sample is not None
                                               and header.first < self.next_sample)):
            self.duplicates += 1
            return -1
        if self.next_seq is not None and header.seq != self.next_seq:
            lost = max(0, header.seq - self.next_seq)
            self.desync()
        self.next_seq = header.seq + 1
        return lost

    def advance(self, next_seq: int, next_sample: int, dropped: int) -> None:
        """Blocks went by in order, each the one after the last (seq and samples) in this
        epoch, the last with `dropped`: where on_block and delivered for each would leave a
        synced tracker (the subscriber's fast path checks them in C)."""
        self.next_seq = next_seq
        self.next_sample = next_sample
        self.dropped_seen = dropped
        self.lost_delivery = False
        self.epoch_start = False

    def desync(self) -> None:
        """Blocks were lost, or one could not be decoded: wait for a keyframe."""
        self.synced = False
        self.lost_delivery = True

    def can_decode(self, header) -> bool:
        return self.synced or header.keyframe

    def delivered(self, header) -> Gap | None:
        """The block's samples were taken: the gap just before them, if any."""
        self.synced = True
        gap = None
        if self.next_sample is None:
            self.joined_at = header.first
        elif self.epoch_start and header.first < self.next_sample:
            pass  # the source started its indices over with the new epoch
        elif header.first > self.next_sample:
            reason = ("delivery" if self.lost_delivery else
                      "daemon_dropped" if header.dropped > self.dropped_seen else "source")
            gap = Gap(self.stream, self.next_sample, header.first, reason)
        self.dropped_seen = header.dropped
        self.lost_delivery = False
        self.epoch_start = False
        self.next_sample = header.first + header.n_samples
        return gap
