/*
 * What cheaper versions of the lane format's model (block format 2) would cost in ratio:
 * the model of nw_model.h (NLMS-16, 12 activity contexts, 35 adaptive counts per context,
 * the direct symbols' counts weighted by their codes' widths) and variants of it, each
 * recording one channel coded from the cold state to its end, priced by ideal code lengths
 * (-log2 of each symbol's share of its total; the range coder adds ~0.03 % to them, and
 * a stream's block headers the same bytes to every variant).
 *
 * It uses the codec's own tables and helpers (nw_prepare, nlms_step, grid_code), so the
 * first row is the format-2 model itself: its ratio is the lane encoder's within ~0.03 %
 * (StreamEncoder(1, format_version=2), one block per recording, payload bytes).
 *
 * Build and run (prints the ratio on each half of the sorted file names and the change
 * against the first row; docs/MODEL_MEASUREMENTS.md has a run):
 *   cc -O2 -std=c99 -Icodec_c/src -o build/model_variants codec_c/tables/model_variants.c \
 *      codec_c/src/nw_codec.c -lm
 *   find ../shared/data/challenge -name '*.wav' | sort | xargs build/model_variants
 */
#include "nw_model.h"

#include <math.h>
#include <stdio.h>

enum norm {
    NORM_EXACT,     /* the total as it falls: the coder divides by it (format 2) */
    NORM_RECIP,     /* the weighted counts scaled to 2^15 by an 8-bit reciprocal of their sum,
                     * the rounding's slack added to the largest: the coder shifts */
    NORM_SHIFT      /* probabilities that sum to 2^15, adapted by p -= p >> rate (the decay
                     * given to the coded symbol) instead of counted; widths as NORM_RECIP */
};

typedef struct variant {
    const char *name;
    int taps;          /* 0..TAPS (0: the last sample predicts) */
    int sign_step;     /* 0: NLMS as format 2; else sign-sign LMS, this step (Q14) */
    int widths;        /* direct symbols weighted by their codes' widths: 2*HALF = all,
                        * k = the central k only, 0 = none */
    int half;          /* direct residuals -half..half-1 (format 2: HALF) */
    int contexts;      /* CONTEXTS, or CONTEXTS / 2 (neighbouring pairs merged) */
    enum norm norm;
    int rate;          /* NORM_SHIFT's adaptation rate */
    int snapshot;      /* > 0: the symbols are priced by a copy of the counts taken every
                        * `snapshot` samples (tables rebuilt per block), counted every sample */
} variant;

static const variant variants[] = {
    {"format 2 model (reference)", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"no code-width weighting", TAPS, 0, 0, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"widths on the central 16 symbols", TAPS, 0, 16, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"widths on the central 4 symbols", TAPS, 0, 4, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"no predictor (the last sample)", 0, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"NLMS-8", 8, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"NLMS-4", 4, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"NLMS-2", 2, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"sign-sign LMS-16, step 4", TAPS, 4, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"sign-sign LMS-8, step 8", 8, 8, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"sign-sign LMS-4, step 8", 4, 8, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 0},
    {"half 8 (19 symbols)", TAPS, 0, 2 * 8, 8, CONTEXTS, NORM_EXACT, 0, 0},
    {"6 contexts", TAPS, 0, 2 * HALF, HALF, CONTEXTS / 2, NORM_EXACT, 0, 0},
    {"counts priced from a copy per 10 samples", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 10},
    {"counts priced from a copy per 32 samples", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 32},
    {"total 2^15 by reciprocal", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_RECIP, 0, 0},
    {"shift-adapted 2^15, rate 7", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_SHIFT, 7, 0},
    {"shift-adapted 2^15, rate 8", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_SHIFT, 8, 0},
    {"shift-adapted 2^15, rate 10", TAPS, 0, 2 * HALF, HALF, CONTEXTS, NORM_SHIFT, 10, 0},
    {"shift-adapted 2^15, rate 9, no widths", TAPS, 0, 0, HALF, CONTEXTS, NORM_SHIFT, 9, 0},
    {"sign-sign-8 + copy per 10", 8, 8, 2 * HALF, HALF, CONTEXTS, NORM_EXACT, 0, 10},
    {"sign-sign-8 + copy per 10 + 2^15 + 6 contexts", 8, 8, 2 * HALF, HALF, CONTEXTS / 2, NORM_RECIP, 0, 10},
};

