/*
 * The lane format's kernel: a block's samples through the model, LANES channels side by
 * side. Included twice: by nw_lanes.c (scalar and SSE2 code) and by nw_lanes_avx2.c, which
 * builds it for AVX2 so that every helper, the shared model's too, inlines into it. Internal.
 */
#ifndef NW_LANES_KERNEL_H
#define NW_LANES_KERNEL_H

#include "nw_lanes.h"
#include "nw_model.h"

#define LANES NW_LANES
#define CODERS NW_LANE_CODERS
#define PAIRS (TAPS / 2)
/* Zero bytes the encoder may drop from the end of the coded bytes (the decoder reads zeros
 * past the end): each coder's flush ends in three zero bytes, and they fall near the end. */
#define TRIM_LIMIT (4 * CODERS)
/* A sample the AVX2 short paths leave to model_code. */
#define NOT_CODED ((size_t)-1)

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

enum isa { ISA_SCALAR, ISA_SSE2, ISA_AVX2 };   /* ISA_AVX2: SSE2 predictor, AVX2 coding */

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

/* Four int32 the scalar lane code has just stored one by one: read one by one too, as a
 * vector load of them would wait for the stores to reach the cache (no store forwarding). */
static inline __m128i load4_fresh(const int32_t *v) { return _mm_setr_epi32(v[0], v[1], v[2], v[3]); }

static inline __m128i finish_prediction(__m128i acc, const int32_t *last, const int32_t *dshift,
                                        const int32_t *top_q) {
    __m128i t = _mm_srai_epi32(acc, WEIGHT_SHIFT - FRACTION_BITS);
    __m128i linear = _mm_cmpgt_epi32(_mm_loadu_si128((const __m128i *)dshift), _mm_setzero_si128());
    t = select_si128(linear, _mm_slli_epi32(t, 6), t);
    __m128i q = _mm_add_epi32(_mm_slli_epi32(load4_fresh(last), FRACTION_BITS), t);
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

/* The 8 lanes' weight update by their packed 16-bit steps, then `deltas` (the 8 newest
 * deltas, packed) pushed onto the history. The AVX2 path has its own (apply_update_avx2). */
static inline void apply_update(lane_group *gr, __m128i st, __m128i deltas) {
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
    _mm_storeu_si128((__m128i *)gr->deltas[0], deltas);
}

static inline void update_sse2(lane_group *gr, const int32_t *step, const int32_t *delta) {
    /* Steps fit 16 bits (nlms_step clamps them), so packing them is exact. */
    apply_update(gr, _mm_packs_epi32(load4_fresh(step), load4_fresh(step + 4)),
                 _mm_packs_epi32(load4_fresh(delta), load4_fresh(delta + 4)));
}
#endif

HOT void predict(const lane_group *gr, const lane_domain *dom, int32_t *pred_q, const int isa) {
#if defined(__SSE2__)
    if (isa != ISA_SCALAR) { predict_sse2(gr, dom, pred_q); return; }
#endif
    (void)isa;
    predict_scalar(gr, dom, pred_q);
}

HOT void update(lane_group *gr, const int32_t *step, const int32_t *delta, const int isa) {
#if defined(__SSE2__)
    if (isa != ISA_SCALAR) { update_sse2(gr, step, delta); return; }
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
    int direct;                   /* encoding: the coders are in direct form (below) */
} lane_coders;

/* How many times an encoder has shifted out a byte: each shift writes the cached byte and
 * any pending ones, or adds one pending byte; the very first writes nothing. */
static inline size_t shifts(const range_encoder *rc) {
    return rc->pos + (size_t)rc->pending + (rc->first ? 0 : 1);
}

/* ---- the encoders' direct form ------------------------------------------------------------
 * The range encoder of nw_model.h holds back the last byte and any 0xFF bytes after it, in
 * case a carry reaches them (LZMA's scheme). The AVX2 grid steps keep the same coder in a
 * cheaper form that writes every shifted byte at once, the top bytes of `low` as one 32-bit
 * store, and adds a carry into the bytes already written. Both write the base-256 digits of
 * the same number, so the bytes are the same. In direct form `low` is below 2^32, `pos` counts
 * every shift (`shifts` of the other form), `cache`, `pending` and `first` are unused, and
 * once `overflow` is set (the block will be stored) nothing is written any more. */
static inline void coder_to_direct(range_encoder *rc) {
    const uint8_t carry = (uint8_t)(rc->low >> 32);
    if (!rc->first) rc_put(rc, (uint8_t)(rc->cache + carry));
    for (; rc->pending; rc->pending--) rc_put(rc, (uint8_t)(0xFF + carry));
    rc->low &= 0xFFFFFFFFu;
    if (rc->pos > rc->cap) rc->overflow = 1;
}

static inline void coder_from_direct(range_encoder *rc) {
    const size_t pos = rc->pos;
    size_t q = pos;
    if (!rc->overflow)
        while (q > 0 && rc->out[q - 1] == 0xFF) q--;
    else if (q > 0)
        q = 1;   /* nothing is written any more: only the count of shifts matters */
    rc->first = q == 0;
    rc->cache = q == 0 || rc->overflow ? 0 : rc->out[q - 1];
    rc->pending = pos - q;
    rc->pos = q == 0 ? 0 : q - 1;
}

static inline void coders_direct(lane_coders *lc, int direct) {
    if (lc->direct == direct) return;
    for (int k = 0; k < CODERS; k++) {
        if (direct) coder_to_direct(&lc->co[k].enc);
        else coder_from_direct(&lc->co[k].enc);
    }
    lc->direct = direct;
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

#if defined(NW_LANES_AVX2)
#include <immintrin.h>

/* model_code's weighting for a direct symbol, 16 symbols per vector: the sum of all 2*HALF
 * weighted counts, the sum of those below `symbol`, and its own. Same integers as weigh()
 * and sum_below() (every sum fits 16 bits, see weigh). */
static inline void weigh_direct_avx2(const uint16_t *freq, const uint16_t *width, int symbol,
                                          uint32_t *all, uint32_t *below, uint32_t *own) {
    const __m256i one = _mm256_set1_epi16(1);
    __m256i g0 = _mm256_add_epi16(_mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)freq),
                                                     _mm256_loadu_si256((const __m256i *)width)), one);
    __m256i g1 = _mm256_add_epi16(_mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)(freq + 16)),
                                                     _mm256_loadu_si256((const __m256i *)(width + 16))), one);
    uint16_t g[2 * HALF];
    _mm256_storeu_si256((__m256i *)g, g0);
    _mm256_storeu_si256((__m256i *)(g + 16), g1);
    const __m256i key = _mm256_set1_epi16((int16_t)symbol);
    const __m256i index0 = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i index1 = _mm256_add_epi16(index0, _mm256_set1_epi16(16));
    __m256i a = _mm256_add_epi16(g0, g1);
    __m256i b = _mm256_add_epi16(_mm256_and_si256(g0, _mm256_cmpgt_epi16(key, index0)),
                                 _mm256_and_si256(g1, _mm256_cmpgt_epi16(key, index1)));
    __m128i a8 = _mm_add_epi16(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    __m128i b8 = _mm_add_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    /* Both summed side by side: lanes 0-3 carry a, 4-7 b. */
    __m128i t = _mm_add_epi16(_mm_unpacklo_epi64(a8, b8), _mm_unpackhi_epi64(a8, b8));
    t = _mm_add_epi16(t, _mm_srli_epi64(t, 32));
    t = _mm_add_epi16(t, _mm_srli_epi64(t, 16));
    *all = (uint32_t)_mm_extract_epi16(t, 0);
    *below = (uint32_t)_mm_extract_epi16(t, 4);
    *own = g[symbol];
}

/* The predictor of update_sse2 and predict_sse2 on 256-bit vectors, for a group's run of
 * time steps. Same integers.
 *
 * A tap pair of all eight lanes is one vector, (d[k], d[k+1]) interleaved per lane: the
 * layout of weights[p] when k = 2p. After a time step the history moves on by one tap, so the
 * pairs the next prediction multiplies, (d'[2p], d'[2p+1]) = (d[2p-1], d[2p]), are the odd
 * pairs of the history before. The run therefore keeps every overlapping pair Q_k =
 * (d[k], d[k+1]), k = 0..TAPS-2, newest first in a ring on the stack: a step writes one new
 * pair (the new delta beside the old d[0]) in front of the others instead of moving the
 * history, and reads pairs without shuffling them. lane_group keeps its plain layout between
 * runs (pairs_load, pairs_store), so the state is the same whatever code ran. */
#define PAIR_SPAN (TAPS - 1)          /* the live pairs Q_0..Q_{TAPS-2} */
#define PAIR_RING (PAIR_SPAN + 48)    /* steps between two moves of the live pairs */
typedef struct pair_ring {
    __m256i q[PAIR_RING];             /* Q_k at q[at + k] */
    int at;
} pair_ring;

