/*
 * The lane kernel (nw_lanes_kernel.h) built for AVX-512 (F, BW, VL) on top of nw_lanes_avx2.c's
 * set: the AVX2 kernel with 32 vector registers, and a decoded grid step whose running sums
 * of a lane's 32 direct counts are one 512-bit vector, searched by one compare into a mask;
 * an encoded one weighs a lane's 32 counts as one vector; both count a step's direct symbols
 * for all eight lanes at once by masked gather and scatter (count_direct_avx512).
 * Same integers, so the same bytes. nw_lanes_set_simd calls it only on CPUs (and systems)
 * that have all of it; the block CRC is nw_lanes_avx2.c's.
 */
#if defined(__GNUC__) && defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2,bmi,bmi2,lzcnt,pclmul,avx512f,avx512bw,avx512vl"))), apply_to = function)
#else
#pragma GCC target("avx2,bmi,bmi2,lzcnt,pclmul,avx512f,avx512bw,avx512vl")
#endif
#define NW_LANES_AVX2 1
#define NW_LANES_AVX512 1
#include "nw_lanes_kernel.h"

int nw_lanes_run_avx512(const lane_job *job, int pass) { return run_pass(job, pass, ISA_AVX2); }
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int nw_lanes_avx512_needs_gcc_on_x86_64;
#endif
