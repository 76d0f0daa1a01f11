/*
 * The per-channel model and the range coder, shared by the block formats: version 1
 * (nw_codec.c, a channel at a time) and the lane format (nw_lanes.c, channels side by side).
 * Internal; included by the codec sources only. The bitstream is in docs/FORMAT.md.
 */
#ifndef NW_MODEL_H
#define NW_MODEL_H

#include "neurowire.h"
#include "nw_internal.h"

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- model constants (fixed: changing any of them changes the format) ------------ */
#define INIT_PEAK 250
#define ACT_SHIFT 4
#define TAPS 16
#define CONTEXTS 12
#define HALF 16                   /* residuals -HALF..HALF-1 are one symbol each */
#define SYM_BIG_NEG (2 * HALF)    /* residual below -HALF: magnitude follows */
#define SYM_BIG_POS (2 * HALF + 1)/* residual at or above HALF */
#define SYM_ESCAPE (2 * HALF + 2) /* value off the ADC grid: 16 raw bits follow */
#define MAIN_SYMBOLS (2 * HALF + 3)
#define BIG_SYMBOLS 35            /* exponent class and one mantissa bit of the excess */
#define MAIN_INCREMENT 12
#define MAIN_LIMIT 60000u         /* keeps every count, and weigh()'s 16-bit sums, below 2^16 */
typedef char main_limit_keeps_weighted_sums_in_16_bits[MAIN_LIMIT / 128 * 127 + 2 * HALF + 127 < 65536 ? 1 : -1];
#define BIG_INCREMENT 16
#define BIG_LIMIT (1u << 13)
#define WEIGHT_SHIFT 14           /* NLMS weights are Q14 */
#define UPDATE_SHIFT 5            /* deltas << 5 fill the 16-bit lanes of the weight update */
#define FRACTION_BITS 4           /* predictions carry 4 fractional bits */
#define GRID_CODES NW_GRID_CODES
#define MU_SHIFT 7                /* NLMS step size 2^-7 */

#define DOMAIN_GRID 0             /* samples are 10-bit ADC codes on the known grid */
#define DOMAIN_LINEAR 1           /* anything else: the int16 value itself (offset by 32768) */

#define FREQ_ROW 40               /* MAIN_SYMBOLS rounded up to whole 16-byte vectors */
typedef struct channel_state {
    /* Vector-sized fields first, at multiples of 16 bytes from the (malloc-aligned) start. */
    uint16_t main_freq[CONTEXTS][FREQ_ROW];
    int16_t weights[TAPS];        /* Q(WEIGHT_SHIFT), saturating */
    int16_t deltas[TAPS];         /* recent first differences in grid-sized units, newest first */
    int16_t pending[TAPS];        /* history the last sample's weight update applies to */
    int32_t pending_step;         /* and its step (0 in a cold state) */
    int32_t last;                 /* last sample, in domain units */
    int32_t activity;             /* running mean |residual|, Q4, in grid-equivalent units */
    int32_t energy;               /* sum of the last TAPS deltas squared */
    uint32_t domain;
    uint32_t big_total;
    uint32_t main_total[CONTEXTS];
    uint16_t big_freq[BIG_SYMBOLS];
    int32_t next_acc;             /* the next prediction's dot product (0 in a cold state) */
} channel_state;


/* ---- tables built by nw_prepare (nw_codec.c) --------------------------------------- */
extern int16_t nw_code_value[GRID_CODES];        /* code -> int16 sample */
extern uint8_t nw_context_of_activity[256];
extern channel_state nw_initial_state[2];         /* cold state per domain */
/* Widths of the codes around a prediction, laid out so that the 2*HALF direct symbols read
 * them in order whichever way the residual is mirrored; zero beyond the rails. */
extern uint16_t nw_weight_up[GRID_CODES + 2 * HALF];   /* Q9: 64 << 9 = average width */
extern uint16_t nw_weight_down[GRID_CODES + 2 * HALF];
extern uint16_t nw_flat_weight[2 * HALF];
extern uint32_t nw_reciprocal[128];                    /* floor((2^39 - 1) / (128 + j)) */

/* The per-sample helpers must be inlined: a call in the decoder's serial chain costs more
 * than the helper itself, and GCC declines to inline some of them at -O3. Not in a size
 * build (-Os, the challenge tools), whose byte count is part of the score. */
#if defined(__GNUC__) && !defined(__OPTIMIZE_SIZE__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

static int log2_floor64(uint64_t v) {
#if defined(__GNUC__)
    return 63 - __builtin_clzll(v);
#else
    int n = 0;
    while (v >>= 1) n++;
    return n;
#endif
}

/* Code of an on-grid sample, or -1 when the value is not one of the grid's. */
static inline int grid_code(int32_t value) {
    /* The linear estimate is within one code of the answer, and nearly always on it. */
    int32_t k = (int32_t)(((value + 32768) * 1023 + 32767) / 65535);
    if (nw_code_value[k] == value) return (int)k;
    if (k > 0 && nw_code_value[k - 1] == value) return (int)k - 1;
    if (k < GRID_CODES - 1 && nw_code_value[k + 1] == value) return (int)k + 1;
    return -1;
}

/* Nearest code of any value: keeps the predictor's history sensible after an escape. */
static inline int32_t nearest_code(int32_t value) {
    int32_t k = (int32_t)(((value + 32768) * 1023 + 32767) / 65535);
    if (k < 0) k = 0;
    if (k >= GRID_CODES) k = GRID_CODES - 1;
    return k;
}

/* ---- range coder (LZMA-style carry propagation, 32-bit range) -------------------- */
#define RANGE_TOP (1u << 24)

