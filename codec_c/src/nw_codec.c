/*
 * Block codec: per-channel NLMS prediction on ADC codes, residuals coded with an adaptive
 * range coder whose probabilities are weighted by the width of the ADC code each residual
 * would land on. The bitstream is described in docs/FORMAT.md.
 *
 * All model arithmetic is integer so that every platform decodes what every other encoded.
 */
#include "neurowire.h"
#include "nw_internal.h"
#include "nw_tables.h"

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- model constants (changing any of them changes the format version) ----------- */
#ifndef INIT_PEAK
#define INIT_PEAK 250
#endif
#ifndef ACT_SHIFT
#define ACT_SHIFT 4
#endif
#ifndef TAPS
#define TAPS 16
#endif
#define CONTEXTS 12
#define HALF 16                   /* residuals -HALF..HALF-1 are one symbol each */
#define SYM_BIG_NEG (2 * HALF)    /* residual below -HALF: magnitude follows */
#define SYM_BIG_POS (2 * HALF + 1)/* residual at or above HALF */
#define SYM_ESCAPE (2 * HALF + 2) /* value off the ADC grid: 16 raw bits follow */
#define MAIN_SYMBOLS (2 * HALF + 3)
#define BIG_SYMBOLS 35            /* exponent class and one mantissa bit of the excess */
#ifndef MAIN_INCREMENT
#define MAIN_INCREMENT 12
#endif
#ifndef MAIN_LIMIT
#define MAIN_LIMIT 60000u         /* keeps every count, and weigh()'s 16-bit sums, below 2^16 */
#endif
typedef char main_limit_keeps_weighted_sums_in_16_bits[MAIN_LIMIT / 128 * 127 + 2 * HALF + 127 < 65536 ? 1 : -1];
#ifndef BIG_INCREMENT
#define BIG_INCREMENT 16
#endif
#ifndef BIG_LIMIT
#define BIG_LIMIT (1u << 13)
#endif
#ifndef WEIGHT_SHIFT
#define WEIGHT_SHIFT 14           /* NLMS weights are Q14 */
#endif
#ifndef UPDATE_SHIFT
#define UPDATE_SHIFT 5            /* deltas << 5 fill the 16-bit lanes of the weight update */
#endif
#define FRACTION_BITS 4           /* predictions carry 4 fractional bits */
#define GRID_CODES NW_GRID_CODES
#ifndef MU_SHIFT
#define MU_SHIFT 7                /* NLMS step size 2^-7 */
#endif

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

/* ---- grid of ADC codes ---------------------------------------------------------- */
static int16_t grid_value[GRID_CODES];       /* code -> int16 sample */
static uint8_t context_of_activity[256];
static channel_state initial_state[2];        /* cold state per domain */
/* Widths of the codes around a prediction, laid out so that the 2*HALF direct symbols read
 * them in order whichever way the residual is mirrored; zero beyond the rails. */
static uint16_t weight_up[GRID_CODES + 2 * HALF];   /* Q9: 64 << 9 = average width */
static uint16_t weight_down[GRID_CODES + 2 * HALF];
static uint16_t flat_weight[2 * HALF];
static uint32_t reciprocal[128];                  /* floor((2^39 - 1) / (128 + j)) */
static int tables_ready;

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

static void crc_init(void);

