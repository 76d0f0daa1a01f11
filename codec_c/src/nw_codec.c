/*
 * Block codec: per-channel NLMS prediction on ADC codes, residuals coded with an adaptive
 * range coder whose probabilities are weighted by the width of the ADC code each residual
 * would land on. The bitstream is described in docs/FORMAT.md.
 *
 * All model arithmetic is integer so that every platform decodes what every other encoded.
 */
#include "nw_model.h"
#include "nw_tables.h"

/* ---- tables (described where nw_model.h declares them) ----------------------------- */
int16_t nw_code_value[GRID_CODES];
uint8_t nw_context_of_activity[256];
channel_state nw_initial_state[2];
/* File container version 3's cold state: the same laws with a weaker prior (FILE_INIT_PEAK),
 * which a whole file's samples soon outweigh. */
static channel_state file_initial_state[2];
#define FILE_INIT_PEAK 80
uint16_t nw_weight_up[GRID_CODES + 2 * HALF];
uint16_t nw_weight_down[GRID_CODES + 2 * HALF];
uint16_t nw_flat_weight[2 * HALF];
uint32_t nw_reciprocal[128];
uint32_t nw_phi[2 * PHI_HALF + 1];
int32_t nw_code_edge[GRID_CODES + 1 + 2 * EDGE_PAD];
/* The analog model's constants per activity context, fitted to the development recordings
 * by codec_c/tables/fit_analog.py (cross-validated: see its docstring; it builds the codec
 * with other values through these macros). */
#ifndef ANALOG_SCALE
#define ANALOG_SCALE 256, 224, 166, 141, 122, 109, 96, 86, 77, 77, 67, 45
#endif
#ifndef ANALOG_SHARE
#define ANALOG_SHARE 128, 128, 230, 230, 154, 102, 102, 77, 102, 102, 77, 51
#endif
const uint16_t nw_analog_scale[CONTEXTS] = {ANALOG_SCALE};
/* Activity bounds of the contexts (mean |residual|, Q4): context c holds [bound[c],
 * bound[c+1]). The last context's upper bound is nominal: only file container version 4's
 * blend (context_blend) reads it, as that context's width. */
const uint16_t nw_context_bound[CONTEXTS + 1] = {CONTEXT_BOUNDS};
const uint16_t nw_analog_share[CONTEXTS] = {ANALOG_SHARE};
static int tables_ready;


static void crc_init(void);

/* The analog model's tables: the codes' edges (cumulative widths), and the Gaussian CDF by
 * integer arithmetic alone, so that every platform builds the same table: the density
 * exp(-t^2 / 2048) at t / 32 standard deviations steps by the factor exp(-(2t+1) / 2048),
 * itself updated by exp(-1/1024) (both Q30), and the CDF sums it by trapezoids. */
static void build_analog_tables(void) {
    int32_t edge = 0;
    for (int k = -EDGE_PAD; k <= GRID_CODES + EDGE_PAD; k++) {
        nw_code_edge[k + EDGE_PAD] = edge << EDGE_FRACTION;
        if (k >= 0 && k < GRID_CODES) edge += nw_code_weight[k];
    }
    uint64_t density[PHI_HALF + 1], factor = 1073217664u, sum[PHI_HALF + 1];
    density[0] = 1u << 30;
    sum[0] = 0;
    for (int t = 0; t < PHI_HALF; t++) {
        density[t + 1] = (density[t] * factor) >> 30;
        factor = (factor * 1072693760u) >> 30;
        sum[t + 1] = sum[t] + ((density[t] + density[t + 1]) >> 1);
    }
    for (int t = 0; t <= PHI_HALF; t++) {
        uint32_t half = (uint32_t)((sum[t] * 32768) / sum[PHI_HALF]);
        nw_phi[PHI_HALF + t] = 32768 + half;
        nw_phi[PHI_HALF - t] = 32768 - half;
    }
}

