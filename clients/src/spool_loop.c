/* The subscriber's spooling loop: see spool_loop.h. */
#define _POSIX_C_SOURCE 199309L
#include "spool_loop.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK_HEADER_BYTES 104      /* neurowire.wire.BLOCK.size */
#define MAX_GROUPS 1024             /* neurowire.wire.MAX_GROUPS */
#define MAX_INT 0x7FFFFFFFFFFFFFFFull
#define MAX_RATE 1e6

static int64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* ---- the header, as neurowire.wire.parse_block checks it --------------------------------- */

typedef struct {
    uint32_t n_samples;
    int keyframe;
    uint64_t seq, first, dropped;
    int64_t epoch;
} block_header;

/* -1 when the header is good (*h filled), else the NW_SPOOL_* reason, in parse_block's order. */
static int check_header(const uint8_t *p, size_t len, uint64_t n_blobs, block_header *h) {
    if (len < BLOCK_HEADER_BYTES || p[0] != 'N' || p[1] != 'W') {
        if (len >= 2 && p[0] == 'N' && p[1] == 'W') return NW_SPOOL_HEADER;
        /* A msgpack map's first byte: protocol 1's header, so a version mismatch. */
        if (len >= 1 && ((p[0] >= 0x80 && p[0] <= 0x8F) || p[0] == 0xDE || p[0] == 0xDF))
            return NW_SPOOL_VERSION;
        return NW_SPOOL_HEADER;
    }
    if (p[2] != 2) return NW_SPOOL_VERSION;   /* neurowire.wire.PROTOCOL_VERSION */
    if (p[3] != 2) return NW_SPOOL_HEADER;    /* KIND_BLOCK */
    const uint32_t channels = get_u32(p + 4);
    const uint32_t n_groups = (uint32_t)p[12] | (uint32_t)p[13] << 8;
    if (len != BLOCK_HEADER_BYTES + 4 * (size_t)n_groups) return NW_SPOOL_HEADER;
    if (n_groups < 1 || n_groups > MAX_GROUPS || n_groups != n_blobs) return NW_SPOOL_GROUPS;
    uint64_t sum = 0;
    for (uint32_t g = 0; g < n_groups; g++) {
        uint32_t size = get_u32(p + BLOCK_HEADER_BYTES + 4 * (size_t)g);
        if (!size) return NW_SPOOL_GROUPS;
        sum += size;
    }
    if (sum != channels) return NW_SPOOL_GROUPS;
    double rate;
    uint64_t rate_bits = get_u64(p + 40);
    memcpy(&rate, &rate_bits, sizeof rate);
    h->n_samples = get_u32(p + 8);
    if (h->n_samples < 1 || !(rate > 0 && rate <= MAX_RATE)) return NW_SPOOL_HEADER;  /* NaN too */
    h->seq = get_u64(p + 16);
    h->first = get_u64(p + 32);
    if (h->seq > MAX_INT || h->first > MAX_INT) return NW_SPOOL_HEADER;
    h->epoch = (int64_t)get_u64(p + 24);
    h->keyframe = p[14] & 1;   /* FLAG_KEYFRAME */
    h->dropped = get_u64(p + 88);
    return -1;
}