typedef struct range_encoder {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t pending;     /* bytes of 0xFF waiting for a possible carry */
    uint8_t *out;
    size_t pos, cap;
    int first;            /* the first shifted byte is always 0 and is not written */
    int overflow;
} range_encoder;

static inline void rc_start(range_encoder *rc, uint8_t *out, size_t cap) {
    memset(rc, 0, sizeof *rc);
    rc->range = 0xFFFFFFFFu;
    rc->first = 1;
    rc->out = out;
    rc->cap = cap;
}

static inline void rc_put(range_encoder *rc, uint8_t byte) {
    if (rc->pos < rc->cap) rc->out[rc->pos] = byte;
    else rc->overflow = 1;
    rc->pos++;
}

HOT void rc_shift_low(range_encoder *rc) {
    if ((uint32_t)rc->low < 0xFF000000u || (rc->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(rc->low >> 32);
        if (!rc->first) rc_put(rc, (uint8_t)(rc->cache + carry));
        rc->first = 0;
        for (; rc->pending; rc->pending--) rc_put(rc, (uint8_t)(0xFF + carry));
        rc->cache = (uint8_t)(rc->low >> 24);
    } else {
        rc->pending++;
    }
    rc->low = (rc->low & 0x00FFFFFFu) << 8;
}

HOT void rc_encode(range_encoder *rc, uint32_t cum, uint32_t freq, uint32_t total) {
    uint32_t r = rc->range / total;
    rc->low += (uint64_t)r * cum;
    rc->range = r * freq;
    while (rc->range < RANGE_TOP) { rc->range <<= 8; rc_shift_low(rc); }
}

static inline void rc_encode_bits(range_encoder *rc, uint32_t value, int bits) {
    while (bits > 0) {
        int n = bits > 12 ? 12 : bits;
        bits -= n;
        uint32_t part = (value >> bits) & ((1u << n) - 1);
        rc->range >>= n;
        rc->low += (uint64_t)rc->range * part;
        while (rc->range < RANGE_TOP) { rc->range <<= 8; rc_shift_low(rc); }
    }
}

static inline void rc_flush(range_encoder *rc) {
    for (int i = 0; i < 5; i++) rc_shift_low(rc);
}

typedef struct range_decoder {
    uint32_t range, code;
    const uint8_t *in;
    size_t pos, len;
    size_t overrun;       /* bytes read past the end (fed as zeros) */
} range_decoder;

/* Bytes a range shifts by to reach RANGE_TOP again (the range is never 0): 0 to 3. */
static inline uint32_t renormal_bytes(uint32_t range) {
#if defined(__LZCNT__)
    return (uint32_t)__builtin_clz(range | 1) >> 3;
#else
    return (uint32_t)(range < RANGE_TOP) + (range < (1u << 16)) + (range < (1u << 8));
#endif
}

static inline uint8_t rd_byte(range_decoder *rd) {
    if (rd->pos < rd->len) return rd->in[rd->pos++];
    rd->overrun++;
    return 0;
}

static inline void rd_init(range_decoder *rd, const uint8_t *in, size_t len) {
    rd->in = in; rd->len = len; rd->pos = 0; rd->overrun = 0;
    rd->range = 0xFFFFFFFFu; rd->code = 0;
    for (int i = 0; i < 4; i++) rd->code = (rd->code << 8) | rd_byte(rd);
}

HOT void rd_normalize(range_decoder *rd) {
    /* Whether a symbol ends on a byte boundary is a coin toss, so away from the end of the
     * input the up to three bytes are taken without a loop. */
    if (rd->len - rd->pos >= 3) {
        uint32_t k = renormal_bytes(rd->range);
        const uint8_t *p = rd->in + rd->pos;
        uint32_t next = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        rd->code = (uint32_t)(((uint64_t)rd->code << (8 * k)) | (next >> (24 - 8 * k)));
        rd->range = (uint32_t)((uint64_t)rd->range << (8 * k));
        rd->pos += k;
        return;
    }
    while (rd->range < RANGE_TOP) { rd->range <<= 8; rd->code = (rd->code << 8) | rd_byte(rd); }
}

/* Returns the target count in [0, total); the caller finds the symbol and calls rd_take. */
HOT uint32_t rd_target(range_decoder *rd, uint32_t total, uint32_t *r_out) {
    uint32_t r = rd->range / total;
    uint32_t t = rd->code / r;
    *r_out = r;
    return t < total ? t : total - 1;   /* only a corrupt stream gets clamped */
}

HOT void rd_take(range_decoder *rd, uint32_t r, uint32_t cum, uint32_t freq) {
    rd->code -= r * cum;
    rd->range = r * freq;
    rd_normalize(rd);
}

static inline uint32_t rd_bits(range_decoder *rd, int bits) {
    uint32_t value = 0;
    while (bits > 0) {
        int n = bits > 12 ? 12 : bits;
        bits -= n;
        rd->range >>= n;
        uint32_t part = rd->code / rd->range;
        if (part >= (1u << n)) part = (1u << n) - 1;
        rd->code -= part * rd->range;
        rd_normalize(rd);
        value = (value << n) | part;
    }
    return value;
}

/* ---- the per-sample model ----------------------------------------------------------- */
enum pass { PASS_ENCODE, PASS_DECODE, PASS_UPDATE };

/* File container version 3 (ANALOG_LEARNED): the Gaussian's share of the mix per activity
 * context, Q16, learned as the channel is coded; and what the last mix needs to price the
 * coded symbol under the Gaussian alone. Version 4 adds a second predictor (ls_* in
 * nw_codec.c). */
#define LS_TAPS 32
typedef struct analog_learning {
    int32_t share[CONTEXTS];
    uint32_t cdf[2 * HALF + 1];   /* the last mix's Gaussian CDF at the symbols' edges */
    uint64_t scale;               /* and its factor: q_i = (cdf[i+1] - cdf[i]) x scale >> 16 */
    int mixed;
    /* Version 4: least squares over the deltas' autocorrelation, solved every LS_BLOCK
     * samples, and its prediction's weight against the NLMS one's. */
    int32_t ls_delta[LS_TAPS + 1];    /* the newest deltas (grid-sized units), newest first */
    int64_t ls_block[LS_TAPS + 1];    /* the autocorrelation over this block, lags 0..LS_TAPS */
    int64_t ls_corr[LS_TAPS + 1];     /* over the blocks before, older ones fading */
    int64_t ls_solution[LS_TAPS];     /* Q20, kept between solves as the next one's start */
    int32_t ls_weight[LS_TAPS];       /* Q14, what predicts */
    uint32_t ls_count, ls_ready, ls_started;
    int64_t mix_weight;               /* the least-squares prediction's weight, Q12 */
    int64_t mix_power;                /* running mean of the predictions' squared difference */
    int64_t mix_base, mix_diff;       /* this sample's NLMS prediction and LS minus NLMS, Q4 */
} analog_learning;

typedef struct coder {
    range_encoder enc;
    range_decoder dec;
    analog_learning *learn;   /* the file path's (streams leave it unset: no analog model) */
} coder;

#if defined(__SSE2__)
static inline void count_direct(uint16_t *freq, int symbol, uint32_t inc) {
    const __m128i lane = _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7);
    __m128i *at = (__m128i *)(freq + (symbol & ~7));
    __m128i one_hot = _mm_cmpeq_epi16(lane, _mm_set1_epi16((int16_t)(symbol & 7)));
    _mm_storeu_si128(at, _mm_add_epi16(_mm_loadu_si128(at), _mm_and_si128(one_hot, _mm_set1_epi16((int16_t)inc))));
}
#else
static inline void count_direct(uint16_t *freq, int symbol, uint32_t inc) {
    freq[symbol] = (uint16_t)(freq[symbol] + inc);
}
#endif

