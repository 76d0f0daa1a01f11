/*
 * The subscriber's spooling loop in C: receive block messages, check their headers, follow
 * each stream's sequence, and append the messages to the spool file, returning to Python
 * only for control (a deadline, a message cap, a stop request, the last sample wanted).
 *
 * The same rules as the Python side, which stays the reference and the fallback
 * (neurowire.clients.spooling): a message is a feed's (its topic holds '/'), rejected with
 * the reason neurowire.wire.parse_block gives (or "frames" / "topic"), or spooled; a spooled
 * block moves its stream's tracker as neurowire.clients.tracker.SequenceTracker does.
 * Messages come through nw_sub_drain (sub_loop.h): every waiting one per wake-up.
 *
 * The part between the cdef markers is read by clients/build_sub_loop.py as the cffi
 * declarations, after sub_loop.h's: the same rules as there.
 */
#ifndef NW_SPOOL_LOOP_H
#define NW_SPOOL_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "sub_loop.h"

/* cdef begin */
#define NW_SPOOL_MAX_STREAMS 256      /* streams followed; later ones are spooled, untracked */
#define NW_SPOOL_TOPIC_BYTES 65       /* a stream id (1..64 bytes, neurowire.wire) and '\0' */
#define NW_SPOOL_STOP_CHECK_MS 50     /* longest wait before the stop flag is looked at again */

/* Rejection reasons, in neurowire.clients.spooling.REJECT_REASONS order. */
enum { NW_SPOOL_FRAMES, NW_SPOOL_HEADER, NW_SPOOL_VERSION, NW_SPOOL_GROUPS, NW_SPOOL_TOPIC,
       NW_SPOOL_REASONS };
/* Gap reasons, as tracker.Gap.reason. */
enum { NW_SPOOL_GAP_DELIVERY, NW_SPOOL_GAP_DAEMON_DROPPED, NW_SPOOL_GAP_SOURCE,
       NW_SPOOL_GAP_REASONS };

/* One stream's SequenceTracker; has_* say which of its None-able fields are set. */
typedef struct nw_spool_tracker {
    uint8_t topic[NW_SPOOL_TOPIC_BYTES];
    uint32_t topic_len;
    int has_epoch, has_seq, has_sample;
    int64_t epoch;
    uint64_t next_seq, next_sample, dropped_seen;
    int synced, lost_delivery, epoch_start;
} nw_spool_tracker;

typedef struct nw_spool_counts {
    uint64_t spooled, spooled_bytes, feed_messages, rejected[NW_SPOOL_REASONS];
    uint64_t lost_blocks, duplicates, keyframe_waits, untracked;
    uint64_t gaps[NW_SPOOL_GAP_REASONS], gap_samples;
} nw_spool_counts;

/* The loop's state; Python (fastsub.SpoolLoop) fills it once and reads it back. */
typedef struct nw_spool {
    int fd;                      /* the spool file, written at its current offset */
    uint8_t *buffer;             /* records gathered here, written when full and on return */
    size_t buffer_cap, buffer_used;
    int has_resume;              /* a new stream starts at resume_from (--resume-from) */
    uint64_t resume_from;
    uint64_t until_sample;       /* 0: none; else stop after the block that reaches it */
    int reached;                 /* set once a block reached until_sample */
    volatile int stop;           /* set by another thread: return at the next look */
    int64_t last_data_ns;        /* CLOCK_MONOTONIC when messages last came; 0 before */
    uint64_t taken;              /* messages taken from the socket, every call */
    int write_error;             /* errno of the write that failed; 0 while none did */
    uint32_t streams;
    nw_spool_tracker tracker[NW_SPOOL_MAX_STREAMS];
    nw_spool_counts counts;
} nw_spool;

/* Takes messages from `socket` (every waiting one per wake-up, waiting when none is) and
 * spools, counts or rejects each, until `deadline_ns` (CLOCK_MONOTONIC), `max_messages`
 * taken, stop set, or until_sample reached (the messages that came with that block after it
 * are given back unspooled, as the Python loop never takes them). Every frame is released
 * and the buffer written before it returns.
 * Returns the messages taken, or a negative errno: a socket error (-EINTR when a signal
 * came, for Python to handle), or the spool's write error, then also in write_error (what
 * was taken is counted in `taken`). */
int nw_spool_run(const nw_sub_zmq *zmq, void *socket, nw_sub_batch *batch, nw_spool *spool,
                 int64_t deadline_ns, uint32_t max_messages);

/* One message as frames (data[k], size[k], `excess` more beyond those given, which a
 * message of fewer than three given frames cannot have): what
 * nw_spool_run does with each message it takes, for tests and for replaying. Returns 1
 * when spooled, 0 when counted and left, or a negative errno from writing. */
int nw_spool_take(nw_spool *spool, const uint8_t *const *data, const size_t *size,
                  uint32_t frames, uint32_t excess, int64_t received_ns);

/* Writes what the buffer holds: 0, or a negative errno. */
int nw_spool_flush(nw_spool *spool);
/* cdef end */

#endif
