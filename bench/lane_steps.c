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
 * LANE_STEPS_PROFILE=FILE also writes each instruction address's steps (hex address, count;
 * both directions), about twice as slow; with a -no-pie build, `nm -n` names the functions.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "neurowire.h"
#include "nw_lanes.h"

static int fail(const char *what) {
    perror(what);
    return 2;
}

/* The child: both directions, each between two stops. */
static int code_blocks(const int16_t *samples, uint32_t channels, uint32_t block, uint32_t blocks) {
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

    raise(SIGSTOP);
    for (uint32_t b = 0; b < blocks; b++) {
        int64_t n = nw_stream_encode_block(enc, samples + (size_t)b * block * channels, block, channels,
                                           b == 0, coded + (size_t)b * cap, cap);
        if (n < 0) return 5;
        lengths[b] = (size_t)n;
    }
    raise(SIGSTOP);
    for (uint32_t b = 0; b < blocks; b++)
        if (nw_stream_decode_block(dec, coded + (size_t)b * cap, lengths[b], decoded + (size_t)b * block * channels,
                                   block, channels, &info) < 0)
            return 6;
    raise(SIGSTOP);
    /* lossless, or the count is of broken code */
    return memcmp(samples, decoded, sizeof *decoded * (size_t)channels * block * blocks) != 0 ? 7 : 0;
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

    const char *profile_path = getenv("LANE_STEPS_PROFILE");
    if (profile_path && !(profile = calloc(PROFILE_SLOTS, sizeof *profile))) return fail("calloc");
    const pid_t child = fork();
    if (child < 0) return fail("fork");
    if (child == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) _exit(fail("ptrace"));
        _exit(code_blocks(samples, channels, block, blocks));
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
