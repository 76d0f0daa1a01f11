/* The daemon's hot loop: see nw_fastpath.h for what it does and what it leaves to Python.
 *
 * A call first takes every packet waiting (up to a batch), then compresses them in order:
 * the same shape as the Python path, so a stream that falls behind drops its oldest packets
 * (counted) instead of back-pressuring the implant. Any packet it does not handle itself
 * ends the batch: the packets before it are compressed, and it is handed back, so packets
 * keep their order across the two paths. */
#define _POSIX_C_SOURCE 200809L
#include "nw_fastpath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ZMQ_DONTWAIT = 1, ZMQ_SNDMORE = 2, ZMQ_POLLIN = 1 };
enum { INGEST_BYTES = 52, BLOCK_BYTES = 104, MAX_ID = 64, MAX_GROUPS = 1024 };
#define MAX_INT64 ((uint64_t)INT64_MAX)
#define NONE UINT64_MAX /* in a hot slot: none yet */

/* libzmq's zmq_pollitem_t on POSIX (libzmq 4.x ABI). */
typedef struct {
    void *socket;
    int fd;
    short events, revents;
} zmq_pollitem;

/* libzmq's zmq_msg_t: 64 bytes, pointer-aligned (libzmq 4.x ABI). */
typedef union {
    unsigned char bytes[64];
    uint64_t align[8];
} zmq_msg;

typedef struct {
    zmq_msg head, payload;
    int32_t stream;
    int dropped;
    uint32_t n_samples;
    uint64_t seq, first;
    int64_t acquired_ns, received_ns;
} entry;

struct nwfp_path {
    nwfp_zmq zmq;
    nwfp_codec codec;
    nwfp_limits limits;
    int64_t *bounds_ns;
    void *ingest, *publisher, *router;
    nwfp_subscriber *subscribers;
    uint32_t n_subscribers;
    nwfp_stream *streams;
    uint32_t n_streams;
    int32_t last_stream;         /* the one found last: usually the next one too */
    entry *batch;
    int held;                    /* batch[held_index] is a packet for Python */
    int held_index;
    int waited;                  /* batch[0].head holds a first frame nwfp_wait took */
    int64_t waited_ns;           /* when it came */
    uint8_t *scratch;            /* encoder output when no block is kept */
    size_t scratch_cap;
    int16_t *aligned;            /* samples whose frame is not 2-byte aligned */
    size_t aligned_cap;
    size_t *offsets;             /* per group */
    int64_t *sizes;
    void *side[NWFP_MAX_SIDE];   /* polled beside ingest by nwfp_run */
    uint32_t n_side;
};

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v) {
    return put_u16(put_u16(p, (uint16_t)v), (uint16_t)(v >> 16));
}