HOT void adapt(uint16_t *freq, uint32_t *total, int symbols, int symbol, uint32_t inc, uint32_t limit) {
    if (symbols == MAIN_SYMBOLS && symbol < 2 * HALF) count_direct(freq, symbol, inc);
    else freq[symbol] = (uint16_t)(freq[symbol] + inc);
    *total += inc;
    if (*total > limit) {
        uint32_t t = 0;
        for (int i = 0; i < symbols; i++) {
            freq[i] = (uint16_t)((freq[i] + 1) >> 1);
            t += freq[i];
        }
        *total = t;
    }
}

/* Magnitude beyond the direct range: class c = floor(log2(excess+1)), then one mantissa bit
 * as part of the symbol and c-1 raw bits.
 * File container version 4 (big_encode_widths, big_decode_widths; dir = +-1) prices both
 * parts by the codes' widths, as the direct symbols are: v = excess + 1 is the code
 * start + dir x v, start being the code of the last direct residual on that side; each class
 * symbol's count is weighted by the average width of the codes it stands for, and the c-1
 * bits are coded as one symbol of their codes' widths instead of raw. */
extern int32_t nw_code_edge[];
#define EDGE_PAD (HALF + 1)       /* edges beyond the rails, so the direct symbols need no clamp */
#define EDGE_FRACTION 4           /* edges in 1/64 code, positions in 1/1024 code */

/* Width of the n codes start + dir x v for v in [first, first + n), 1/64 code (0 off the grid). */
static inline uint32_t codes_width(int32_t start, int32_t dir, uint32_t first, uint32_t n) {
    int32_t a = start + dir * (int32_t)first, b = a + dir * (int32_t)(n - 1);
    int32_t low = dir > 0 ? a : b, high = (dir > 0 ? b : a) + 1;
    low = low < 0 ? 0 : low > GRID_CODES ? GRID_CODES : low;
    high = high < 0 ? 0 : high > GRID_CODES ? GRID_CODES : high;
    return (uint32_t)((nw_code_edge[high + EDGE_PAD] - nw_code_edge[low + EDGE_PAD]) >> EDGE_FRACTION);
}

/* The first v of class symbol b, and how many it holds. */
static inline uint32_t big_first(uint32_t b, uint32_t *n) {
    uint32_t c = b == 0 ? 0 : (b - 1) / 2 + 1;
    *n = c > 1 ? 1u << (c - 1) : 1;
    return c == 0 ? 1 : (2u | ((b - 1) & 1)) << (c - 1);
}

/* Version 4's class counts, weighted by width; returns their total. Weighted sums stay
 * below 2^16: counts sum to at most BIG_LIMIT, widths to 127/64 of the average. */
static inline uint32_t big_counts(const channel_state *s, uint16_t *g, int32_t dir, int32_t start) {
    uint32_t total = 0;
    for (uint32_t b = 0; b < BIG_SYMBOLS; b++) {
        uint32_t n, first = big_first(b, &n);
        g[b] = (uint16_t)((uint64_t)s->big_freq[b] * codes_width(start, dir, first, n) / (64 * n) + 1);
        total += g[b];
    }
    return total;
}

/* The class symbol of an excess, with v = excess + 1 and its class c. */
static inline uint32_t big_symbol(uint32_t excess, uint32_t *v, uint32_t *c) {
    *v = excess + 1;
    *c = 0;
    while ((*v >> (*c + 1)) != 0) (*c)++;
    return *c == 0 ? 0 : 1 + 2 * (*c - 1) + ((*v >> (*c - 1)) & 1);
}