static void build_tables(void) {
    /* The grid is stored as 2-bit steps over 64 per code (see nw_tables.h). */
    int32_t value = NW_GRID_FIRST;
    for (int k = 0; k < GRID_CODES; k++) {
        if (k > 0) {
            int step = (nw_grid_steps[(k - 1) >> 2] >> (((k - 1) & 3) * 2)) & 3;
            value += 63 + step;
        }
        nw_code_value[k] = (int16_t)value;
    }
    for (int j = 0; j < GRID_CODES + 2 * HALF; j++) {
        int up = j - HALF, down = GRID_CODES - 1 + HALF - j;
        nw_weight_up[j] = (uint16_t)((up >= 0 && up < GRID_CODES) ? nw_code_weight[up] << 9 : 0);
        nw_weight_down[j] = (uint16_t)((down >= 0 && down < GRID_CODES) ? nw_code_weight[down] << 9 : 0);
    }
    for (int i = 0; i < 2 * HALF; i++) nw_flat_weight[i] = 64 << 9;
    for (uint32_t j = 0; j < 128; j++) nw_reciprocal[j] = (uint32_t)((((uint64_t)1 << 39) - 1) / (128 + j));
    /* Activity buckets: mean |residual| thresholds in Q4 units, roughly geometric. */
    const uint16_t *edges = nw_context_bound + 1;
    for (int a = 0; a < 256; a++) {
        int c = 0;
        while (c < CONTEXTS - 1 && (a << 2) >= edges[c]) c++;
        nw_context_of_activity[a] = (uint8_t)c;
    }
    /* Cold start: each context begins with a two-sided geometric law whose mean matches
     * the context's activity, so the first thousand samples are not coded blind. */
    for (int i = 0; i < 4; i++) {
        const int d = i & 1;
        const uint32_t peak = i < 2 ? INIT_PEAK : FILE_INIT_PEAK;
        channel_state *s = i < 2 ? &nw_initial_state[d] : &file_initial_state[d];
        memset(s, 0, sizeof *s);
        s->domain = (uint32_t)d;
        s->activity = 16 * 4;
        for (int c = 0; c < CONTEXTS; c++) {
            uint32_t mean_q4 = c == 0 ? 10 : (c < CONTEXTS - 1 ? edges[c - 1] + edges[c] : 260) / (c < CONTEXTS - 1 ? 2 : 1);
            uint32_t ratio = (uint32_t)(((uint64_t)mean_q4 << 16) / (mean_q4 + 16)); /* q = m/(1+m), Q16 */
            uint32_t p = peak, total = 0;
            for (int r = 0; r < HALF; r++) {
                uint16_t f = (uint16_t)(p > 1 ? p : 1);
                s->main_freq[c][HALF + r] = f;          /* r >= 0 */
                s->main_freq[c][HALF - 1 - r] = f;      /* -(r+1): same mass shifted by one */
                total += 2u * f;
                p = (uint32_t)(((uint64_t)p * ratio) >> 16);
            }
            uint32_t tail = (uint32_t)(((uint64_t)p * 65536) / (65536 - ratio + 1));
            if (tail < 2) tail = 2;
            if (tail > peak * 2) tail = peak * 2;
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
    build_analog_tables();
    crc_init();
    tables_ready = 1;
}

/* Built on first use: by nw_prepare, or by the first coder made. Every coding call comes
 * after a coder was made, so threads handed coders (nw_team's) only ever read the tables. */
static void ensure_tables(void) {
    if (!tables_ready) build_tables();
}

void nw_prepare(void) { ensure_tables(); }


/* ---- the version 1 predictor -------------------------------------------------------- */

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
#endif


/* ---- file container version 4's second predictor -------------------------------------
 * Least squares over the deltas' autocorrelation (lags 0..LS_TAPS, each block's added to
 * the past's, which fades by 1/32 a block), solved every LS_BLOCK samples by Gauss-Seidel
 * sweeps started from the last solution. The NLMS predictor follows fast changes, this one
 * the steadier law of the last ~65 000 samples; their errors differ, so the prediction coded
 * is the NLMS one plus a learned share of the difference (ls_mix). Integer arithmetic, as
 * everywhere in the model. */
#define LS_BLOCK 2048
#define LS_FADE 5                 /* the past's autocorrelation loses 1/32 a block */
#define LS_SWEEPS 4
#define LS_RIDGE 10               /* the diagonal gains 1/1024: keeps the solve well-posed */
#define MIX_RATE 12               /* the share's step: gradient x 2^-12 */
#define MIX_ONE 4096              /* the share is Q12, within [0, 1] */

static void ls_solve(analog_learning *al) {
    int64_t c[LS_TAPS + 1];
    int shift = 0;
    while ((al->ls_corr[0] >> shift) >= ((int64_t)1 << 30)) shift++;   /* products stay < 2^54 */
    for (int k = 0; k <= LS_TAPS; k++) c[k] = al->ls_corr[k] >> shift;
    if (c[0] <= 0) return;        /* no signal yet */
    const int64_t diagonal = c[0] + (c[0] >> LS_RIDGE), limit = (int64_t)1 << 23;
    int64_t *a = al->ls_solution;
    for (int sweep = 0; sweep < LS_SWEEPS; sweep++)
        for (int i = 0; i < LS_TAPS; i++) {
            int64_t sum = c[i + 1] * ((int64_t)1 << 20);
            for (int j = 0; j < LS_TAPS; j++)
                if (j != i) sum -= c[i > j ? i - j : j - i] * a[j];
            int64_t v = sum / diagonal;
            a[i] = v > limit ? limit : v < -limit ? -limit : v;
        }
    for (int k = 0; k < LS_TAPS; k++) al->ls_weight[k] = (int32_t)(a[k] >> 6);
    al->ls_ready = 1;
}

/* The prediction to code, from the NLMS one (pred_q, clamped), Q4. */
static int64_t ls_mix(analog_learning *al, int32_t last, int64_t pred_q, int32_t top, int dshift) {
    al->mix_diff = 0;
    al->mix_base = pred_q;
    if (!al->ls_ready) return pred_q;
    int64_t acc = 0;
    for (int k = 0; k < LS_TAPS; k++) acc += (int64_t)al->ls_weight[k] * al->ls_delta[k];
    int64_t ls_q = ((int64_t)last << FRACTION_BITS) + (acc >> (WEIGHT_SHIFT - FRACTION_BITS)) * (1 << dshift);
    /* Held within 2^20 (a whole domain, Q4), so that the share's step cannot overflow
     * whatever a stream's least-squares weights predict. */
    const int64_t diff = ls_q - pred_q, bound = (int64_t)1 << 20;
    al->mix_diff = diff > bound ? bound : diff < -bound ? -bound : diff;
    int64_t q = pred_q + ((al->mix_diff * al->mix_weight) >> 12);
    return q < 0 ? 0 : q > ((int64_t)top << FRACTION_BITS) ? (int64_t)top << FRACTION_BITS : q;
}

/* After the sample x (domain units) and its delta (grid-sized units): the share's step on
 * the squared error of the mix, normalised by the difference's power; then the delta into
 * the autocorrelation. */
static void ls_learn(analog_learning *al, int32_t x, int32_t delta) {
    const int64_t diff = al->mix_diff;
    if (diff) {
        int64_t error = ((int64_t)x << FRACTION_BITS) - al->mix_base - ((diff * al->mix_weight) >> 12);
        al->mix_power += (diff * diff - al->mix_power) >> 6;
        int64_t w = al->mix_weight + ((error * diff * MIX_ONE) >> MIX_RATE) / (al->mix_power + 16);
        al->mix_weight = w < 0 ? 0 : w > MIX_ONE ? MIX_ONE : w;
    }
    /* The channel's first delta is from the cold state's 0, not from the signal: its square
     * alone would outweigh thousands of samples in the sums. */
    if (!al->ls_started) {
        al->ls_started = 1;
        return;
    }
    memmove(al->ls_delta + 1, al->ls_delta, LS_TAPS * sizeof *al->ls_delta);
    al->ls_delta[0] = delta;
    for (int k = 0; k <= LS_TAPS; k++) al->ls_block[k] += (int64_t)delta * al->ls_delta[k];
    if (++al->ls_count == LS_BLOCK) {
        for (int k = 0; k <= LS_TAPS; k++) {
            al->ls_corr[k] += al->ls_block[k] - (al->ls_corr[k] >> LS_FADE);
            al->ls_block[k] = 0;
        }
        al->ls_count = 0;
        ls_solve(al);
    }
}

/* One sample through the model: encodes `value`, decodes it into *value, or only updates
 * the state (stored blocks). Returns 0, or -1 on an impossible decoded value.
 * max_error k > 0 codes the residual quantised to steps of 2k+1 (the decoder rebuilds the
 * centre of the step), so every sample comes back within k domain units of the original;
 * the predictor runs on what the decoder rebuilds, so errors never accumulate. In
 * PASS_ENCODE *value receives the rebuilt sample.
 * `grid` is s->domain == DOMAIN_GRID, passed as a constant by the channel loops so that each
 * domain gets its own copy of the loop, free of per-sample tests of the domain. */
HOT int code_sample_with(channel_state *s, coder *co, int pass, int16_t *value, int32_t max_error,
                         const int grid, const int analog) {
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
    /* File container version 4 codes a mix of two predictions; the NLMS one still learns
     * from its own error. */
    const int64_t coded_q = analog == ANALOG_BLEND ? ls_mix(co->learn, s->last, pred_q, top, dshift) : pred_q;
    int32_t x;
    if (model_code_with(s, co, pass, value, max_error, grid, coded_q, &x, analog) < 0) return -1;
    int32_t delta = x - s->last;
    s->pending_step = nlms_step(((int64_t)x << FRACTION_BITS) - pred_q, s->energy, dshift);
    memcpy(s->pending, s->deltas, sizeof s->pending);
    int32_t oldest = s->deltas[TAPS - 1];
    delta >>= dshift;
    s->energy += delta * delta - oldest * oldest;
    s->next_acc = aged + newest_weight * delta;
    if (analog == ANALOG_BLEND) ls_learn(co->learn, x, delta);
    history_push(s->deltas, delta);
    s->last = x;
    return 0;
}

/* The block format's sample: counts alone. */
HOT int code_sample(channel_state *s, coder *co, int pass, int16_t *value, int32_t max_error,
                    const int grid) {
    return code_sample_with(s, co, pass, value, max_error, grid, 0);
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

/* The lossless decoding loop of a file's channel (container versions 2 and 3: `analog`). */
static int decode_channel_with(channel_state *s, coder *co, int16_t *samples, size_t stride,
                               uint32_t n, const int grid, int analog) {
    for (uint32_t t = 0; t < n; t++) {
        if (code_sample_with(s, co, PASS_DECODE, &samples[(size_t)t * stride], 0, grid, analog) < 0)
            return NW_ERR_CORRUPT;
        if (co->dec.overrun > 8) return NW_ERR_TRUNCATED;
    }
    return NW_OK;
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
uint32_t nw_block_crc(const uint8_t *header, const int16_t *samples, uint32_t n,
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

int nw_channels_ok(uint32_t channels) { return channels >= 1 && channels <= NW_MAX_CHANNELS; }

size_t nw_encode_bound(uint32_t channels, uint32_t n_samples) {
    return NW_BLOCK_HEADER_BYTES + (channels + 7) / 8 + 2 * (size_t)channels * n_samples;
}

nw_encoder *nw_encoder_new(uint32_t channels) {
    if (!nw_channels_ok(channels)) return NULL;
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
    memcpy(values, nw_code_value, sizeof nw_code_value);
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
uint32_t nw_choose_domain(const int16_t *samples, uint32_t n, size_t stride, uint32_t c) {
    uint32_t off = 0;
    for (uint32_t t = 0; t < n; t++) off += grid_code(samples[(size_t)t * stride + c]) < 0;
    return off * 16 <= n ? DOMAIN_GRID : DOMAIN_LINEAR;
}

void nw_write_block_header(uint8_t *out, uint32_t version, uint32_t flags, uint32_t channels,
                           uint32_t n, uint32_t index, uint32_t payload) {
    out[0] = MAGIC0; out[1] = MAGIC1; out[2] = (uint8_t)version; out[3] = (uint8_t)flags;
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
    rc_start(rc, payload, stored_bytes);   /* anything larger is sent stored instead */

    if (keyframe) {
        for (uint32_t c = 0; c < ch; c++) {
            uint32_t d = nw_choose_domain(samples, n, stride, c);
            e->state[c] = nw_initial_state[d];
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

    uint32_t flags = (keyframe ? NW_FLAG_KEYFRAME : 0) | (uint32_t)max_error << NW_MAX_ERROR_SHIFT;
    size_t payload_bytes = rc->pos;
    if (rc->overflow || payload_bytes >= stored_bytes) {
        /* The model state was updated by the pass above, exactly as the decoder's update
         * pass over stored samples will update it. */
        flags |= NW_FLAG_STORED;
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
    nw_write_block_header(out, NW_FORMAT_VERSION, flags, ch, n, e->next_index, (uint32_t)payload_bytes);
    /* A stored block decodes to the exact samples, a coded one to what was rebuilt. */
    if (rebuilt && !(flags & NW_FLAG_STORED)) nw_put_u32(out + 18, nw_block_crc(out, rebuilt, n, ch, ch));
    else nw_put_u32(out + 18, nw_block_crc(out, samples, n, ch, stride));
    free(rebuilt);
    e->next_index++;
    e->started = 1;
    return (int64_t)(NW_BLOCK_HEADER_BYTES + payload_bytes);
}

int nw_block_peek(const uint8_t *in, size_t len, nw_block_info *info) {
    return nw_read_block_header(in, len, NW_FORMAT_VERSION, info);
}

int nw_read_block_header(const uint8_t *in, size_t len, uint32_t version, nw_block_info *info) {
    if (!in || !info) return NW_ERR_ARGUMENT;
    if (len < 2) return NW_ERR_TRUNCATED;
    if (in[0] != MAGIC0 || in[1] != MAGIC1) return NW_ERR_MAGIC;
    if (len < NW_BLOCK_HEADER_BYTES) return NW_ERR_TRUNCATED;
    if (in[2] != version) return NW_ERR_VERSION;
    info->max_error = (uint32_t)in[3] >> NW_MAX_ERROR_SHIFT;   /* 0..63: every value is valid */
    info->channels = nw_get_u16(in + 4);
    info->n_samples = nw_get_u32(in + 6);
    info->index = nw_get_u32(in + 10);
    uint32_t payload = nw_get_u32(in + 14);
    info->crc32 = nw_get_u32(in + 18);
    info->keyframe = (in[3] & NW_FLAG_KEYFRAME) != 0;
    info->stored = (in[3] & NW_FLAG_STORED) != 0;
    if (!nw_channels_ok(info->channels) || info->n_samples > NW_MAX_BLOCK_SAMPLES) return NW_ERR_CORRUPT;
    size_t stored_bytes = (info->keyframe ? (info->channels + 7) / 8 : 0)
                          + 2 * (size_t)info->channels * info->n_samples;
    if (payload > stored_bytes || (info->stored && payload != stored_bytes)) return NW_ERR_CORRUPT;
    if ((size_t)payload > len - NW_BLOCK_HEADER_BYTES) return NW_ERR_TRUNCATED;
    info->block_bytes = NW_BLOCK_HEADER_BYTES + payload;
    return NW_OK;
}

nw_decoder *nw_decoder_new(uint32_t channels) {
    if (!nw_channels_ok(channels)) return NULL;
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
            for (uint32_t c = 0; c < ch; c++) d->state[c] = nw_initial_state[(p[c / 8] >> (c % 8)) & 1];
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
        for (uint32_t c = 0; c < ch; c++) d->state[c] = nw_initial_state[rd_bits(&co.dec, 1)];
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
    if (status == NW_OK && nw_block_crc(in, samples, info->n_samples, info->channels, stride) != info->crc32)
        status = NW_ERR_CHECKSUM;
    if (status != NW_OK) { d->valid = 0; return status; }
    d->valid = 1;
    d->next_index = info->index + 1;
    return NW_OK;
}

/* ---- samples of a file (container versions 2 and 3) ---------------------------------
 * One range coder over the whole recording, channel after channel, each from a cold state
 * (a bit for its domain first) and with the analog model mixed in; no block headers, and
 * the coder's trailing zero bytes dropped (the decoder reads zeros past the end). Version 3
 * (written now) learns the analog model's share as it goes and starts from a weaker prior;
 * version 2 is decoded only. */
#define FILE_TRIM_LIMIT 3

/* A channel's cold start in a file of the given version. */
static void file_channel_start(channel_state *s, analog_learning *al, uint32_t domain, int version) {
    *s = version == 2 ? nw_initial_state[domain] : file_initial_state[domain];
    memset(al, 0, sizeof *al);
    al->mix_weight = MIX_ONE / 2;
    al->mix_power = 1 << 10;
    for (int c = 0; c < CONTEXTS; c++) al->share[c] = nw_analog_share[c] << 8;
}

int64_t nw_file_encode_samples(const int16_t *samples, uint32_t frames, uint32_t channels,
                               uint8_t *out, size_t out_cap) {
    ensure_tables();
    channel_state *s = malloc(sizeof *s);
    if (!s) return NW_ERR_NOMEM;
    coder co;
    analog_learning learn;
    memset(&co, 0, sizeof co);
    co.learn = &learn;
    range_encoder *rc = &co.enc;
    rc_start(rc, out, out_cap);
    for (uint32_t c = 0; c < channels; c++) {
        uint32_t d = nw_choose_domain(samples, frames, channels, c);
        file_channel_start(s, co.learn, d, NW_FILE_FORMAT_VERSION);
        rc_encode_bits(rc, d, 1);
        for (uint32_t t = 0; t < frames; t++) {
            int16_t v = samples[(size_t)t * channels + c];
            if (d == DOMAIN_GRID) code_sample_with(s, &co, PASS_ENCODE, &v, 0, 1, ANALOG_BLEND);
            else code_sample_with(s, &co, PASS_ENCODE, &v, 0, 0, ANALOG_BLEND);
        }
    }
    free(s);
    /* Any value in [low, low + range) decodes the same; the one with three zero low bytes
     * (range >= 2^24 leaves room for it) ends the coder's bytes in zeros. */
    rc->low = (rc->low + 0xFFFFFFu) & ~(uint64_t)0xFFFFFFu;
    rc_flush(rc);
    if (rc->overflow) return NW_ERR_OUTPUT_FULL;
    size_t n = rc->pos;
    for (int dropped = 0; dropped < FILE_TRIM_LIMIT && n > 0 && out[n - 1] == 0; dropped++) n--;
    return (int64_t)n;
}

int nw_file_decode_samples(const uint8_t *in, size_t len, int16_t *samples, uint32_t frames,
                           uint32_t channels, int version) {
    ensure_tables();
    channel_state *s = malloc(sizeof *s);
    if (!s) return NW_ERR_NOMEM;
    coder co;
    analog_learning learn;
    memset(&co, 0, sizeof co);
    co.learn = &learn;
    rd_init(&co.dec, in, len);
    int status = NW_OK;
    for (uint32_t c = 0; c < channels && status == NW_OK; c++) {
        const int analog = version == 2 ? ANALOG_FIXED : version == 3 ? ANALOG_LEARNED : ANALOG_BLEND;
        file_channel_start(s, co.learn, rd_bits(&co.dec, 1), version);
        if (s->domain == DOMAIN_GRID) status = decode_channel_with(s, &co, samples + c, channels, frames, 1, analog);
        else status = decode_channel_with(s, &co, samples + c, channels, frames, 0, analog);
    }
    free(s);
    if (status != NW_OK) return status;
    if (co.dec.overrun > FILE_TRIM_LIMIT) return NW_ERR_TRUNCATED;
    /* The encoder writes exactly the bytes its decoder reads, less trailing zeros while it
     * may drop them: anything else at the end was added. */
    if (co.dec.pos != co.dec.len || (len > 0 && in[len - 1] == 0 && co.dec.overrun < FILE_TRIM_LIMIT))
        return NW_ERR_CORRUPT;
    return NW_OK;
}