/* The pairs of the history in gr. */
static inline void pairs_load(const lane_group *gr, pair_ring *ring) {
    /* deltas[k] and deltas[k+1] are adjacent: [a0..a7 | b0..b7] becomes
     * [a0 b0 a1 b1 a2 b2 a3 b3 | a4 b4 ... a7 b7] */
    const __m256i order = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                           0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    ring->at = PAIR_RING - PAIR_SPAN;
    for (int k = 0; k < PAIR_SPAN; k++) {
        const __m256i v = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)gr->deltas[k]), 0xD8);
        ring->q[ring->at + k] = _mm256_shuffle_epi8(v, order);
    }
}

/* The history back in gr's layout: rows 2p and 2p+1 are Q_2p taken apart. */
static inline void pairs_store(lane_group *gr, const pair_ring *ring) {
    const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                           0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    for (int p = 0; p < PAIRS; p++)
        _mm256_storeu_si256((__m256i *)gr->deltas[2 * p],
                            _mm256_permute4x64_epi64(_mm256_shuffle_epi8(ring->q[ring->at + 2 * p], order), 0xD8));
}

/* The prediction from the sums of products acc (predict_scalar's tail). */
static inline __m256i prediction_avx2(__m256i acc, __m256i last, const lane_domain *dom) {
    /* dshift is 0 or 6, so the shift is predict_scalar's multiplication by 1 << dshift */
    __m256i t = _mm256_sllv_epi32(_mm256_srai_epi32(acc, WEIGHT_SHIFT - FRACTION_BITS),
                                  _mm256_loadu_si256((const __m256i *)dom->dshift));
    __m256i q = _mm256_add_epi32(_mm256_slli_epi32(last, FRACTION_BITS), t);
    return _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), _mm256_loadu_si256((const __m256i *)dom->top_q));
}

/* The first prediction of a run. */
static inline __m256i predict_ring_avx2(const lane_group *gr, const pair_ring *ring, const lane_domain *dom) {
    __m256i acc = _mm256_setzero_si256();
    for (int p = 0; p < PAIRS; p++)
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)gr->weights[p]),
                                                      ring->q[ring->at + 2 * p]));
    return prediction_avx2(acc, _mm256_loadu_si256((const __m256i *)gr->last), dom);
}

/* After a time step of a group, from the samples x (domain units): for each lane the NLMS
 * step (nlms_step, eight at once: the same integers), the new delta, energy and last sample,
 * the weight update of update_sse2 and the history's move; returns the next step's
 * prediction, computed as the weights are updated. */
static inline __m256i finish_step_avx2(lane_group *gr, pair_ring *ring, const __m256i xv, const __m256i pred_q,
                                       const lane_domain *dom) {
    const __m256i dshift = _mm256_loadu_si256((const __m256i *)dom->dshift);
    __m256i err = _mm256_sub_epi32(_mm256_slli_epi32(xv, FRACTION_BITS), pred_q);
    err = _mm256_min_epi32(_mm256_max_epi32(err, _mm256_set1_epi32(-(1 << 20))), _mm256_set1_epi32(1 << 20));
    __m256i energy = _mm256_loadu_si256((const __m256i *)gr->energy);
    /* energy + 64 < 2^24 (16 deltas of at most 1023 squared), so its float is exact and the
     * exponent is floor(log2). */
    const __m256i e = _mm256_add_epi32(energy, _mm256_set1_epi32(64));
    const __m256i n = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(e)), 23), _mm256_set1_epi32(127));
    const __m256i seven = _mm256_set1_epi32(7), zero = _mm256_setzero_si256();
    __m256i m = _mm256_srlv_epi32(e, _mm256_max_epi32(_mm256_sub_epi32(n, seven), zero));
    m = _mm256_sllv_epi32(m, _mm256_max_epi32(_mm256_sub_epi32(seven, n), zero));
    const __m256i gain = _mm256_i32gather_epi32((const int *)nw_reciprocal, _mm256_sub_epi32(m, _mm256_set1_epi32(128)), 4);
    /* floor(err x gain / 2^S), S = (n - 2) + (20 + dshift) as nlms_step's two shifts make it;
     * for a negative err, -ceil(|err| x gain / 2^S). |err| x gain < 2^52, the quotient < 2^28. */
    const __m256i shift = _mm256_add_epi32(n, _mm256_add_epi32(dshift, _mm256_set1_epi32(34 - WEIGHT_SHIFT + FRACTION_BITS + MU_SHIFT - 16 + UPDATE_SHIFT - 2)));
    const __m256i a = _mm256_abs_epi32(err), neg = _mm256_cmpgt_epi32(zero, err);
    const __m256i low32 = _mm256_set1_epi64x(0xFFFFFFFF), one = _mm256_set1_epi64x(1);
    const __m256i s_even = _mm256_and_si256(shift, low32), s_odd = _mm256_srli_epi64(shift, 32);
    __m256i p_even = _mm256_mul_epu32(a, gain);
    __m256i p_odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(gain, 32));
    p_even = _mm256_add_epi64(p_even, _mm256_and_si256(_mm256_shuffle_epi32(neg, 0xA0),
                                                       _mm256_sub_epi64(_mm256_sllv_epi64(one, s_even), one)));
    p_odd = _mm256_add_epi64(p_odd, _mm256_and_si256(_mm256_shuffle_epi32(neg, 0xF5),
                                                     _mm256_sub_epi64(_mm256_sllv_epi64(one, s_odd), one)));
    __m256i q = _mm256_blend_epi32(_mm256_srlv_epi64(p_even, s_even),
                                   _mm256_slli_epi64(_mm256_srlv_epi64(p_odd, s_odd), 32), 0xAA);
    __m256i step = _mm256_sign_epi32(q, err);
    step = _mm256_min_epi32(_mm256_max_epi32(step, _mm256_set1_epi32(-32767)), _mm256_set1_epi32(32767));

    if (ring->at == 0) {   /* the live pairs to the ring's end, for the new one in front */
        for (int k = PAIR_SPAN - 1; k >= 0; k--) ring->q[PAIR_RING - PAIR_SPAN + k] = ring->q[k];
        ring->at = PAIR_RING - PAIR_SPAN;
    }
    const __m256i *old = ring->q + ring->at;   /* Q_k before the step; Q'_k = old[k - 1] after */
    const __m256i last = _mm256_loadu_si256((const __m256i *)gr->last);
    const __m256i delta = _mm256_srav_epi32(_mm256_sub_epi32(xv, last), dshift);
    /* the oldest delta, d[TAPS-1] of each lane: the high half of its 32 bits in Q_{TAPS-2} */
    const __m256i oldest = _mm256_srai_epi32(old[PAIR_SPAN - 1], 16);
    energy = _mm256_add_epi32(energy, _mm256_sub_epi32(_mm256_mullo_epi32(delta, delta), _mm256_mullo_epi32(oldest, oldest)));
    _mm256_storeu_si256((__m256i *)gr->energy, energy);
    _mm256_storeu_si256((__m256i *)gr->last, xv);
    /* Q'_0: the new delta (within 16 bits) in each lane's low half, the old d[0] above it */
    const __m256i front = _mm256_blend_epi16(_mm256_slli_epi32(old[0], 16), delta, 0x55);

    /* [s0 s0 s1 s1 ... s7 s7]: each lane's step against both taps of a pair (steps fit 16 bits) */
    const __m256i st = _mm256_blend_epi16(step, _mm256_slli_epi32(step, 16), 0xAA);
    __m256i acc = _mm256_setzero_si256();
    for (int p = 0; p < PAIRS; p++) {
        __m256i *w = (__m256i *)gr->weights[p];
        /* weight_step's (step x (delta << UPDATE_SHIFT) + 2^15) >> 16 is the rounded
         * (step x (delta << (UPDATE_SHIFT - 1)) + 2^14) >> 15 of a multiply-high-round (the
         * product is halved exactly, and rounding after flooring by 2^14 loses nothing) */
        const __m256i half_u = _mm256_slli_epi16(old[2 * p], UPDATE_SHIFT - 1);
        const __m256i wp = _mm256_adds_epi16(_mm256_loadu_si256(w), _mm256_mulhrs_epi16(st, half_u));
        _mm256_storeu_si256(w, wp);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(wp, p == 0 ? front : old[2 * p - 1]));
    }
    ring->at--;
    ring->q[ring->at] = front;
    return prediction_avx2(acc, xv, dom);
}

/* One grid sample of a lossless block, encoded: model_code(PASS_ENCODE, grid) in short when
 * the residual is a direct symbol (nearly always). Returns the number of times the encoder
 * shifted, or NOT_CODED (nothing changed) when model_code must code the sample. */
