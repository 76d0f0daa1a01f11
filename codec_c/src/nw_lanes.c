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
 * Every path (scalar C, SSE2, SSE2 code built for AVX2) computes the same integers, so the
 * bytes are the same whichever runs; the tests check it.
 */
#include "nw_lanes.h"
#include "nw_model.h"

#define LANES NW_LANES
#define CODERS NW_LANE_CODERS
#define PAIRS (TAPS / 2)
/* Zero bytes the encoder may drop from the end of the coded bytes (the decoder reads zeros
 * past the end): each coder's flush ends in three zero bytes, and they fall near the end. */
#define TRIM_LIMIT (4 * CODERS)

typedef char lanes_fill_coders[LANES % CODERS == 0 && TAPS % 2 == 0 ? 1 : -1];

/* The predictor state of one group of LANES channels (channels past the stream's last one
 * stay zero and are never coded). */
typedef struct lane_group {
    /* Taps 2p and 2p+1 of lane l at [p][l][0..1]: a 16-byte vector holds a tap pair of four
     * lanes, which is what a 16-bit multiply-add sums. Q(WEIGHT_SHIFT), saturating. */
    int16_t weights[PAIRS][LANES][2];
    int16_t deltas[TAPS][LANES];  /* first differences in grid-sized units, newest first */
    int32_t last[LANES];          /* last sample, domain units */
    int32_t energy[LANES];        /* sum of the lane's TAPS deltas squared */
} lane_group;

typedef struct lane_state {
    lane_group *group;            /* ceil(channels / LANES) */
    channel_state *channel;       /* counts, activity and domain (its predictor fields unused) */
} lane_state;

enum isa { ISA_SCALAR, ISA_SSE2 };

/* ---- the predictor, LANES channels at a time ----------------------------------------- */

/* Per lane: 1 for grid channels, 64 for linear ones (deltas are in grid-sized units). */
typedef struct lane_domain {
    int32_t dshift[LANES];
    int32_t top_q[LANES];         /* the domain's largest value, FRACTION_BITS fractional */
} lane_domain;

static void predict_scalar(const lane_group *gr, const lane_domain *dom, int32_t *pred_q) {
    for (int l = 0; l < LANES; l++) {
        int32_t acc = 0;
        for (int p = 0; p < PAIRS; p++)
            acc += gr->weights[p][l][0] * gr->deltas[2 * p][l] + gr->weights[p][l][1] * gr->deltas[2 * p + 1][l];
        int32_t q = gr->last[l] * (1 << FRACTION_BITS) + (acc >> (WEIGHT_SHIFT - FRACTION_BITS)) * (1 << dom->dshift[l]);
        pred_q[l] = q < 0 ? 0 : q > dom->top_q[l] ? dom->top_q[l] : q;
    }
}

/* w += (step x (delta << UPDATE_SHIFT) + 2^15) >> 16, saturating; then the history moves on. */
static void update_scalar(lane_group *gr, const int32_t *step, const int32_t *delta) {
    for (int p = 0; p < PAIRS; p++)
        for (int l = 0; l < LANES; l++)
            for (int j = 0; j < 2; j++) {
                int32_t v = gr->weights[p][l][j]
                          + ((step[l] * (gr->deltas[2 * p + j][l] * (1 << UPDATE_SHIFT)) + (1 << 15)) >> 16);
                gr->weights[p][l][j] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
            }
    memmove(gr->deltas[1], gr->deltas[0], sizeof gr->deltas - sizeof gr->deltas[0]);
    for (int l = 0; l < LANES; l++) gr->deltas[0][l] = (int16_t)delta[l];
}

#if defined(__SSE2__)
typedef char sse2_layout_is_eight_lanes[LANES == 8 ? 1 : -1];

/* Lanes 0-3 and 4-7 of a tap pair: (d[2p][l], d[2p+1][l]) for each lane. */
static inline void delta_pairs(const lane_group *gr, int p, __m128i *lo, __m128i *hi) {
    __m128i a = _mm_loadu_si128((const __m128i *)gr->deltas[2 * p]);
    __m128i b = _mm_loadu_si128((const __m128i *)gr->deltas[2 * p + 1]);
    *lo = _mm_unpacklo_epi16(a, b);
    *hi = _mm_unpackhi_epi16(a, b);
}

