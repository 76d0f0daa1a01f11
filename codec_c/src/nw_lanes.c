/*
 * The lane format (block version 2): version 1's per-channel model, run on NW_LANES channels
 * side by side, so that the predictor is one vector operation for all of them, with the
 * samples of lane l coded by range coder l % NW_LANE_CODERS. The coders' bytes are
 * interleaved in one string, in the order the decoder asks for them, so a block carries no
 * per-coder lengths; the decoder runs NW_LANE_CODERS independent chains at once.
 *
 * Interleaving: a range decoder reads four bytes when it starts and one byte each time its
 * range is shifted by 8 bits, at the same point of the symbol sequence where the encoder's
 * range is (both hold the same range). The encoder counts its shifts per coded sample
 * ("events"), writes each coder's bytes to a buffer of its own, and at the end of the block
 * lays them out as the decoder will read them: four bytes per coder, then one byte of the
 * shifting coder per event. See docs/FORMAT.md.
 *
 * Every path (scalar C, SSE2, SSE2 code built for AVX2, and that built for AVX-512) computes
 * the same integers, so the bytes are the same whichever runs; the tests check it.
 */
#include "nw_lanes_kernel.h"

static int run_scalar(const lane_job *job, int pass) { return run_pass(job, pass, ISA_SCALAR); }
#if defined(__SSE2__)
static int run_sse2(const lane_job *job, int pass) { return run_pass(job, pass, ISA_SSE2); }
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define NW_HAVE_AVX2_KERNEL 1
#include <cpuid.h>
#endif

typedef int (*pass_runner)(const lane_job *, int);
static pass_runner runner;    /* chosen by nw_lanes_set_simd (NW_SIMD_AUTO at the first coder made) */
typedef uint32_t (*crc_runner)(const uint8_t *, const int16_t *, uint32_t, uint32_t, size_t);
static crc_runner block_crc = nw_block_crc;   /* the same value on every level */
#if defined(NW_HAVE_AVX2_KERNEL)
uint32_t nw_block_crc_avx2(const uint8_t *header, const int16_t *samples, uint32_t n,
                           uint32_t channels, size_t stride);
#endif
static int runner_simd;

int nw_lanes_set_simd(int simd) {
    int best = NW_SIMD_SCALAR;
#if defined(__SSE2__)
    best = NW_SIMD_SSE2;
#if defined(NW_HAVE_AVX2_KERNEL)
    __builtin_cpu_init();
    /* LZCNT: CPUID 0x80000001 ECX bit 5; PCLMULQDQ: CPUID 1 ECX bit 1 (not every compiler's
     * __builtin_cpu_supports knows them) */
    unsigned a, b, c, d;
    const int lzcnt = __get_cpuid(0x80000001, &a, &b, &c, &d) && (c >> 5 & 1);
    const int pclmul = __get_cpuid(1, &a, &b, &c, &d) && (c >> 1 & 1);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")
        && lzcnt && pclmul)
        best = NW_SIMD_AVX2;
    /* (the compiler's check includes the system's support for the 512-bit state) */
    if (best == NW_SIMD_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl"))
        best = NW_SIMD_AVX512;
#endif
#endif
    if (simd == NW_SIMD_AUTO) simd = best;
    if (simd < NW_SIMD_SCALAR || simd > best) return NW_ERR_ARGUMENT;
    pass_runner chosen = run_scalar;
#if defined(__SSE2__)
    if (simd == NW_SIMD_SSE2) chosen = run_sse2;
#if defined(NW_HAVE_AVX2_KERNEL)
    if (simd == NW_SIMD_AVX2) chosen = nw_lanes_run_avx2;
    if (simd == NW_SIMD_AVX512) chosen = nw_lanes_run_avx512;
#endif
#endif
    runner = chosen;
    block_crc = nw_block_crc;
#if defined(NW_HAVE_AVX2_KERNEL)
    if (simd >= NW_SIMD_AVX2) block_crc = nw_block_crc_avx2;
#endif
    runner_simd = simd;
    return simd;
}

static void prepare(void) {
    nw_prepare();
    if (!runner) nw_lanes_set_simd(NW_SIMD_AUTO);
}

/* ---- lane state ------------------------------------------------------------------------- */

static int lanes_alloc(lane_state *ls, uint32_t channels) {
    ls->group = calloc((channels + LANES - 1) / LANES, sizeof *ls->group);
    ls->channel = calloc(channels, sizeof *ls->channel);
    return ls->group && ls->channel ? NW_OK : NW_ERR_NOMEM;
}

static void lanes_free(lane_state *ls) {
    free(ls->group);
    free(ls->channel);
}