HOT size_t encode_grid_sample_avx2(channel_state *s, coder *co, int16_t value,
                                   int32_t pred_q, int32_t *x_out) {
    const int32_t pred = (pred_q + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS;
    const int32_t flip = ((pred_q - (pred << FRACTION_BITS)) >> 31) | 1;
    const int k = grid_code(value);
    const int32_t r = flip * (k - pred);
    if (k < 0 || r < -HALF || r >= HALF) {
        return NOT_CODED;
    }
    int32_t act = s->activity >> 2;
    const int ctx = nw_context_of_activity[act > 255 ? 255 : act];
    uint16_t *freq = s->main_freq[ctx];
    const uint16_t *width = flip > 0 ? nw_weight_up + pred : nw_weight_down + (GRID_CODES - 1 - pred);
    const int symbol = r + HALF;
    uint32_t all, below, own;
    weigh_direct_avx2(freq, width, symbol, &all, &below, &own);
    const uint32_t f_neg = (freq[SYM_BIG_NEG] >> 1) + 1, f_pos = (freq[SYM_BIG_POS] >> 1) + 1,
                   f_esc = (freq[SYM_ESCAPE] >> 1) + 1;
    range_encoder *rc = &co->enc;
    const uint32_t step = rc->range / (f_neg + all + f_pos + f_esc);
    rc->low += (uint64_t)step * (f_neg + below);
    rc->range = step * own;
    /* rc_encode's normalisation, which shifts once per byte the range fell below 2^32 */
    const size_t count = (size_t)(rc->range < RANGE_TOP) + (rc->range < (1u << 16)) + (rc->range < (1u << 8));
    while (rc->range < RANGE_TOP) { rc->range <<= 8; rc_shift_low(rc); }
    adapt(freq, &s->main_total[ctx], MAIN_SYMBOLS, symbol, MAIN_INCREMENT, MAIN_LIMIT);
    const int32_t mag = r < 0 ? -r : r;
    s->activity += ((mag << 4) - s->activity) >> ACT_SHIFT;
    *x_out = k;
    return count;
}

/* Running sums within each 128-bit half of 16-bit lanes, then carried across the halves:
 * the inclusive prefix sums of 16 counts. */
static inline __m256i prefix16_avx2(__m256i v) {
    v = _mm256_add_epi16(v, _mm256_slli_si256(v, 2));
    v = _mm256_add_epi16(v, _mm256_slli_si256(v, 4));
    v = _mm256_add_epi16(v, _mm256_slli_si256(v, 8));
    return _mm256_add_epi16(v, _mm256_permute2x128_si256(_mm256_set1_epi16(0), _mm256_shuffle_epi8(v,
        _mm256_set1_epi16(0x0F0E)), 0x20));
}

/* The running sums of the 2*HALF direct symbols' weighted counts, in two vectors (*p0, *p1)
 * and in sums (sums[i + 1] up to symbol i; the caller's sums[0] is 0); returns the sum of all. Same
 * integers as weigh() (every sum fits 16 bits, see weigh). */
HOT uint32_t direct_sums_avx2(const uint16_t *freq, const uint16_t *width, uint16_t *sums,
                              __m256i *p0, __m256i *p1) {
    const __m256i one = _mm256_set1_epi16(1);
    *p0 = prefix16_avx2(_mm256_add_epi16(_mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)freq),
                                         _mm256_loadu_si256((const __m256i *)width)), one));
    *p1 = prefix16_avx2(_mm256_add_epi16(_mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)(freq + 16)),
                                         _mm256_loadu_si256((const __m256i *)(width + 16))), one));
    /* the lower half's sum, in every lane */
    *p1 = _mm256_add_epi16(*p1, _mm256_permute4x64_epi64(_mm256_shuffle_epi8(*p0, _mm256_set1_epi16(0x0F0E)), 0xFF));
    _mm256_storeu_si256((__m256i *)(sums + 1), *p0);
    _mm256_storeu_si256((__m256i *)(sums + 1 + HALF), *p1);
    return (uint32_t)_mm256_extract_epi16(*p1, 15);
}

/* The direct symbol whose running sums bracket t (below the sum of all): find_direct's. */
HOT int find_direct_avx2(__m256i p0, __m256i p1, uint32_t t) {
    /* the sums rise, so the lanes above the target (max(sum, t + 1) = sum, unsigned; t + 1
     * fits 16 bits as t is below a 16-bit sum) are the top ones and the first of them is the
     * symbol */
    const __m256i key = _mm256_set1_epi16((int16_t)(t + 1));
    /* the two masks packed to a byte per symbol (the pack interleaves the 128-bit halves,
     * the permutation puts them back in order) */
    const __m256i above = _mm256_permute4x64_epi64(_mm256_packs_epi16(
        _mm256_cmpeq_epi16(_mm256_max_epu16(p0, key), p0), _mm256_cmpeq_epi16(_mm256_max_epu16(p1, key), p1)), 0xD8);
    return __builtin_ctz((uint32_t)_mm256_movemask_epi8(above));
}

/* One grid sample of a lossless block, decoded: model_code(PASS_DECODE, grid) in short when
 * the symbol is a direct one (nearly always), by direct_sums_avx2 and find_direct_avx2.
 * Returns 1 when it decoded the sample, 0 when model_code must (nothing changed yet), -1 on
 * a value outside the grid. */
HOT int decode_grid_sample_avx2(channel_state *s, range_decoder *rd, int16_t *value,
                                          int32_t pred_q, int32_t *x_out) {
    const int32_t pred = (pred_q + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS;
    const int32_t flip = ((pred_q - (pred << FRACTION_BITS)) >> 31) | 1;
    int32_t act = s->activity >> 2;
    const int ctx = nw_context_of_activity[act > 255 ? 255 : act];
    uint16_t *freq = s->main_freq[ctx];
    const uint16_t *width = flip > 0 ? nw_weight_up + pred : nw_weight_down + (GRID_CODES - 1 - pred);
    uint16_t sums[1 + 2 * HALF];
    sums[0] = 0;
    __m256i p0, p1;
    const uint32_t all = direct_sums_avx2(freq, width, sums, &p0, &p1);
    const uint32_t f_neg = (freq[SYM_BIG_NEG] >> 1) + 1, f_pos = (freq[SYM_BIG_POS] >> 1) + 1,
                   f_esc = (freq[SYM_ESCAPE] >> 1) + 1;
    uint32_t r, target = rd_target(rd, f_neg + all + f_pos + f_esc, &r);
    if (target < f_neg || target - f_neg >= all) return 0;
    const int symbol = find_direct_avx2(p0, p1, target - f_neg);
    const uint32_t below = sums[symbol];
    rd_take(rd, r, f_neg + below, sums[symbol + 1] - below);
    adapt(freq, &s->main_total[ctx], MAIN_SYMBOLS, symbol, MAIN_INCREMENT, MAIN_LIMIT);
    const int32_t res = symbol - HALF;
    const int32_t x = pred + flip * res;
    if (x < 0 || x > GRID_CODES - 1) return -1;
    *value = nw_code_value[x];
    const int32_t mag = res < 0 ? -res : res;
    s->activity += ((mag << 4) - s->activity) >> ACT_SHIFT;
    *x_out = x;
    return 1;
}

/* ---- a time step of a whole group of grid channels, lossless: the stream's usual case ----
 * What each lane's coding needs from its own state alone (prediction, mirror, context, count
 * row, width row; encoding: the grid code, the symbol and the next activity) is computed for
 * the eight lanes at once, with model_code's integers; the loop over the lanes then only
 * weighs, codes and counts. A lane whose residual is not a direct symbol goes to model_code. */
typedef struct grid_step {
    int32_t pred_q[LANES];
    int32_t freq_at[LANES];       /* byte offsets from the group's first channel_state: the count row */
    int32_t total_at[LANES];      /* and its total */
    const uint16_t *width[LANES]; /* the widths row: nw_weight_up, or nw_weight_down when mirrored */
    int32_t f_neg[LANES];         /* the escape-side counts (f >> 1) + 1: big-negative's */
    int32_t f_side[LANES];        /* and the sum of all three */
    int32_t pred[LANES];
    int32_t symbol[LANES];        /* encode */
    int32_t activity[LANES];      /* encode: after the sample, when its symbol is a direct one */
    uint32_t down;                /* bit l: lane l's residual is mirrored (flip -1) */
} grid_step;

/* Byte offset of each lane's channel_state from the group's first. */
static inline __m256i lane_offsets_avx2(void) {
    const int size = (int)sizeof(channel_state);
    return _mm256_setr_epi32(0, size, 2 * size, 3 * size, 4 * size, 5 * size, 6 * size, 7 * size);
}

/* The lanes' activities, as the grid steps carry them from one step to the next. */
static inline __m256i lane_activity_avx2(const channel_state *states) {
    return _mm256_i32gather_epi32((const int *)(const void *)&states->activity, lane_offsets_avx2(), 1);
}

/* nw_context_of_activity[a], a = min(act >> 2, 255), of each lane, without a gather (which
 * would lengthen the chain from one time step's samples to the next step's counts): the
 * table's first 16 entries by a byte shuffle (the index is a's low byte, its three zero bytes
 * pick entry 0, context 0), and for a above 15 the number of the contexts' lower bounds
 * above 15 x 4 that a x 4 reaches, added by comparing. */
static inline __m256i context_avx2(__m256i act) {
    static const uint16_t bounds[CONTEXTS + 1] = {CONTEXT_BOUNDS};
    const __m256i a = _mm256_srai_epi32(act, 2);   /* the activity is never negative */
    const __m256i first = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)nw_context_of_activity));
    __m256i ctx = _mm256_shuffle_epi8(first, _mm256_min_epi32(a, _mm256_set1_epi32(15)));
    for (int c = 1; c < CONTEXTS; c++) {
        const int least = (bounds[c] + 3) / 4;   /* the least a whose a x 4 reaches the bound */
        if (least > 15) ctx = _mm256_sub_epi32(ctx, _mm256_cmpgt_epi32(a, _mm256_set1_epi32(least - 1)));
    }
    return ctx;
}