static uint8_t *put_u64(uint8_t *p, uint64_t v) {
    return put_u32(put_u32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

static double get_f64(const uint8_t *p) {
    uint64_t bits = get_u64(p);
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint8_t *put_f64(uint8_t *p, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return put_u64(p, bits);
}

static int id_byte(uint8_t c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == ':' || c == '-';
}

int nwfp_ingest_valid(const uint8_t *head, size_t head_len, uint64_t payload_bytes,
                      uint32_t max_channels, uint32_t max_packet_samples) {
    if (head_len < INGEST_BYTES || head[0] != 'N' || head[1] != 'W' || head[2] != 2 ||
        head[3] != 1)
        return 0;
    size_t id_len = head_len - INGEST_BYTES;
    if (id_len < 1 || id_len > MAX_ID)
        return 0;
    for (size_t i = 0; i < id_len; i++)
        if (!id_byte(head[INGEST_BYTES + i]))
            return 0;
    uint32_t channels = get_u32(head + 4), n_samples = get_u32(head + 8);
    uint64_t seq = get_u64(head + 12), first = get_u64(head + 20);
    double rate = get_f64(head + 28);
    uint64_t acquired = get_u64(head + 36), session = get_u64(head + 44);
    if (channels < 1 || channels > max_channels || n_samples < 1 ||
        n_samples > max_packet_samples)
        return 0;
    /* t_acq is signed: negative means the top bit set, beyond MAX_INT64 unsigned */
    if (seq > MAX_INT64 || first > MAX_INT64 || acquired > MAX_INT64 || session < 1 ||
        session > MAX_INT64)
        return 0;
    if (!(rate > 0.0 && rate <= 1e6)) /* NaN fails too */
        return 0;
    return payload_bytes == (uint64_t)n_samples * channels * 2;
}

size_t nwfp_pack_block(uint8_t *out, uint32_t channels, uint32_t n_samples, uint32_t groups,
                       int keyframe, uint64_t seq, int64_t epoch, uint64_t first, double rate,
                       uint32_t codec_version, uint32_t crc, int64_t acquired_ns,
                       int64_t received_ns, int64_t compressed_ns, int64_t compress_ns,
                       uint64_t dropped, int64_t published_ns, const uint32_t *group_channels) {
    uint8_t *p = out;
    *p++ = 'N';
    *p++ = 'W';
    *p++ = 2; /* PROTOCOL_VERSION */
    *p++ = 2; /* KIND_BLOCK */
    p = put_u32(p, channels);
    p = put_u32(p, n_samples);
    p = put_u16(p, (uint16_t)groups);
    *p++ = keyframe ? 1 : 0;
    *p++ = 0;
    p = put_u64(p, seq);
    p = put_u64(p, (uint64_t)epoch);
    p = put_u64(p, first);
    p = put_f64(p, rate);
    p = put_u32(p, codec_version);
    p = put_u32(p, crc);
    p = put_u64(p, (uint64_t)acquired_ns);
    p = put_u64(p, (uint64_t)received_ns);
    p = put_u64(p, (uint64_t)compressed_ns);
    p = put_u64(p, (uint64_t)compress_ns);
    p = put_u64(p, dropped);
    p = put_u64(p, (uint64_t)published_ns);
    for (uint32_t g = 0; g < groups; g++)
        p = put_u32(p, group_channels[g]);
    return (size_t)(p - out);
}

nwfp_path *nwfp_new(const nwfp_zmq *zmq, const nwfp_codec *codec, const nwfp_limits *limits,
                    void *ingest, void *publisher, void *router) {
    if (limits->batch_packets < 1 || limits->latency_window < 1)
        return NULL;
    nwfp_path *path = calloc(1, sizeof *path);
    if (!path)
        return NULL;
    path->zmq = *zmq;
    path->codec = *codec;
    path->limits = *limits;
    path->ingest = ingest;
    path->publisher = publisher;
    path->router = router;
    path->last_stream = -1;
    path->batch = calloc(limits->batch_packets, sizeof *path->batch);
    path->bounds_ns = calloc(limits->n_bounds + 1, sizeof *path->bounds_ns);
    path->offsets = calloc(MAX_GROUPS, sizeof *path->offsets);
    path->sizes = calloc(MAX_GROUPS, sizeof *path->sizes);
    if (!path->batch || !path->bounds_ns || !path->offsets || !path->sizes) {
        nwfp_free(path);
        return NULL;
    }
    memcpy(path->bounds_ns, limits->bounds_ns, limits->n_bounds * sizeof *path->bounds_ns);
    path->limits.bounds_ns = path->bounds_ns;
    return path;
}

void nwfp_release_held(nwfp_path *path) {
    if (path->held) {
        path->zmq.msg_close(&path->batch[path->held_index].head);
        path->zmq.msg_close(&path->batch[path->held_index].payload);
        path->held = 0;
    }
}

void nwfp_free(nwfp_path *path) {
    if (!path)
        return;
    if (path->batch) {
        nwfp_release_held(path);
        if (path->waited)
            path->zmq.msg_close(&path->batch[0].head);
    }
    free(path->batch);
    free(path->bounds_ns);
    free(path->offsets);
    free(path->sizes);
    free(path->scratch);
    free(path->aligned);
    free(path);
}

void nwfp_set_streams(nwfp_path *path, nwfp_stream *streams, uint32_t n_streams) {
    path->streams = streams;
    path->n_streams = n_streams;
    path->last_stream = -1;
}

void nwfp_set_subscribers(nwfp_path *path, nwfp_subscriber *subscribers, uint32_t n) {
    path->subscribers = subscribers;
    path->n_subscribers = n > NWFP_MAX_SUBSCRIBERS ? NWFP_MAX_SUBSCRIBERS : n;
}

const uint8_t *nwfp_held_frame(nwfp_path *path, int frame, size_t *size) {
    if (!path->held || frame < 0 || frame > 1)
        return NULL;
    entry *e = &path->batch[path->held_index];
    zmq_msg *msg = frame == 0 ? &e->head : &e->payload;
    *size = path->zmq.msg_size(msg);
    return path->zmq.msg_data(msg);
}

static int32_t find_stream(nwfp_path *path, const uint8_t *id, size_t id_len) {
    int32_t last = path->last_stream;
    if (last >= 0 && path->streams[last].id_len == id_len &&
        memcmp(path->streams[last].id, id, id_len) == 0)
        return last;
    for (uint32_t i = 0; i < path->n_streams; i++)
        if (path->streams[i].id_len == id_len && memcmp(path->streams[i].id, id, id_len) == 0)
            return path->last_stream = (int32_t)i;
    return -1;
}

/* The stream of a packet the fast path may take as is (the header valid, the stream known,
 * same session and channels, the next seq and sample index), taking its place in the
 * session as StreamState.admit would; -1 for anything Python must see. */
static int32_t admit(nwfp_path *path, entry *e) {
    size_t head_len = path->zmq.msg_size(&e->head);
    size_t payload_len = path->zmq.msg_size(&e->payload);
    const uint8_t *head = path->zmq.msg_data(&e->head);
    if (payload_len > path->limits.max_payload ||
        !nwfp_ingest_valid(head, head_len, payload_len, path->limits.max_channels,
                           path->limits.max_packet_samples))
        return -1;
    int32_t index = find_stream(path, head + INGEST_BYTES, head_len - INGEST_BYTES);
    if (index < 0)
        return -1;
    nwfp_stream *stream = &path->streams[index];
    uint64_t *hot = stream->hot;
    uint32_t channels = get_u32(head + 4);
    uint64_t seq = get_u64(head + 12), first = get_u64(head + 20);
    if (get_u64(head + 44) != stream->session || channels != stream->channels ||
        hot[NWFP_HOT_NEXT_INGEST_SEQ] == NONE || seq != hot[NWFP_HOT_NEXT_INGEST_SEQ] ||
        first != hot[NWFP_HOT_NEXT_FIRST])
        return -1;
    e->stream = index;
    e->dropped = 0;
    e->n_samples = get_u32(head + 8);
    e->seq = seq;
    e->first = first;
    e->acquired_ns = (int64_t)get_u64(head + 36);
    hot[NWFP_HOT_NEXT_INGEST_SEQ] = seq + 1;
    hot[NWFP_HOT_NEXT_FIRST] = first + e->n_samples;
    hot[NWFP_HOT_LAST_PACKET_NS] = (uint64_t)now_ns(CLOCK_MONOTONIC);
    return index;
}

static void drop(nwfp_path *path, entry *e) {
    nwfp_stream *stream = &path->streams[e->stream];
    e->dropped = 1;
    stream->held--;
    stream->held_bytes -= (int64_t)path->zmq.msg_size(&e->payload);
    stream->hot[NWFP_HOT_DROPS_BACKLOG]++;
    path->zmq.msg_close(&e->head);
    path->zmq.msg_close(&e->payload);
}

/* A stream over its backlog limits loses its oldest packets of the batch, not the newest:
 * as the Python path's backlog (datapath._accept), always keeping the newest. */
static int64_t enforce_backlog(nwfp_path *path, int count, int32_t index) {
    nwfp_stream *stream = &path->streams[index];
    int64_t dropped = 0;
    for (int i = 0; i < count - 1 && stream->held > 1 &&
                    (stream->held > path->limits.max_backlog_packets ||
                     stream->held_bytes > path->limits.max_backlog_bytes);
         i++) {
        if (path->batch[i].stream == index && !path->batch[i].dropped) {
            drop(path, &path->batch[i]);
            dropped++;
        }
    }
    return dropped;
}

static int keyframe_due(nwfp_stream *stream, uint64_t first) {
    uint64_t *hot = stream->hot;
    int due;
    if (hot[NWFP_HOT_NEXT_KEYFRAME_SAMPLE] == NONE || hot[NWFP_HOT_FORCE_KEYFRAME]) {
        due = 1;
        hot[NWFP_HOT_FORCE_KEYFRAME] = 0;
    } else if (stream->keyframe_every < 0) {
        due = 0;
    } else {
        due = first >= hot[NWFP_HOT_NEXT_KEYFRAME_SAMPLE];
    }
    if (due)
        hot[NWFP_HOT_NEXT_KEYFRAME_SAMPLE] =
            first + (stream->keyframe_every < 0 ? 0 : (uint64_t)stream->keyframe_every);
    return due;
}

/* metrics.LatencyStage.add_ns */
static void add_latency(const nwfp_limits *limits, nwfp_latency *stage, int64_t value_ns) {
    int64_t *tally = stage->tally;
    int64_t position = tally[NWFP_TALLY_POSITION];
    stage->ring[position] = (double)value_ns;
    tally[NWFP_TALLY_POSITION] = (position + 1) % limits->latency_window;
    tally[NWFP_TALLY_COUNT]++;
    *stage->sum_s += (double)value_ns * 1e-9;
    uint32_t bucket = 0; /* bisect_left: the first bound >= value */
    while (bucket < limits->n_bounds && limits->bounds_ns[bucket] < value_ns)
        bucket++;
    tally[NWFP_TALLY_BUCKETS + bucket]++;
}

static int grow(void **buffer, size_t *cap, size_t need) {
    if (need <= *cap)
        return 1;
    void *bigger = realloc(*buffer, need);
    if (!bigger)
        return 0;
    *buffer = bigger;
    *cap = need;
    return 1;
}

/* What one block takes of the arena: its header and the encoder's bound for each group. */
static size_t block_bound(nwfp_path *path, const nwfp_stream *stream, uint32_t n_samples) {
    size_t total = BLOCK_BYTES + 4 * (size_t)stream->groups;
    for (uint32_t g = 0; g < stream->groups; g++)
        total += path->codec.encode_bound(stream->group_channels[g], n_samples);
    return total;
}

/* One block's frames after the first: topic, header, a codec frame per group. */
static void send_block(nwfp_path *path, void *socket, const nwfp_stream *stream,
                       const uint8_t *head, size_t head_len, const uint8_t *out) {
    path->zmq.send(socket, stream->topic, stream->topic_len, ZMQ_DONTWAIT | ZMQ_SNDMORE);
    path->zmq.send(socket, head, head_len, ZMQ_DONTWAIT | ZMQ_SNDMORE);
    for (uint32_t g = 0; g < stream->groups; g++)
        path->zmq.send(socket, out + path->offsets[g], (size_t)path->sizes[g],
                       ZMQ_DONTWAIT | (g + 1 < stream->groups ? ZMQ_SNDMORE : 0));
}

/* lossless.LosslessRouter.offer's common case: each subscriber that wants the block and
 * has credit, with nothing held for it, is sent it now; the others are returned (bits), for
 * Python to hold. The identity frame decides: once libzmq takes it, it takes the rest. */
static uint64_t serve_lossless(nwfp_path *path, int32_t index, const uint8_t *head,
                               size_t head_len, const uint8_t *out) {
    uint64_t pending = 0;
    for (uint32_t i = 0; i < path->n_subscribers; i++) {
        nwfp_subscriber *subscriber = &path->subscribers[i];
        if (!subscriber->wants[index])
            continue;
        if (!subscriber->queued && subscriber->counts[NWFP_CREDIT] > 0 &&
            path->zmq.send(path->router, subscriber->identity, subscriber->identity_len,
                           ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0) {
            send_block(path, path->router, &path->streams[index], head, head_len, out);
            subscriber->counts[NWFP_CREDIT]--;
            subscriber->counts[NWFP_SENT]++;
        } else {
            subscriber->queued = 1; /* what follows waits behind this block */
            pending |= (uint64_t)1 << i;
        }
    }
    return pending;
}

/* datapath._compress_and_publish, for one packet. 0, or a negative status. */
static int64_t compress_and_publish(nwfp_path *path, nwfp_call *call, entry *e,
                                    size_t *arena_used) {
    nwfp_stream *stream = &path->streams[e->stream];
    uint64_t *hot = stream->hot;
    uint32_t n = e->n_samples, groups = stream->groups;
    const uint8_t *payload = path->zmq.msg_data(&e->payload);
    size_t payload_len = path->zmq.msg_size(&e->payload);
    const int16_t *samples = (const int16_t *)(const void *)payload;
    if ((uintptr_t)payload % sizeof(int16_t) != 0) {
        /* a frame may start anywhere in libzmq's receive buffer */
        if (!grow((void **)&path->aligned, &path->aligned_cap, payload_len))
            return -ENOMEM;
        memcpy(path->aligned, payload, payload_len);
        samples = path->aligned;
    }
    size_t head_len = BLOCK_BYTES + 4 * (size_t)groups, total = 0;
    for (uint32_t g = 0; g < groups; g++) {
        path->offsets[g] = total;
        total += path->codec.encode_bound(stream->group_channels[g], n);
    }
    uint8_t *head, *out;
    if (call->lossless) {
        /* the receive phase made room for every packet of the batch */
        head = call->arena + *arena_used;
        out = head + head_len;
        *arena_used += head_len + total;
    } else {
        if (!grow((void **)&path->scratch, &path->scratch_cap, head_len + total))
            return -ENOMEM;
        head = path->scratch;
        out = head + head_len;
    }
    int keyframe = keyframe_due(stream, e->first);
    int64_t started = now_ns(CLOCK_MONOTONIC);
    int status = path->codec.team_encode(stream->team, groups, stream->encoders, samples, n,
                                         stream->channels, keyframe, out, total, path->offsets,
                                         path->sizes);
    int64_t compress_ns = now_ns(CLOCK_MONOTONIC) - started;
    if (status < 0)
        return NWFP_CODEC_ERROR + status;
    int64_t compressed_ns = now_ns(CLOCK_REALTIME);
    uint32_t crc = 0;
    if (path->codec.crc32_z)
        crc = path->codec.crc32_z(0, payload, payload_len);
    else
        for (size_t done = 0; done < payload_len;) { /* zlib takes an unsigned int length */
            unsigned int part = payload_len - done > 0x40000000u ? 0x40000000u
                                                                  : (unsigned int)(payload_len - done);
            crc = (uint32_t)path->codec.crc32(crc, payload + done, part);
            done += part;
        }
    uint64_t drops = hot[NWFP_HOT_DROPS_BACKLOG] + hot[NWFP_HOT_DROPS_SEQUENCE];
    nwfp_pack_block(head, stream->channels, n, groups, keyframe,
                    hot[NWFP_HOT_SEQ_OUT], stream->epoch, e->first, stream->rate,
                    stream->codec_version, crc, e->acquired_ns, e->received_ns, compressed_ns,
                    compress_ns, drops, compressed_ns, stream->group_channels);
    /* counted before sending, so whoever has the block also sees it in the stats */
    int64_t bytes_out = 0;
    for (uint32_t g = 0; g < groups; g++)
        bytes_out += path->sizes[g];
    hot[NWFP_HOT_SEQ_OUT]++;
    hot[NWFP_HOT_PACKETS_IN]++;
    hot[NWFP_HOT_SAMPLES_IN] += n;
    hot[NWFP_HOT_BYTES_IN] += payload_len;
    hot[NWFP_HOT_BYTES_OUT] += (uint64_t)bytes_out;
    hot[NWFP_HOT_BLOCKS_OUT]++;
    hot[NWFP_HOT_KEYFRAMES] += (uint64_t)keyframe;
    add_latency(&path->limits, &stream->latency[0], e->received_ns - e->acquired_ns);
    add_latency(&path->limits, &stream->latency[1], compress_ns);
    hot[NWFP_HOT_COMPRESS_NS_TOTAL] += (uint64_t)compress_ns;
    add_latency(&path->limits, &stream->latency[2], compressed_ns - e->acquired_ns);
    /* XPUB never blocks: past a subscriber's high-water mark libzmq drops for it alone */
    if (call->live)
        send_block(path, path->publisher, stream, head, head_len, out);
    uint64_t pending = call->lossless ? serve_lossless(path, e->stream, head, head_len, out) : 0;
    if (pending) {
        nwfp_block *block = &call->blocks[call->n_blocks++];
        block->pending = pending;
        block->stream = e->stream;
        block->n_blobs = (int32_t)groups;
        block->head_offset = head - call->arena;
        block->head_len = (int64_t)head_len;
        block->first_blob = call->n_blocks > 1 ? call->blocks[call->n_blocks - 2].first_blob +
                                                     call->blocks[call->n_blocks - 2].n_blobs
                                               : 0;
        for (uint32_t g = 0; g < groups; g++) {
            call->blobs[2 * (block->first_blob + g)] = (out - call->arena) + (int64_t)path->offsets[g];
            call->blobs[2 * (block->first_blob + g) + 1] = path->sizes[g];
        }
    }
    call->published++;
    return 0;
}

/* One receive; 1 taken, 0 nothing waiting (or interrupted), < 0 -errno. */
static int receive(nwfp_path *path, zmq_msg *msg, int flags) {
    path->zmq.msg_init(msg);
    if (path->zmq.msg_recv(msg, path->ingest, flags) >= 0)
        return 1;
    int error = path->zmq.errno_();
    path->zmq.msg_close(msg);
    return error == EAGAIN || error == EINTR ? 0 : -error;
}

int64_t nwfp_wait(nwfp_path *path) {
    if (path->waited)
        return 1;
    nwfp_release_held(path); /* batch[0] is about to be reused */
    int got = receive(path, &path->batch[0].head, 0);
    if (got > 0) {
        path->waited = 1;
        path->waited_ns = now_ns(CLOCK_REALTIME);
    }
    return got;
}

int64_t nwfp_drain(nwfp_path *path, nwfp_call *call) {
    call->handback = NWFP_NOTHING;
    call->frames = 0;
    call->packets = call->published = call->dropped = 0;
    call->n_blocks = 0;
    nwfp_release_held(path);
    for (uint32_t i = 0; i < path->n_streams; i++)
        path->streams[i].held = path->streams[i].held_bytes = 0;
    /* what a kept block may take at most, and what the batch's blocks take so far */
    int max_blocks = call->blocks_cap;
    size_t arena_bound = 0;
    int64_t blobs_bound = 0;
    int count = 0;
    int64_t failed = 0; /* a receive that failed after the batch began: reported after it */
    int flags = call->wait ? 0 : ZMQ_DONTWAIT;
    while ((uint32_t)count < path->limits.batch_packets) {
        entry *e = &path->batch[count];
        int got = 1;
        if (count == 0 && path->waited) {
            path->waited = 0;
            e->received_ns = path->waited_ns;
        } else {
            got = receive(path, &e->head, flags);
            e->received_ns = now_ns(CLOCK_REALTIME);
        }
        if (got <= 0) {
            failed = got;
            break;
        }
        flags = ZMQ_DONTWAIT;
        call->packets++;
        if (!path->zmq.msg_more(&e->head)) {
            path->zmq.msg_close(&e->head);
            call->handback = NWFP_FRAMES;
            call->frames = 1;
            call->received_ns = e->received_ns;
            break;
        }
        /* a message arrives whole: its other frames are there */
        got = receive(path, &e->payload, ZMQ_DONTWAIT);
        if (got <= 0) {
            path->zmq.msg_close(&e->head);
            failed = got < 0 ? got : -EPROTO;
            break;
        }
        if (path->zmq.msg_more(&e->payload)) {
            int64_t frames = 2;
            zmq_msg extra;
            do {
                got = receive(path, &extra, ZMQ_DONTWAIT);
                if (got <= 0)
                    break;
                frames++;
                int more = path->zmq.msg_more(&extra);
                path->zmq.msg_close(&extra);
                if (!more)
                    break;
            } while (1);
            path->zmq.msg_close(&e->head);
            path->zmq.msg_close(&e->payload);
            call->handback = NWFP_FRAMES;
            call->frames = frames;
            call->received_ns = e->received_ns;
            break;
        }
        int32_t index = admit(path, e);
        size_t bound = 0;
        if (index >= 0 && call->lossless) {
            bound = block_bound(path, &path->streams[index], e->n_samples);
            if (arena_bound + bound > call->arena_cap || count >= max_blocks ||
                blobs_bound + path->streams[index].groups > call->blobs_cap) {
                /* no room to keep its block: Python takes it (it was admitted: undo) */
                path->streams[index].hot[NWFP_HOT_NEXT_INGEST_SEQ] = e->seq;
                path->streams[index].hot[NWFP_HOT_NEXT_FIRST] = e->first;
                index = -1;
            }
        }
        if (index < 0) {
            /* compress what came before it, then hand it over: order is kept */
            call->handback = NWFP_PACKET;
            call->received_ns = e->received_ns;
            path->held = 1;
            path->held_index = count;
            break;
        }
        arena_bound += bound;
        blobs_bound += path->streams[index].groups;
        nwfp_stream *stream = &path->streams[index];
        stream->held++;
        stream->held_bytes += (int64_t)path->zmq.msg_size(&e->payload);
        count++;
        call->dropped += enforce_backlog(path, count, index);
    }
    size_t arena_used = 0;
    int64_t done = 0;
    for (int i = 0; i < count; i++) {
        entry *e = &path->batch[i];
        if (e->dropped)
            continue;
        int64_t status = compress_and_publish(path, call, e, &arena_used);
        path->zmq.msg_close(&e->head);
        path->zmq.msg_close(&e->payload);
        if (status < 0) {
            for (int j = i + 1; j < count; j++)
                if (!path->batch[j].dropped) {
                    path->zmq.msg_close(&path->batch[j].head);
                    path->zmq.msg_close(&path->batch[j].payload);
                }
            return status;
        }
        done++;
    }
    return failed < 0 ? failed : done;
}

void nwfp_set_side(nwfp_path *path, void *const *sockets, uint32_t n) {
    path->n_side = n > NWFP_MAX_SIDE ? NWFP_MAX_SIDE : n;
    for (uint32_t i = 0; i < path->n_side; i++)
        path->side[i] = sockets[i];
}

int64_t nwfp_run(nwfp_path *path, nwfp_call *call, int64_t deadline_ns) {
    int64_t packets = 0, published = 0, done = 0;
    zmq_pollitem items[1 + NWFP_MAX_SIDE];
    call->wait = 0;
    call->side_ready = 0;
    for (;;) {
        int64_t status = nwfp_drain(path, call);
        packets += call->packets;
        published += call->published;
        if (status < 0) {
            done = status;
            break;
        }
        done += status;
        if (call->handback != NWFP_NOTHING || call->n_blocks || call->dropped)
            break; /* Python's turn: the arena and the held packet are reused by a drain */
        int64_t left_ns = deadline_ns - now_ns(CLOCK_MONOTONIC);
        if (left_ns <= 0)
            break;
        items[0] = (zmq_pollitem){path->ingest, 0, ZMQ_POLLIN, 0};
        for (uint32_t i = 0; i < path->n_side; i++)
            items[1 + i] = (zmq_pollitem){path->side[i], 0, ZMQ_POLLIN, 0};
        int ready = path->zmq.poll(items, 1 + (int)path->n_side,
                                   (long)((left_ns + 999999) / 1000000));
        if (ready == 0)
            break;
        if (ready < 0) {
            int error = path->zmq.errno_();
            if (error != EINTR)
                done = -error;
            break;
        }
        for (uint32_t i = 0; i < path->n_side; i++)
            call->side_ready |= (items[1 + i].revents & ZMQ_POLLIN) != 0;
        if (call->side_ready)
            break; /* Python's turn, after the packets it brought: the next drain takes them */
    }
    call->packets = packets;
    call->published = published;
    return done;
}
