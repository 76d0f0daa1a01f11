/*
 * The subscriber's hot loop in C: take every message waiting on a ZeroMQ socket in one call,
 * and decode a block's channel groups straight from the received frames.
 *
 * No ZeroMQ and no codec is linked in. libzmq's functions come from the library pyzmq already
 * loaded (the same instance that owns the socket; pyzmq's wheel ships no zmq.h), and the
 * codec's from its own cffi module (so its global tables exist once), both as function
 * pointers filled in by the Python side (neurowire.clients.fastsub).
 *
 * The part between the cdef markers is read by clients/build_sub_loop.py as the cffi
 * declarations: keep #include lines out of it, and a #define's value an integer or an
 * expression (the latter the compiler evaluates).
 */
#ifndef NW_SUB_LOOP_H
#define NW_SUB_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "nw_team.h"  /* the codec's types; its functions come through nw_sub_codec */

/* cdef begin */
/* Entry points of the loaded libzmq (zmq_msg_t * and zmq_pollitem_t * as void *). */
typedef struct nw_sub_zmq {
    int (*msg_init)(void *msg);
    int (*msg_recv)(void *msg, void *socket, int flags);
    void *(*msg_data)(void *msg);
    size_t (*msg_size)(const void *msg);
    int (*msg_more)(const void *msg);
    int (*msg_close)(void *msg);
    int (*poll)(void *items, int count, long timeout_ms);
    int (*errno_value)(void);
} nw_sub_zmq;

/* Entry points of the codec (nw_team_decode, nw_stream_decoder_reset) and a CRC-32 for the
 * block header's CRC of the decoded rows (neurowire.checksum): zlib-ng's zng_crc32_z when
 * set (under 1 us for a 1024 x 10 block), else zlib's crc32 (~9 us, twice as fast as this
 * file's table loop), else, both NULL, the table loop; the same value from each. */
typedef struct nw_sub_codec {
    int (*team_decode)(nw_team *team, uint32_t groups, nw_stream_decoder *const *decoders,
                       const uint8_t *const *blocks, const size_t *lengths, int16_t *samples,
                       size_t rows_cap, size_t stride, int *statuses, nw_block_info *infos);
    void (*decoder_reset)(nw_stream_decoder *decoder);
    uint32_t (*crc32_z)(uint32_t crc, const uint8_t *buf, size_t len);
    unsigned long (*crc32)(unsigned long crc, const unsigned char *buf, unsigned int len);
} nw_sub_codec;

#define NW_SUB_MSG_BYTES 64                 /* sizeof(zmq_msg_t) in libzmq 4.x */
#define NW_SUB_MAX_GROUPS 1024              /* codec frames of a block (neurowire.wire) */
#define NW_SUB_MAX_MESSAGE_FRAMES (2 + NW_SUB_MAX_GROUPS)  /* with topic and header */

/* Messages taken by one nw_sub_drain. The caller owns the arrays and sets the caps; frames
 * are held (not copied) until nw_sub_release. */
typedef struct nw_sub_batch {
    uint32_t frame_cap;       /* entries of msgs, data, size; at least NW_SUB_MAX_MESSAGE_FRAMES */
    uint32_t message_cap;     /* entries of received_ns, excess; message_first has one more */
    unsigned char *msgs;      /* frame_cap zmq_msg_t of NW_SUB_MSG_BYTES, 8-byte aligned */
    const uint8_t **data;     /* frame k's bytes */
    size_t *size;             /* frame k's length */
    uint32_t *message_first;  /* message m: frames message_first[m] .. message_first[m+1]-1 */
    int64_t *received_ns;     /* CLOCK_REALTIME when message m was taken */
    uint32_t *excess;         /* frames of message m beyond NW_SUB_MAX_MESSAGE_FRAMES, dropped */
    uint64_t *tail_bytes;     /* bytes in message m's frames after its first two (a block's
                                 codec frames), dropped ones included */
    uint32_t frames;          /* held now */
    uint32_t messages;        /* taken by the last drain */
} nw_sub_batch;

/* Gives back the frames the batch holds, then takes every message waiting on `socket`, up
 * to the batch's caps, without blocking; when none is waiting, waits up to timeout_ms (-1: no
 * limit) for one and takes what came. Returns the number of messages taken (0 after the
 * wait), or a negative errno (-EINTR when a signal came). */
