/*
 * The model that ./encode's packed form is compressed with (codec_c/tools/pack.c) and
 * unpacked by (codec_c/tools/unpack.c): bit by bit, the byte's bits so far in contexts of
 * the last few whole bytes (pm_mask), each context's probability adapting at 1/(n+2),
 * the orders mixed in the logistic domain by weights chosen by the bits so far and learned
 * as it goes (the scheme of the PAQ family, written afresh). Both sides run this code, so
 * they agree bit for bit; its state lives in zeroed static storage (bss, no file bytes).
 */
#ifndef PACK_MODEL_H
#define PACK_MODEL_H

#include <stdint.h>

/* The contexts: which of the last four whole bytes each one sees (the orders 0 to 4, then
 * the byte before last alone and the one before that: x86 operands and opcodes recur at a
 * distance). */
static const uint32_t pm_mask[] = {0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFF00, 0xFF0000};
#define PM_ORDERS (int)(sizeof pm_mask / sizeof *pm_mask)
#define PM_LR 4                   /* the mixer's learning rate, /4 */
#define PM_LIMIT 10               /* a context's rate stops at 1/(PM_LIMIT+2) */
#define PM_BITS 16                /* slots per order: more pack little better, and cost page faults */

static int16_t pm_stretch[4096];
/* P(1) in Q16 (stored XOR 0x8000, so that the zeroed table starts at 1/2) and times seen. */
static uint16_t pm_t[PM_ORDERS][1 << PM_BITS][2];
static uint32_t pm_ctx[PM_ORDERS];
static int32_t pm_w[256][PM_ORDERS];
static int32_t pm_st[PM_ORDERS];
static int32_t pm_rate[PM_LIMIT + 1];        /* 65536 / (n + 2): no division per bit */
static uint32_t pm_slot[PM_ORDERS];
static uint32_t pm_hist;                      /* the last 4 whole bytes */
static uint32_t pm_c0;                        /* the byte's bits so far, after a 1 */
static int pm_pr;

/* 4096 / (1 + e^-x/256), by interpolation in 33 points. */
static int pm_squash(int d) {
    static const int16_t t[33] = {1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047,
                                  2549, 2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085,
                                  4089, 4092, 4093, 4094};
    if (d > 2047) return 4095;
    if (d < -2047) return 1;
    int w = d & 127, i = (d >> 7) + 16;
    return (t[i] * (128 - w) + t[i + 1] * w + 64) >> 7;
}

static void pm_byte(void);

/* Call once before the first bit (the loader's state starts zeroed, in bss, which takes no
 * bytes of the file): stretch is squash's inverse. */
static void pm_init(void) {
    int pi = 0;
    for (int x = -2047; x <= 2047; x++) {
        int v = pm_squash(x);
        while (pi <= v) pm_stretch[pi++] = (int16_t)x;
    }
    while (pi < 4096) pm_stretch[pi++] = 2047;
    pm_c0 = 1;
    for (int n = 0; n <= PM_LIMIT; n++) pm_rate[n] = 65536 / (n + 2);
    for (int i = 0; i < 256; i++)
        for (int k = 0; k < PM_ORDERS; k++) pm_w[i][k] = 1 << 14;
    pm_byte();
}

/* P(next bit = 1), 12 bits, in 1..4095. An order's slot: a hash of the last k bytes (pm_ctx,
 * taken once a byte) and the byte's bits so far but the last four, which pick one of 16
 * neighbouring slots (fewer cache lines touched per byte). */
static int pm_predict(void) {
    int64_t dot = 0;
    const uint32_t nib = pm_c0 >= 16 ? pm_c0 >> 4 << 4 : 1;
    for (int k = 0; k < PM_ORDERS; k++) {
        uint32_t slot = pm_slot[k] = ((pm_ctx[k] + nib) * 0x9E3779B1u >> (32 - PM_BITS) & ~15u) | (pm_c0 & 15);
        pm_st[k] = pm_stretch[(pm_t[k][slot][0] ^ 0x8000) >> 4];
        dot += (int64_t)pm_w[pm_c0][k] * pm_st[k];
    }
    return pm_pr = pm_squash((int)(dot >> 16));
}

/* Each order's hash of the last whole bytes, after each byte. */
static void pm_byte(void) {
    for (int k = 0; k < PM_ORDERS; k++) pm_ctx[k] = (pm_hist & pm_mask[k]) * 0x2F0B4C27u + (uint32_t)k;
}

static void pm_update(int bit) {
    int err = ((bit << 12) - pm_pr) * PM_LR >> 2;
    for (int k = 0; k < PM_ORDERS; k++) {
        pm_w[pm_c0][k] += (pm_st[k] * err) >> 10;
        uint16_t *t = pm_t[k][pm_slot[k]];
        int n = t[1], p = t[0] ^ 0x8000;
        p += (((bit << 16) - bit - p) * pm_rate[n]) >> 16;
        t[0] = (uint16_t)(p ^ 0x8000);
        if (n < PM_LIMIT) t[1] = (uint16_t)(n + 1);
    }
    pm_c0 = pm_c0 * 2 + (uint32_t)bit;
    if (pm_c0 >= 256) { pm_hist = pm_hist << 8 | (pm_c0 & 255); pm_c0 = 1; pm_byte(); }
}

/* Arithmetic coding of the bits with the model's P(1) (carry-less, 32 bits, as in PAQ): the
 * packer's encoder is in pack.c; it ends with one byte, and this decoder reads 0xFF past
 * the end of its input, which lands inside the final interval. Call pm_init() first. */
static void pm_unpack(const uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t n) {
    uint32_t x1 = 0, x2 = 0xFFFFFFFFu, x = 0, at = 0;
    for (int i = 0; i < 4; i++) x = x << 8 | (at < in_len ? in[at++] : 255);
    for (uint32_t i = 0; i < n; i++) {
        for (int j = 0; j < 8; j++) {
            uint32_t xmid = x1 + ((x2 - x1) >> 12) * (uint32_t)pm_predict();
            int bit = x <= xmid;
            if (bit) x2 = xmid; else x1 = xmid + 1;
            pm_update(bit);
            out[i] = (uint8_t)(out[i] << 1 | bit);
            while (((x1 ^ x2) & 0xFF000000u) == 0) {
                x1 <<= 8;
                x2 = x2 << 8 | 255;
                x = x << 8 | (at < in_len ? in[at++] : 255);
            }
        }
    }
}

#endif