typedef char freq_row_is_forty[FREQ_ROW == 40 ? 1 : -1];   /* grid_step_prepare's row offsets */

/* Fills the lane-wise fields of st shared by both passes from the lanes' activities `act`;
 * returns the predictions rounded (in *pred) and the mirrored lanes' mask (in *down). */
static inline void grid_step_prepare(const channel_state *states, __m256i pred_q, grid_step *st,
                                     __m256i act, __m256i *pred, __m256i *down) {
    const __m256i lane_at = lane_offsets_avx2();
    const __m256i ctx = context_avx2(act);
    /* ctx x FREQ_ROW x 2 bytes (see freq_row_is_forty) */
    const __m256i freq_at = _mm256_add_epi32(lane_at, _mm256_add_epi32(_mm256_slli_epi32(ctx, 6), _mm256_slli_epi32(ctx, 4)));
    _mm256_storeu_si256((__m256i *)st->freq_at, freq_at);
    _mm256_storeu_si256((__m256i *)st->total_at,
                        _mm256_add_epi32(_mm256_add_epi32(lane_at, _mm256_set1_epi32((int)offsetof(channel_state, main_total))),
                                         _mm256_slli_epi32(ctx, 2)));
    *pred = _mm256_srai_epi32(_mm256_add_epi32(pred_q, _mm256_set1_epi32(1 << (FRACTION_BITS - 1))), FRACTION_BITS);
    /* flip = -1 where the prediction's fraction, pred_q - pred x 16, is negative */
    *down = _mm256_cmpgt_epi32(_mm256_slli_epi32(*pred, FRACTION_BITS), pred_q);
    const __m256i at = _mm256_blendv_epi8(*pred, _mm256_sub_epi32(_mm256_set1_epi32(GRID_CODES - 1), *pred), *down);
    const __m256i up = _mm256_set1_epi64x((int64_t)(intptr_t)nw_weight_up);
    const __m256i mirrored = _mm256_set1_epi64x((int64_t)(intptr_t)nw_weight_down);
    for (int h = 0; h < 2; h++) {
        const __m256i at4 = _mm256_cvtepi32_epi64(h ? _mm256_extracti128_si256(at, 1) : _mm256_castsi256_si128(at));
        const __m256i down4 = _mm256_cvtepi32_epi64(h ? _mm256_extracti128_si256(*down, 1) : _mm256_castsi256_si128(*down));
        _mm256_storeu_si256((__m256i *)(void *)(st->width + 4 * h),
                            _mm256_add_epi64(_mm256_blendv_epi8(up, mirrored, down4), _mm256_slli_epi64(at4, 1)));
    }
    /* counts 32 and 33 of each lane's row, and 34 (35 is the row's padding) */
    const __m256i c32 = _mm256_i32gather_epi32((const int *)(const void *)states,
                                               _mm256_add_epi32(freq_at, _mm256_set1_epi32(2 * SYM_BIG_NEG)), 1);
    const __m256i c34 = _mm256_i32gather_epi32((const int *)(const void *)states,
                                               _mm256_add_epi32(freq_at, _mm256_set1_epi32(2 * SYM_ESCAPE)), 1);
    const __m256i low16 = _mm256_set1_epi32(0xFFFF), one = _mm256_set1_epi32(1);
    const __m256i f_neg = _mm256_add_epi32(_mm256_srli_epi32(_mm256_and_si256(c32, low16), 1), one);
    const __m256i f_pos = _mm256_add_epi32(_mm256_srli_epi32(c32, 17), one);
    const __m256i f_esc = _mm256_add_epi32(_mm256_srli_epi32(_mm256_and_si256(c34, low16), 1), one);
    _mm256_storeu_si256((__m256i *)st->f_neg, f_neg);
    _mm256_storeu_si256((__m256i *)st->f_side, _mm256_add_epi32(f_neg, _mm256_add_epi32(f_pos, f_esc)));
    _mm256_storeu_si256((__m256i *)st->pred_q, pred_q);
    _mm256_storeu_si256((__m256i *)st->pred, *pred);
    st->down = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(*down));
}

/* The residual's mirror: -v in the mirrored lanes (down all ones), v in the others. */
static inline __m256i mirror_avx2(__m256i v, __m256i down) {
    return _mm256_sub_epi32(_mm256_xor_si256(v, down), down);
}

/* The activity after a residual r: act + ((|r| << 4) - act) >> ACT_SHIFT. */
static inline __m256i next_activity_avx2(__m256i act, __m256i r) {
    return _mm256_add_epi32(act, _mm256_srai_epi32(_mm256_sub_epi32(_mm256_slli_epi32(_mm256_abs_epi32(r), 4), act), ACT_SHIFT));
}

/* Events of `count` shifts of coder k (see code_group). */
static inline void put_events(uint8_t *events, size_t events_cap, size_t *n_events, size_t count,
                              int k, int *overflow) {
    uint8_t *ev = events + *n_events;
    if (count <= 4 && events_cap - *n_events >= 4) {
        const uint32_t word = 0x01010101u * (uint32_t)k;
        memcpy(ev, &word, 4);
        *n_events += count;
    } else if (count <= events_cap - *n_events) {
        memset(ev, k, count);
        *n_events += count;
    } else {
        *overflow = 1;   /* larger than stored: the block is stored */
    }
}

/* The rare samples of a grid step that are not direct symbols, through model_code: out of
 * line, so that the eight copies of the lane loop stay small. Returns the encoder's shifts. */
static __attribute__((noinline)) size_t encode_other_sample(channel_state *s, coder *co, int16_t sample,
                                                            int32_t pred_q, int32_t *x) {
    coder_from_direct(&co->enc);
    const size_t before = shifts(&co->enc);
    model_code(s, co, PASS_ENCODE, &sample, 0, 1, pred_q, x);
    const size_t count = shifts(&co->enc) - before;
    coder_to_direct(&co->enc);
    return count;
}

/* adapt() past its usual case: the counts' halving. */
static __attribute__((noinline)) void rescale_counts(uint16_t *freq, uint32_t *total) {
    adapt(freq, total, MAIN_SYMBOLS, 0, 0, 0);   /* nothing added, every count halved */
}

#if defined(NW_LANES_AVX512)
/* adapt() for the direct symbols of a grid step's lanes in `lanes`, eight at once: each
 * lane's count (the 32 bits at it, the count and its neighbour, which the add leaves alone
 * as no count reaches 2^16 - MAIN_INCREMENT) and its row's total gathered, raised and
 * scattered back (the lanes' states are apart, so no two lanes share an address); a total
 * past MAIN_LIMIT halves its row as adapt() does. Then each lane's activity after the sample. */
static inline void count_direct_avx512(channel_state *states, const grid_step *st, __m256i symbol,
                                       __m256i activity, __mmask8 lanes) {
    const __m256i inc = _mm256_set1_epi32(MAIN_INCREMENT), zero = _mm256_setzero_si256();
    const __m256i freq_at = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)st->freq_at),
                                             _mm256_add_epi32(symbol, symbol));
    const __m256i total_at = _mm256_loadu_si256((const __m256i *)st->total_at);
    const __m256i count = _mm256_mmask_i32gather_epi32(zero, lanes, freq_at, states, 1);
    const __m256i total = _mm256_add_epi32(_mm256_mmask_i32gather_epi32(zero, lanes, total_at, states, 1), inc);
    _mm256_mask_i32scatter_epi32(states, lanes, freq_at, _mm256_add_epi32(count, inc), 1);
    _mm256_mask_i32scatter_epi32(states, lanes, total_at, total, 1);
    _mm256_mask_i32scatter_epi32(&states->activity, lanes, lane_offsets_avx2(), activity, 1);
    for (uint32_t over = _mm256_mask_cmpgt_epu32_mask(lanes, total, _mm256_set1_epi32((int)MAIN_LIMIT)); over;
         over &= over - 1) {
        const int l = __builtin_ctz(over);
        rescale_counts((uint16_t *)(void *)((char *)states + st->freq_at[l]),
                       (uint32_t *)(void *)((char *)states + st->total_at[l]));
    }
}
#endif

/* A carry into the bytes a direct-form encoder has written. */
static __attribute__((noinline)) void direct_carry(range_encoder *rc, size_t pos) {
    if (rc->overflow) return;
    for (size_t i = pos; i-- > 0;)
        if (++rc->out[i] != 0) return;
}

static __attribute__((noinline)) int decode_other_sample(channel_state *s, coder *co, int16_t *value,
                                                         int32_t pred_q, int32_t *x) {
    return model_code(s, co, PASS_DECODE, value, 0, 1, pred_q, x);
}

/* A direct symbol of lane l of a grid step, encoded by a coder in direct form, and its
 * count and activity updated; returns the coder's shifts. `room`: the caller has checked
 * that the coder's buffer has room for the write (otherwise it is checked here). */