static void build_tables(void) {
    /* The grid is stored as 2-bit steps over 64 per code (see nw_tables.h). */
    int32_t value = NW_GRID_FIRST;
    for (int k = 0; k < GRID_CODES; k++) {
        if (k > 0) {
            int step = (nw_grid_steps[(k - 1) >> 2] >> (((k - 1) & 3) * 2)) & 3;
            value += 63 + step;
        }
        grid_value[k] = (int16_t)value;
    }
    for (int j = 0; j < GRID_CODES + 2 * HALF; j++) {
        int up = j - HALF, down = GRID_CODES - 1 + HALF - j;
        weight_up[j] = (uint16_t)((up >= 0 && up < GRID_CODES) ? nw_code_weight[up] << 9 : 0);
        weight_down[j] = (uint16_t)((down >= 0 && down < GRID_CODES) ? nw_code_weight[down] << 9 : 0);
    }
    for (int i = 0; i < 2 * HALF; i++) flat_weight[i] = 64 << 9;
    for (uint32_t j = 0; j < 128; j++) reciprocal[j] = (uint32_t)((((uint64_t)1 << 39) - 1) / (128 + j));
    /* Activity buckets: mean |residual| thresholds in Q4 units, roughly geometric. */
    static const uint16_t edges[CONTEXTS - 1] = {14, 20, 26, 32, 38, 46, 56, 70, 92, 124, 180};
    for (int a = 0; a < 256; a++) {
        int c = 0;
        while (c < CONTEXTS - 1 && (a << 2) >= edges[c]) c++;
        context_of_activity[a] = (uint8_t)c;
    }
    /* Cold start: each context begins with a two-sided geometric law whose mean matches
     * the context's activity, so the first thousand samples are not coded blind. */
    for (int d = 0; d < 2; d++) {
        channel_state *s = &initial_state[d];
        memset(s, 0, sizeof *s);
        s->domain = (uint32_t)d;
        s->activity = 16 * 4;
        for (int c = 0; c < CONTEXTS; c++) {
            uint32_t mean_q4 = c == 0 ? 10 : (c < CONTEXTS - 1 ? edges[c - 1] + edges[c] : 260) / (c < CONTEXTS - 1 ? 2 : 1);
            uint32_t ratio = (uint32_t)(((uint64_t)mean_q4 << 16) / (mean_q4 + 16)); /* q = m/(1+m), Q16 */
            uint32_t p = INIT_PEAK, total = 0;
            for (int r = 0; r < HALF; r++) {
                uint16_t f = (uint16_t)(p > 1 ? p : 1);
                s->main_freq[c][HALF + r] = f;          /* r >= 0 */
                s->main_freq[c][HALF - 1 - r] = f;      /* -(r+1): same mass shifted by one */
                total += 2u * f;
                p = (uint32_t)(((uint64_t)p * ratio) >> 16);
            }
            uint32_t tail = (uint32_t)(((uint64_t)p * 65536) / (65536 - ratio + 1));
            if (tail < 2) tail = 2;
            if (tail > INIT_PEAK * 2) tail = INIT_PEAK * 2;
            s->main_freq[c][SYM_BIG_NEG] = (uint16_t)tail;
            s->main_freq[c][SYM_BIG_POS] = (uint16_t)tail;
            s->main_freq[c][SYM_ESCAPE] = 1;
            s->main_total[c] = total + 2 * tail + 1;
        }
        uint32_t total = 0;
        for (int b = 0; b < BIG_SYMBOLS; b++) {
            uint16_t f = (uint16_t)(b < 14 ? 64 - 4 * b : 2);
            s->big_freq[b] = f;
            total += f;
        }
        s->big_total = total;
    }
    crc_init();
    tables_ready = 1;
}

/* Built on first use: by nw_prepare, or by the first coder made. Every coding call comes
 * after a coder was made, so threads handed coders (nw_team's) only ever read the tables. */
static void ensure_tables(void) {
    if (!tables_ready) build_tables();
}

void nw_prepare(void) { ensure_tables(); }

/* Code of an on-grid sample, or -1 when the value is not one of the grid's. */
static int grid_code(int32_t value) {
    /* The linear estimate is within one code of the answer, and nearly always on it. */
    int32_t k = (int32_t)(((value + 32768) * 1023 + 32767) / 65535);
    if (grid_value[k] == value) return (int)k;
    if (k > 0 && grid_value[k - 1] == value) return (int)k - 1;
    if (k < GRID_CODES - 1 && grid_value[k + 1] == value) return (int)k + 1;
    return -1;
}