#define SYMBOLS_MAX MAIN_SYMBOLS
#define PROB_ONE 32768u

typedef struct model {
    int16_t weights[TAPS], deltas[TAPS];
    int32_t last, energy, activity;
    uint32_t freq[CONTEXTS][SYMBOLS_MAX], total[CONTEXTS];
    uint32_t priced[CONTEXTS][SYMBOLS_MAX], priced_total[CONTEXTS];   /* the snapshot */
    uint32_t big[BIG_SYMBOLS], big_total;
    long since;
} model;

/* The cold state of format 2 (nw_initial_state), its direct symbols narrowed to `half`:
 * the counts left out go to the big-symbol sides. */
static void model_init(model *m, const variant *v) {
    const channel_state *cold = &nw_initial_state[DOMAIN_GRID];
    const int h = v->half, n = 2 * h + 3;
    memset(m, 0, sizeof *m);
    m->activity = cold->activity;
    for (int c = 0; c < CONTEXTS; c++) {
        const uint16_t *f = cold->main_freq[c];
        uint32_t low = f[SYM_BIG_NEG], high = f[SYM_BIG_POS];
        for (int r = -HALF; r < -h; r++) low += f[r + HALF];
        for (int r = h; r < HALF; r++) high += f[r + HALF];
        for (int r = -h; r < h; r++) m->freq[c][r + h] = f[r + HALF];
        m->freq[c][2 * h] = low;
        m->freq[c][2 * h + 1] = high;
        m->freq[c][2 * h + 2] = f[SYM_ESCAPE];
        uint32_t t = 0;
        for (int i = 0; i < n; i++) t += m->freq[c][i];
        if (v->norm == NORM_SHIFT) {
            uint32_t u = 0;
            for (int i = 0; i < n; i++) {
                m->freq[c][i] = (uint32_t)((uint64_t)m->freq[c][i] * PROB_ONE / t) + 1;
                u += m->freq[c][i];
            }
            m->freq[c][h] -= u - PROB_ONE;   /* exactly 2^15 (residual 0 is the largest) */
            t = PROB_ONE;
        }
        m->total[c] = t;
    }
    memcpy(m->priced, m->freq, sizeof m->priced);
    memcpy(m->priced_total, m->total, sizeof m->priced_total);
    for (int b = 0; b < BIG_SYMBOLS; b++) m->big[b] = cold->big_freq[b];
    m->big_total = cold->big_total;
}

static void count(uint32_t *freq, uint32_t *total, int symbols, int symbol, uint32_t inc, uint32_t limit) {
    freq[symbol] += inc;
    if ((*total += inc) <= limit) return;
    *total = 0;
    for (int i = 0; i < symbols; i++) *total += freq[i] = (freq[i] + 1) >> 1;
}

/* Scales g (sum `sum`) to at most 2^15 through an 8-bit reciprocal, each at least 1, and gives
 * the slack to the largest: what a coder without a division would code with. */
static void to_power_of_two(uint32_t *g, int n, uint32_t sum) {
    const int e = 31 - __builtin_clz(sum);
    const uint32_t top = e >= 7 ? sum >> (e - 7) : sum << (7 - e);              /* 128..255 */
    const uint64_t scale = ((uint64_t)(PROB_ONE - 64) << 24 >> (e >= 7 ? e - 7 : 0)) / (top + 1);
    uint32_t t = 0;
    int largest = 0;
    for (int i = 0; i < n; i++) {
        g[i] = (uint32_t)((g[i] * scale) >> 24) + 1;
        t += g[i];
        if (g[i] > g[largest]) largest = i;
    }
    g[largest] += PROB_ONE - t;
}

