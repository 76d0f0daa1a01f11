/*
 * The lane kernel (nw_lanes_kernel.h) built for AVX2: the whole file is compiled for it, so
 * the shared model's helpers inline into the kernel as they do in the default build. With it
 * BMI1, BMI2 and LZCNT, which every AVX2 CPU has: shifts by a register and counts of leading
 * zeros in one instruction. nw_lanes_set_simd calls it only on CPUs that have all four.
 */
#if defined(__GNUC__) && defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2,bmi,bmi2,lzcnt"))), apply_to = function)
#else
#pragma GCC target("avx2,bmi,bmi2,lzcnt")
#endif
#define NW_LANES_AVX2 1
#include "nw_lanes_kernel.h"

int nw_lanes_run_avx2(const lane_job *job, int pass) { return run_pass(job, pass, ISA_AVX2); }
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int nw_lanes_avx2_needs_gcc_on_x86_64;
#endif