/* Nearest code of any value: keeps the predictor's history sensible after an escape. */
static int32_t nearest_code(int32_t value) {
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

static void rc_put(range_encoder *rc, uint8_t byte) {
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

static void rc_encode_bits(range_encoder *rc, uint32_t value, int bits) {
    while (bits > 0) {
        int n = bits > 12 ? 12 : bits;
        bits -= n;
        uint32_t part = (value >> bits) & ((1u << n) - 1);
        rc->range >>= n;
        rc->low += (uint64_t)rc->range * part;
        while (rc->range < RANGE_TOP) { rc->range <<= 8; rc_shift_low(rc); }
    }
}

static void rc_flush(range_encoder *rc) {
    for (int i = 0; i < 5; i++) rc_shift_low(rc);
}

typedef struct range_decoder {
    uint32_t range, code;
    const uint8_t *in;
    size_t pos, len;
    size_t overrun;       /* bytes read past the end (fed as zeros) */
} range_decoder;

static uint8_t rd_byte(range_decoder *rd) {
    if (rd->pos < rd->len) return rd->in[rd->pos++];
    rd->overrun++;
    return 0;
}

static void rd_init(range_decoder *rd, const uint8_t *in, size_t len) {
    rd->in = in; rd->len = len; rd->pos = 0; rd->overrun = 0;
    rd->range = 0xFFFFFFFFu; rd->code = 0;
    for (int i = 0; i < 4; i++) rd->code = (rd->code << 8) | rd_byte(rd);
}

HOT void rd_normalize(range_decoder *rd) {
    /* Whether a symbol ends on a byte boundary is a coin toss, so away from the end of the
     * input the up to three bytes are taken without a loop. */
    if (rd->len - rd->pos >= 3) {
        uint32_t k = (rd->range < RANGE_TOP) + (rd->range < (1u << 16)) + (rd->range < (1u << 8));
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

static uint32_t rd_bits(range_decoder *rd, int bits) {
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

typedef struct coder {
    range_encoder enc;
    range_decoder dec;
} coder;

/* NLMS dot product and update. Lane bounds (|w| <= 2^15, |delta| <= 2^10, |step| < 2^15,
 * |scaled| <= 2^15) keep every product and sum exact, so both versions give the same bits.
 * The update is rounded to nearest: a floor would pull every weight down by half a unit
 * per sample, which costs more than the step's own precision.
 * Every vector store here is read back by a load of the same address and size, so the
 * CPU forwards it: a narrow store under a wide load would stall the per-sample chain. */
#if defined(__SSE2__) && TAPS % 8 == 0
/* w[1]*d[0] + ... + w[TAPS-1]*d[TAPS-2]: the next dot product but for its newest term. */
static inline int32_t nlms_dot_aged(const int16_t *w, const int16_t *d) {
    __m128i p = _mm_setzero_si128(), carry = _mm_setzero_si128();
    for (int i = 0; i < TAPS; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(d + i));
        p = _mm_add_epi32(p, _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(w + i)),
                                            _mm_or_si128(_mm_slli_si128(v, 2), carry)));
        carry = _mm_srli_si128(v, 14);
    }
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4E));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xB1));
    return _mm_cvtsi128_si32(p);
}
static inline void nlms_update(int16_t *w, const int16_t *d, int32_t step) {
    const __m128i st = _mm_set1_epi16((int16_t)step);
    for (int i = 0; i < TAPS; i += 8) {
        __m128i u = _mm_slli_epi16(_mm_loadu_si128((const __m128i *)(d + i)), UPDATE_SHIFT);
        /* high half of the product plus bit 15 of the low half: (step x scaled + 2^15) >> 16 */
        __m128i dw = _mm_add_epi16(_mm_mulhi_epi16(st, u), _mm_srli_epi16(_mm_mullo_epi16(st, u), 15));
        _mm_storeu_si128((__m128i *)(w + i), _mm_adds_epi16(_mm_loadu_si128((const __m128i *)(w + i)), dw));
    }
}
static inline void history_push(int16_t *d, int32_t delta) {
    __m128i carry = _mm_cvtsi32_si128((uint16_t)delta);
    for (int i = 0; i < TAPS; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(d + i));
        _mm_storeu_si128((__m128i *)(d + i), _mm_or_si128(_mm_slli_si128(v, 2), carry));
        carry = _mm_srli_si128(v, 14);
    }
}
static inline void count_direct(uint16_t *freq, int symbol, uint32_t inc) {
    const __m128i lane = _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7);
    __m128i *at = (__m128i *)(freq + (symbol & ~7));
    __m128i one_hot = _mm_cmpeq_epi16(lane, _mm_set1_epi16((int16_t)(symbol & 7)));
    _mm_storeu_si128(at, _mm_add_epi16(_mm_loadu_si128(at), _mm_and_si128(one_hot, _mm_set1_epi16((int16_t)inc))));
}
#else
static inline int32_t nlms_dot_aged(const int16_t *w, const int16_t *d) {
    int32_t acc = 0;
    for (int i = 1; i < TAPS; i++) acc += (int32_t)w[i] * d[i - 1];
    return acc;
}
static inline void nlms_update(int16_t *w, const int16_t *d, int32_t step) {
    for (int i = 0; i < TAPS; i++) {
        int32_t v = w[i] + ((step * (d[i] * (1 << UPDATE_SHIFT)) + (1 << 15)) >> 16);
        w[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
}
static inline void history_push(int16_t *d, int32_t delta) {
    for (int i = TAPS - 1; i > 0; i--) d[i] = d[i - 1];
    d[0] = (int16_t)delta;
}
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
 * as part of the symbol and c-1 raw bits. */
static void big_encode(channel_state *s, coder *co, int pass, uint32_t excess) {
    uint32_t v = excess + 1, c = 0;
    while ((v >> (c + 1)) != 0) c++;
    uint32_t symbol = c == 0 ? 0 : 1 + 2 * (c - 1) + ((v >> (c - 1)) & 1);
    if (pass == PASS_ENCODE) {
        uint32_t cum = 0;
        for (uint32_t i = 0; i < symbol; i++) cum += s->big_freq[i];
        rc_encode(&co->enc, cum, s->big_freq[symbol], s->big_total);
        if (c > 1) rc_encode_bits(&co->enc, v & ((1u << (c - 1)) - 1), (int)c - 1);
    }
    adapt(s->big_freq, &s->big_total, BIG_SYMBOLS, (int)symbol, BIG_INCREMENT, BIG_LIMIT);
}

static int big_decode(channel_state *s, coder *co, uint32_t *excess) {
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

/* One sample through the model: encodes `value`, decodes it into *value, or only updates
 * the state (stored blocks). Returns 0, or -1 on an impossible decoded value.
 * max_error k > 0 codes the residual quantised to steps of 2k+1 (the decoder rebuilds the
 * centre of the step), so every sample comes back within k domain units of the original;
 * the predictor runs on what the decoder rebuilds, so errors never accumulate. In
 * PASS_ENCODE *value receives the rebuilt sample.
 * `grid` is s->domain == DOMAIN_GRID, passed as a constant by the channel loops so that each
 * domain gets its own copy of the loop, free of per-sample tests of the domain. */
HOT int code_sample(channel_state *s, coder *co, int pass, int16_t *value, int32_t max_error,
                    const int grid) {
    const int32_t top = grid ? GRID_CODES - 1 : 65535;

    /* The predictor sees deltas in grid-sized units in both domains (|delta| <= 1023), so
     * every product and sum fits 16- and 32-bit lanes. */
    const int dshift = grid ? 0 : 6;
    int32_t acc = s->next_acc;
    /* Delayed update: the previous sample's correction lands after this prediction, so the
     * decoder's per-sample chain (sample -> update -> next prediction) loses a link. It
     * costs 0.001% of the output; decoding gains ~10%. */
    nlms_update(s->weights, s->pending, s->pending_step);
    /* The next prediction's weights are final now, and all of its history but the delta
     * this sample adds: summing those 15 terms here keeps the vector dot product and its
     * reduction off the chain, which then ends in one multiply-add. Exact, as the whole
     * sum is (see the lane bounds below). */
    const int32_t aged = nlms_dot_aged(s->weights, s->deltas);
    const int32_t newest_weight = s->weights[0];
    int64_t pred_q = ((int64_t)s->last << FRACTION_BITS) + (int64_t)(acc >> (WEIGHT_SHIFT - FRACTION_BITS)) * (1 << dshift);
    if (pred_q < 0) pred_q = 0;
    if (pred_q > ((int64_t)top << FRACTION_BITS)) pred_q = (int64_t)top << FRACTION_BITS;
    int32_t pred = (int32_t)((pred_q + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS);
    /* Mirror the residual so that the side the fractional prediction leans to is positive. */
    int32_t flip = (int32_t)((pred_q - ((int64_t)pred << FRACTION_BITS)) >> 63) | 1;

    int32_t act = s->activity >> (grid ? 2 : 8);
    int ctx = context_of_activity[act > 255 ? 255 : act];
    uint16_t *freq = s->main_freq[ctx];

    /* Weighted frequencies: each direct symbol is scaled by the width of the code it maps
     * to (64 = average width; 0 = outside the ADC's range, so impossible). */
    /* Quantised residuals span 2k+1 codes each: the widths of single codes do not apply. */
    const uint16_t *width = (!grid || max_error) ? flat_weight
                         : flip > 0 ? weight_up + pred : weight_down + (GRID_CODES - 1 - pred);
    /* Cumulative order: big-negative, the direct symbols in residual order, big-positive,
     * escape. */
    uint16_t g[2 * HALF];
    uint32_t lower, upper;
    weigh(freq, width, g, &lower, &upper);
    /* The escape-side symbols take the same unit-width scale (1/128) as the direct ones. */
    const uint32_t f_neg = (freq[SYM_BIG_NEG] >> 1) + 1, f_pos = (freq[SYM_BIG_POS] >> 1) + 1, f_esc = (freq[SYM_ESCAPE] >> 1) + 1;
    const uint32_t middle = f_neg + lower;       /* cumulative count where residual 0 starts */
    const uint32_t total = middle + upper + f_pos + f_esc;

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
            if (pass == PASS_ENCODE) *value = grid ? grid_value[x] : (int16_t)(x - 32768);
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
        if (symbol == SYM_BIG_NEG || symbol == SYM_BIG_POS)
            big_encode(s, co, pass, (uint32_t)(symbol == SYM_BIG_POS ? r - HALF : -HALF - 1 - r));
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
                if (big_decode(s, co, &excess) < 0) return -1;
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
            *value = grid ? grid_value[x] : (int16_t)(x - 32768);
        }
    }
    adapt(freq, &s->main_total[ctx], MAIN_SYMBOLS, symbol, MAIN_INCREMENT, MAIN_LIMIT);

    /* Update the activity and the NLMS predictor from the reconstructed sample. */
    int32_t mag = coded < 0 ? -coded : coded;
    if (!grid) mag >>= 6;
    if (mag > 1000) mag = 1000;
    s->activity += ((mag << 4) - s->activity) >> ACT_SHIFT;

    int32_t delta = x - s->last;
    int64_t err_q = ((int64_t)x << FRACTION_BITS) - pred_q;
    if (err_q > (1 << 20)) err_q = 1 << 20;
    if (err_q < -(1 << 20)) err_q = -(1 << 20);
    /* Step size / energy in Q34, through a 7-bit reciprocal: a division on every sample
     * would be the slowest instruction in the loop, and the step needs no more precision. */
    uint64_t e64 = (uint64_t)(s->energy + 64);
    int n = log2_floor64(e64);
    uint32_t m = (uint32_t)(n >= 7 ? e64 >> (n - 7) : e64 << (7 - n));
    int64_t step = (err_q * (int64_t)reciprocal[m - 128]) >> (n - 2);   /* err_q x gain, Q34 */
    step >>= 34 - WEIGHT_SHIFT + FRACTION_BITS + MU_SHIFT - 16 + UPDATE_SHIFT + dshift;
    s->pending_step = (int32_t)(step > 32767 ? 32767 : step < -32767 ? -32767 : step);
    memcpy(s->pending, s->deltas, sizeof s->pending);
    int32_t oldest = s->deltas[TAPS - 1];
    delta >>= dshift;
    s->energy += delta * delta - oldest * oldest;
    s->next_acc = aged + newest_weight * delta;
    history_push(s->deltas, delta);
    s->last = x;
    return 0;
}

/* One channel's samples of a block, `stride` apart. The block loops call these with
 * constant max_error and grid. `rebuilt` (bounded-error blocks only) receives what the
 * decoder will rebuild. */
HOT void encode_channel(channel_state *s, coder *co, const int16_t *samples, size_t stride,
                        int16_t *rebuilt, size_t rebuilt_stride, uint32_t n, int32_t max_error,
                        const int grid) {
    for (uint32_t t = 0; t < n; t++) {
        int16_t v = samples[(size_t)t * stride];
        code_sample(s, co, PASS_ENCODE, &v, max_error, grid);
        if (max_error) rebuilt[(size_t)t * rebuilt_stride] = v;
    }
}

HOT int decode_channel(channel_state *s, coder *co, int16_t *samples, size_t stride,
                       uint32_t n, int32_t max_error, const int grid) {
    for (uint32_t t = 0; t < n; t++) {
        if (code_sample(s, co, PASS_DECODE, &samples[(size_t)t * stride], max_error, grid) < 0)
            return NW_ERR_CORRUPT;
        if (co->dec.overrun > 8) return NW_ERR_TRUNCATED;
    }
    return NW_OK;
}

/* ---- CRC-32 (IEEE), table built with the others ---------------------------------- */
static uint32_t crc_table[4][256];   /* [k]: the byte k further on, to take four at a time */

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 4; k++)
        for (uint32_t i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
}

uint32_t nw_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    ensure_tables();
    crc = ~crc;
    size_t i = 0;
#if !defined(__OPTIMIZE_SIZE__)
    /* Four bytes per step (whole files are checked on every decode), except in the size
     * build; bytes are assembled explicitly, so the machine's byte order does not matter. */
    for (; i + 4 <= len; i += 4) {
        crc ^= (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 | (uint32_t)data[i + 2] << 16
             | (uint32_t)data[i + 3] << 24;
        crc = crc_table[3][crc & 0xFF] ^ crc_table[2][(crc >> 8) & 0xFF]
            ^ crc_table[1][(crc >> 16) & 0xFF] ^ crc_table[0][crc >> 24];
    }
#endif
    for (; i < len; i++) crc = crc_table[0][(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* CRC of the header's first 18 bytes, then of the samples as little-endian int16, row after
 * row of `channels` samples (rows `stride` apart), taken two samples (four bytes) per step. */
static uint32_t block_crc(const uint8_t *header, const int16_t *samples, uint32_t n,
                          uint32_t channels, size_t stride) {
    uint32_t crc = ~nw_crc32(0, header, 18);
    for (uint32_t t = 0; t < n; t++) {
        const int16_t *row = samples + (size_t)t * stride;
        uint32_t i = 0;
        for (; i + 1 < channels; i += 2) {
            crc ^= (uint32_t)(uint16_t)row[i] | (uint32_t)(uint16_t)row[i + 1] << 16;
            crc = crc_table[3][crc & 0xFF] ^ crc_table[2][(crc >> 8) & 0xFF]
                ^ crc_table[1][(crc >> 16) & 0xFF] ^ crc_table[0][crc >> 24];
        }
        if (i < channels) {   /* an odd row: its last sample alone, two bytes */
            crc ^= (uint16_t)row[i];
            crc = crc_table[1][crc & 0xFF] ^ crc_table[0][(crc >> 8) & 0xFF] ^ (crc >> 16);
        }
    }
    return ~crc;
}

/* ---- block layer ---------------------------------------------------------------------- */
#define MAGIC0 'N'
#define MAGIC1 'W'
#define FLAG_KEYFRAME 1u
#define FLAG_STORED 2u
#define MAX_ERROR_SHIFT 2         /* flags bits 2..7 hold max_error */

struct nw_encoder {
    uint32_t channels;
    uint32_t max_error;
    uint32_t next_index;
    int started;
    channel_state *state;
    uint64_t *channel_bytes;
};

struct nw_decoder {
    uint32_t channels;
    uint32_t next_index;
    int valid;
    channel_state *state;
};

const char *nw_strerror(int status) {
    switch (status) {
    case NW_OK: return "ok";
    case NW_ERR_ARGUMENT: return "invalid argument";
    case NW_ERR_NOMEM: return "out of memory";
    case NW_ERR_OUTPUT_FULL: return "output buffer too small";
    case NW_ERR_MAGIC: return "not a neurowire stream (bad magic)";
    case NW_ERR_VERSION: return "unsupported neurowire format version";
    case NW_ERR_TRUNCATED: return "truncated neurowire data";
    case NW_ERR_CORRUPT: return "corrupt neurowire data";
    case NW_ERR_CHECKSUM: return "checksum mismatch: corrupt neurowire data";
    case NW_ERR_CHANNELS: return "block channel count differs from the stream's";
    case NW_ERR_NEED_KEYFRAME: return "decoder has no state: resume at a keyframe";
    case NW_ERR_SEQUENCE: return "block out of sequence: a block is missing";
    default: return "unknown neurowire error";
    }
}

static int channels_ok(uint32_t channels) { return channels >= 1 && channels <= NW_MAX_CHANNELS; }

size_t nw_encode_bound(uint32_t channels, uint32_t n_samples) {
    return NW_BLOCK_HEADER_BYTES + (channels + 7) / 8 + 2 * (size_t)channels * n_samples;
}

nw_encoder *nw_encoder_new(uint32_t channels) {
    if (!channels_ok(channels)) return NULL;
    ensure_tables();
    nw_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->channels = channels;
    e->state = calloc(channels, sizeof *e->state);
    e->channel_bytes = calloc(channels, sizeof *e->channel_bytes);
    if (!e->state || !e->channel_bytes) { nw_encoder_free(e); return NULL; }
    return e;
}

uint32_t nw_encoder_channels(const nw_encoder *e) { return e ? e->channels : 0; }

void nw_encoder_free(nw_encoder *e) {
    if (!e) return;
    free(e->state);
    free(e->channel_bytes);
    free(e);
}

void nw_grid_values(int16_t *values) {
    ensure_tables();
    memcpy(values, grid_value, sizeof grid_value);
}

int nw_encoder_set_max_error(nw_encoder *e, uint32_t max_error) {
    if (!e || max_error > NW_MAX_ERROR_LIMIT) return NW_ERR_ARGUMENT;
    e->max_error = max_error;
    return NW_OK;
}

uint32_t nw_encoder_channel_bytes(const nw_encoder *e, uint64_t *totals, uint32_t count) {
    if (!e || !totals) return 0;
    uint32_t n = count < e->channels ? count : e->channels;
    memcpy(totals, e->channel_bytes, n * sizeof *totals);
    return n;
}

/* A channel is coded on the ADC grid when nearly all of its samples lie on it. */
static uint32_t choose_domain(const int16_t *samples, uint32_t n, size_t stride, uint32_t c) {
    uint32_t off = 0;
    for (uint32_t t = 0; t < n; t++) off += grid_code(samples[(size_t)t * stride + c]) < 0;
    return off * 16 <= n ? DOMAIN_GRID : DOMAIN_LINEAR;
}

static void write_header(uint8_t *out, uint32_t flags, uint32_t channels, uint32_t n,
                         uint32_t index, uint32_t payload) {
    out[0] = MAGIC0; out[1] = MAGIC1; out[2] = NW_FORMAT_VERSION; out[3] = (uint8_t)flags;
    nw_put_u16(out + 4, channels);
    nw_put_u32(out + 6, n);
    nw_put_u32(out + 10, index);
    nw_put_u32(out + 14, payload);
}

int64_t nw_encode_block(nw_encoder *e, const int16_t *samples, uint32_t n, int keyframe,
                        uint8_t *out, size_t out_cap) {
    return nw_encode_block_strided(e, samples, n, e ? e->channels : 0, keyframe, out, out_cap);
}

int64_t nw_encode_block_strided(nw_encoder *e, const int16_t *samples, uint32_t n, size_t stride,
                                int keyframe, uint8_t *out, size_t out_cap) {
    if (!e || (!samples && n) || !out || n > NW_MAX_BLOCK_SAMPLES || stride < e->channels)
        return NW_ERR_ARGUMENT;
    const uint32_t ch = e->channels;
    /* Checked before any state changes, so a refused call leaves the stream intact. */
    if (out_cap < nw_encode_bound(ch, n)) return NW_ERR_OUTPUT_FULL;
    const int32_t max_error = (int32_t)e->max_error;
    /* Bounded-error blocks check what the decoder rebuilds, which only the coding pass knows. */
    int16_t *rebuilt = NULL;
    if (max_error && n) {
        rebuilt = malloc((size_t)ch * n * sizeof *rebuilt);
        if (!rebuilt) return NW_ERR_NOMEM;
    }
    if (!e->started) keyframe = 1;
    keyframe = keyframe ? 1 : 0;

    uint8_t *payload = out + NW_BLOCK_HEADER_BYTES;
    size_t stored_bytes = (keyframe ? (ch + 7) / 8 : 0) + 2 * (size_t)ch * n;
    coder co;
    memset(&co, 0, sizeof co);
    range_encoder *rc = &co.enc;
    rc->range = 0xFFFFFFFFu;
    rc->first = 1;
    rc->out = payload;
    rc->cap = stored_bytes;       /* anything larger is sent stored instead */

    if (keyframe) {
        for (uint32_t c = 0; c < ch; c++) {
            uint32_t d = choose_domain(samples, n, stride, c);
            e->state[c] = initial_state[d];
            rc_encode_bits(rc, d, 1);
        }
    }
    for (uint32_t c = 0; c < ch; c++) {
        size_t before = rc->pos;
        channel_state *s = &e->state[c];
        const int grid = s->domain == DOMAIN_GRID;
        /* Constant arguments give each case its own loop: the lossless one has no quantiser
         * and neither has a per-sample test of the domain. */
        if (max_error) {
            if (grid) encode_channel(s, &co, samples + c, stride, rebuilt + c, ch, n, max_error, 1);
            else encode_channel(s, &co, samples + c, stride, rebuilt + c, ch, n, max_error, 0);
        } else {
            if (grid) encode_channel(s, &co, samples + c, stride, NULL, 0, n, 0, 1);
            else encode_channel(s, &co, samples + c, stride, NULL, 0, n, 0, 0);
        }
        e->channel_bytes[c] += rc->pos - before;
    }
    rc_flush(rc);

    uint32_t flags = (keyframe ? FLAG_KEYFRAME : 0) | (uint32_t)max_error << MAX_ERROR_SHIFT;
    size_t payload_bytes = rc->pos;
    if (rc->overflow || payload_bytes >= stored_bytes) {
        /* The model state was updated by the pass above, exactly as the decoder's update
         * pass over stored samples will update it. */
        flags |= FLAG_STORED;
        uint8_t *p = payload;
        if (keyframe) {
            memset(p, 0, (ch + 7) / 8);
            for (uint32_t c = 0; c < ch; c++) p[c / 8] |= (uint8_t)(e->state[c].domain << (c % 8));
            p += (ch + 7) / 8;
        }
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t c = 0; c < ch; c++, p += 2) nw_put_u16(p, (uint16_t)samples[(size_t)t * stride + c]);
        payload_bytes = stored_bytes;
    }
    write_header(out, flags, ch, n, e->next_index, (uint32_t)payload_bytes);
    /* A stored block decodes to the exact samples, a coded one to what was rebuilt. */
    if (rebuilt && !(flags & FLAG_STORED)) nw_put_u32(out + 18, block_crc(out, rebuilt, n, ch, ch));
    else nw_put_u32(out + 18, block_crc(out, samples, n, ch, stride));
    free(rebuilt);
    e->next_index++;
    e->started = 1;
    return (int64_t)(NW_BLOCK_HEADER_BYTES + payload_bytes);
}

int nw_block_peek(const uint8_t *in, size_t len, nw_block_info *info) {
    if (!in || !info) return NW_ERR_ARGUMENT;
    if (len < 2) return NW_ERR_TRUNCATED;
    if (in[0] != MAGIC0 || in[1] != MAGIC1) return NW_ERR_MAGIC;
    if (len < NW_BLOCK_HEADER_BYTES) return NW_ERR_TRUNCATED;
    if (in[2] != NW_FORMAT_VERSION) return NW_ERR_VERSION;
    info->max_error = (uint32_t)in[3] >> MAX_ERROR_SHIFT;   /* 0..63: every value is valid */
    info->channels = nw_get_u16(in + 4);
    info->n_samples = nw_get_u32(in + 6);
    info->index = nw_get_u32(in + 10);
    uint32_t payload = nw_get_u32(in + 14);
    info->crc32 = nw_get_u32(in + 18);
    info->keyframe = (in[3] & FLAG_KEYFRAME) != 0;
    info->stored = (in[3] & FLAG_STORED) != 0;
    if (!channels_ok(info->channels) || info->n_samples > NW_MAX_BLOCK_SAMPLES) return NW_ERR_CORRUPT;
    size_t stored_bytes = (info->keyframe ? (info->channels + 7) / 8 : 0)
                          + 2 * (size_t)info->channels * info->n_samples;
    if (payload > stored_bytes || (info->stored && payload != stored_bytes)) return NW_ERR_CORRUPT;
    if ((size_t)payload > len - NW_BLOCK_HEADER_BYTES) return NW_ERR_TRUNCATED;
    info->block_bytes = NW_BLOCK_HEADER_BYTES + payload;
    return NW_OK;
}

nw_decoder *nw_decoder_new(uint32_t channels) {
    if (!channels_ok(channels)) return NULL;
    ensure_tables();
    nw_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->channels = channels;
    d->state = calloc(channels, sizeof *d->state);
    if (!d->state) { free(d); return NULL; }
    return d;
}

uint32_t nw_decoder_channels(const nw_decoder *d) { return d ? d->channels : 0; }

void nw_decoder_free(nw_decoder *d) {
    if (!d) return;
    free(d->state);
    free(d);
}

void nw_decoder_reset(nw_decoder *d) {
    if (d) d->valid = 0;
}

static int decode_payload(nw_decoder *d, const nw_block_info *info, const uint8_t *payload,
                          int16_t *samples, size_t stride) {
    const uint32_t ch = d->channels, n = info->n_samples;
    const size_t payload_bytes = info->block_bytes - NW_BLOCK_HEADER_BYTES;
    if (info->stored) {
        const uint8_t *p = payload;
        if (info->keyframe) {
            for (uint32_t c = 0; c < ch; c++) d->state[c] = initial_state[(p[c / 8] >> (c % 8)) & 1];
            p += (ch + 7) / 8;
        }
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t c = 0; c < ch; c++, p += 2) samples[(size_t)t * stride + c] = (int16_t)nw_get_u16(p);
        for (uint32_t c = 0; c < ch; c++)
            for (uint32_t t = 0; t < n; t++)
                code_sample(&d->state[c], NULL, PASS_UPDATE, &samples[(size_t)t * stride + c],
                            (int32_t)info->max_error, d->state[c].domain == DOMAIN_GRID);
        return NW_OK;
    }
    coder co;
    memset(&co, 0, sizeof co);
    rd_init(&co.dec, payload, payload_bytes);
    if (info->keyframe)
        for (uint32_t c = 0; c < ch; c++) d->state[c] = initial_state[rd_bits(&co.dec, 1)];
    const int32_t max_error = (int32_t)info->max_error;
    for (uint32_t c = 0; c < ch; c++) {
        channel_state *s = &d->state[c];
        const int grid = s->domain == DOMAIN_GRID;
        int status;
        if (max_error) {
            if (grid) status = decode_channel(s, &co, samples + c, stride, n, max_error, 1);
            else status = decode_channel(s, &co, samples + c, stride, n, max_error, 0);
        } else {
            if (grid) status = decode_channel(s, &co, samples + c, stride, n, 0, 1);
            else status = decode_channel(s, &co, samples + c, stride, n, 0, 0);
        }
        if (status != NW_OK) return status;
    }
    return NW_OK;
}

int nw_decode_block(nw_decoder *d, const uint8_t *in, size_t len, int16_t *samples,
                    size_t samples_cap, nw_block_info *info) {
    if (!d) return NW_ERR_ARGUMENT;
    /* As many whole rows as the buffer holds. */
    return nw_decode_block_strided(d, in, len, samples, samples_cap / d->channels, d->channels, info);
}

int nw_decode_block_strided(nw_decoder *d, const uint8_t *in, size_t len, int16_t *samples,
                            size_t rows_cap, size_t stride, nw_block_info *info) {
    nw_block_info local;
    if (!info) info = &local;
    if (!d || !in || stride < d->channels) return NW_ERR_ARGUMENT;
    int status = nw_block_peek(in, len, info);
    if (status != NW_OK) { d->valid = 0; return status; }
    if (info->channels != d->channels) { d->valid = 0; return NW_ERR_CHANNELS; }
    if (info->n_samples > rows_cap || (!samples && info->n_samples)) {
        d->valid = 0;   /* the block is lost to this decoder like any other failed one */
        return NW_ERR_ARGUMENT;
    }
    if (!info->keyframe) {
        if (!d->valid) return NW_ERR_NEED_KEYFRAME;
        if (info->index != d->next_index) { d->valid = 0; return NW_ERR_SEQUENCE; }
    }
    status = decode_payload(d, info, in + NW_BLOCK_HEADER_BYTES, samples, stride);
    if (status == NW_OK && block_crc(in, samples, info->n_samples, info->channels, stride) != info->crc32)
        status = NW_ERR_CHECKSUM;
    if (status != NW_OK) { d->valid = 0; return status; }
    d->valid = 1;
    d->next_index = info->index + 1;
    return NW_OK;
}