HOT size_t encode_direct(channel_state *s, range_encoder *rc, const grid_step *st, int l,
                         const int32_t *totals, const int32_t *cums, const int room) {
    uint16_t *freq = (uint16_t *)(void *)((char *)(s - l) + st->freq_at[l]);
    const int symbol = st->symbol[l];
    const uint32_t own = (((uint32_t)freq[symbol] * st->width[l][symbol]) >> 16) + 1;
    const uint32_t step = rc->range / (uint32_t)totals[l];
    const uint64_t low = rc->low + (uint64_t)step * (uint32_t)cums[l];
    const uint32_t range = step * own;
    if (low >> 32) direct_carry(rc, rc->pos);
    /* rc_encode's normalisation, which shifts once per byte the range fell below 2^32: the
     * top `count` bytes of low are written at once */
    const uint32_t bits = (uint32_t)__builtin_clz(range | 1) & 0x18;   /* 8 x renormal_bytes */
    const size_t count = bits >> 3;
    const uint32_t be = __builtin_bswap32((uint32_t)low);
    if (room || rc->pos + 4 <= rc->cap) memcpy(rc->out + rc->pos, &be, 4);
    else rc->overflow = 1;
    rc->pos += count;
    rc->low = (uint32_t)(low << bits);
    rc->range = range << bits;
#if !defined(NW_LANES_AVX512)   /* AVX-512 counts the whole step's lanes at once (count_direct_avx512) */
    /* adapt(), whose count update for a direct symbol is this one */
    uint32_t *total = (uint32_t *)(void *)((char *)(s - l) + st->total_at[l]);
    freq[symbol] = (uint16_t)(freq[symbol] + MAIN_INCREMENT);
    if ((*total += MAIN_INCREMENT) > MAIN_LIMIT) rescale_counts(freq, total);
    s->activity = st->activity[l];
#endif
    return count;
}

/* Lane l's weighted counts (g - 1, see weigh) of the 2*HALF direct symbols, added up by
 * position in *all (16 sums of two), and those below its symbol in *below. */
static inline void weigh_below_avx2(const channel_state *states, const grid_step *st, int l,
                                    __m256i *all, __m256i *below) {
    const __m256i index0 = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i index1 = _mm256_add_epi16(index0, _mm256_set1_epi16(16));
    const uint16_t *freq = (const uint16_t *)(const void *)((const char *)states + st->freq_at[l]);
    const uint16_t *width = st->width[l];
    const __m256i g0 = _mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)freq),
                                          _mm256_loadu_si256((const __m256i *)width));
    const __m256i g1 = _mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)(freq + 16)),
                                          _mm256_loadu_si256((const __m256i *)(width + 16)));
    const __m256i key = _mm256_set1_epi16((int16_t)st->symbol[l]);
    *all = _mm256_add_epi16(g0, g1);
    *below = _mm256_add_epi16(_mm256_and_si256(g0, _mm256_cmpgt_epi16(key, index0)),
                              _mm256_and_si256(g1, _mm256_cmpgt_epi16(key, index1)));
}

#if defined(NW_LANES_AVX512)
/* weigh_below_avx2 with the 32 counts in one 512-bit vector, those below the symbol picked
 * by a mask, then each folded to 16 sums of two as weigh_below_avx2 adds them. */
static inline void weigh_below_avx512(const channel_state *states, const grid_step *st, int l,
                                      __m256i *all, __m256i *below) {
    const uint16_t *freq = (const uint16_t *)(const void *)((const char *)states + st->freq_at[l]);
    const __m512i g = _mm512_mulhi_epu16(_mm512_loadu_si512(freq), _mm512_loadu_si512(st->width[l]));
    /* a lane that is not direct may hold any symbol: its sums are never used */
    const __m512i g_below = _mm512_maskz_mov_epi16(_bzhi_u32(~0u, (uint32_t)st->symbol[l]), g);
    *all = _mm256_add_epi16(_mm512_castsi512_si256(g), _mm512_extracti64x4_epi64(g, 1));
    *below = _mm256_add_epi16(_mm512_castsi512_si256(g_below), _mm512_extracti64x4_epi64(g_below, 1));
}
#endif

/* One time step of a whole grid group, encoded; returns the samples' codes (x). */
static __attribute__((noinline)) __m256i encode_grid_step_avx2(channel_state *states, lane_coders *lc, const int16_t *row,
                                  __m256i pred_q, __m256i *activity, uint64_t *channel_bytes, size_t events_cap,
                                  size_t *n_events) {
    grid_step st;
    __m256i pred, down;
    const __m256i act = *activity;
    grid_step_prepare(states, pred_q, &st, act, &pred, &down);
    const __m256i v = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)row));
    /* grid_code's estimate ((v + 32768) x 1023 + 32767) / 65535, the division as
     * (x + (x >> 16) + 1) >> 16 (the same for every 16-bit value, checked exhaustively) */
    const __m256i u = _mm256_add_epi32(v, _mm256_set1_epi32(32768));
    const __m256i x = _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(u, 10), u), _mm256_set1_epi32(32767));
    const __m256i k = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_srli_epi32(x, 16)),
                                                         _mm256_set1_epi32(1)), 16);
    /* nw_code_value[k]: the high half of the 32 bits ending at it, those of code 0 excepted
     * (the low half of the 32 bits starting at it); every read stays inside the table. */
    const __m256i zero = _mm256_setzero_si256(), first = _mm256_cmpeq_epi32(k, zero);
    const __m256i pair = _mm256_i32gather_epi32((const int *)(const void *)nw_code_value,
                                                _mm256_max_epi32(_mm256_sub_epi32(k, _mm256_set1_epi32(1)), zero), 2);
    const __m256i value = _mm256_blendv_epi8(_mm256_srai_epi32(pair, 16),
                                             _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16), first);
    const __m256i symbol = _mm256_add_epi32(mirror_avx2(_mm256_sub_epi32(k, pred), down), _mm256_set1_epi32(HALF));
    /* on the grid (the estimate is the code) and 0 <= symbol < 2 HALF */
    const __m256i direct = _mm256_and_si256(_mm256_cmpeq_epi32(value, v),
        _mm256_cmpeq_epi32(_mm256_min_epu32(symbol, _mm256_set1_epi32(2 * HALF - 1)), symbol));
    const uint32_t direct_lanes = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(direct));
    _mm256_storeu_si256((__m256i *)st.symbol, symbol);
    const __m256i next_act = next_activity_avx2(act, _mm256_sub_epi32(symbol, _mm256_set1_epi32(HALF)));
    _mm256_storeu_si256((__m256i *)st.activity, next_act);
    int32_t xs[LANES];
    _mm256_storeu_si256((__m256i *)xs, k);
    /* Every lane's weighted counts (g - 1, see weigh) summed, all of them and those below its
     * symbol, the eight lanes' sums at once, by a tree of horizontal adds (lane l's sums end
     * in 16-bit lane l; eight lanes, see sse2_layout_is_eight_lanes) built as the lanes are
     * weighed, so that few vectors are live at once; then total = sum + 2 HALF + escape
     * side, and cum = sum below + symbol + big-negative's count. A lane that is not direct
     * gets meaningless sums, never used. */
    __m256i all_v[LANES / 2], below_v[LANES / 2];
    for (int l = 0; l < LANES; l += 2) {
        __m256i a0, b0, a1, b1;
#if defined(NW_LANES_AVX512)
        weigh_below_avx512(states, &st, l, &a0, &b0);
        weigh_below_avx512(states, &st, l + 1, &a1, &b1);
#else
        weigh_below_avx2(states, &st, l, &a0, &b0);
        weigh_below_avx2(states, &st, l + 1, &a1, &b1);
#endif
        all_v[l / 2] = _mm256_hadd_epi16(a0, a1);
        below_v[l / 2] = _mm256_hadd_epi16(b0, b1);
    }
    const __m256i all_t = _mm256_hadd_epi16(_mm256_hadd_epi16(all_v[0], all_v[1]), _mm256_hadd_epi16(all_v[2], all_v[3]));
    const __m256i below_t = _mm256_hadd_epi16(_mm256_hadd_epi16(below_v[0], below_v[1]), _mm256_hadd_epi16(below_v[2], below_v[3]));
    const __m128i all8 = _mm_add_epi16(_mm256_castsi256_si128(all_t), _mm256_extracti128_si256(all_t, 1));
    const __m128i below8 = _mm_add_epi16(_mm256_castsi256_si128(below_t), _mm256_extracti128_si256(below_t, 1));
    int32_t totals[LANES], cums[LANES];
    _mm256_storeu_si256((__m256i *)totals, _mm256_add_epi32(_mm256_cvtepu16_epi32(all8),
        _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)st.f_side), _mm256_set1_epi32(2 * HALF))));
    _mm256_storeu_si256((__m256i *)cums, _mm256_add_epi32(_mm256_cvtepu16_epi32(below8),
        _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)st.f_neg), symbol)));
    uint8_t *events = lc->events;
    size_t n = *n_events;
    /* Room for every write of a step of direct symbols (at most 3 shifts each, two samples
     * per coder, a 4-byte store per sample): then the unrolled loop checks none. */
    int room = direct_lanes == (1u << LANES) - 1 && events_cap - n >= 4 * LANES;
    for (int c = 0; c < CODERS; c++)
        room &= lc->co[c].enc.cap - lc->co[c].enc.pos >= 4 + 2 * 3 && !lc->co[c].enc.overflow;
    if (room) {
#pragma GCC unroll 8
        for (int l = 0; l < LANES; l++) {
            const size_t count = encode_direct(&states[l], &lc->co[l % CODERS].enc, &st, l, totals, cums, 1);
            channel_bytes[l] += count;
            const uint32_t word = 0x01010101u * (uint32_t)(l % CODERS);
            memcpy(events + n, &word, 4);
            n += count;
        }
#if defined(NW_LANES_AVX512)
        count_direct_avx512(states, &st, symbol, next_act, 0xFF);
#endif
        *n_events = n;
        *activity = next_act;
        return k;
    }
    for (int l = 0; l < LANES; l++) {
        const int c = l % CODERS;
        const size_t count = direct_lanes >> l & 1
            ? encode_direct(&states[l], &lc->co[c].enc, &st, l, totals, cums, 0)
            : encode_other_sample(&states[l], &lc->co[c], row[l], st.pred_q[l], &xs[l]);
        channel_bytes[l] += count;
        put_events(events, events_cap, &n, count, c, &lc->overflow);
    }