/* Cold state of channel c in domain d (a keyframe's start). */
static void lanes_reset_channel(lane_state *ls, uint32_t c, uint32_t domain) {
    ls->channel[c] = nw_initial_state[domain];
    lane_group *gr = &ls->group[c / LANES];
    const uint32_t l = c % LANES;
    for (int p = 0; p < PAIRS; p++) gr->weights[p][l][0] = gr->weights[p][l][1] = 0;
    for (int k = 0; k < TAPS; k++) gr->deltas[k][l] = 0;
    gr->last[l] = 0;
    gr->energy[l] = 0;
}

/* ---- stream encoder ------------------------------------------------------------------- */

struct nw_stream_encoder {
    uint32_t version, channels, max_error, next_index;
    int started;
    nw_encoder *v1;               /* version 1: the whole work */
    lane_state lanes;
    uint64_t *channel_bytes;
    uint8_t *coder_out;           /* CODERS buffers of coder_cap bytes */
    size_t coder_cap;
    uint8_t *events;
    size_t events_cap;
};

nw_stream_encoder *nw_stream_encoder_new(uint32_t channels, uint32_t version) {
    if (!nw_channels_ok(channels)) return NULL;
    if (version != NW_FORMAT_VERSION && version != NW_LANE_FORMAT_VERSION) return NULL;
    prepare();
    nw_stream_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->version = version;
    e->channels = channels;
    int ok = version == NW_FORMAT_VERSION
           ? (e->v1 = nw_encoder_new(channels)) != NULL
           : lanes_alloc(&e->lanes, channels) == NW_OK
             && (e->channel_bytes = calloc(channels, sizeof *e->channel_bytes)) != NULL;
    if (!ok) { nw_stream_encoder_free(e); return NULL; }
    return e;
}

void nw_stream_encoder_free(nw_stream_encoder *e) {
    if (!e) return;
    nw_encoder_free(e->v1);
    lanes_free(&e->lanes);
    free(e->channel_bytes);
    free(e->coder_out);
    free(e->events);
    free(e);
}

uint32_t nw_stream_encoder_channels(const nw_stream_encoder *e) { return e ? e->channels : 0; }

int nw_stream_encoder_set_max_error(nw_stream_encoder *e, uint32_t max_error) {
    if (!e || max_error > NW_MAX_ERROR_LIMIT) return NW_ERR_ARGUMENT;
    if (e->v1) return nw_encoder_set_max_error(e->v1, max_error);
    e->max_error = max_error;
    return NW_OK;
}

uint32_t nw_stream_encoder_channel_bytes(const nw_stream_encoder *e, uint64_t *totals, uint32_t count) {
    if (!e || !totals) return 0;
    if (e->v1) return nw_encoder_channel_bytes(e->v1, totals, count);
    uint32_t n = count < e->channels ? count : e->channels;
    memcpy(totals, e->channel_bytes, n * sizeof *totals);
    return n;
}

static int reserve_buffers(nw_stream_encoder *e, size_t bytes) {
    if (bytes <= e->coder_cap) return NW_OK;
    uint8_t *out = malloc(CODERS * bytes), *events = malloc(bytes);
    if (!out || !events) { free(out); free(events); return NW_ERR_NOMEM; }
    free(e->coder_out);
    free(e->events);
    e->coder_out = out;
    e->events = events;
    e->coder_cap = e->events_cap = bytes;
    return NW_OK;
}

/* The coders' bytes in the order the decoder reads them (see the top of this file); returns
 * their number, trailing zeros (at most TRIM_LIMIT) dropped. */
static size_t interleave(const lane_coders *lc, uint8_t *out) {
    const uint8_t *next[CODERS];   /* each coder's next byte (locals: `out` could alias lc) */
    size_t n = 0;
    for (int k = 0; k < CODERS; k++) {
        for (int i = 0; i < 4; i++) out[n++] = lc->co[k].enc.out[i];
        next[k] = lc->co[k].enc.out + 4;
    }
    const uint8_t *events = lc->events;
    for (size_t i = 0, end = lc->n_events; i < end; i++) out[n++] = *next[events[i]]++;
    for (int dropped = 0; dropped < TRIM_LIMIT && n > 0 && out[n - 1] == 0; dropped++) n--;
    return n;
}