int nw_sub_drain(const nw_sub_zmq *zmq, void *socket, long timeout_ms, nw_sub_batch *batch);

/* Gives every held frame back to libzmq. */
void nw_sub_release(const nw_sub_zmq *zmq, nw_sub_batch *batch);

/* Decodes one block of `groups` (1..NW_SUB_MAX_GROUPS) codec frames (blobs[g], sizes[g]
 * bytes) with the stream's decoders into `out` (n_samples rows of `channels`), through the
 * codec's team, and sets *crc to the CRC-32 of the decoded rows (zlib's, over their bytes;
 * computed by codec->crc32 when set).
 * Every group must decode to n_samples rows. Returns 0, or the codec's negative status; on
 * failure every group's decoder is reset (the block is lost as a whole; decoding resumes at
 * a keyframe). */
int nw_sub_decode(const nw_sub_codec *codec, nw_team *team, uint32_t groups,
                  nw_stream_decoder *const *decoders, const uint8_t *const *blobs,
                  const size_t *sizes, uint32_t n_samples, uint32_t channels, int16_t *out,
                  uint32_t *crc);

/* One stream as the fast path sees it: where its tracker stands and what every ordinary
 * block of it repeats. Filled from Python (Subscription) before nw_sub_run, read back after. */
typedef struct nw_sub_stream {
    const uint8_t *topic;          /* "<stream>\0" */
    size_t topic_len;
    const uint8_t *group_suffix;   /* the header's u32 per group, as the stream's first block */
    uint32_t groups, channels;
    double rate;
    int64_t epoch;
    uint64_t next_seq, next_sample;  /* advanced past each accepted block */
    uint64_t dropped;                /* the last accepted block's */
    uint64_t codec_bytes;            /* bytes of the accepted blocks' codec frames, added */
    nw_team *team;
    nw_stream_decoder *const *decoders;
} nw_sub_stream;

#define NW_SUB_BLOCK_HEADER_BYTES 104   /* neurowire.wire.BLOCK.size */
#define NW_SUB_STAGES 7                 /* latency stages per block (Subscription.RECORDED_STAGES) */

/* Decodes messages `first`.. of the batch into consecutive rows of `out` (rows_cap rows of
 * the stream's channels), at most max_blocks, for as long as each is the stream's next block
 * with nothing unusual about it: this topic, a well-formed header of this epoch, channel groups and rate, seq and
 * first sample following on, the right frames, room left. Per accepted block k: rows[k],
 * keyframe[k], crc_bad[k] (CRC-32 of the decoded rows differs from the header's) and
 * NW_SUB_STAGES latencies in stages[k * NW_SUB_STAGES] (ns: ingest, queue_compress, publish,
 * delivery, decode, end_to_end, compress).
 * Returns the number of blocks accepted. The message after them is left for the caller's
 * general path, unless it failed to decode: then *decode_status is the codec's negative
 * status (its decoders were reset, the message is spent), else 0. */
uint32_t nw_sub_run(const nw_sub_codec *codec, const nw_sub_batch *batch, uint32_t first,
                    nw_sub_stream *stream, int16_t *out, uint64_t rows_cap, uint32_t max_blocks,
                    uint32_t *rows, uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                    int *decode_status);

/* nw_sub_run on every message as it arrives, drain after drain, until `deadline_ns`
 * (CLOCK_MONOTONIC), `max_blocks` accepted, no room for another block, or a message the
 * fast path leaves alone: the latter, and what came with it, stay in the batch from
 * *leftover on (batch->messages of them in all). Decoding still happens on arrival; only
 * the return to the caller waits, which saves the caller's work per wake-up.
 * Returns the blocks accepted (arrays as nw_sub_run's); *drain_status is nw_sub_drain's
 * error if one ended it, else 0. */
uint32_t nw_sub_gather(const nw_sub_zmq *zmq, void *socket, const nw_sub_codec *codec,
                       nw_sub_batch *batch, nw_sub_stream *stream, int64_t deadline_ns,
                       int16_t *out, uint64_t rows_cap, uint32_t max_blocks, uint32_t *rows,
                       uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                       int *decode_status, uint32_t *leftover, int *drain_status);

/* Builds the CRC table; call once before any other function (not thread-safe itself). */
void nw_sub_prepare(void);
/* cdef end */

#endif