#if defined(NW_LANES_AVX512)
    count_direct_avx512(states, &st, symbol, next_act, (__mmask8)direct_lanes);
#endif
    *n_events = n;
    if (direct_lanes == (1u << LANES) - 1) {
        *activity = next_act;
        return k;
    }
    *activity = lane_activity_avx2(states);   /* model_code's for the other lanes */
    return _mm256_setr_epi32(xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]);
}

/* rd_normalize, the next bytes read as one 32-bit word when four are left (the position
 * is at most last_word = len - 4). */
HOT void lane_normalize(range_decoder *rd, ptrdiff_t last_word) {
    if ((ptrdiff_t)rd->pos <= last_word) {
        /* 8 x renormal_bytes (the range is never 0, so neither is range | 1) */
        const uint32_t bits = (uint32_t)__builtin_clz(rd->range | 1) & 0x18;
        uint32_t word;
        memcpy(&word, rd->in + rd->pos, 4);
        word = __builtin_bswap32(word);
        rd->code = (uint32_t)(((uint64_t)rd->code << 32 | word) << bits >> 32);
        rd->range <<= bits;
        rd->pos += bits >> 3;
        return;
    }
    rd_normalize(rd);
}

/* The running sums of a lane's direct symbols, for a grid step's decoding: sums[15 + i] is
 * the sum of the weighted counts below symbol i (i = 0..2 HALF; sums[15] = 0 is the
 * caller's), the same integers as direct_sums_avx2. Vectors of the sums are stored whole at
 * 32-byte boundaries, so that each later read of one is inside one store. */
static inline void lane_sums_avx2(const uint16_t *freq, const uint16_t *width, uint16_t *sums) {
    /* within each 128-bit half, running sums of the counts without their + 1 */
    __m256i s0 = _mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)freq), _mm256_loadu_si256((const __m256i *)width));
    __m256i s1 = _mm256_mulhi_epu16(_mm256_loadu_si256((const __m256i *)(freq + 16)),
                                    _mm256_loadu_si256((const __m256i *)(width + 16)));
    s0 = _mm256_add_epi16(s0, _mm256_slli_si256(s0, 2));
    s1 = _mm256_add_epi16(s1, _mm256_slli_si256(s1, 2));
    s0 = _mm256_add_epi16(s0, _mm256_slli_si256(s0, 4));
    s1 = _mm256_add_epi16(s1, _mm256_slli_si256(s1, 4));
    s0 = _mm256_add_epi16(s0, _mm256_slli_si256(s0, 8));
    s1 = _mm256_add_epi16(s1, _mm256_slli_si256(s1, 8));
    /* the halves' sums a | b and c | d, in every lane of their half, carried forward:
     * [0 | a] onto the first vector, [a + b | a + b + c] onto the second; and the + 1 of
     * every count, as the running count of symbols */
    const __m256i last = _mm256_set1_epi16(0x0F0E);
    const __m256i ab = _mm256_shuffle_epi8(s0, last), cd = _mm256_shuffle_epi8(s1, last);
    const __m256i ones0 = _mm256_setr_epi16(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    const __m256i ones1 = _mm256_setr_epi16(17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32);
    s0 = _mm256_add_epi16(_mm256_add_epi16(s0, ones0), _mm256_permute2x128_si256(ab, ab, 0x08));
    s1 = _mm256_add_epi16(_mm256_add_epi16(s1, ones1),
                          _mm256_add_epi16(_mm256_add_epi16(ab, _mm256_permute2x128_si256(ab, ab, 0x01)),
                                           _mm256_permute2x128_si256(cd, cd, 0x08)));
    _mm256_store_si256((__m256i *)(void *)(sums + 16), s0);
    _mm256_store_si256((__m256i *)(void *)(sums + 32), s1);
}

#if defined(NW_LANES_AVX512)
/* lane_sums_avx2 on one 512-bit vector: the 32 running sums by five shifts across the whole
 * vector (by 1, 2, 4, 8 and 16 counts, zeros shifted in), each added. */
static const uint16_t shift_index_avx512[5][32] __attribute__((aligned(64))) = {
#define NW_SHIFTED(k) { (0 - k) & 31, (1 - k) & 31, (2 - k) & 31, (3 - k) & 31, (4 - k) & 31, (5 - k) & 31, \
    (6 - k) & 31, (7 - k) & 31, (8 - k) & 31, (9 - k) & 31, (10 - k) & 31, (11 - k) & 31, (12 - k) & 31, \
    (13 - k) & 31, (14 - k) & 31, (15 - k) & 31, (16 - k) & 31, (17 - k) & 31, (18 - k) & 31, (19 - k) & 31, \
    (20 - k) & 31, (21 - k) & 31, (22 - k) & 31, (23 - k) & 31, (24 - k) & 31, (25 - k) & 31, (26 - k) & 31, \
    (27 - k) & 31, (28 - k) & 31, (29 - k) & 31, (30 - k) & 31, (31 - k) & 31 }
    NW_SHIFTED(1), NW_SHIFTED(2), NW_SHIFTED(4), NW_SHIFTED(8), NW_SHIFTED(16)
#undef NW_SHIFTED
};
static const uint16_t symbol_count_avx512[32] __attribute__((aligned(64))) = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

static inline void lane_sums_avx512(const uint16_t *freq, const uint16_t *width, uint16_t *sums) {
    __m512i s = _mm512_mulhi_epu16(_mm512_loadu_si512(freq), _mm512_loadu_si512(width));
    for (int j = 0; j < 5; j++)
        s = _mm512_add_epi16(s, _mm512_maskz_permutexvar_epi16(~(__mmask32)0 << (1 << j),
                                                               _mm512_load_si512(shift_index_avx512[j]), s));
    _mm512_storeu_si512(sums + 16, _mm512_add_epi16(s, _mm512_load_si512(symbol_count_avx512)));
}

/* The direct symbol of target t from lane_sums_avx512's sums (running[i]: up to symbol i):
 * the number of those not above t (they rise, every count being at least 1). */
static inline int find_symbol_avx512(const uint16_t *running, uint32_t t) {
    return __builtin_popcount(_mm512_cmple_epu16_mask(_mm512_loadu_si512(running), _mm512_set1_epi16((int16_t)t)));
}
#endif

/* lane_normalize for a coder whose range and code are held apart from rd, and the position
 * too, as a pointer `*next` into rd's input (fewer registers in the decoder's lane loop);
 * `last`: the input's last 4-byte word (may be before its start). */
HOT void lane_normalize_at(range_decoder *rd, uint32_t *range, uint32_t *code, const uint8_t **next,
                           uintptr_t last) {
    if ((uintptr_t)*next <= last) {
        /* 8 x renormal_bytes (LZCNT: 32 for a range of 0, which no symbol leaves) */
        const uint32_t bits = (uint32_t)_lzcnt_u32(*range) & 0x18;
        uint32_t word;
        memcpy(&word, *next, 4);
        word = __builtin_bswap32(word);
        *code = (uint32_t)(((uint64_t)*code << 32 | word) << bits >> 32);
        *range <<= bits;
        *next += bits >> 3;
        return;
    }
    rd->range = *range;
    rd->code = *code;
    rd->pos = (size_t)(*next - rd->in);
    rd_normalize(rd);
    *range = rd->range;
    *code = rd->code;
    *next = rd->in + rd->pos;
}

/* One time step of a whole grid group, decoded into row; returns the samples' codes (x) in
 * *x_out, or NW_ERR_CORRUPT. Every lane's running sums first, which need no coder; then the
 * coders' chains, whose samples only divide, search those sums and count. `scratch`: the
 * caller's LANES x 48 counts, 32-byte aligned, 15 of each lane's zero. */
/* GCC's straight-line vectoriser packs the coders' ranges and codes two to a vector register
 * (it sees four of each loaded and stored side by side), so that every sample's chain took
 * them out of a vector, or from the stack, and put them back: kept out of this function. */