static inline __m128i select_si128(__m128i mask, __m128i yes, __m128i no) {
    return _mm_or_si128(_mm_and_si128(mask, yes), _mm_andnot_si128(mask, no));
}

static inline __m128i finish_prediction(__m128i acc, const int32_t *last, const int32_t *dshift,
                                        const int32_t *top_q) {
    __m128i t = _mm_srai_epi32(acc, WEIGHT_SHIFT - FRACTION_BITS);
    __m128i linear = _mm_cmpgt_epi32(_mm_loadu_si128((const __m128i *)dshift), _mm_setzero_si128());
    t = select_si128(linear, _mm_slli_epi32(t, 6), t);
    __m128i q = _mm_add_epi32(_mm_slli_epi32(_mm_loadu_si128((const __m128i *)last), FRACTION_BITS), t);
    q = _mm_andnot_si128(_mm_srai_epi32(q, 31), q);                       /* max(q, 0) */
    __m128i top = _mm_loadu_si128((const __m128i *)top_q);
    return select_si128(_mm_cmpgt_epi32(q, top), top, q);                 /* min(q, top) */
}

static inline void predict_sse2(const lane_group *gr, const lane_domain *dom, int32_t *pred_q) {
    __m128i acc_lo = _mm_setzero_si128(), acc_hi = _mm_setzero_si128();
    for (int p = 0; p < PAIRS; p++) {
        __m128i lo, hi;
        delta_pairs(gr, p, &lo, &hi);
        acc_lo = _mm_add_epi32(acc_lo, _mm_madd_epi16(_mm_loadu_si128((const __m128i *)gr->weights[p][0]), lo));
        acc_hi = _mm_add_epi32(acc_hi, _mm_madd_epi16(_mm_loadu_si128((const __m128i *)gr->weights[p][4]), hi));
    }
    _mm_storeu_si128((__m128i *)pred_q, finish_prediction(acc_lo, gr->last, dom->dshift, dom->top_q));
    _mm_storeu_si128((__m128i *)(pred_q + 4),
                     finish_prediction(acc_hi, gr->last + 4, dom->dshift + 4, dom->top_q + 4));
}

static inline __m128i weight_step(__m128i w, __m128i st, __m128i d) {
    __m128i u = _mm_slli_epi16(d, UPDATE_SHIFT);
    /* high half of the product plus bit 15 of the low half: (step x scaled + 2^15) >> 16 */
    __m128i dw = _mm_add_epi16(_mm_mulhi_epi16(st, u), _mm_srli_epi16(_mm_mullo_epi16(st, u), 15));
    return _mm_adds_epi16(w, dw);
}

static inline void update_sse2(lane_group *gr, const int32_t *step, const int32_t *delta) {
    /* Steps fit 16 bits (nlms_step clamps them), so packing them is exact. */
    __m128i st = _mm_packs_epi32(_mm_loadu_si128((const __m128i *)step), _mm_loadu_si128((const __m128i *)(step + 4)));
    __m128i st_lo = _mm_unpacklo_epi16(st, st), st_hi = _mm_unpackhi_epi16(st, st);
    for (int p = 0; p < PAIRS; p++) {
        __m128i lo, hi;
        delta_pairs(gr, p, &lo, &hi);
        __m128i *w_lo = (__m128i *)gr->weights[p][0], *w_hi = (__m128i *)gr->weights[p][4];
        _mm_storeu_si128(w_lo, weight_step(_mm_loadu_si128(w_lo), st_lo, lo));
        _mm_storeu_si128(w_hi, weight_step(_mm_loadu_si128(w_hi), st_hi, hi));
    }
    for (int k = TAPS - 1; k > 0; k--)
        _mm_storeu_si128((__m128i *)gr->deltas[k], _mm_loadu_si128((const __m128i *)gr->deltas[k - 1]));
    _mm_storeu_si128((__m128i *)gr->deltas[0],
                     _mm_packs_epi32(_mm_loadu_si128((const __m128i *)delta), _mm_loadu_si128((const __m128i *)(delta + 4))));
}
#endif