static inline void big_encode(channel_state *s, coder *co, int pass, uint32_t excess) {
    uint32_t v, c, symbol = big_symbol(excess, &v, &c);
    if (pass == PASS_ENCODE) {
        uint32_t cum = 0;
        for (uint32_t i = 0; i < symbol; i++) cum += s->big_freq[i];
        rc_encode(&co->enc, cum, s->big_freq[symbol], s->big_total);
        if (c > 1) rc_encode_bits(&co->enc, v & ((1u << (c - 1)) - 1), (int)c - 1);
    }
    adapt(s->big_freq, &s->big_total, BIG_SYMBOLS, (int)symbol, BIG_INCREMENT, BIG_LIMIT);
}

static inline int big_decode(channel_state *s, coder *co, uint32_t *excess) {
    uint32_t r, target = rd_target(&co->dec, s->big_total, &r), cum = 0;
    int symbol = 0;
    while (symbol < BIG_SYMBOLS - 1 && cum + s->big_freq[symbol] <= target) cum += s->big_freq[symbol++];
    rd_take(&co->dec, r, cum, s->big_freq[symbol]);
    uint32_t c = symbol == 0 ? 0 : (uint32_t)(symbol - 1) / 2 + 1;
    if (c > 17) return -1;
    uint32_t v = 1;
    if (c > 0) {
        v = (2u | ((uint32_t)(symbol - 1) & 1)) << (c - 1);
        if (c > 1) v |= rd_bits(&co->dec, (int)c - 1);
    }
    adapt(s->big_freq, &s->big_total, BIG_SYMBOLS, symbol, BIG_INCREMENT, BIG_LIMIT);
    *excess = v - 1;
    return 0;
}

/* The code of the last direct residual on a big symbol's side (version 4's `start`). */
static inline int32_t big_start(int symbol, int32_t pred, int32_t flip) {
    return symbol == SYM_BIG_POS ? pred + flip * (HALF - 1) : pred - flip * HALF;
}

/* Version 4's pair (out of line: rare, and the block formats' loops stay as they were). */
#if defined(__GNUC__)
#define COLD static __attribute__((noinline))
#else
#define COLD static
#endif
COLD void big_encode_widths(channel_state *s, coder *co, int pass, uint32_t excess, int32_t dir, int32_t start) {
    uint32_t v, c, symbol = big_symbol(excess, &v, &c);
    if (pass == PASS_ENCODE) {
        uint16_t g[BIG_SYMBOLS];
        uint32_t total = big_counts(s, g, dir, start), cum = 0;
        for (uint32_t i = 0; i < symbol; i++) cum += g[i];
        rc_encode(&co->enc, cum, g[symbol], total);
        if (c > 1) {
            uint32_t n, first = big_first(symbol, &n);
            rc_encode(&co->enc, codes_width(start, dir, first, v - first), codes_width(start, dir, v, 1),
                      codes_width(start, dir, first, n));
        }
    }
    adapt(s->big_freq, &s->big_total, BIG_SYMBOLS, (int)symbol, BIG_INCREMENT, BIG_LIMIT);
}

COLD int big_decode_widths(channel_state *s, coder *co, uint32_t *excess, int32_t dir, int32_t start) {
    uint16_t g[BIG_SYMBOLS];
    uint32_t total = big_counts(s, g, dir, start);
    uint32_t r, target = rd_target(&co->dec, total, &r), cum = 0;
    int symbol = 0;
    while (symbol < BIG_SYMBOLS - 1 && cum + g[symbol] <= target) cum += g[symbol++];
    rd_take(&co->dec, r, cum, g[symbol]);
    uint32_t c = symbol == 0 ? 0 : (uint32_t)(symbol - 1) / 2 + 1;
    if (c > 17) return -1;
    uint32_t n, v = big_first((uint32_t)symbol, &n);
    if (c > 1) {
        uint32_t all = codes_width(start, dir, v, n);
        if (all == 0) return -1;   /* codes off the grid: only a corrupt stream names them */
        uint32_t t = rd_target(&co->dec, all, &r), k = 0;
        for (uint32_t step = n >> 1; step; step >>= 1)   /* the last k with width(v, k) <= t */
            if (codes_width(start, dir, v, k + step) <= t) k += step;
        uint32_t below = codes_width(start, dir, v, k), width = codes_width(start, dir, v + k, 1);
        if (width == 0 || t >= below + width) return -1;
        rd_take(&co->dec, r, below, width);
        v += k;
    }
    adapt(s->big_freq, &s->big_total, BIG_SYMBOLS, symbol, BIG_INCREMENT, BIG_LIMIT);
    *excess = v - 1;
    return 0;
}

/* g[i] = floor(count x width / 128) + 1 for the direct symbols (width in Q9 over 64, so the
 * product's high half), and the sums of both halves. No symbol gets a zero count; with
 * counts summing to at most MAIN_LIMIT every g and every partial sum fits 16 bits, so the
 * vector sums below wrap never. */
#if defined(__SSE2__) && HALF == 16
static inline void weigh(const uint16_t *freq, const uint16_t *width, uint16_t *g, uint32_t *lower, uint32_t *upper) {
    const __m128i one = _mm_set1_epi16(1);
    __m128i v[4];
    for (int k = 0; k < 4; k++) {
        v[k] = _mm_add_epi16(_mm_mulhi_epu16(_mm_loadu_si128((const __m128i *)(freq + 8 * k)),
                                             _mm_loadu_si128((const __m128i *)(width + 8 * k))), one);
        _mm_storeu_si128((__m128i *)(g + 8 * k), v[k]);
    }
    /* Both halves summed side by side: lanes 0-3 carry the lower half, 4-7 the upper. */
    __m128i lo = _mm_add_epi16(v[0], v[1]), hi = _mm_add_epi16(v[2], v[3]);
    __m128i t = _mm_add_epi16(_mm_unpacklo_epi64(lo, hi), _mm_unpackhi_epi64(lo, hi));
    t = _mm_add_epi16(t, _mm_srli_epi64(t, 32));
    t = _mm_add_epi16(t, _mm_srli_epi64(t, 16));
    *lower = (uint32_t)_mm_extract_epi16(t, 0);
    *upper = (uint32_t)_mm_extract_epi16(t, 4);
}
#else
static inline void weigh(const uint16_t *freq, const uint16_t *width, uint16_t *g, uint32_t *lower, uint32_t *upper) {
    uint32_t lo = 0, up = 0;
    for (int i = 0; i < HALF; i++) { g[i] = (uint16_t)((((uint32_t)freq[i] * width[i]) >> 16) + 1); lo += g[i]; }
    for (int i = HALF; i < 2 * HALF; i++) { g[i] = (uint16_t)((((uint32_t)freq[i] * width[i]) >> 16) + 1); up += g[i]; }
    *lower = lo;
    *upper = up;
}
#endif

