/*
 * Instructions per sample of the lane format's encoder and decoder, counted by single-stepping
 * them under ptrace: exact, on any Linux x86-64 or other host, where perf's counters are not
 * permitted (VMs) and callgrind cannot run the code (valgrind has no AVX-512).
 *
 *   cc -O3 -std=c99 -Icodec_c/src -o build/lane_steps bench/lane_steps.c codec_c/src/nw_*.c -lm -pthread
 *   build/lane_steps SAMPLES.i16 CHANNELS BLOCK BLOCKS [scalar|sse2|avx2|avx512]
 *
 * SAMPLES.i16: rows of CHANNELS little-endian int16 samples, at least BLOCK x BLOCKS rows
 * (`neurowire bench codec --instructions` writes the recordings stacked so). Prints one JSON
 * object: the kernel used and the instructions per sample of each direction.
 *
 * The child codes every block while the parent counts its steps between two SIGSTOPs the
 * child raises around each direction's loop (a few dozen instructions of raise() fall
 * inside, nothing next to the BLOCK x BLOCKS x CHANNELS samples). Give it build flags like
 * the extension's (-O3), or the count is another build's.
 *
 * LANE_STEPS_TIME=N codes the blocks N times instead, without ptrace, and prints the median
 * block's time each way (bench/lane_ab.py times two builds so, alternating).
 *
 * LANE_STEPS_PROFILE=FILE also writes each instruction address's steps (hex address, count;
 * both directions), about twice as slow; with a -no-pie build, `nm -n` names the functions.
 */
#define _GNU_SOURCE   /* ptrace, clock_gettime */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "neurowire.h"
#include "nw_lanes.h"

static int fail(const char *what) {
    perror(what);
    return 2;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Stops the process for the counting parent, or, when timed, notes the time. */
static void mark(uint64_t *timed) {
    if (timed) *timed = now_ns();
    else raise(SIGSTOP);
}

/* The child: both directions, each between two stops. Timed (`ns` not NULL): no stops,
 * each block's time in ns[b] (encoding) and ns[blocks + b] (decoding). */
static int code_blocks(const int16_t *samples, uint32_t channels, uint32_t block, uint32_t blocks, uint64_t *ns) {
    nw_stream_encoder *enc = nw_stream_encoder_new(channels, NW_LANE_FORMAT_VERSION);
    nw_stream_decoder *dec = nw_stream_decoder_new(channels);
    const size_t cap = nw_encode_bound(channels, block);
    uint8_t *coded = malloc(cap * blocks);
    size_t *lengths = malloc(sizeof *lengths * blocks);
    int16_t *decoded = malloc(sizeof *decoded * (size_t)channels * block * blocks);
    nw_block_info info;
    if (!enc || !dec || !coded || !lengths || !decoded) return 3;
    /* one block each way first, so that the counted ones find their pages touched */
    int64_t warm = nw_stream_encode_block(enc, samples, block, channels, 1, coded, cap);
    if (warm < 0 || nw_stream_decode_block(dec, coded, (size_t)warm, decoded, block, channels, &info) < 0) return 4;
    nw_stream_encoder_free(enc);
    nw_stream_decoder_free(dec);
    enc = nw_stream_encoder_new(channels, NW_LANE_FORMAT_VERSION);
    dec = nw_stream_decoder_new(channels);
    if (!enc || !dec) return 3;

    uint64_t start = 0;
    mark(ns ? &start : NULL);
    for (uint32_t b = 0; b < blocks; b++) {
        int64_t n = nw_stream_encode_block(enc, samples + (size_t)b * block * channels, block, channels,
                                           b == 0, coded + (size_t)b * cap, cap);
        if (n < 0) return 5;
        lengths[b] = (size_t)n;
        if (ns) ns[b] = now_ns() - start, start += ns[b];
    }
    mark(ns ? &start : NULL);
    for (uint32_t b = 0; b < blocks; b++) {
        if (nw_stream_decode_block(dec, coded + (size_t)b * cap, lengths[b], decoded + (size_t)b * block * channels,
                                   block, channels, &info) < 0)
            return 6;
        if (ns) ns[blocks + b] = now_ns() - start, start += ns[blocks + b];
    }
    if (!ns) raise(SIGSTOP);
    nw_stream_encoder_free(enc);
    nw_stream_decoder_free(dec);
    free(coded);
    free(lengths);
    /* lossless, or the count is of broken code */
    const int same = memcmp(samples, decoded, sizeof *decoded * (size_t)channels * block * blocks) == 0;
    free(decoded);
    return same ? 0 : 7;
}

static int by_value(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* LANE_STEPS_TIME=N: the blocks coded N times without ptrace; the median block's time. */
static int time_blocks(const int16_t *samples, uint32_t channels, uint32_t block, uint32_t blocks, int repeats,
                       const char *kernel) {
    uint64_t *ns = malloc(sizeof *ns * 2 * blocks), *enc = malloc(sizeof *enc * blocks * (size_t)repeats),
             *dec = malloc(sizeof *dec * blocks * (size_t)repeats);
    if (!ns || !enc || !dec) return fail("malloc");
    for (int r = 0; r < repeats; r++) {
        const int status = code_blocks(samples, channels, block, blocks, ns);
        if (status) return status;
        memcpy(enc + (size_t)r * blocks, ns, sizeof *ns * blocks);
        memcpy(dec + (size_t)r * blocks, ns + blocks, sizeof *ns * blocks);
    }
    const size_t n = (size_t)blocks * (size_t)repeats;
    qsort(enc, n, sizeof *enc, by_value);
    qsort(dec, n, sizeof *dec, by_value);
    printf("{\"simd\": \"%s\", \"blocks\": %zu, \"encode_us\": %.1f, \"decode_us\": %.1f}\n", kernel, n,
           (double)enc[n / 2] / 1e3, (double)dec[n / 2] / 1e3);
    return 0;
}

/* With a profile file: steps by instruction address, in an open-addressed table. */
#define PROFILE_SLOTS (1u << 16)
static struct { uint64_t ip, steps; } *profile;

static void profile_step(pid_t child) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, child, NULL, &regs) != 0) return;
    for (uint32_t i = (uint32_t)(regs.rip * 0x9E3779B1u) >> 16;; i = (i + 1) & (PROFILE_SLOTS - 1))
        if (profile[i].ip == regs.rip || profile[i].ip == 0) {
            profile[i].ip = regs.rip;
            profile[i].steps++;
            return;
        }
}

