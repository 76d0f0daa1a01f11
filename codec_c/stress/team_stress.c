/*
 * Drives a codec team (nw_team.c) over many blocks, with helpers that sleep between blocks
 * and with helpers that poll, and checks every block round-trips. Built with
 * -fsanitize=thread by `make tsan` (and by tests/test_codec_groups.py), so that a race in the
 * team's hand-over, or in what the coders share, is reported rather than left to chance.
 */
#include "neurowire.h"
#include "nw_team.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Uneven groups, more of them than threads: the threads claim them block by block. */
#define GROUPS 5
static const uint32_t group_channels[GROUPS] = {32, 8, 24, 17, 40};
#define CHANNELS 121   /* their sum */
#define BLOCK 10
#define BLOCKS 150

static uint32_t next_random(uint32_t *seed) {
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* Random walks over the ADC grid, with an occasional value off it (an escape). */
static void make_samples(int16_t *samples, uint32_t rows, uint32_t seed) {
    int16_t grid[NW_GRID_CODES];
    nw_grid_values(grid);
    int code[CHANNELS];
    for (int c = 0; c < CHANNELS; c++) code[c] = 400 + c;
    for (uint32_t t = 0; t < rows; t++)
        for (int c = 0; c < CHANNELS; c++) {
            code[c] += (int)(next_random(&seed) % 7) - 3;
            if (code[c] < 0) code[c] = 0;
            if (code[c] >= NW_GRID_CODES) code[c] = NW_GRID_CODES - 1;
            int16_t v = grid[code[c]];
            if (next_random(&seed) % 997 == 0) v = (int16_t)(v + 1);
            samples[(size_t)t * CHANNELS + c] = v;
        }
}

/* Blocks of the given format version, coded by a team of `helpers` helper threads. */
static int run(uint32_t spin_us, uint32_t version, uint32_t helpers) {
    static int16_t samples[BLOCKS * BLOCK * CHANNELS], decoded[BLOCK * CHANNELS];
    make_samples(samples, BLOCKS * BLOCK, 12345u + spin_us);
    nw_stream_encoder *encoders[GROUPS];
    nw_stream_decoder *decoders[GROUPS];
    for (int g = 0; g < GROUPS; g++) {
        encoders[g] = nw_stream_encoder_new(group_channels[g], version);
        decoders[g] = nw_stream_decoder_new(group_channels[g]);
        if (!encoders[g] || !decoders[g]) return 1;
    }
    nw_team *team = nw_team_new(helpers, NULL);
    if (!team || nw_team_set_spin(team, spin_us) != NW_OK) return 1;
    const size_t bound = nw_encode_bound(40, BLOCK);   /* the widest group's */
    uint8_t *out = malloc(GROUPS * bound);
    if (!out) return 1;
    size_t offsets[GROUPS], lengths[GROUPS];
    int64_t sizes[GROUPS];
    const uint8_t *blocks[GROUPS];
    int statuses[GROUPS];
    nw_block_info infos[GROUPS];
    for (int g = 0; g < GROUPS; g++) offsets[g] = g * bound;
    int failures = 0;
    for (int b = 0; b < BLOCKS; b++) {
        const int16_t *rows = samples + (size_t)b * BLOCK * CHANNELS;
        if (nw_team_encode(team, GROUPS, encoders, rows, BLOCK, CHANNELS, b % 50 == 0, out,
                           GROUPS * bound, offsets, sizes) != NW_OK) {
            failures++;
            continue;
        }
        for (int g = 0; g < GROUPS; g++) {
            blocks[g] = out + offsets[g];
            lengths[g] = (size_t)sizes[g];
        }
        memset(decoded, 0, sizeof decoded);
        if (nw_team_decode(team, GROUPS, decoders, blocks, lengths, decoded, BLOCK, CHANNELS,
                           statuses, infos) != NW_OK
            || memcmp(decoded, rows, sizeof decoded) != 0)
            failures++;
    }
    nw_team_free(team);
    for (int g = 0; g < GROUPS; g++) {
        nw_stream_encoder_free(encoders[g]);
        nw_stream_decoder_free(decoders[g]);
    }
    free(out);
    printf("team stress, version %u, spin_us %u, %u helpers: %d blocks, %d failed\n", version,
           spin_us, helpers, BLOCKS, failures);
    return failures != 0;
}

int main(void) {
    return run(0, NW_FORMAT_VERSION, 2) | run(200, NW_FORMAT_VERSION, 1)
         | run(0, NW_LANE_FORMAT_VERSION, 1) | run(200, NW_LANE_FORMAT_VERSION, 3);
}