/* Locating a symbol among the direct ones without a data-dependent loop: the residual's
 * size is unpredictable, and a mispredicted loop exit costs more than summing every lane.
 * sum_below(g, k) = g[0] + ... + g[k-1]; find_direct(g, t) = the k with
 * sum_below(g, k) <= t < sum_below(g, k + 1), for t below the sum of all of g, and that
 * sum_below. All sums fit 16 bits (see weigh). */
#if defined(__SSE2__) && HALF == 16
static inline uint32_t hsum8(__m128i v) {
    v = _mm_add_epi16(v, _mm_srli_si128(v, 8));
    v = _mm_add_epi16(v, _mm_srli_si128(v, 4));
    v = _mm_add_epi16(v, _mm_srli_si128(v, 2));
    return (uint32_t)_mm_extract_epi16(v, 0);
}
static inline uint32_t sum_below(const uint16_t *g, int k) {
    const __m128i key = _mm_set1_epi16((int16_t)k);
    __m128i sum = _mm_setzero_si128();
    for (int j = 0; j < 4; j++) {
        __m128i index = _mm_setr_epi16((int16_t)(8 * j), (int16_t)(8 * j + 1), (int16_t)(8 * j + 2), (int16_t)(8 * j + 3),
                                       (int16_t)(8 * j + 4), (int16_t)(8 * j + 5), (int16_t)(8 * j + 6), (int16_t)(8 * j + 7));
        sum = _mm_add_epi16(sum, _mm_and_si128(_mm_loadu_si128((const __m128i *)(g + 8 * j)), _mm_cmpgt_epi16(key, index)));
    }
    return hsum8(sum);
}
static inline int find_direct(const uint16_t *g, uint32_t t, uint32_t *below) {
    /* Inclusive prefix sums, compared with t as signed after flipping the top bit; each lane
     * with a prefix above t adds -1, so the symbol is 2*HALF minus their number. */
    uint16_t prefix[2 * HALF + 8];
    prefix[0] = 0;
    const __m128i bias = _mm_set1_epi16((int16_t)0x8000);
    const __m128i key = _mm_xor_si128(_mm_set1_epi16((int16_t)t), bias);
    __m128i carry = _mm_setzero_si128(), above = _mm_setzero_si128();
    for (int j = 0; j < 4; j++) {
        __m128i p = _mm_loadu_si128((const __m128i *)(g + 8 * j));
        p = _mm_add_epi16(p, _mm_slli_si128(p, 2));
        p = _mm_add_epi16(p, _mm_slli_si128(p, 4));
        p = _mm_add_epi16(p, _mm_slli_si128(p, 8));
        p = _mm_add_epi16(p, carry);
        _mm_storeu_si128((__m128i *)(prefix + 1 + 8 * j), p);
        carry = _mm_shufflehi_epi16(_mm_unpackhi_epi64(p, p), 0xFF);
        carry = _mm_unpackhi_epi64(carry, carry);
        above = _mm_add_epi16(above, _mm_cmpgt_epi16(_mm_xor_si128(p, bias), key));
    }
    int k = 2 * HALF - (int)(uint16_t)(-(int16_t)hsum8(above));
    *below = prefix[k];
    return k;
}
#else
static inline uint32_t sum_below(const uint16_t *g, int k) {
    uint32_t sum = 0;
    for (int i = 0; i < k; i++) sum += g[i];
    return sum;
}
static inline int find_direct(const uint16_t *g, uint32_t t, uint32_t *below) {
    int k = 0;
    uint32_t sum = g[0];
    while (sum <= t) sum += g[++k];
    *below = sum - g[k];
    return k;
}
#endif

/* ---- the analog model (file container versions 2 and 3) ----------------------------------
 * The residual's law is also taken as a Gaussian on the converter's analog axis: centred at
 * the fractional prediction, its scale proportional to the running mean |residual|, and
 * integrated over each code's own width (its learned edges). Mixed with the counts (the
 * Gaussian's share per activity context), it prices the codes by where their edges lie,
 * which the counts, kept per residual rather than per code, cannot learn. */
#define PHI_STEPS 32              /* points of the CDF table per standard deviation */
#define PHI_HALF (8 * PHI_STEPS)  /* the table spans +-8 standard deviations */
extern uint32_t nw_phi[2 * PHI_HALF + 1];        /* Gaussian CDF at (i - PHI_HALF) / PHI_STEPS, Q16 */
/* Lower edge of code k - EDGE_PAD on the analog axis, 1/1024 code, held at the rails beyond them. */
extern int32_t nw_code_edge[GRID_CODES + 1 + 2 * EDGE_PAD];
extern const uint16_t nw_analog_scale[CONTEXTS]; /* standard deviation / mean |residual|, Q6 */
extern const uint16_t nw_analog_share[CONTEXTS]; /* the Gaussian's share of the mix, /256 */
/* The contexts' activity bounds (Q4 mean |residual|), here so that kernels can hold them as
 * constants; nw_context_bound (nw_codec.c) is the table. */