/* One sample: returns its bits and moves the model on. */
static double model_sample(model *m, const variant *v, int16_t value) {
    const int h = v->half, n = 2 * h + 3;
    int32_t acc = 0;
    for (int k = 0; k < v->taps; k++) acc += m->weights[k] * m->deltas[k];
    int32_t pred_q = m->last * (1 << FRACTION_BITS) + (acc >> (WEIGHT_SHIFT - FRACTION_BITS));
    pred_q = pred_q < 0 ? 0 : pred_q > (GRID_CODES - 1) << FRACTION_BITS ? (GRID_CODES - 1) << FRACTION_BITS : pred_q;
    const int32_t pred = (pred_q + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS;
    const int32_t flip = ((pred_q - (pred << FRACTION_BITS)) >> 31) | 1;
    const int32_t act = m->activity >> 2;
    const int ctx = nw_context_of_activity[act > 255 ? 255 : act] * v->contexts / CONTEXTS;
    const uint32_t *freq = v->snapshot ? m->priced[ctx] : m->freq[ctx];
    const uint16_t *width = flip > 0 ? nw_weight_up + pred : nw_weight_down + (GRID_CODES - 1 - pred);

    /* the symbols' counts in cumulative order: direct ones, then big-negative, big-positive,
     * escape (the order does not change a code length) */
    uint32_t g[SYMBOLS_MAX], sum = 0;
    for (int i = 0; i < 2 * h; i++) {
        const int weighted = i >= h - v->widths / 2 && i < h + v->widths / 2;
        const uint32_t w = weighted ? width[i + HALF - h] : 64 << 9;
        g[i] = v->norm == NORM_SHIFT ? (uint32_t)(((uint64_t)freq[i] * w) >> 15)
                                     : (uint32_t)(((uint64_t)freq[i] * w) >> 16) + 1;
        sum += g[i];
    }
    for (int i = 2 * h; i < n; i++) {
        g[i] = v->norm == NORM_SHIFT ? freq[i] : (freq[i] >> 1) + 1;
        sum += g[i];
    }
    if (v->norm != NORM_EXACT) {
        to_power_of_two(g, n, sum);
        sum = PROB_ONE;
    }

    const int k = grid_code(value);
    const int32_t x = k >= 0 ? k : nearest_code(value);
    const int32_t r = flip * (x - pred);
    const int symbol = k < 0 ? 2 * h + 2 : r < -h ? 2 * h : r >= h ? 2 * h + 1 : r + h;
    double bits = -log2((double)g[symbol] / sum) + (k < 0 ? 16 : 0);
    if (k >= 0 && symbol >= 2 * h) {   /* format 2's big symbols, as big_encode */
        uint32_t vv, c;
        const uint32_t b = big_symbol((uint32_t)(symbol == 2 * h + 1 ? r - h : -h - 1 - r), &vv, &c);
        bits += -log2((double)m->big[b] / m->big_total) + (c > 1 ? c - 1 : 0);
        count(m->big, &m->big_total, BIG_SYMBOLS, (int)b, BIG_INCREMENT, BIG_LIMIT);
    }

    if (v->norm == NORM_SHIFT) {
        uint32_t *p = m->freq[ctx], t = 0;
        for (int i = 0; i < n; i++) t += p[i] -= (p[i] - 1) >> v->rate;
        p[symbol] += PROB_ONE - t;
    } else {
        count(m->freq[ctx], &m->total[ctx], n, symbol, MAIN_INCREMENT, MAIN_LIMIT);
        if (v->snapshot && ++m->since >= v->snapshot) {
            m->since = 0;
            memcpy(m->priced, m->freq, sizeof m->priced);
            memcpy(m->priced_total, m->total, sizeof m->priced_total);
        }
    }
    const int32_t mag = r < 0 ? (r < -1000 ? 1000 : -r) : (r > 1000 ? 1000 : r);
    m->activity += ((mag << 4) - m->activity) >> ACT_SHIFT;

    const int32_t err = (x << FRACTION_BITS) - pred_q, delta = x - m->last;
    const int32_t step = v->sign_step ? 0 : nlms_step(err, m->energy, 0);
    for (int j = 0; j < v->taps; j++) {
        int32_t d = m->deltas[j], w = m->weights[j];
        if (v->sign_step) w += ((err > 0) - (err < 0)) * ((d > 0) - (d < 0)) * v->sign_step;
        else w += (step * (d * (1 << UPDATE_SHIFT)) + (1 << 15)) >> 16;
        m->weights[j] = (int16_t)(w > 32767 ? 32767 : w < -32768 ? -32768 : w);
    }
    if (v->taps > 0) {
        const int32_t oldest = m->deltas[v->taps - 1];
        m->energy += delta * delta - oldest * oldest;
        memmove(m->deltas + 1, m->deltas, (size_t)(v->taps - 1) * sizeof m->deltas[0]);
        m->deltas[0] = (int16_t)delta;
    }
    m->last = x;
    return bits;
}

/* The first channel of a 16-bit PCM WAV file; NULL when it is not one. */
static int16_t *read_wav(const char *path, long *frames) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t head[12], chunk[8];
    int16_t *out = NULL;
    uint32_t channels = 0, bits = 0;
    if (fread(head, 1, 12, f) == 12 && !memcmp(head, "RIFF", 4) && !memcmp(head + 8, "WAVE", 4)) {
        while (fread(chunk, 1, 8, f) == 8) {
            const uint32_t size = chunk[4] | chunk[5] << 8 | chunk[6] << 16 | (uint32_t)chunk[7] << 24;
            if (!memcmp(chunk, "fmt ", 4) && size >= 16) {
                uint8_t fmt[16];
                if (fread(fmt, 1, 16, f) != 16 || fseek(f, (long)(size - 16 + (size & 1)), SEEK_CUR)) break;
                channels = fmt[2] | fmt[3] << 8;
                bits = fmt[14] | fmt[15] << 8;
            } else if (!memcmp(chunk, "data", 4) && channels && bits == 16) {
                uint8_t *raw = malloc(size ? size : 1);
                *frames = (long)(size / (2 * channels));
                out = malloc(sizeof *out * (size_t)(*frames ? *frames : 1));
                if (raw && out && fread(raw, 1, size, f) == size) {
                    for (long i = 0; i < *frames; i++)
                        out[i] = (int16_t)(raw[2 * channels * i] | raw[2 * channels * i + 1] << 8);
                } else {
                    free(out);
                    out = NULL;
                }
                free(raw);
                break;
            } else if (fseek(f, (long)(size + (size & 1)), SEEK_CUR)) {
                break;
            }
        }
    }
    fclose(f);
    return out;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILE.wav FILE.wav... (sorted: the halves are judged apart)\n", argv[0]);
        return 2;
    }
    nw_prepare();
    const int files = argc - 1, n_variants = (int)(sizeof variants / sizeof variants[0]);
    double (*bits)[2] = calloc((size_t)n_variants, sizeof *bits), samples[2] = {0, 0};
    model *m = malloc(sizeof *m);
    if (!bits || !m) {
        free(bits);
        free(m);
        return 1;
    }
    for (int f = 0; f < files; f++) {
        long frames = 0;
        int16_t *x = read_wav(argv[f + 1], &frames);
        if (!x) {
            fprintf(stderr, "%s: not a 16-bit PCM WAV file\n", argv[f + 1]);
            free(bits);
            free(m);
            return 1;
        }
        const int half = f >= files / 2;
        samples[half] += (double)frames;
        for (int i = 0; i < n_variants; i++) {
            model_init(m, &variants[i]);
            for (long t = 0; t < frames; t++) bits[i][half] += model_sample(m, &variants[i], x[t]);
        }
        free(x);
    }
    const double ref = 16 * (samples[0] + samples[1]) / (bits[0][0] + bits[0][1]);
    printf("%-48s %8s %8s %8s %8s\n", "model", "half A", "half B", "all", "change");
    for (int i = 0; i < n_variants; i++) {
        const double all = 16 * (samples[0] + samples[1]) / (bits[i][0] + bits[i][1]);
        printf("%-48s %8.4f %8.4f %8.4f %+7.2f%%\n", variants[i].name, 16 * samples[0] / bits[i][0],
               16 * samples[1] / bits[i][1], all, 100 * (all / ref - 1));
    }
    free(bits);
    free(m);
    return 0;
}
