"""The sequence / gap / keyframe tracker the subscriber and the dashboard's tap share."""

from neurowire.clients.tracker import Gap, SequenceTracker
from neurowire.wire import group_suffix, pack_block, parse_block


def header(seq, first, key=False, epoch=1, dropped=0, n=10):
    data = pack_block(4, n, 1, key, seq, epoch, first, 20000.0, 1, 0, 1, 2, 3, 4, dropped, 5,
                      group_suffix([4]))
    return parse_block(data, 1)


def feed(tracker, headers):
    """(blocks lost, decodable, gap) per header, taking every block that can be decoded."""
    out = []
    for h in headers:
        lost = tracker.on_block(h)
        decodable = tracker.can_decode(h)
        out.append((lost, decodable, tracker.delivered(h) if decodable else None))
    return out


def test_in_order_stream_has_no_loss():
    tracker = SequenceTracker("imp")
    results = feed(tracker, [header(0, 0, key=True), header(1, 10), header(2, 20)])
    assert results == [(0, True, None)] * 3
    assert tracker.joined_at == 0 and tracker.next_sample == 30


def test_first_block_must_be_a_keyframe():
    tracker = SequenceTracker("imp")
    assert feed(tracker, [header(5, 50), header(6, 60, key=True)]) == [
        (0, False, None), (0, True, None)]
    assert tracker.joined_at == 60


def test_lost_blocks_wait_for_a_keyframe_and_report_the_range():
    tracker = SequenceTracker("imp")
    results = feed(tracker, [header(0, 0, key=True), header(3, 30), header(4, 40, key=True)])
    assert results[1] == (2, False, None)  # blocks 1 and 2 lost; 3 cannot be decoded
    assert results[2] == (0, True, Gap("imp", 10, 40, "delivery"))


def test_gap_reasons_daemon_dropped_and_source():
    tracker = SequenceTracker("imp")
    results = feed(tracker, [header(0, 0, key=True), header(1, 20, dropped=1),
                             header(2, 40, dropped=1)])
    assert results[1][2] == Gap("imp", 10, 20, "daemon_dropped")
    assert results[2][2] == Gap("imp", 30, 40, "source")  # the daemon's count did not grow


def test_new_epoch_restarts_block_numbers_but_not_samples():
    tracker = SequenceTracker("imp")
    feed(tracker, [header(0, 0, key=True), header(1, 10)])
    restarted = header(0, 50, key=True, epoch=2)
    assert tracker.new_epoch(restarted)
    assert feed(tracker, [restarted]) == [(0, True, Gap("imp", 20, 50, "delivery"))]
    assert not tracker.new_epoch(header(1, 60, epoch=2))


def test_resume_from_reports_what_was_missed_since():
    tracker = SequenceTracker("imp", resume_from=100)
    assert feed(tracker, [header(40, 400, key=True)]) == [
        (0, True, Gap("imp", 100, 400, "delivery"))]
