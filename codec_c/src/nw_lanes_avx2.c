/*
 * The lane kernel (nw_lanes_kernel.h) built for AVX2: the whole file is compiled for it, so
 * the shared model's helpers inline into the kernel as they do in the default build. With it
 * BMI1, BMI2, LZCNT and PCLMULQDQ, which every AVX2 CPU has: shifts by a register and counts
 * of leading zeros in one instruction, and the block CRC by carry-less multiplication.
 * nw_lanes_set_simd calls this file's functions only on CPUs that have all five.
 */
#if defined(__GNUC__) && defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2,bmi,bmi2,lzcnt,pclmul"))), apply_to = function)
#else
#pragma GCC target("avx2,bmi,bmi2,lzcnt,pclmul")
#endif
#define NW_LANES_AVX2 1
#include "nw_lanes_kernel.h"

int nw_lanes_run_avx2(const lane_job *job, int pass) { return run_pass(job, pass, ISA_AVX2); }

/* ---- the block CRC (nw_block_crc's value) by folding ------------------------------------
 * CRC-32 (reflected, polynomial 0xEDB88320) of 64 bytes or more: four 128-bit lanes of the
 * message are folded forward 512 bits at a time by carry-less multiplication with
 * x^(512+-32) mod P, then into one lane, 128 bits at a time, and the last 128 bits reduced
 * to 32 (a 64-bit step, then Barrett's). The method of Gopal et al., "Fast CRC computation
 * for generic polynomials using PCLMULQDQ" (Intel, 2009); the constants are x^k mod P,
 * bit-reflected, as that paper derives them. x86 is little-endian, so the samples' bytes
 * are the little-endian ones the CRC covers. */
static const uint64_t fold_512[2] = { 0x0154442bd4u, 0x01c6e41596u };  /* x^(512+32), x^(512-32) */
static const uint64_t fold_128[2] = { 0x01751997d0u, 0x00ccaa009eu };  /* x^(128+32), x^(128-32) */
static const uint64_t fold_64 = 0x0163cd6124u;                         /* x^64 */
static const uint64_t barrett[2] = { 0x01db710641u, 0x01f7011641u };   /* P and floor(x^64 / P) */

static inline __m128i fold(__m128i x, __m128i k, __m128i next) {
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next);
}

/* The CRC register (not inverted) after `len` >= 64 more bytes. */
static uint32_t crc_fold(uint32_t crc, const uint8_t *p, size_t len) {
    __m128i x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)crc));
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    len -= 64;
    __m128i k = _mm_loadu_si128((const __m128i *)fold_512);
    for (; len >= 64; p += 64, len -= 64) {
        x0 = fold(x0, k, _mm_loadu_si128((const __m128i *)p));
        x1 = fold(x1, k, _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = fold(x2, k, _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = fold(x3, k, _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    k = _mm_loadu_si128((const __m128i *)fold_128);
    x0 = fold(fold(fold(x0, k, x1), k, x2), k, x3);
    for (; len >= 16; p += 16, len -= 16) x0 = fold(x0, k, _mm_loadu_si128((const __m128i *)p));
    /* 128 bits to 64, to 32 */
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), _mm_clmulepi64_si128(x0, k, 0x10));
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 4),
                       _mm_clmulepi64_si128(_mm_and_si128(x0, low32), _mm_cvtsi64_si128((long long)fold_64), 0x00));
    const __m128i b = _mm_loadu_si128((const __m128i *)barrett);
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x0, low32), b, 0x10), low32);
    x0 = _mm_xor_si128(x0, _mm_clmulepi64_si128(t, b, 0x00));
    crc = (uint32_t)_mm_extract_epi32(x0, 1);
    /* the rest, under 16 bytes, by the table */
    return len ? ~nw_crc32(~crc, p, len) : crc;
}

uint32_t nw_block_crc_avx2(const uint8_t *header, const int16_t *samples, uint32_t n,
                           uint32_t channels, size_t stride) {
    uint32_t crc = ~nw_crc32(0, header, 18);
    const size_t row_bytes = 2 * (size_t)channels;
    for (uint32_t t = 0; t < n; t++) {
        const uint8_t *row = (const uint8_t *)(samples + (size_t)t * stride);
        crc = row_bytes >= 64 ? crc_fold(crc, row, row_bytes) : ~nw_crc32(~crc, row, row_bytes);
    }
    return ~crc;
}
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int nw_lanes_avx2_needs_gcc_on_x86_64;
#endif
