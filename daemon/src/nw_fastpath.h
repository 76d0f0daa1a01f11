/* The daemon's data path in C: one call drains every ingest packet waiting, and for the
 * common case (a known stream, the next seq and sample index, the same session) encodes,
 * stamps, checksums and publishes it. Anything else is handed back to the Python data path
 * (daemon/datapath.py), which stays the one place where streams, sessions, rejections and
 * their reasons are decided.
 *
 * No ZeroMQ, codec or zlib header is included: the Python wrapper (daemon/fastpath.py) hands
 * over the addresses of the functions the process already loaded (pyzmq's libzmq, the codec
 * extension, zlib), so the socket and encoder pointers it passes belong to those same
 * instances.
 *
 * The part between the cdef markers is read by daemon/build_fastpath.py as the cffi
 * declarations: keep it free of preprocessor lines. */
#ifndef NW_FASTPATH_H
#define NW_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

/* cdef begin */
/* Slots of a stream's `hot` uint64 array (daemon/streams.py owns it; the order is checked at
 * load time against streams.HOT_FIELDS). UINT64_MAX stands for "none" in the first and
 * fifth (seq and sample indices are below 2**63, so their successors fit). */
enum nwfp_hot {
    NWFP_HOT_NEXT_INGEST_SEQ, NWFP_HOT_NEXT_FIRST, NWFP_HOT_LAST_PACKET_NS, NWFP_HOT_SEQ_OUT,
    NWFP_HOT_NEXT_KEYFRAME_SAMPLE, NWFP_HOT_FORCE_KEYFRAME, NWFP_HOT_PACKETS_IN,
    NWFP_HOT_SAMPLES_IN, NWFP_HOT_BYTES_IN, NWFP_HOT_BYTES_OUT, NWFP_HOT_BLOCKS_OUT,
    NWFP_HOT_KEYFRAMES, NWFP_HOT_DROPS_BACKLOG, NWFP_HOT_DROPS_SEQUENCE,
    NWFP_HOT_COMPRESS_NS_TOTAL, NWFP_HOT_SLOTS
};

/* A latency stage's tally array (daemon/metrics.py): ring position, count, then one count
 * per histogram bucket. */
enum nwfp_tally { NWFP_TALLY_POSITION, NWFP_TALLY_COUNT, NWFP_TALLY_BUCKETS };

/* What a call hands back to Python, besides the blocks it kept. */
enum nwfp_handback {
    NWFP_NOTHING,   /* every packet received was handled */
    NWFP_PACKET,    /* one two-frame packet for the Python path: nwfp_held_frame() */
    NWFP_FRAMES     /* one message of `frames` frames (not 2), already discarded */
};

typedef struct nwfp_zmq {
    int (*msg_init)(void *msg);
    int (*msg_recv)(void *msg, void *socket, int flags);
    int (*msg_close)(void *msg);
    void *(*msg_data)(void *msg);
    size_t (*msg_size)(const void *msg);
    int (*msg_more)(const void *msg);
    int (*send)(void *socket, const void *buf, size_t len, int flags);
    int (*errno_)(void);
    int (*poll)(void *items, int count, long timeout_ms);   /* zmq_poll */
} nwfp_zmq;

typedef struct nwfp_codec {
    int (*team_encode)(void *team, uint32_t groups, void *const *encoders,
                       const int16_t *samples, uint32_t n_samples, size_t stride, int keyframe,
                       uint8_t *out, size_t out_cap, const size_t *offsets, int64_t *sizes);
    size_t (*encode_bound)(uint32_t channels, uint32_t n_samples);
    /* The CRC-32 of the samples: zlib-ng's zng_crc32_z when set (neurowire.checksum),
     * else zlib's crc32. */
    uint32_t (*crc32_z)(uint32_t crc, const uint8_t *buf, size_t len);
    unsigned long (*crc32)(unsigned long crc, const unsigned char *buf, unsigned int len);
} nwfp_codec;

typedef struct nwfp_limits {
    uint32_t max_channels;
    uint32_t max_packet_samples;
    uint64_t max_payload;
    int64_t max_backlog_packets;
    int64_t max_backlog_bytes;
    uint32_t batch_packets;          /* packets taken per call at most */
    uint32_t latency_window;         /* ring length of every latency stage */
    uint32_t n_bounds;               /* histogram bucket bounds, ns, rising */
    const int64_t *bounds_ns;
} nwfp_limits;

typedef struct nwfp_latency {
    double *ring;
    int64_t *tally;
    double *sum_s;                   /* seconds (a sender's clock may be years off) */
} nwfp_latency;

typedef struct nwfp_stream {
    const uint8_t *id;               /* as on the wire */
    uint32_t id_len;
    const uint8_t *topic;            /* id + NUL */
    uint32_t topic_len;
    uint64_t session;
    uint32_t channels;
    double rate;
    int64_t epoch;
    uint32_t codec_version;
    int64_t keyframe_every;          /* -1: the first block only */
    uint32_t groups;
    const uint32_t *group_channels;
    void *const *encoders;           /* nw_stream_encoder *[groups] */
    void *team;                      /* nw_team * */
    uint64_t *hot;                   /* NWFP_HOT_SLOTS */
    nwfp_latency latency[3];         /* ingest, compress, publish */
    int64_t held;                    /* the fast path's own: packets of this stream in the */
    int64_t held_bytes;              /* batch being taken */
} nwfp_stream;

/* A lossless subscriber (daemon/lossless.py), served in C while Python holds nothing for it:
 * a block it wants is sent at once against its credit. Once Python holds a block for it
 * (no credit, a full pipe), the rest of the call's blocks are kept for Python too, in order. */
