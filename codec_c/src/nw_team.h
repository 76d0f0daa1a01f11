/*
 * A team of threads that codes the channel groups of one block at the same time.
 *
 * A stream too wide for one core is split into channel groups, each an ordinary encoder or
 * decoder of its own (nw_lanes.h; its blocks are the ones it would make of those channels alone).
 * For each block the calling thread wakes helper threads that wait between blocks, and
 * each thread claims groups one at a time, the caller from the first and the helpers from
 * the last: while every thread runs, each keeps the same groups block after block, and
 * when a helper is slow to get a CPU (a busy host) the caller codes its groups rather than
 * wait for it.
 *
 * POSIX threads; not used by the challenge tools. Not thread-safe itself: one call at a time.
 */
#ifndef NW_TEAM_H
#define NW_TEAM_H

#include "nw_lanes.h"

typedef struct nw_team nw_team;

#define NW_TEAM_SPIN_LIMIT_US 1000000u   /* the longest nw_team_set_spin accepts */

/* `helpers` threads besides the caller's (0 is valid: everything runs on the caller). When
 * `cpus` is not NULL, helper i is bound to CPU cpus[i] where the system allows it (Linux);
 * a scheduler left alone tends to queue a woken helper behind the thread that woke it. */
nw_team *nw_team_new(uint32_t helpers, const int *cpus);
void nw_team_free(nw_team *team);
/* Threads that actually started (a failed start leaves fewer, never an error). */
uint32_t nw_team_helpers(const nw_team *team);
/* How long a helper that has finished its share keeps polling for the next block before it
 * sleeps (0, the default: it sleeps at once). Waking a sleeping thread costs tens of
 * microseconds per block on a VM; polling saves them but keeps the helper's CPU busy, so it
 * is for CPUs given to the team. At most NW_TEAM_SPIN_LIMIT_US; NW_ERR_ARGUMENT beyond. */
int nw_team_set_spin(nw_team *team, uint32_t microseconds);

/* Encodes one block of `n_samples` rows of `stride` samples: group g covers the channels of
 * encoders[g], after those of the groups before it. Group g's block goes to out + offsets[g]
 * and needs nw_encode_bound(its channels, n_samples) bytes there, within out_cap; sizes[g]
 * receives its size or a negative nw_status. Returns NW_OK, or the first group's error. */
int nw_team_encode(nw_team *team, uint32_t groups, nw_stream_encoder *const *encoders,
                   const int16_t *samples, uint32_t n_samples, size_t stride, int keyframe,
                   uint8_t *out, size_t out_cap, const size_t *offsets, int64_t *sizes);

/* Decodes group g's block (blocks[g], lengths[g] bytes) into its channels of the rows of
 * `samples` (rows_cap rows of `stride`), with decoders[g]; statuses[g] receives its status
 * and infos[g] its header. Returns NW_OK, or the first group's error. */
int nw_team_decode(nw_team *team, uint32_t groups, nw_stream_decoder *const *decoders,
                   const uint8_t *const *blocks, const size_t *lengths, int16_t *samples,
                   size_t rows_cap, size_t stride, int *statuses, nw_block_info *infos);

#endif
