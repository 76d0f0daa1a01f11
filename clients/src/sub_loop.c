/* The subscriber's receive and decode loop: see sub_loop.h. */
#define _POSIX_C_SOURCE 199309L
#include "sub_loop.h"

#include <errno.h>
#include <time.h>

/* libzmq 4.x ABI, declared here because pyzmq's wheel ships the library without zmq.h. */
typedef struct { void *socket; int fd; short events; short revents; } zmq_pollitem;
enum { ZMQ_DONTWAIT = 1, ZMQ_POLLIN = 1 };

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

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
    *crc = crc32_bytes((const uint8_t *)out, (size_t)n_samples * channels * sizeof *out);
    return NW_OK;
}