HOT void predict(const lane_group *gr, const lane_domain *dom, int32_t *pred_q, const int isa) {
#if defined(__SSE2__)
    if (isa == ISA_SSE2) { predict_sse2(gr, dom, pred_q); return; }
#endif
    (void)isa;
    predict_scalar(gr, dom, pred_q);
}

HOT void update(lane_group *gr, const int32_t *step, const int32_t *delta, const int isa) {
#if defined(__SSE2__)
    if (isa == ISA_SSE2) { update_sse2(gr, step, delta); return; }
#endif
    (void)isa;
    update_scalar(gr, step, delta);
}

/* ---- a block's samples through the model ----------------------------------------------- */

/* The coders of one block. Encoding: a range encoder per coder, and the shift events in
 * order. Decoding: one input shared by the coders, whose range and code are swapped in for
 * each sample. */
typedef struct lane_coders {
    coder co[CODERS];
    uint8_t *events;
    size_t n_events, events_cap;
    int overflow;
    coder input;
    uint32_t range[CODERS], code[CODERS];
} lane_coders;

/* How many times an encoder has shifted out a byte: each shift writes the cached byte and
 * any pending ones, or adds one pending byte; the very first writes nothing. */
static inline size_t shifts(const range_encoder *rc) {
    return rc->pos + (size_t)rc->pending + (rc->first ? 0 : 1);
}

typedef struct lane_job {
    lane_state *ls;
    uint32_t channels, n;
    const int16_t *in;            /* encode and update: the samples */
    int16_t *out;                 /* decode: the samples */
    size_t stride;
    int16_t *rebuilt;             /* bounded-error encode: what the decoder rebuilds (rows of channels) */
    int32_t max_error;
    lane_coders *lc;
    uint64_t *channel_bytes;      /* encode: bytes (shift events) per channel */
} lane_job;

/* All groups of a block, a time step of a group at a time. `pass` and `bounded` are
 * constants, so each combination gets its own loop. */
HOT int run_groups(const lane_job *job, const int pass, const int bounded, const int isa) {
    lane_state *ls = job->ls;
    lane_coders *lc = job->lc;
    const int32_t max_error = bounded ? job->max_error : 0;
    const uint32_t groups = (job->channels + LANES - 1) / LANES;
    for (uint32_t g = 0; g < groups; g++) {
        lane_group *gr = &ls->group[g];
        const uint32_t first = g * LANES;
        const int active = job->channels - first < LANES ? (int)(job->channels - first) : LANES;
        lane_domain dom;
        int32_t pred_q[LANES], step[LANES] = {0}, delta[LANES] = {0};
        for (int l = 0; l < LANES; l++) {
            int linear = l < active && ls->channel[first + l].domain != DOMAIN_GRID;
            dom.dshift[l] = linear ? 6 : 0;
            dom.top_q[l] = (linear ? 65535 : GRID_CODES - 1) << FRACTION_BITS;
        }
        for (uint32_t t = 0; t < job->n; t++) {
            predict(gr, &dom, pred_q, isa);
            for (int l = 0; l < active; l++) {
                const uint32_t c = first + (uint32_t)l;
                channel_state *s = &ls->channel[c];
                const int k = l % CODERS;
                const int grid = s->domain == DOMAIN_GRID;
                int32_t x;
                if (pass == PASS_DECODE) {
                    int16_t *value = &job->out[(size_t)t * job->stride + c];
                    lc->input.dec.range = lc->range[k];
                    lc->input.dec.code = lc->code[k];
                    int bad = grid ? model_code(s, &lc->input, PASS_DECODE, value, max_error, 1, pred_q[l], &x)
                                   : model_code(s, &lc->input, PASS_DECODE, value, max_error, 0, pred_q[l], &x);
                    if (bad) return NW_ERR_CORRUPT;
                    lc->range[k] = lc->input.dec.range;
                    lc->code[k] = lc->input.dec.code;
                } else {
                    int16_t value = job->in[(size_t)t * job->stride + c];
                    coder *co = pass == PASS_ENCODE ? &lc->co[k] : NULL;
                    size_t before = pass == PASS_ENCODE ? shifts(&co->enc) : 0;
                    if (grid) model_code(s, co, pass, &value, max_error, 1, pred_q[l], &x);
                    else model_code(s, co, pass, &value, max_error, 0, pred_q[l], &x);
                    if (pass == PASS_ENCODE) {
                        if (bounded) job->rebuilt[(size_t)t * job->channels + c] = value;
                        size_t after = shifts(&co->enc);
                        job->channel_bytes[c] += after - before;
                        if (after - before > lc->events_cap - lc->n_events) {
                            lc->overflow = 1;   /* larger than stored: the block is stored */
                        } else {
                            for (; before < after; before++) lc->events[lc->n_events++] = (uint8_t)k;
                        }
                    }
                }
                const int dshift = grid ? 0 : 6;
                step[l] = nlms_step(((int64_t)x << FRACTION_BITS) - pred_q[l], gr->energy[l], dshift);
                int32_t d = (x - gr->last[l]) >> dshift, oldest = gr->deltas[TAPS - 1][l];
                gr->energy[l] += d * d - oldest * oldest;
                gr->last[l] = x;
                delta[l] = d;
            }
            update(gr, step, delta, isa);
            if (pass == PASS_DECODE && lc->input.dec.overrun > TRIM_LIMIT) return NW_ERR_TRUNCATED;
        }
    }
    return NW_OK;
}