#if defined(__GNUC__) && !defined(__clang__)
#define SCALAR_CODERS __attribute__((optimize("no-tree-slp-vectorize")))
#else
#define SCALAR_CODERS
#endif
static __attribute__((noinline)) SCALAR_CODERS int decode_grid_step_avx2(channel_state *states, lane_coders *lc, int16_t *row, __m256i pred_q,
                              __m256i *activity, __m256i *x_out, uint16_t (*sums)[48]) {
    grid_step st;
    __m256i pred, down;
    const __m256i act = *activity;
    grid_step_prepare(states, pred_q, &st, act, &pred, &down);
    for (int l = 0; l < LANES; l++)
#if defined(NW_LANES_AVX512)
        lane_sums_avx512((const uint16_t *)(const void *)((const char *)states + st.freq_at[l]), st.width[l], sums[l]);
#else
        lane_sums_avx2((const uint16_t *)(const void *)((const char *)states + st.freq_at[l]), st.width[l], sums[l]);
#endif
    range_decoder rd = lc->input.dec;
    /* compared as addresses: the input's last word may be before its start (inputs under 4
     * bytes), never before address 4 */
    const uintptr_t last = (uintptr_t)rd.in + rd.len - 4;
    const uint8_t *in_at = rd.in + rd.pos;
    /* 64-bit slots, each in a register of its own (GCC packs an array of 32-bit ones two to
     * a register), holding 32-bit values */
    uint64_t range[CODERS], code[CODERS];
    for (int c = 0; c < CODERS; c++) {
        range[c] = lc->range[c];
        code[c] = lc->code[c];
    }
    uint32_t direct_lanes = 0;
    int32_t xs[LANES];
#pragma GCC unroll 8
    for (int l = 0; l < LANES; l++) {
        const int c = l % CODERS;
        const uint16_t *s = sums[l] + 15;
        const uint32_t all = s[2 * HALF];
        const uint32_t f_neg = (uint32_t)st.f_neg[l];
        /* rd_target's quotients; a target past the direct symbols (unsigned: before them
         * too, or past the total in a damaged block) goes to model_code, which takes them again */
        const uint32_t r = (uint32_t)range[c] / (all + (uint32_t)st.f_side[l]);
        const uint32_t target = (uint32_t)code[c] / r - f_neg;
        if (target < all) {
            /* the sums rise, so the symbol is the number of them with their own count that
             * are not above the target (min(sum, t) = sum, unsigned; t fits 16 bits as it is
             * below a 16-bit sum): the two masks packed to a byte per symbol, counted (the pack
             * interleaves the 128-bit halves, which a count does not mind) */
#if defined(NW_LANES_AVX512)
            const int symbol = find_symbol_avx512(s + 1, target);
#else
            const __m256i key = _mm256_set1_epi16((int16_t)target);
            const __m256i p0 = _mm256_load_si256((const __m256i *)(const void *)(s + 1));
            const __m256i p1 = _mm256_load_si256((const __m256i *)(const void *)(s + 1 + HALF));
            const __m256i reached = _mm256_packs_epi16(_mm256_cmpeq_epi16(_mm256_min_epu16(p0, key), p0),
                                                       _mm256_cmpeq_epi16(_mm256_min_epu16(p1, key), p1));
            const int symbol = __builtin_popcount((uint32_t)_mm256_movemask_epi8(reached));
#endif
            const uint32_t below = s[symbol];
            uint32_t range_c = r * (s[symbol + 1] - below), code_c = (uint32_t)code[c] - r * (f_neg + below);
            lane_normalize_at(&rd, &range_c, &code_c, &in_at, last);
            range[c] = range_c;
            code[c] = code_c;
#if !defined(NW_LANES_AVX512)   /* AVX-512 counts the step's direct lanes after the loop */
            /* adapt(), whose count update for a direct symbol is this one */
            uint16_t *freq = (uint16_t *)(void *)((char *)states + st.freq_at[l]);
            uint32_t *total = (uint32_t *)(void *)((char *)states + st.total_at[l]);
            freq[symbol] = (uint16_t)(freq[symbol] + MAIN_INCREMENT);
            if ((*total += MAIN_INCREMENT) > MAIN_LIMIT) rescale_counts(freq, total);
#endif
            xs[l] = symbol;   /* the lane's code is rebuilt from it after the loop */
            direct_lanes |= 1u << l;
        } else {
            rd.range = (uint32_t)range[c];
            rd.code = (uint32_t)code[c];
            rd.pos = (size_t)(in_at - rd.in);
            lc->input.dec = rd;
            if (decode_other_sample(&states[l], &lc->input, &row[l], st.pred_q[l], &xs[l]))
                return NW_ERR_CORRUPT;
            rd = lc->input.dec;
            range[c] = rd.range;
            code[c] = rd.code;
            in_at = rd.in + rd.pos;
        }
    }
    for (int c = 0; c < CODERS; c++) {
        lc->range[c] = (uint32_t)range[c];
        lc->code[c] = (uint32_t)code[c];
    }
    rd.pos = (size_t)(in_at - rd.in);
    lc->input.dec = rd;
    /* The direct lanes' codes, pred + residual mirrored, and their samples, eight at once. */
    /* read one by one, as the scalar code has just stored them (see load4_fresh) */
    const __m256i got = _mm256_setr_epi32(xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]);
    const __m256i moved = mirror_avx2(_mm256_sub_epi32(got, _mm256_set1_epi32(HALF)), down);   /* x - pred */
    const __m256i is_direct = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_set1_epi32((int)direct_lanes),
        _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)), _mm256_setzero_si256());
    const __m256i x = _mm256_blendv_epi8(got, _mm256_add_epi32(pred, moved), is_direct);
#if defined(NW_LANES_AVX512)
    const __mmask8 direct = (__mmask8)direct_lanes;
    const __m256i next_act = next_activity_avx2(act, moved);
    count_direct_avx512(states, &st, got, next_act, direct);
    *activity = direct == 0xFF ? next_act : lane_activity_avx2(states);   /* model_code's for the others */
    /* a code off the grid's ends (unsigned: below 0 too): only a damaged block decodes one */
    if (_mm256_cmpgt_epu32_mask(x, _mm256_set1_epi32(GRID_CODES - 1)))
        return NW_ERR_CORRUPT;
    /* the direct lanes' samples, nw_code_value[x]: as the encoder reads them (the high half
     * of the 32 bits ending at each, the low half of the first's) */
    const __m256i zero = _mm256_setzero_si256();
    const __m256i pair = _mm256_mmask_i32gather_epi32(zero, direct, _mm256_max_epi32(_mm256_sub_epi32(x, _mm256_set1_epi32(1)), zero),
                                                      (const void *)nw_code_value, 2);
    const __m256i value = _mm256_mask_blend_epi32(_mm256_cmpeq_epi32_mask(x, zero), _mm256_srli_epi32(pair, 16), pair);
    _mm256_mask_cvtepi32_storeu_epi16(row, direct, value);
    *x_out = x;
    return NW_OK;
#else
    /* a code off the grid's ends (unsigned: below 0 too): only a damaged block decodes one */
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_min_epu32(x, _mm256_set1_epi32(GRID_CODES - 1)), x)) != -1)
        return NW_ERR_CORRUPT;
    int32_t next[LANES], codes[LANES];
    const __m256i next_act = next_activity_avx2(act, moved);
    _mm256_storeu_si256((__m256i *)codes, x);
    _mm256_storeu_si256((__m256i *)next, next_act);
    for (int l = 0; l < LANES; l++)
        if (direct_lanes >> l & 1) {
            states[l].activity = next[l];
            row[l] = nw_code_value[codes[l]];
        }
    *activity = direct_lanes == (1u << LANES) - 1 ? next_act : lane_activity_avx2(states);
    *x_out = x;
    return NW_OK;
#endif
}
#endif

/* A stream's channel states do not fit the L2 cache of small cores. Coded a channel at a
 * time, they are read in order and the CPU fetches ahead by itself; coded side by side, a
 * group reads eight states at once, at rows that depend on each channel's activity, and the
 * CPU does not. So while a group is coded, what the next group will read first is fetched:
 * its predictor state, and per channel the count row its activity picks now. */
static inline void prefetch_group(const lane_state *ls, uint32_t g, uint32_t channels) {
#if defined(__GNUC__)
    if (g * LANES >= channels) return;
    const char *group = (const char *)&ls->group[g];
    for (size_t i = 0; i < sizeof *ls->group; i += 64) __builtin_prefetch(group + i);
    uint32_t end = g * LANES + LANES < channels ? g * LANES + LANES : channels;
    for (uint32_t c = g * LANES; c < end; c++) {
        const channel_state *s = &ls->channel[c];
        int32_t act = s->activity >> (s->domain == DOMAIN_GRID ? 2 : 8);
        const uint16_t *row = s->main_freq[nw_context_of_activity[act > 255 ? 255 : act]];
        __builtin_prefetch(row);
        __builtin_prefetch(row + FREQ_ROW - 1);
        __builtin_prefetch(s->main_total);
    }
#else
    (void)ls; (void)g; (void)channels;
#endif
}