enum nwfp_counts { NWFP_CREDIT, NWFP_SENT };
typedef struct nwfp_subscriber {
    const uint8_t *identity;
    uint32_t identity_len;
    int64_t *counts;                 /* credit, sent: lossless.py's array, in place */
    const uint8_t *wants;            /* per stream of the stream array: 1 if it wants it */
    int queued;                      /* in: Python holds blocks for it; out: and now too */
} nwfp_subscriber;

enum { NWFP_MAX_SUBSCRIBERS = 64, NWFP_MAX_SIDE = 8 };

/* A block kept for Python: for the lossless subscribers in `pending` (bit i: subscriber i).
 * The header at arena + head_offset, then its codec frames, blob g at
 * arena + blobs[2 * (first_blob + g)], of blobs[... + 1] bytes. */
typedef struct nwfp_block {
    uint64_t pending;
    int32_t stream;
    int32_t n_blobs;
    int64_t head_offset;
    int64_t head_len;
    int64_t first_blob;
} nwfp_block;

typedef struct nwfp_call {
    /* in */
    int wait;                        /* 1: the first receive waits (the socket's RCVTIMEO);
                                        without it, what nwfp_wait took comes first */
    int live;                        /* 1: live subscribers exist, publish */
    int lossless;                    /* 1: serve the lossless subscribers (set_subscribers) */
    /* out */
    int handback;                    /* enum nwfp_handback */
    int64_t frames;                  /* NWFP_FRAMES: how many the message had */
    int64_t received_ns;             /* NWFP_PACKET, NWFP_FRAMES: when it was received */
    int64_t packets;                 /* packets received by this call, any kind */
    int64_t published;               /* blocks made */
    int64_t dropped;                 /* packets dropped, the batch over a backlog limit */
    int32_t n_blocks;                /* kept blocks */
    int side_ready;                  /* nwfp_run: a side socket (nwfp_set_side) has a message */
    int32_t blocks_cap;
    nwfp_block *blocks;
    int64_t *blobs;                  /* (offset, size) pairs */
    int64_t blobs_cap;               /* pairs */
    uint8_t *arena;
    size_t arena_cap;
} nwfp_call;

typedef struct nwfp_path nwfp_path;

nwfp_path *nwfp_new(const nwfp_zmq *zmq, const nwfp_codec *codec, const nwfp_limits *limits,
                    void *ingest, void *publisher, void *router);
void nwfp_free(nwfp_path *path);
void nwfp_set_streams(nwfp_path *path, nwfp_stream *streams, uint32_t n_streams);
/* At most NWFP_MAX_SUBSCRIBERS; their `wants` index the streams set last. */
void nwfp_set_subscribers(nwfp_path *path, nwfp_subscriber *subscribers, uint32_t n);
/* Waits (the ingest socket's RCVTIMEO) for the next message and takes its first frame,
 * for the next nwfp_drain: 1 taken, 0 none came, < 0 -errno. Needs no encoder: the caller
 * waits here without holding the encoders' locks. */
int64_t nwfp_wait(nwfp_path *path);
/* >= 0: packets processed; < 0: -errno of a receive that failed (ETERM: the context ends),
 * or a codec status (NWFP_CODEC_ERROR - status). */
int64_t nwfp_drain(nwfp_path *path, nwfp_call *call);
/* The data thread's other sockets (subscriptions, lossless requests, events, the wake-up;
 * at most NWFP_MAX_SIDE): nwfp_run returns as soon as one has a message, for Python. */
void nwfp_set_side(nwfp_path *path, void *const *sockets, uint32_t n);
/* nwfp_drain (call->wait ignored: 0) wake-up after wake-up, waiting for the next packet in
 * between (zmq_poll on the ingest and side sockets), until CLOCK_MONOTONIC `deadline_ns`, a
 * wait that timed out, a side socket with a message (call->side_ready), or a call that left
 * something for Python (a packet or message handed back, kept blocks, drops): at 2000
 * packets/s one return to Python per many packets instead of one per packet. The caller
 * holds the encoders' locks throughout, so it should take the first packet with nwfp_wait,
 * unlocked. call->packets and ->published add up over the run; the rest is the last
 * drain's. Returns what nwfp_drain would (packets processed, added up), or its error;
 * -EINTR from a wait ends the run early with what was done. */
int64_t nwfp_run(nwfp_path *path, nwfp_call *call, int64_t deadline_ns);
/* The held packet's frame (0 header, 1 samples); NULL when none is held. */
const uint8_t *nwfp_held_frame(nwfp_path *path, int frame, size_t *size);
void nwfp_release_held(nwfp_path *path);
/* 1 when wire.parse_ingest accepts the header for a payload of payload_bytes, else 0. */
int nwfp_ingest_valid(const uint8_t *head, size_t head_len, uint64_t payload_bytes,
                      uint32_t max_channels, uint32_t max_packet_samples);
/* The published block header, the bytes of wire.pack_block, into out (104 + 4 x groups
 * bytes); returns its length. */
size_t nwfp_pack_block(uint8_t *out, uint32_t channels, uint32_t n_samples, uint32_t groups,
                       int keyframe, uint64_t seq, int64_t epoch, uint64_t first, double rate,
                       uint32_t codec_version, uint32_t crc, int64_t acquired_ns,
                       int64_t received_ns, int64_t compressed_ns, int64_t compress_ns,
                       uint64_t dropped, int64_t published_ns, const uint32_t *group_channels);
/* cdef end */

#define NWFP_CODEC_ERROR (-1000000)

#endif
