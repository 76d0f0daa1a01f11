/* The subscriber's receive and decode loop: see sub_loop.h. */
#define _POSIX_C_SOURCE 199309L
#include "sub_loop.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "neurowire.h"

/* libzmq 4.x ABI, declared here because pyzmq's wheel ships the library without zmq.h. */
typedef struct { void *socket; int fd; short events; short revents; } zmq_pollitem;
enum { ZMQ_DONTWAIT = 1, ZMQ_POLLIN = 1 };

static int64_t clock_ns(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static int64_t now_ns(void) { return clock_ns(CLOCK_REALTIME); }

static void *frame_slot(nw_sub_batch *batch, uint32_t k) {
    return batch->msgs + (size_t)k * NW_SUB_MSG_BYTES;
}

/* Takes one whole message (every frame) if one is waiting: 1, 0 when none is, or -errno. */
static int take_message(const nw_sub_zmq *zmq, void *socket, nw_sub_batch *batch) {
    const uint32_t m = batch->messages, first = batch->frames;
    batch->excess[m] = 0;
    batch->tail_bytes[m] = 0;
    int more = 1;
    for (uint32_t f = 0; more; f++) {
        /* Frames past the message's limit go through the slot after the kept ones and are
         * given back at once: counted, never kept. */
        void *msg = frame_slot(batch, batch->frames);
        zmq->msg_init(msg);
        if (zmq->msg_recv(msg, socket, f == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int error = zmq->errno_value();
            zmq->msg_close(msg);
            if (f == 0) return error == EAGAIN ? 0 : -error;
            /* libzmq delivers a message's frames together, so this is a closed socket or a
             * signal mid-message: what was taken of it is given back. */
            while (batch->frames > first)
                zmq->msg_close(frame_slot(batch, --batch->frames));
            return -error;
        }
        more = zmq->msg_more(msg);
        if (f >= 2) batch->tail_bytes[m] += zmq->msg_size(msg);
        if (f < NW_SUB_MAX_MESSAGE_FRAMES) {
            batch->data[batch->frames] = zmq->msg_data(msg);
            batch->size[batch->frames] = zmq->msg_size(msg);
            batch->frames++;
        } else {
            zmq->msg_close(msg);
            batch->excess[m]++;
        }
    }
    batch->received_ns[m] = now_ns();
    batch->messages = m + 1;
    batch->message_first[m + 1] = batch->frames;
    return 1;
}

int nw_sub_drain(const nw_sub_zmq *zmq, void *socket, long timeout_ms, nw_sub_batch *batch) {
    nw_sub_release(zmq, batch);
    batch->message_first[0] = 0;
    if (batch->frame_cap < NW_SUB_MAX_MESSAGE_FRAMES + 1 || !batch->message_cap)
        return -EINVAL;  /* too small to hold the largest message */
    for (int waited = 0;; waited = 1) {
        /* One more slot than a message keeps: where frames past its limit pass through. */
        while (batch->messages < batch->message_cap
               && batch->frames + NW_SUB_MAX_MESSAGE_FRAMES + 1 <= batch->frame_cap) {
            int took = take_message(zmq, socket, batch);
            if (took < 0) return batch->messages ? (int)batch->messages : took;
            if (!took) break;
        }
        if (batch->messages || waited || timeout_ms == 0) return (int)batch->messages;
        zmq_pollitem item = {socket, 0, ZMQ_POLLIN, 0};
        int ready = zmq->poll(&item, 1, timeout_ms);
        if (ready < 0) return -zmq->errno_value();
        if (!ready) return 0;
    }
}

void nw_sub_release(const nw_sub_zmq *zmq, nw_sub_batch *batch) {
    while (batch->frames)
        zmq->msg_close(frame_slot(batch, --batch->frames));
    batch->messages = 0;
}

/* ---- CRC-32 (zlib's: reflected 0xEDB88320), four bytes a step ---------------------------- */

static uint32_t crc_table[4][256];

void nw_sub_prepare(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 4; k++)
        for (uint32_t i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
}

static uint32_t crc32_bytes(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        crc ^= (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 | (uint32_t)data[i + 2] << 16
             | (uint32_t)data[i + 3] << 24;
        crc = crc_table[3][crc & 0xFF] ^ crc_table[2][(crc >> 8) & 0xFF]
            ^ crc_table[1][(crc >> 16) & 0xFF] ^ crc_table[0][crc >> 24];
    }
    for (; i < len; i++) crc = crc_table[0][(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- decoding ------------------------------------------------------------------------------ */

int nw_sub_decode(const nw_sub_codec *codec, nw_team *team, uint32_t groups,
                  nw_stream_decoder *const *decoders, const uint8_t *const *blobs,
                  const size_t *sizes, uint32_t n_samples, uint32_t channels, int16_t *out,
                  uint32_t *crc) {
    int statuses[NW_SUB_MAX_GROUPS];
    nw_block_info info[NW_SUB_MAX_GROUPS];
    if (!groups || groups > NW_SUB_MAX_GROUPS) return NW_ERR_ARGUMENT;
    int status = codec->team_decode(team, groups, decoders, blobs, sizes, out, n_samples,
                                    channels, statuses, info);
    for (uint32_t g = 0; status == NW_OK && g < groups; g++)
        if (info[g].n_samples != n_samples)  /* rows the header promised but a group lacks */
            status = NW_ERR_CORRUPT;
    if (status != NW_OK) {
        for (uint32_t g = 0; g < groups; g++)
            codec->decoder_reset(decoders[g]);
        return status < 0 ? status : NW_ERR_CORRUPT;
    }
    const uint8_t *bytes = (const uint8_t *)out;
    size_t len = (size_t)n_samples * channels * sizeof *out;
    if (codec->crc32_z) {
        *crc = codec->crc32_z(0, bytes, len);
    } else if (codec->crc32) {
        /* zlib takes an unsigned int length: a block (at most 4096 x 4096 samples, 32 MiB)
         * fits, but the chunks keep that an assumption nobody has to check. */
        unsigned long value = codec->crc32(0, NULL, 0);
        while (len) {
            unsigned int chunk = len > (1u << 30) ? 1u << 30 : (unsigned int)len;
            value = codec->crc32(value, bytes, chunk);
            bytes += chunk;
            len -= chunk;
        }
        *crc = (uint32_t)value;
    } else {
        *crc = crc32_bytes(bytes, len);
    }
    return NW_OK;
}

/* ---- the fast path: a stream's ordinary blocks ------------------------------------------ */

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* The block header's fields (neurowire.wire's BLOCK layout) the fast path reads. */
typedef struct {
    uint32_t n_samples, crc;
    int keyframe;
    uint64_t seq, first, dropped;
    int64_t epoch, t_acq, t_recv, t_comp, compress_ns, t_pub;
} block_header;

/* Whether message m is the stream's next ordinary block; its header in *h when it is. */
static int ordinary(const nw_sub_batch *batch, uint32_t m, const nw_sub_stream *s,
                    block_header *h) {
    const uint32_t k = batch->message_first[m];
    if (batch->message_first[m + 1] - k != 2 + s->groups || batch->excess[m]) return 0;
    if (batch->size[k] != s->topic_len || memcmp(batch->data[k], s->topic, s->topic_len))
        return 0;
    const uint8_t *p = batch->data[k + 1];
    const size_t suffix = 4 * (size_t)s->groups;
    if (batch->size[k + 1] != NW_SUB_BLOCK_HEADER_BYTES + suffix) return 0;
    if (p[0] != 'N' || p[1] != 'W' || p[2] != 2 || p[3] != 2) return 0;  /* v2 block */
    if (get_u32(p + 4) != s->channels || p[12] != (s->groups & 0xFF)
        || p[13] != (s->groups >> 8) || memcmp(p + NW_SUB_BLOCK_HEADER_BYTES, s->group_suffix, suffix))
        return 0;
    double rate;
    uint64_t rate_bits = get_u64(p + 40);
    memcpy(&rate, &rate_bits, sizeof rate);
    h->n_samples = get_u32(p + 8);
    h->seq = get_u64(p + 16);
    h->epoch = (int64_t)get_u64(p + 24);
    h->first = get_u64(p + 32);
    if (rate != s->rate || h->epoch != s->epoch || h->seq != s->next_seq
        || h->first != s->next_sample || h->seq > INT64_MAX || h->first > INT64_MAX
        || h->n_samples < 1 || h->n_samples > NW_MAX_BLOCK_SAMPLES)
        return 0;
    h->keyframe = p[14] & 1;
    h->crc = get_u32(p + 52);
    h->t_acq = (int64_t)get_u64(p + 56);
    h->t_recv = (int64_t)get_u64(p + 64);
    h->t_comp = (int64_t)get_u64(p + 72);
    h->compress_ns = (int64_t)get_u64(p + 80);
    h->dropped = get_u64(p + 88);
    h->t_pub = (int64_t)get_u64(p + 96);
    return 1;
}

uint32_t nw_sub_run(const nw_sub_codec *codec, const nw_sub_batch *batch, uint32_t first,
                    nw_sub_stream *stream, int16_t *out, uint64_t rows_cap, uint32_t max_blocks,
                    uint32_t *rows, uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                    int *decode_status) {
    uint32_t accepted = 0;
    uint64_t used = 0;
    block_header h;
    *decode_status = 0;
    for (uint32_t m = first; m < batch->messages && accepted < max_blocks; m++) {
        if (!ordinary(batch, m, stream, &h) || h.n_samples > rows_cap - used) break;
        const uint32_t k = batch->message_first[m] + 2;
        int16_t *rows_at = out + used * stream->channels;
        uint32_t crc;
        int status = nw_sub_decode(codec, stream->team, stream->groups, stream->decoders,
                                   batch->data + k, batch->size + k, h.n_samples,
                                   stream->channels, rows_at, &crc);
        if (status != NW_OK) {
            *decode_status = status;
            break;
        }
        const int64_t decoded_ns = now_ns(), received_ns = batch->received_ns[m];
        int64_t *stage = stages + (size_t)accepted * NW_SUB_STAGES;
        stage[0] = h.t_recv - h.t_acq;
        stage[1] = h.t_comp - h.t_recv;
        stage[2] = h.t_pub - h.t_acq;
        stage[3] = received_ns - h.t_pub;
        stage[4] = decoded_ns - received_ns;
        stage[5] = decoded_ns - h.t_acq;
        stage[6] = h.compress_ns;
        rows[accepted] = h.n_samples;
        keyframe[accepted] = (uint8_t)h.keyframe;
        crc_bad[accepted] = crc != h.crc;
        stream->next_seq = h.seq + 1;
        stream->next_sample = h.first + h.n_samples;
        stream->dropped = h.dropped;
        stream->codec_bytes += batch->tail_bytes[m];
        used += h.n_samples;
        accepted++;
    }
    return accepted;
}

uint32_t nw_sub_gather(const nw_sub_zmq *zmq, void *socket, const nw_sub_codec *codec,
                       nw_sub_batch *batch, nw_sub_stream *stream, int64_t deadline_ns,
                       int16_t *out, uint64_t rows_cap, uint32_t max_blocks, uint32_t *rows,
                       uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                       int *decode_status, uint32_t *leftover, int *drain_status) {
    const uint32_t message_cap = batch->message_cap;
    uint32_t accepted = 0;
    uint64_t used = 0;
    *decode_status = *drain_status = 0;
    *leftover = 0;
    while (accepted < max_blocks) {
        const int64_t left_ns = deadline_ns - clock_ns(CLOCK_MONOTONIC);
        if (left_ns <= 0) break;
        /* No more messages than blocks may still be accepted: none is left over for room. */
        batch->message_cap = message_cap < max_blocks - accepted ? message_cap
                                                                 : max_blocks - accepted;
        int taken = nw_sub_drain(zmq, socket, (long)((left_ns + 999999) / 1000000), batch);
        batch->message_cap = message_cap;
        if (taken <= 0) {
            *drain_status = taken;
            break;
        }
        uint32_t got = nw_sub_run(codec, batch, 0, stream, out + used * stream->channels,
                                  rows_cap - used, max_blocks - accepted, rows + accepted,
                                  keyframe + accepted, crc_bad + accepted,
                                  stages + (size_t)accepted * NW_SUB_STAGES, decode_status);
        for (uint32_t k = 0; k < got; k++) used += rows[accepted + k];
        accepted += got;
        if (got < (uint32_t)taken) {
            *leftover = got;
            return accepted;
        }
    }
    *leftover = batch->messages;  /* all taken: nothing left over */
    return accepted;
}