HOT int run_pass(const lane_job *job, int pass, const int isa) {
    if (pass == PASS_ENCODE)
        return job->max_error ? run_groups(job, PASS_ENCODE, 1, isa) : run_groups(job, PASS_ENCODE, 0, isa);
    if (pass == PASS_DECODE)
        return job->max_error ? run_groups(job, PASS_DECODE, 1, isa) : run_groups(job, PASS_DECODE, 0, isa);
    return run_groups(job, PASS_UPDATE, 1, isa);
}

static int run_scalar(const lane_job *job, int pass) { return run_pass(job, pass, ISA_SCALAR); }
#if defined(__SSE2__)
static int run_sse2(const lane_job *job, int pass) { return run_pass(job, pass, ISA_SSE2); }
#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2_BUILD 1
/* The same code with the VEX encodings (three-operand forms) the AVX2 target allows. */
__attribute__((target("avx2"))) static int run_avx2(const lane_job *job, int pass) {
    return run_pass(job, pass, ISA_SSE2);
}
#endif
#endif

typedef int (*pass_runner)(const lane_job *, int);
static pass_runner runner;    /* chosen by nw_lanes_set_simd (NW_SIMD_AUTO at the first coder made) */
static int runner_simd;

int nw_lanes_set_simd(int simd) {
    int best = NW_SIMD_SCALAR;
#if defined(__SSE2__)
    best = NW_SIMD_SSE2;
#if defined(HAVE_AVX2_BUILD)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) best = NW_SIMD_AVX2;
#endif
#endif
    if (simd == NW_SIMD_AUTO) simd = best;
    if (simd < NW_SIMD_SCALAR || simd > best) return NW_ERR_ARGUMENT;
    pass_runner chosen = run_scalar;
#if defined(__SSE2__)
    if (simd == NW_SIMD_SSE2) chosen = run_sse2;
#if defined(HAVE_AVX2_BUILD)
    if (simd == NW_SIMD_AVX2) chosen = run_avx2;
#endif
#endif
    runner = chosen;
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
    size_t cursor[CODERS], n = 0;
    for (int k = 0; k < CODERS; k++) {
        for (int i = 0; i < 4; i++) out[n++] = lc->co[k].enc.out[i];
        cursor[k] = 4;
    }
    for (size_t i = 0; i < lc->n_events; i++) {
        int k = lc->events[i];
        out[n++] = lc->co[k].enc.out[cursor[k]++];
    }
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
    if (rebuilt && !(flags & NW_FLAG_STORED)) nw_put_u32(out + 18, nw_block_crc(out, rebuilt, n, ch, ch));
    else nw_put_u32(out + 18, nw_block_crc(out, samples, n, ch, stride));
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
    if (status == NW_OK && nw_block_crc(in, samples, info->n_samples, info->channels, stride) != info->crc32)
        status = NW_ERR_CHECKSUM;
    if (status != NW_OK) { d->version = 0; return status; }
    d->version = NW_LANE_FORMAT_VERSION;
    d->next_index = info->index + 1;
    return NW_OK;
}