/* A stream's topic: a stream id (neurowire.wire.STREAM_ID) and '\0'. */
static int good_topic(const uint8_t *topic, size_t len) {
    if (len < 2 || len > NW_SPOOL_TOPIC_BYTES || topic[len - 1] != 0) return 0;
    for (size_t i = 0; i + 1 < len; i++) {
        const uint8_t c = topic[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- the tracker, as neurowire.clients.tracker.SequenceTracker --------------------------- */

static nw_spool_tracker *tracker_for(nw_spool *spool, const uint8_t *topic, size_t len) {
    for (uint32_t s = 0; s < spool->streams; s++) {
        nw_spool_tracker *t = &spool->tracker[s];
        if (t->topic_len == len && !memcmp(t->topic, topic, len)) return t;
    }
    if (spool->streams == NW_SPOOL_MAX_STREAMS) return NULL;
    nw_spool_tracker *t = &spool->tracker[spool->streams++];
    memset(t, 0, sizeof *t);
    memcpy(t->topic, topic, len);
    t->topic_len = (uint32_t)len;
    if (spool->has_resume) {  /* what came since resume_from is missed delivery */
        t->has_sample = 1;
        t->next_sample = spool->resume_from;
        t->lost_delivery = 1;
    }
    return t;
}

/* SequenceTracker.on_block: blocks lost just before this one, or -1 for a duplicate. */
static int64_t on_block(nw_spool_tracker *t, const block_header *h) {
    if (!t->has_epoch || h->epoch != t->epoch) {
        if (t->has_epoch && h->epoch < t->epoch) return -1;  /* from before a restart */
        if (t->has_epoch) {
            t->lost_delivery = 1;
            t->synced = 0;
            t->epoch_start = 1;
        }
        t->dropped_seen = h->dropped;
        t->epoch = h->epoch;
        t->has_epoch = 1;
        t->has_seq = 0;
    } else if (t->has_seq && (h->seq < t->next_seq
                              || (t->has_sample && h->first < t->next_sample))) {
        return -1;
    }
    int64_t lost = 0;
    if (t->has_seq && h->seq != t->next_seq) {
        lost = h->seq > t->next_seq ? (int64_t)(h->seq - t->next_seq) : 0;
        t->synced = 0;
        t->lost_delivery = 1;
    }
    t->next_seq = h->seq + 1;
    t->has_seq = 1;
    return lost;
}

/* SequenceTracker.delivered, counting the gap it finds. */
static void delivered(nw_spool_tracker *t, const block_header *h, nw_spool_counts *counts) {
    t->synced = 1;
    if (t->has_sample && !(t->epoch_start && h->first < t->next_sample)
        && h->first > t->next_sample) {
        const int reason = t->lost_delivery ? NW_SPOOL_GAP_DELIVERY
                         : h->dropped > t->dropped_seen ? NW_SPOOL_GAP_DAEMON_DROPPED
                         : NW_SPOOL_GAP_SOURCE;
        counts->gaps[reason]++;
        counts->gap_samples += h->first - t->next_sample;
    }
    t->dropped_seen = h->dropped;
    t->lost_delivery = 0;
    t->epoch_start = 0;
    t->next_sample = h->first + h->n_samples;
    t->has_sample = 1;
}

static void track(nw_spool *spool, const uint8_t *topic, size_t topic_len,
                  const block_header *h) {
    nw_spool_tracker *t = tracker_for(spool, topic, topic_len);
    nw_spool_counts *counts = &spool->counts;
    if (!t) {
        counts->untracked++;
        return;
    }
    const int64_t lost = on_block(t, h);
    if (lost < 0) {
        counts->duplicates++;
        return;
    }
    counts->lost_blocks += (uint64_t)lost;
    if (!(t->synced || h->keyframe)) {
        counts->keyframe_waits++;  /* decoding resumes at a keyframe */
        return;
    }
    delivered(t, h, counts);
}

/* ---- the spool file ------------------------------------------------------------------------- */

static int write_all(int fd, const uint8_t *data, size_t len) {
    while (len) {
        ssize_t wrote = write(fd, data, len);
        if (wrote < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        data += wrote;
        len -= (size_t)wrote;
    }
    return 0;
}

int nw_spool_flush(nw_spool *spool) {
    int status = write_all(spool->fd, spool->buffer, spool->buffer_used);
    spool->buffer_used = 0;
    return status;
}

/* Appends bytes to the buffer; past its room, writes it first, and what cannot fit at all
 * goes straight to the file. */
static int put(nw_spool *spool, const void *data, size_t len) {
    if (!len) return 0;  /* an empty frame's data may be NULL */
    if (len > spool->buffer_cap - spool->buffer_used) {
        int status = nw_spool_flush(spool);
        if (status) return status;
        if (len > spool->buffer_cap) return write_all(spool->fd, data, len);
    }
    memcpy(spool->buffer + spool->buffer_used, data, len);
    spool->buffer_used += len;
    return 0;
}

static void le_bytes(uint8_t *out, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; i++) out[i] = (uint8_t)(value >> (8 * i));
}

/* The record neurowire.clients.writers.Spool writes: int64 received_ns, uint32 frames, then
 * uint32 length and bytes per frame, little-endian. */
static int put_record(nw_spool *spool, const uint8_t *const *data, const size_t *size,
                      uint32_t frames, int64_t received_ns) {
    uint8_t head[12];
    le_bytes(head, (uint64_t)received_ns, 8);
    le_bytes(head + 8, frames, 4);
    int status = put(spool, head, sizeof head);
    for (uint32_t k = 0; !status && k < frames; k++) {
        if (size[k] > UINT32_MAX) return -EFBIG;
        le_bytes(head, size[k], 4);
        status = put(spool, head, 4);
        if (!status) status = put(spool, data[k], size[k]);
        spool->counts.spooled_bytes += size[k];
    }
    return status;
}

/* ---- the loop ---------------------------------------------------------------------------------- */

int nw_spool_take(nw_spool *spool, const uint8_t *const *data, const size_t *size,
                  uint32_t frames, uint32_t excess, int64_t received_ns) {
    nw_spool_counts *counts = &spool->counts;
    if (frames && size[0] && memchr(data[0], '/', size[0])) {  /* a feed's topic: not ours */
        counts->feed_messages++;
        return 0;
    }
    const uint64_t total = (uint64_t)frames + excess;
    if (frames < 3) {  /* (frames beyond those given come only after the first three) */
        counts->rejected[NW_SPOOL_FRAMES]++;
        return 0;
    }
    block_header h;
    int reason = check_header(data[1], size[1], total - 2, &h);
    if (reason < 0 && !good_topic(data[0], size[0])) reason = NW_SPOOL_TOPIC;
    if (reason >= 0) {
        counts->rejected[reason]++;
        return 0;
    }
    int status = put_record(spool, data, size, frames, received_ns);
    if (status) return status;
    counts->spooled++;
    track(spool, data[0], size[0], &h);
    if (spool->until_sample && h.first + h.n_samples >= spool->until_sample) spool->reached = 1;
    return 1;
}

int nw_spool_run(const nw_sub_zmq *zmq, void *socket, nw_sub_batch *batch, nw_spool *spool,
                 int64_t deadline_ns, uint32_t max_messages) {
    const uint32_t message_cap = batch->message_cap;
    uint32_t taken_all = 0;
    int status = 0, write_failed = 0;
    while (!status && taken_all < max_messages && !spool->stop && !spool->reached) {
        const int64_t left_ns = deadline_ns - monotonic_ns();
        if (left_ns <= 0) break;
        long wait_ms = (long)((left_ns + 999999) / 1000000);
        if (wait_ms > NW_SPOOL_STOP_CHECK_MS) wait_ms = NW_SPOOL_STOP_CHECK_MS;
        if (max_messages - taken_all < message_cap) batch->message_cap = max_messages - taken_all;
        const int taken = nw_sub_drain(zmq, socket, wait_ms, batch);
        batch->message_cap = message_cap;
        if (taken < 0) {
            status = taken;
            break;
        }
        if (!taken) continue;
        spool->last_data_ns = monotonic_ns();
        taken_all += (uint32_t)taken;
        spool->taken += (uint32_t)taken;
        for (uint32_t m = 0; m < (uint32_t)taken && !spool->reached; m++) {
            const uint32_t k = batch->message_first[m];
            const int took = nw_spool_take(spool, batch->data + k, batch->size + k,
                                           batch->message_first[m + 1] - k, batch->excess[m],
                                           batch->received_ns[m]);
            if (took < 0) {
                status = took;
                write_failed = 1;
                break;
            }
        }
    }
    nw_sub_release(zmq, batch);
    const int flushed = nw_spool_flush(spool);
    if (!status && flushed) status = flushed;
    if (status < 0 && (write_failed || flushed)) spool->write_error = -status;
    return status < 0 ? status : (int)taken_all;
}