/* The block's samples of group g, a time step at a time. `pass`, `bounded` and `all_grid`
 * (every channel of the group in the grid domain, as nearly always) are constants, so each
 * combination gets its own loop, with one copy of the model in it. */
HOT int code_group(const lane_job *job, uint32_t g, const lane_domain *dom, int active,
                   const int pass, const int bounded, const int isa, const int all_grid) {
    lane_state *ls = job->ls;
    lane_coders *lc = job->lc;
    const int32_t max_error = bounded ? job->max_error : 0;
    lane_group *gr = &ls->group[g];
    const uint32_t first = g * LANES;
    int32_t pred_q[LANES], step[LANES] = {0}, delta[LANES] = {0}, xs[LANES];
    for (int l = active; l < LANES; l++) xs[l] = 0;   /* channels past the last stay at rest */
    (void)xs;   /* AVX2 only */
    /* The job's fields in locals: the compiler cannot tell that the stores of the loop below
     * leave them alone, and would load them again for every sample. */
    channel_state *const states = ls->channel + first;
    const size_t stride = job->stride;
    const int16_t *in_row = pass == PASS_DECODE ? NULL : job->in + first;
    int16_t *out_row = pass == PASS_DECODE ? job->out + first : NULL;
    int16_t *rebuilt_row = bounded && pass == PASS_ENCODE ? job->rebuilt + first : NULL;
    uint64_t *channel_bytes = pass == PASS_ENCODE ? job->channel_bytes + first : NULL;
    uint8_t *const events = pass == PASS_ENCODE ? lc->events : NULL;
    const size_t events_cap = pass == PASS_ENCODE ? lc->events_cap : 0;
    size_t n_events = pass == PASS_ENCODE ? lc->n_events : 0;
#if defined(NW_LANES_AVX2)
    const int whole_grid_steps = isa == ISA_AVX2 && pass != PASS_UPDATE && !bounded && all_grid && active == LANES;
    /* the grid steps encode with the coders in direct form, model_code in the other */
    if (pass == PASS_ENCODE) coders_direct(lc, whole_grid_steps);
    /* the history as tap pairs for the run (see pair_ring), and the first prediction */
    pair_ring ring;
    __m256i next_pq = _mm256_setzero_si256();
    /* the grid steps' activities, carried from one step to the next */
    __m256i activity = whole_grid_steps ? lane_activity_avx2(states) : _mm256_setzero_si256();
    /* the grid steps' running sums (decode_grid_step_avx2) */
    uint16_t sums[LANES][48] __attribute__((aligned(32)));
    if (pass == PASS_DECODE && whole_grid_steps)
        for (int l = 0; l < LANES; l++) sums[l][15] = 0;
    if (isa == ISA_AVX2) {
        pairs_load(gr, &ring);
        next_pq = predict_ring_avx2(gr, &ring, dom);
    }
#endif
        for (uint32_t t = 0; t < job->n; t++) {
#if defined(NW_LANES_AVX2)
            if (whole_grid_steps) {
                const __m256i pq = next_pq;
                __m256i x;
                if (pass == PASS_ENCODE) {
                    x = encode_grid_step_avx2(states, lc, in_row, pq, &activity, channel_bytes, events_cap, &n_events);
                    in_row += stride;
                } else {
                    if (decode_grid_step_avx2(states, lc, out_row, pq, &activity, &x, sums) != NW_OK) return NW_ERR_CORRUPT;
                    out_row += stride;
                }
                next_pq = finish_step_avx2(gr, &ring, x, pq, dom);
                if (pass == PASS_DECODE && lc->input.dec.overrun > TRIM_LIMIT) return NW_ERR_TRUNCATED;
                continue;
            }
            if (isa == ISA_AVX2) _mm256_storeu_si256((__m256i *)pred_q, next_pq);
            else
#endif
            predict(gr, dom, pred_q, isa);
            for (int l = 0; l < active; l++) {
                channel_state *s = &states[l];
                const int k = l % CODERS;
                const int grid = all_grid || s->domain == DOMAIN_GRID;
                int32_t x;
                if (pass == PASS_DECODE) {
                    int16_t *value = &out_row[l];
                    lc->input.dec.range = lc->range[k];
                    lc->input.dec.code = lc->code[k];
                    int done = 0;
#if defined(NW_LANES_AVX2)
                    if (isa == ISA_AVX2 && !bounded && grid) {
                        done = decode_grid_sample_avx2(s, &lc->input.dec, value, pred_q[l], &x);
                        if (done < 0) return NW_ERR_CORRUPT;
                    }
#endif
                    if (!done) {
                        int bad = grid ? model_code(s, &lc->input, PASS_DECODE, value, max_error, 1, pred_q[l], &x)
                                       : model_code(s, &lc->input, PASS_DECODE, value, max_error, 0, pred_q[l], &x);
                        if (bad) return NW_ERR_CORRUPT;
                    }
                    lc->range[k] = lc->input.dec.range;
                    lc->code[k] = lc->input.dec.code;
                } else {
                    int16_t value = in_row[l];
                    coder *co = pass == PASS_ENCODE ? &lc->co[k] : NULL;
                    size_t count = NOT_CODED;   /* the encoder's shifts on this sample */
#if defined(NW_LANES_AVX2)
                    if (isa == ISA_AVX2 && pass == PASS_ENCODE && !bounded && grid)
                        count = encode_grid_sample_avx2(s, co, value, pred_q[l], &x);
#endif
                    if (count == NOT_CODED) {
                        size_t before = pass == PASS_ENCODE ? shifts(&co->enc) : 0;
                        if (grid) model_code(s, co, pass, &value, max_error, 1, pred_q[l], &x);
                        else model_code(s, co, pass, &value, max_error, 0, pred_q[l], &x);
                        count = pass == PASS_ENCODE ? shifts(&co->enc) - before : 0;
                    }
                    if (pass == PASS_ENCODE) {
                        if (bounded) rebuilt_row[l] = value;
                        channel_bytes[l] += count;
                        /* Nearly every sample shifts 0, 1 or 2 times: writing four events
                         * and keeping `count` avoids a loop whose exit is a coin toss. */
                        uint8_t *ev = events + n_events;
                        if (count <= 4 && events_cap - n_events >= 4) {
                            ev[0] = ev[1] = ev[2] = ev[3] = (uint8_t)k;
                            n_events += count;
                        } else if (count <= events_cap - n_events) {
                            memset(ev, k, count);
                            n_events += count;
                        } else {
                            lc->overflow = 1;   /* larger than stored: the block is stored */
                        }
                    }
                }
                if (isa == ISA_AVX2) { xs[l] = x; continue; }
                const int dshift = grid ? 0 : 6;
                step[l] = nlms_step(((int64_t)x << FRACTION_BITS) - pred_q[l], gr->energy[l], dshift);
                int32_t d = (x - gr->last[l]) >> dshift, oldest = gr->deltas[TAPS - 1][l];
                gr->energy[l] += d * d - oldest * oldest;
                gr->last[l] = x;
                delta[l] = d;
            }
#if defined(NW_LANES_AVX2)
            if (isa == ISA_AVX2)
                next_pq = finish_step_avx2(gr, &ring, _mm256_setr_epi32(xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]),
                                           next_pq, dom);
            else
#endif
            update(gr, step, delta, isa);
            if (pass == PASS_DECODE && lc->input.dec.overrun > TRIM_LIMIT) return NW_ERR_TRUNCATED;
            if (pass == PASS_DECODE) out_row += stride;
            else in_row += stride;
            if (bounded && pass == PASS_ENCODE) rebuilt_row += job->channels;
        }
#if defined(NW_LANES_AVX2)
    if (isa == ISA_AVX2) pairs_store(gr, &ring);
#endif
    if (pass == PASS_ENCODE) lc->n_events = n_events;
    return NW_OK;
}

/* All groups of a block. */
HOT int run_groups(const lane_job *job, const int pass, const int bounded, const int isa) {
    lane_state *ls = job->ls;
    const uint32_t groups = (job->channels + LANES - 1) / LANES;
    for (uint32_t g = 0; g < groups; g++) {
        const uint32_t first = g * LANES;
        const int active = job->channels - first < LANES ? (int)(job->channels - first) : LANES;
        lane_domain dom;
        int linear_lanes = 0;
        for (int l = 0; l < LANES; l++) {
            int linear = l < active && ls->channel[first + l].domain != DOMAIN_GRID;
            linear_lanes += linear;
            dom.dshift[l] = linear ? 6 : 0;
            dom.top_q[l] = (linear ? 65535 : GRID_CODES - 1) << FRACTION_BITS;
        }
        prefetch_group(ls, g + 1, job->channels);
        int status = linear_lanes ? code_group(job, g, &dom, active, pass, bounded, isa, 0)
                                  : code_group(job, g, &dom, active, pass, bounded, isa, 1);
        if (status != NW_OK) return status;
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

/* The kernel built for AVX2 (nw_lanes_avx2.c), and for AVX-512 (nw_lanes_avx512.c); only
 * called where the CPU has them. */
int nw_lanes_run_avx2(const lane_job *job, int pass);
int nw_lanes_run_avx512(const lane_job *job, int pass);

#endif