/* Single steps until the child stops with SIGSTOP again; -1 if it ended instead. */
static long long steps_to_next_stop(pid_t child) {
    long long steps = 0;
    for (;;) {
        int status;
        if (ptrace(PTRACE_SINGLESTEP, child, NULL, NULL) != 0 || waitpid(child, &status, 0) != child) return -1;
        if (!WIFSTOPPED(status)) return -1;
        if (WSTOPSIG(status) == SIGSTOP) return steps;
        if (profile) profile_step(child);
        steps++;
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s SAMPLES.i16 CHANNELS BLOCK BLOCKS [scalar|sse2|avx2|avx512]\n", argv[0]);
        return 2;
    }
    const uint32_t channels = (uint32_t)strtoul(argv[2], NULL, 10), block = (uint32_t)strtoul(argv[3], NULL, 10),
                   blocks = (uint32_t)strtoul(argv[4], NULL, 10);
    static const char *const kernels[] = { "scalar", "sse2", "avx2", "avx512" };
    int simd = NW_SIMD_AUTO;
    for (int k = 0; argc > 5 && k < 4; k++)
        if (strcmp(argv[5], kernels[k]) == 0) simd = k;
    if (argc > 5 && simd == NW_SIMD_AUTO) {
        fprintf(stderr, "unknown kernel %s\n", argv[5]);
        return 2;
    }
    simd = nw_lanes_set_simd(simd);
    if (simd < 0) {
        fprintf(stderr, "this CPU lacks the %s kernel\n", argv[5]);
        return 2;
    }
    const size_t count = (size_t)channels * block * blocks;
    int16_t *samples = malloc(sizeof *samples * count);
    FILE *f = fopen(argv[1], "rb");
    if (!samples || !f) return fail(argv[1]);
    if (fread(samples, sizeof *samples, count, f) != count) {
        fprintf(stderr, "%s: fewer than %zu samples\n", argv[1], count);
        return 2;
    }
    fclose(f);

    const char *timed = getenv("LANE_STEPS_TIME");
    if (timed) return time_blocks(samples, channels, block, blocks, atoi(timed) > 0 ? atoi(timed) : 1, kernels[simd]);
    const char *profile_path = getenv("LANE_STEPS_PROFILE");
    if (profile_path && !(profile = calloc(PROFILE_SLOTS, sizeof *profile))) return fail("calloc");
    const pid_t child = fork();
    if (child < 0) return fail("fork");
    if (child == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) _exit(fail("ptrace"));
        _exit(code_blocks(samples, channels, block, blocks, NULL));
    }
    int status;
    /* the first stop, before the encoder's blocks (ptrace delivers it to the parent) */
    if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) return fail("waitpid");
    const long long encode = steps_to_next_stop(child);
    const long long decode = encode < 0 ? -1 : steps_to_next_stop(child);
    if (decode >= 0) ptrace(PTRACE_CONT, child, NULL, NULL);
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || decode < 0) {
        fprintf(stderr, "the coding child failed (status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return 1;
    }
    FILE *out = profile_path ? fopen(profile_path, "w") : NULL;
    for (uint32_t i = 0; out && i < PROFILE_SLOTS; i++)
        if (profile[i].ip) fprintf(out, "%llx %llu\n", (unsigned long long)profile[i].ip, (unsigned long long)profile[i].steps);
    if (out) fclose(out);
    printf("{\"simd\": \"%s\", \"samples\": %zu, \"encode\": %.1f, \"decode\": %.1f}\n", kernels[simd], count,
           (double)encode / (double)count, (double)decode / (double)count);
    return 0;
}
