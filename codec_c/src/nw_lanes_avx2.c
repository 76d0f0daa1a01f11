/*
 * The lane kernel (nw_lanes_kernel.h) built for AVX2: the whole file is compiled for it, so
 * the shared model's helpers inline into the kernel as they do in the default build.
 * nw_lanes_set_simd calls it only on CPUs that have AVX2.
 */
#if defined(__GNUC__) && defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
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
