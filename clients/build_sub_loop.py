"""Declares clients/src/sub_loop.h and spool_loop.h to cffi and compiles it into neurowire.clients._sub_loop
(API mode, out-of-line). Run by setuptools through ``cffi_modules``; running it as a script
builds the extension under build/ffi/, to debug the build alone.

Only the codec's headers are used (for its types): its functions are reached through
pointers taken from the codec's own cffi module, and libzmq's from the library pyzmq loaded.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
CODEC_SRC = os.path.join(HERE, os.pardir, "codec_c", "src")

CDEF = """
typedef struct nw_team nw_team;
typedef struct nw_stream_decoder nw_stream_decoder;
typedef struct nw_block_info nw_block_info;
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
typedef struct nw_sub_codec {
    int (*team_decode)(nw_team *team, uint32_t groups, nw_stream_decoder *const *decoders,
                       const uint8_t *const *blocks, const size_t *lengths, int16_t *samples,
                       size_t rows_cap, size_t stride, int *statuses, nw_block_info *infos);
    void (*decoder_reset)(nw_stream_decoder *decoder);
    uint32_t (*crc32_z)(uint32_t crc, const uint8_t *buf, size_t len);
    unsigned long (*crc32)(unsigned long crc, const unsigned char *buf, unsigned int len);
} nw_sub_codec;
#define NW_SUB_MSG_BYTES ...
#define NW_SUB_MAX_GROUPS ...
#define NW_SUB_MAX_MESSAGE_FRAMES ...
typedef struct nw_sub_batch {
    uint32_t frame_cap;
    uint32_t message_cap;
    unsigned char *msgs;
    const uint8_t **data;
    size_t *size;
    uint32_t *message_first;
    int64_t *received_ns;
    uint32_t *excess;
    uint64_t *tail_bytes;
    uint32_t frames;
    uint32_t messages;
} nw_sub_batch;
int nw_sub_drain(const nw_sub_zmq *zmq, void *socket, long timeout_ms, nw_sub_batch *batch);
void nw_sub_release(const nw_sub_zmq *zmq, nw_sub_batch *batch);
int nw_sub_decode(const nw_sub_codec *codec, nw_team *team, uint32_t groups,
                  nw_stream_decoder *const *decoders, const uint8_t *const *blobs,
                  const size_t *sizes, uint32_t n_samples, uint32_t channels, int16_t *out,
                  uint32_t *crc);
typedef struct nw_sub_stream {
    const uint8_t *topic;
    size_t topic_len;
    const uint8_t *group_suffix;
    uint32_t groups, channels;
    double rate;
    int64_t epoch;
    uint64_t next_seq, next_sample;
    uint64_t dropped;
    uint64_t codec_bytes;
    nw_team *team;
    nw_stream_decoder *const *decoders;
} nw_sub_stream;
#define NW_SUB_BLOCK_HEADER_BYTES ...
#define NW_SUB_STAGES ...
uint32_t nw_sub_run(const nw_sub_codec *codec, const nw_sub_batch *batch, uint32_t first,
                    nw_sub_stream *stream, int16_t *out, uint64_t rows_cap, uint32_t max_blocks,
                    uint32_t *rows, uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                    int *decode_status);
uint32_t nw_sub_gather(const nw_sub_zmq *zmq, void *socket, const nw_sub_codec *codec,
                       nw_sub_batch *batch, nw_sub_stream *stream, int64_t deadline_ns,
                       int16_t *out, uint64_t rows_cap, uint32_t max_blocks, uint32_t *rows,
                       uint8_t *keyframe, uint8_t *crc_bad, int64_t *stages,
                       int *decode_status, uint32_t *leftover, int *drain_status);
void nw_sub_prepare(void);

#define NW_SPOOL_MAX_STREAMS ...
#define NW_SPOOL_TOPIC_BYTES ...
#define NW_SPOOL_STOP_CHECK_MS ...
#define NW_SPOOL_REASONS ...
#define NW_SPOOL_GAP_REASONS ...
typedef struct nw_spool_tracker { ...; } nw_spool_tracker;
typedef struct nw_spool_counts {
    uint64_t spooled, spooled_bytes, feed_messages, rejected[...];
    uint64_t lost_blocks, duplicates, keyframe_waits, untracked;
    uint64_t gaps[...], gap_samples;
} nw_spool_counts;
typedef struct nw_spool {
    int fd;
    uint8_t *buffer;
    size_t buffer_cap, buffer_used;
    int has_resume;
    uint64_t resume_from;
    uint64_t until_sample;
    int reached;
    int stop;
    int64_t last_data_ns;
    uint64_t taken;
    int write_error;
    uint32_t streams;
    nw_spool_counts counts;
    ...;
} nw_spool;
int nw_spool_run(const nw_sub_zmq *zmq, void *socket, nw_sub_batch *batch, nw_spool *spool,
                 int64_t deadline_ns, uint32_t max_messages);
int nw_spool_take(nw_spool *spool, const uint8_t *const *data, const size_t *size,
                  uint32_t frames, uint32_t excess, int64_t received_ns);
int nw_spool_flush(nw_spool *spool);

/* libc's, for fastsub.same_bytes (a check of decoded samples without copying them) */
int memcmp(const void *a, const void *b, size_t n);
"""


def _rel(path):
    # setuptools wants source paths relative to the project root it runs from.
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def make_ffibuilder():
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source("neurowire.clients._sub_loop",
                   '#include <string.h>\n#include "sub_loop.h"\n#include "spool_loop.h"',
                   sources=[_rel(os.path.join(SRC, name))
                            for name in ("sub_loop.c", "spool_loop.c")],
                   include_dirs=[_rel(SRC), _rel(CODEC_SRC)],
                   extra_compile_args=["-O2", "-std=c99"])
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(HERE, os.pardir, "build", "ffi"),
                       verbose=True)