#define CONTEXT_BOUNDS 0, 14, 20, 26, 32, 38, 46, 56, 70, 92, 124, 180, 260
extern const uint16_t nw_context_bound[CONTEXTS + 1];

#define ANALOG_FIXED 1             /* file container version 2: the share per context is fixed */
#define ANALOG_LEARNED 2           /* version 3: it follows the channel (analog_learn) */
#define ANALOG_BLEND 3             /* version 4: as 3, each context blended with a neighbour */
#define SHARE_RATE 6               /* the learned share's step: gradient x 2^-6 */

/* Version 4's blend: twelve contexts are coarse steps of a law that changes smoothly with
 * the activity, so each context is blended with its nearer neighbour, linearly between the
 * contexts' centres (weight 0 at a centre, 1/2 at a bound, none beyond the outer centres).
 * Returns the neighbour's weight /256, and the neighbour in *nb (ctx when the weight is 0). */
static inline int32_t context_blend(int32_t activity, int ctx, int *nb) {
    const int32_t low = nw_context_bound[ctx], high = nw_context_bound[ctx + 1], centre = (low + high) / 2;
    const int n = activity < centre ? ctx - 1 : ctx + 1;
    *nb = ctx;
    if (n < 0 || n >= CONTEXTS) return 0;
    int32_t w = (activity < centre ? centre - activity : activity - centre) * 256 / (high - low);
    if (w > 0) *nb = n;
    return w > 128 ? 128 : w;
}

/* The counts c (total t) blended with a neighbour's n (total u), each as a share of its own
 * total: m_i = (1 - w) c_i + w n_i t / u, w = weight / 256. The sum stays at most t, so
 * weigh()'s bounds hold. */
static inline void blend_counts(uint16_t *m, const uint16_t *c, uint32_t t, const uint16_t *n, uint32_t u,
                                int32_t weight) {
    const uint64_t wc = (uint64_t)(256 - weight) << 8, wn = ((uint64_t)weight * t << 8) / u;
    for (int i = 0; i < MAIN_SYMBOLS; i++) m[i] = (uint16_t)((c[i] * wc + n[i] * wn) >> 16);
}

/* Mixes the Gaussian into the width-weighted counts g of the direct symbols (their sums
 * lower and upper): g[i] becomes (1 - share) g[i] + share G q[i] / Q, G the sum of g and q
 * the Gaussian's mass on symbol i (Q its sum over the direct symbols), plus one so that no
 * symbol gets a zero count. The sum stays within G + 2*HALF, inside weigh()'s 16 bits.
 * ANALOG_FIXED takes the share from nw_analog_share and rounds G q[i] share / Q in one
 * step; ANALOG_LEARNED takes al->share and rounds G q[i] / Q first (analog_learn
 * prices the coded symbol again from al->cdf and al->scale). */
HOT void analog_mix(analog_learning *al, int analog, uint16_t *g, uint32_t *lower, uint32_t *upper, int ctx,
                    int nb, int32_t blend, int32_t pred, int32_t flip, int64_t pred_q, int32_t activity) {
    const int32_t fraction = (int32_t)(pred_q - ((int64_t)pred << FRACTION_BITS)) + (1 << (FRACTION_BITS - 1));
    const int32_t *edge = nw_code_edge + EDGE_PAD + pred;
    const int32_t mu = edge[0] + fraction * ((edge[1] - edge[0]) >> EDGE_FRACTION);
    /* Q6 x Q4 mean |residual| = 1/1024 code; the scale blended as the counts are (version 4) */
    int32_t sigma = ((nw_analog_scale[ctx] * (256 - blend) + nw_analog_scale[nb] * blend) >> 8) * activity;
    if (sigma < 205) sigma = 205;                      /* 0.2 code */
    const int32_t inverse = (PHI_STEPS << 24) / sigma;
    uint32_t *cdf = al->cdf;
    /* The edge between symbols j-1 and j: a lower edge going up, an upper one going down. */
    const int32_t *first = flip > 0 ? edge - HALF : edge + HALF + 1;
    for (int j = 0; j <= 2 * HALF; j++) {
        int64_t t = ((int64_t)flip * (first[flip * j] - mu) * inverse) >> 24;
        cdf[j] = nw_phi[t < -PHI_HALF ? 0 : t > PHI_HALF ? 2 * PHI_HALF : t + PHI_HALF];
    }
    const uint32_t mass = cdf[2 * HALF] - cdf[0];
    const int learned = analog >= ANALOG_LEARNED;
    const uint32_t share = learned ? (uint32_t)((al->share[ctx] * (int64_t)(256 - blend) + al->share[nb] * (int64_t)blend) >> 16)
                                   : nw_analog_share[ctx];
    al->mixed = mass != 0;
    if (mass == 0) return;
    const uint64_t scale = al->scale = ((uint64_t)((learned ? 1 : share) * (*lower + *upper)) << 16) / mass;
    const uint32_t times = learned ? share : 1;
    uint32_t lo = 0, up = 0;
    for (int i = 0; i < 2 * HALF; i++) {
        uint32_t q = (uint32_t)(((cdf[i + 1] - cdf[i]) * scale) >> 16);
        g[i] = (uint16_t)(((g[i] * (256 - share) + q * times) >> 8) + 1);
        if (i < HALF) lo += g[i]; else up += g[i];
    }
    *lower = lo;
    *upper = up;
}

/* After direct symbol i was coded with the mixed count g_i: one gradient step of the share
 * on the code length -log(g_i / G), whose derivative is (q_i - c_i) / g_i with c_i the
 * weighted count before the mix and q_i the Gaussian's (analog_mix). Kept within
 * [1/256, 1) of the mix. */