static int64_t encode_lanes(nw_stream_encoder *e, const int16_t *samples, uint32_t n, size_t stride,
                            int keyframe, uint8_t *out) {
    const uint32_t ch = e->channels;
    const size_t bitmap = keyframe ? (ch + 7) / 8 : 0;
    const size_t stored_bytes = bitmap + 2 * (size_t)ch * n;
    if (reserve_buffers(e, stored_bytes + 8) != NW_OK) return NW_ERR_NOMEM;
    int16_t *rebuilt = NULL;
    if (e->max_error && n) {
        rebuilt = malloc((size_t)ch * n * sizeof *rebuilt);
        if (!rebuilt) return NW_ERR_NOMEM;
    }
    uint8_t *payload = out + NW_BLOCK_HEADER_BYTES;
    if (keyframe) {
        memset(payload, 0, bitmap);
        for (uint32_t c = 0; c < ch; c++) {
            uint32_t d = nw_choose_domain(samples, n, stride, c);
            lanes_reset_channel(&e->lanes, c, d);
            payload[c / 8] |= (uint8_t)(d << (c % 8));
        }
    }
    lane_coders lc;
    memset(&lc, 0, sizeof lc);
    for (int k = 0; k < CODERS; k++) {
        range_encoder *rc = &lc.co[k].enc;
        rc->range = 0xFFFFFFFFu;
        rc->first = 1;
        rc->out = e->coder_out + (size_t)k * e->coder_cap;
        rc->cap = e->coder_cap;
    }
    lc.events = e->events;
    lc.events_cap = e->events_cap;
    lane_job job = { &e->lanes, ch, n, samples, NULL, stride, rebuilt, (int32_t)e->max_error, &lc,
                     e->channel_bytes };
    runner(&job, PASS_ENCODE);
    coders_direct(&lc, 0);
    for (int k = 0; k < CODERS; k++) {
        range_encoder *rc = &lc.co[k].enc;
        /* Any value in [low, low + range) decodes the same; the one with three zero low
         * bytes (range >= 2^24 leaves room for it) ends the coder's bytes in zeros. */
        rc->low = (rc->low + 0xFFFFFFu) & ~(uint64_t)0xFFFFFFu;
        rc_flush(rc);
        lc.overflow |= rc->overflow;
    }
    uint32_t flags = (keyframe ? NW_FLAG_KEYFRAME : 0) | e->max_error << NW_MAX_ERROR_SHIFT;
    size_t payload_bytes = 0;
    if (!lc.overflow && bitmap + CODERS * 4 + lc.n_events < stored_bytes)
        payload_bytes = bitmap + interleave(&lc, payload + bitmap);
    else {
        /* The model state was updated by the pass above, exactly as the decoder's update
         * pass over stored samples will update it. */
        flags |= NW_FLAG_STORED;
        uint8_t *p = payload + bitmap;
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t c = 0; c < ch; c++, p += 2) nw_put_u16(p, (uint16_t)samples[(size_t)t * stride + c]);
        payload_bytes = stored_bytes;
    }
    nw_write_block_header(out, NW_LANE_FORMAT_VERSION, flags, ch, n, e->next_index, (uint32_t)payload_bytes);
    /* A stored block decodes to the exact samples, a coded one to what was rebuilt. */
    if (rebuilt && !(flags & NW_FLAG_STORED)) nw_put_u32(out + 18, block_crc(out, rebuilt, n, ch, ch));
    else nw_put_u32(out + 18, block_crc(out, samples, n, ch, stride));
    free(rebuilt);
    return (int64_t)(NW_BLOCK_HEADER_BYTES + payload_bytes);
}

int64_t nw_stream_encode_block(nw_stream_encoder *e, const int16_t *samples, uint32_t n,
                               size_t stride, int keyframe, uint8_t *out, size_t out_cap) {
    if (e && e->v1) return nw_encode_block_strided(e->v1, samples, n, stride, keyframe, out, out_cap);
    if (!e || (!samples && n) || !out || n > NW_MAX_BLOCK_SAMPLES || stride < e->channels)
        return NW_ERR_ARGUMENT;
    /* Checked before any state changes, so a refused call leaves the stream intact. */
    if (out_cap < nw_encode_bound(e->channels, n)) return NW_ERR_OUTPUT_FULL;
    int64_t size = encode_lanes(e, samples, n, stride, !e->started || keyframe, out);
    if (size > 0) {
        e->next_index++;
        e->started = 1;
    }
    return size;
}

/* ---- stream decoder ------------------------------------------------------------------- */

struct nw_stream_decoder {
    uint32_t channels;
    uint32_t version;             /* of the blocks the state follows; 0: no valid state */
    uint32_t next_index;
    nw_decoder *v1;               /* made at the first version 1 block */
    lane_state lanes;             /* made at the first lane block */
};

nw_stream_decoder *nw_stream_decoder_new(uint32_t channels) {
    if (!nw_channels_ok(channels)) return NULL;
    prepare();
    nw_stream_decoder *d = calloc(1, sizeof *d);
    if (d) d->channels = channels;
    return d;
}

void nw_stream_decoder_free(nw_stream_decoder *d) {
    if (!d) return;
    nw_decoder_free(d->v1);
    lanes_free(&d->lanes);
    free(d);
}

uint32_t nw_stream_decoder_channels(const nw_stream_decoder *d) { return d ? d->channels : 0; }