static inline void analog_learn(analog_learning *al, int ctx, int symbol, uint32_t g, uint32_t c) {
    if (!al->mixed) return;
    uint32_t q = (uint32_t)(((al->cdf[symbol + 1] - al->cdf[symbol]) * al->scale) >> 16);
    int64_t step = ((int64_t)q - (int64_t)c) * 65536 / (int64_t)g;
    int32_t v = al->share[ctx] + (int32_t)(step >> SHARE_RATE);
    al->share[ctx] = v < 256 ? 256 : v > 65535 ? 65535 : v;
}

/* The coding half of one sample, shared by both block formats: from the prediction pred_q
 * (FRACTION_BITS fractional bits, clamped to the domain) it codes the residual (or decodes
 * it, or, for stored blocks, only follows it), then updates the counts and the activity.
 * Returns 0, or -1 on an impossible decoded value; *x_out receives the sample in domain
 * units as the decoder rebuilds it. */
HOT int model_code_with(channel_state *s, coder *co, int pass, int16_t *value, int32_t max_error,
                        const int grid, int64_t pred_q, int32_t *x_out, const int analog) {
    const int32_t top = grid ? GRID_CODES - 1 : 65535;
    int32_t pred = (int32_t)((pred_q + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS);
    /* Mirror the residual so that the side the fractional prediction leans to is positive. */
    int32_t flip = (int32_t)((pred_q - ((int64_t)pred << FRACTION_BITS)) >> 63) | 1;

    int32_t act = s->activity >> (grid ? 2 : 8);
    int ctx = nw_context_of_activity[act > 255 ? 255 : act];
    uint16_t *freq = s->main_freq[ctx];
    int nb = ctx;
    int32_t blend = 0;
    uint16_t blended[FREQ_ROW];
    const uint16_t *row = freq;   /* the counts the symbol is priced by */
    if (analog == ANALOG_BLEND && grid && !max_error) {
        blend = context_blend(s->activity, ctx, &nb);
        if (blend) {
            blend_counts(blended, freq, s->main_total[ctx], s->main_freq[nb], s->main_total[nb], blend);
            row = blended;
        }
    }

    /* Weighted frequencies: each direct symbol is scaled by the width of the code it maps
     * to (64 = average width; 0 = outside the ADC's range, so impossible). */
    /* Quantised residuals span 2k+1 codes each: the widths of single codes do not apply. */
    const uint16_t *width = (!grid || max_error) ? nw_flat_weight
                         : flip > 0 ? nw_weight_up + pred : nw_weight_down + (GRID_CODES - 1 - pred);
    /* Cumulative order: big-negative, the direct symbols in residual order, big-positive,
     * escape. */
    uint16_t g[2 * HALF];
    uint32_t lower, upper;
    uint16_t weighted[2 * HALF];  /* g before the analog mix, for analog_learn */
    weigh(row, width, g, &lower, &upper);
    if (analog && grid && !max_error) {
        memcpy(weighted, g, sizeof weighted);
        analog_mix(co->learn, analog, g, &lower, &upper, ctx, nb, blend, pred, flip, pred_q, s->activity);
    }
    /* The escape-side symbols take the same unit-width scale (1/128) as the direct ones. */
    const uint32_t f_neg = (row[SYM_BIG_NEG] >> 1) + 1, f_pos = (row[SYM_BIG_POS] >> 1) + 1, f_esc = (row[SYM_ESCAPE] >> 1) + 1;
    const uint32_t middle = f_neg + lower;       /* cumulative count where residual 0 starts */
    const uint32_t total = middle + upper + f_pos + f_esc;

    /* Version 4 prices magnitudes beyond the direct range by their codes' widths too. */
    const int32_t big_dir = analog == ANALOG_BLEND && grid && !max_error ? flip : 0;
    int32_t x = 0;          /* sample in domain units */
    int32_t coded = 0;      /* the residual as coded (quantised when max_error > 0) */
    const int32_t quantum = 2 * max_error + 1;
    int symbol;
    if (pass != PASS_DECODE) {
        int32_t v = *value;
        int escaped = 0;
        if (grid) {
            int k = grid_code(v);
            escaped = k < 0;
            x = escaped ? nearest_code(v) : k;
        } else {
            x = v + 32768;
        }
        int32_t r = flip * (x - pred);
        if (max_error && !escaped) {
            r = r >= 0 ? (r + max_error) / quantum : -((max_error - r) / quantum);
            /* Clamping to the domain only moves the rebuilt sample towards x. */
            int32_t rebuilt = pred + flip * r * quantum;
            x = rebuilt < 0 ? 0 : rebuilt > top ? top : rebuilt;
            if (pass == PASS_ENCODE) *value = grid ? nw_code_value[x] : (int16_t)(x - 32768);
        }
        coded = r;
        symbol = escaped ? SYM_ESCAPE : r < -HALF ? SYM_BIG_NEG : r >= HALF ? SYM_BIG_POS : r + HALF;
        if (pass == PASS_ENCODE) {
            uint32_t cum, f;
            if (symbol == SYM_BIG_NEG) { cum = 0; f = f_neg; }
            else if (symbol == SYM_BIG_POS) { cum = middle + upper; f = f_pos; }
            else if (symbol == SYM_ESCAPE) { cum = middle + upper + f_pos; f = f_esc; }
            else {
                cum = f_neg + sum_below(g, symbol);
                f = g[symbol];
            }
            rc_encode(&co->enc, cum, f, total);
            if (escaped) rc_encode_bits(&co->enc, (uint16_t)v, 16);
        }
        if (symbol == SYM_BIG_NEG || symbol == SYM_BIG_POS) {
            const uint32_t excess = (uint32_t)(symbol == SYM_BIG_POS ? r - HALF : -HALF - 1 - r);
            if (big_dir) big_encode_widths(s, co, pass, excess, symbol == SYM_BIG_POS ? big_dir : -big_dir, big_start(symbol, pred, flip));
            else big_encode(s, co, pass, excess);
        }
    } else {
        uint32_t r, target = rd_target(&co->dec, total, &r), cum, f;
        if (target < f_neg) { symbol = SYM_BIG_NEG; cum = 0; f = f_neg; }
        else if (target >= middle + upper + f_pos) { symbol = SYM_ESCAPE; cum = middle + upper + f_pos; f = f_esc; }
        else if (target >= middle + upper) { symbol = SYM_BIG_POS; cum = middle + upper; f = f_pos; }
        else {
            uint32_t below;
            symbol = find_direct(g, target - f_neg, &below);
            cum = f_neg + below;
            f = g[symbol];
        }
        if (f == 0 || target < cum || target >= cum + f) return -1;
        rd_take(&co->dec, r, cum, f);
        if (symbol == SYM_ESCAPE) {
            if (!grid) return -1;
            int16_t v = (int16_t)rd_bits(&co->dec, 16);
            if (grid_code(v) >= 0) return -1;   /* the encoder never escapes a grid value */
            *value = v;
            x = nearest_code(v);
            coded = flip * (x - pred);
        } else {
            int32_t res;
            if (symbol < 2 * HALF) {
                res = symbol - HALF;
            } else {
                uint32_t excess;
                if (!big_dir) {
                    if (big_decode(s, co, &excess) < 0) return -1;
                } else if (big_decode_widths(s, co, &excess, symbol == SYM_BIG_POS ? big_dir : -big_dir,
                                             big_start(symbol, pred, flip)) < 0) {
                    return -1;
                }
                if (excess > 65536) return -1;
                res = symbol == SYM_BIG_POS ? HALF + (int32_t)excess : -HALF - 1 - (int32_t)excess;
            }
            coded = res;
            if (max_error) {
                int64_t rebuilt = pred + (int64_t)flip * res * quantum;
                x = (int32_t)(rebuilt < 0 ? 0 : rebuilt > top ? top : rebuilt);
            } else {
                x = pred + flip * res;
                if (x < 0 || x > top) return -1;
            }
            *value = grid ? nw_code_value[x] : (int16_t)(x - 32768);
        }
    }
    if (analog >= ANALOG_LEARNED && grid && !max_error && symbol < 2 * HALF) analog_learn(co->learn, ctx, symbol, g[symbol], weighted[symbol]);
    adapt(freq, &s->main_total[ctx], MAIN_SYMBOLS, symbol, MAIN_INCREMENT, MAIN_LIMIT);
    /* Version 4: the neighbour learns from the sample too, as much as it was blended in (a
     * whole increment at the bound). */
    const uint32_t neighbour_increment = (uint32_t)(MAIN_INCREMENT * blend) >> 7;
    if (neighbour_increment) adapt(s->main_freq[nb], &s->main_total[nb], MAIN_SYMBOLS, symbol, neighbour_increment, MAIN_LIMIT);

    /* Update the activity and the NLMS predictor from the reconstructed sample. */
    int32_t mag = coded < 0 ? -coded : coded;
    if (!grid) mag >>= 6;
    if (mag > 1000) mag = 1000;
    s->activity += ((mag << 4) - s->activity) >> ACT_SHIFT;
    *x_out = x;
    return 0;
}

/* The block formats' model: counts alone. */
HOT int model_code(channel_state *s, coder *co, int pass, int16_t *value, int32_t max_error,
                   const int grid, int64_t pred_q, int32_t *x_out) {
    return model_code_with(s, co, pass, value, max_error, grid, pred_q, x_out, 0);
}

/* The NLMS step for a prediction error err_q (FRACTION_BITS fractional bits) over a history
 * of the given energy: error / energy in Q34, through a 7-bit reciprocal (a division on
 * every sample would be the slowest instruction in the loop, and the step needs no more
 * precision), scaled for the 16-bit update lanes and clamped to them. */
HOT int32_t nlms_step(int64_t err_q, int32_t energy, int dshift) {
    if (err_q > (1 << 20)) err_q = 1 << 20;
    if (err_q < -(1 << 20)) err_q = -(1 << 20);
    uint64_t e64 = (uint64_t)(energy + 64);
    int n = log2_floor64(e64);
    uint32_t m = (uint32_t)(n >= 7 ? e64 >> (n - 7) : e64 << (7 - n));
    int64_t step = (err_q * (int64_t)nw_reciprocal[m - 128]) >> (n - 2);   /* err_q x gain, Q34 */
    step >>= 34 - WEIGHT_SHIFT + FRACTION_BITS + MU_SHIFT - 16 + UPDATE_SHIFT + dshift;
    return (int32_t)(step > 32767 ? 32767 : step < -32767 ? -32767 : step);
}

/* ---- block layer pieces shared by both formats (nw_codec.c) ------------------------ */
#define NW_FLAG_KEYFRAME 1u
#define NW_FLAG_STORED 2u
#define NW_MAX_ERROR_SHIFT 2      /* flags bits 2..7 hold max_error */
int nw_channels_ok(uint32_t channels);
uint32_t nw_choose_domain(const int16_t *samples, uint32_t n, size_t stride, uint32_t c);
void nw_write_block_header(uint8_t *out, uint32_t version, uint32_t flags, uint32_t channels,
                           uint32_t n, uint32_t index, uint32_t payload);
/* Reads the header of a block of the given format version (see nw_block_peek). */
int nw_read_block_header(const uint8_t *in, size_t len, uint32_t version, nw_block_info *info);
uint32_t nw_block_crc(const uint8_t *header, const int16_t *samples, uint32_t n,
                      uint32_t channels, size_t stride);

#endif