void nw_stream_decoder_reset(nw_stream_decoder *d) {
    if (!d) return;
    d->version = 0;
    nw_decoder_reset(d->v1);
}

int nw_stream_block_peek(const uint8_t *in, size_t len, nw_block_info *info) {
    if (in && len >= NW_BLOCK_HEADER_BYTES && in[2] == NW_LANE_FORMAT_VERSION)
        return nw_read_block_header(in, len, NW_LANE_FORMAT_VERSION, info);
    return nw_block_peek(in, len, info);
}

static int decode_lanes(nw_stream_decoder *d, const nw_block_info *info, const uint8_t *payload,
                        int16_t *samples, size_t stride) {
    const uint32_t ch = d->channels, n = info->n_samples;
    const size_t payload_bytes = info->block_bytes - NW_BLOCK_HEADER_BYTES;
    const size_t bitmap = info->keyframe ? (ch + 7) / 8 : 0;
    if (payload_bytes < bitmap) return NW_ERR_CORRUPT;
    for (size_t c = 0; c < (info->keyframe ? ch : 0); c++)
        lanes_reset_channel(&d->lanes, (uint32_t)c, (payload[c / 8] >> (c % 8)) & 1);
    const uint8_t *p = payload + bitmap;
    lane_job job = { &d->lanes, ch, n, samples, samples, stride, NULL, (int32_t)info->max_error, NULL, NULL };
    if (info->stored) {
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t c = 0; c < ch; c++, p += 2) samples[(size_t)t * stride + c] = (int16_t)nw_get_u16(p);
        return runner(&job, PASS_UPDATE);
    }
    lane_coders lc;
    memset(&lc, 0, sizeof lc);
    range_decoder *rd = &lc.input.dec;
    rd->in = p;
    rd->len = payload_bytes - bitmap;
    for (int k = 0; k < CODERS; k++) {
        lc.range[k] = 0xFFFFFFFFu;
        for (int i = 0; i < 4; i++) lc.code[k] = (lc.code[k] << 8) | rd_byte(rd);
    }
    job.lc = &lc;
    int status = runner(&job, PASS_DECODE);
    if (status != NW_OK) return status;
    if (rd->overrun > TRIM_LIMIT) return NW_ERR_TRUNCATED;
    /* The encoder writes exactly the bytes its decoder reads: anything after them is damage. */
    return rd->pos == rd->len ? NW_OK : NW_ERR_CORRUPT;
}

int nw_stream_decode_block(nw_stream_decoder *d, const uint8_t *in, size_t len, int16_t *samples,
                           size_t rows_cap, size_t stride, nw_block_info *info) {
    nw_block_info local;
    if (!info) info = &local;
    if (!d || !in || stride < d->channels) return NW_ERR_ARGUMENT;
    int status = nw_stream_block_peek(in, len, info);
    const uint32_t version = status == NW_OK ? in[2] : 0;
    if (version == NW_FORMAT_VERSION) {
        if (!d->v1 && !(d->v1 = nw_decoder_new(d->channels))) return NW_ERR_NOMEM;
        if (d->version != NW_FORMAT_VERSION) nw_decoder_reset(d->v1);   /* it resumes at a keyframe */
        status = nw_decode_block_strided(d->v1, in, len, samples, rows_cap, stride, info);
        d->version = status == NW_OK ? NW_FORMAT_VERSION : 0;
        return status;
    }
    if (status != NW_OK) { d->version = 0; return status; }
    if (info->channels != d->channels) { d->version = 0; return NW_ERR_CHANNELS; }
    if (info->n_samples > rows_cap || (!samples && info->n_samples)) {
        d->version = 0;   /* the block is lost to this decoder like any other failed one */
        return NW_ERR_ARGUMENT;
    }
    if (!info->keyframe) {
        if (d->version != NW_LANE_FORMAT_VERSION) return NW_ERR_NEED_KEYFRAME;
        if (info->index != d->next_index) { d->version = 0; return NW_ERR_SEQUENCE; }
    }
    if (!d->lanes.group && lanes_alloc(&d->lanes, d->channels) != NW_OK) {
        lanes_free(&d->lanes);
        memset(&d->lanes, 0, sizeof d->lanes);
        return NW_ERR_NOMEM;
    }
    status = decode_lanes(d, info, in + NW_BLOCK_HEADER_BYTES, samples, stride);
    if (status == NW_OK && block_crc(in, samples, info->n_samples, info->channels, stride) != info->crc32)
        status = NW_ERR_CHECKSUM;
    if (status != NW_OK) { d->version = 0; return status; }
    d->version = NW_LANE_FORMAT_VERSION;
    d->next_index = info->index + 1;
    return NW_OK;
}
