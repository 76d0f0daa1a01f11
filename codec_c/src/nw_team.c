/*
 * Channel groups of one block coded side by side (see nw_team.h). The only file of the
 * codec that uses threads; the challenge tools do not link it in.
 */
#define _GNU_SOURCE   /* pthread_setaffinity_np, where there is one */
#include "nw_team.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif

/* How the caller, its own groups coded, waits for a helper still coding one (spin_us 0).
 * Polling costs CPU that, on a host with as many busy processes as cores, another process
 * needs; sleeping costs a futex wait and wake (a few us of CPU on each side) and the
 * caller's wake-up (tens of us on a VM). So it polls only when the helper's group should be
 * done within DONE_AHEAD_NS, judged by when the helper claimed it and how long the caller's
 * own groups take, and then for at most DONE_SLACK_NS past that; else it sleeps at once. */
#define DONE_AHEAD_NS 20000u
#define DONE_SLACK_NS 10000u

typedef struct team_job {
    uint32_t groups;
    const int16_t *samples;
    size_t stride;
    uint32_t n_samples;       /* encode: rows in the block */
    int keyframe;
    nw_stream_encoder *const *encoders;   /* NULL when decoding */
    uint8_t *out;
    size_t out_cap;
    const size_t *offsets;
    int64_t *sizes;
    nw_stream_decoder *const *decoders;
    const uint8_t *const *blocks;
    const size_t *lengths;
    int16_t *decoded;
    size_t rows_cap;
    int *statuses;
    nw_block_info *infos;
    const size_t *firsts;     /* first channel of each group in a row */
} team_job;

struct nw_team;

typedef struct helper {
    struct nw_team *team;
    pthread_t thread;
} helper;

struct nw_team {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    unsigned long round;      /* bumped for each block; a helper works once per round */
    /* Which groups of this round are still unclaimed: round (its low 32 bits) << 32 | front
     * << 16 | back, groups front..back-1 unclaimed. A helper that wakes after its round has
     * ended finds another round number and leaves the (gone) job alone. */
    uint64_t claim;
    uint32_t groups;          /* this round's, read with the round under the lock */
    uint32_t finished;        /* groups of this round coded */
    uint64_t claimed_ns;      /* when a helper last claimed a group (CLOCK_MONOTONIC) */
    uint64_t group_ns;        /* the caller's time per group, smoothed (the caller's alone) */
    size_t *firsts;           /* the caller's, for its jobs: grown as needed */
    uint32_t firsts_cap;
    int quit;
    uint32_t started;
    uint32_t spin_us;         /* how long an idle helper polls for the next round */
    pid_t owner;              /* a forked child has none of the helpers: it codes alone */
    helper *helpers;
    const team_job *job;
};

/* Group g, whose channels start at `first` in a row. */
static void code_group(const team_job *job, uint32_t g, size_t first) {
    if (job->encoders) {
        uint32_t channels = nw_stream_encoder_channels(job->encoders[g]);
        size_t need = nw_encode_bound(channels, job->n_samples);
        if (job->offsets[g] > job->out_cap || job->out_cap - job->offsets[g] < need)
            job->sizes[g] = NW_ERR_OUTPUT_FULL;
        else
            job->sizes[g] = nw_stream_encode_block(job->encoders[g], job->samples + first,
                                                    job->n_samples, job->stride, job->keyframe,
                                                    job->out + job->offsets[g], need);
    } else {
        job->statuses[g] = nw_stream_decode_block(job->decoders[g], job->blocks[g],
                                                   job->lengths[g], job->decoded + first,
                                                   job->rows_cap, job->stride, &job->infos[g]);
    }
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The round, quit flag, claims and finished count as polling threads read them, outside the
 * lock (round and quit are written under it, with matching atomic stores): a polling thread
 * that took the lock would make the other, finding it taken, sleep. A mutex where there are
 * no atomics. */
#define CLAIM(round, front, back) ((uint64_t)(uint32_t)(round) << 32 | (uint64_t)(front) << 16 | (back))
#define NO_GROUP UINT32_MAX
/* A block has at most one group per channel: front and back fit their 16 bits. */
typedef char groups_fit_claim_fields[NW_MAX_CHANNELS <= 0xFFFF ? 1 : -1];
#if defined(__GNUC__) && !defined(NW_TEAM_LOCKED_CLAIMS)
static unsigned long load_round(nw_team *team) { return __atomic_load_n(&team->round, __ATOMIC_ACQUIRE); }
static int load_quit(nw_team *team) { return __atomic_load_n(&team->quit, __ATOMIC_ACQUIRE); }
static void store_round(nw_team *team, unsigned long v) { __atomic_store_n(&team->round, v, __ATOMIC_RELEASE); }
static void store_quit(nw_team *team) { __atomic_store_n(&team->quit, 1, __ATOMIC_RELEASE); }
static void store_claim(nw_team *team, uint64_t v) { __atomic_store_n(&team->claim, v, __ATOMIC_RELEASE); }
static uint32_t load_finished(nw_team *team) { return __atomic_load_n(&team->finished, __ATOMIC_ACQUIRE); }
static void store_finished(nw_team *team, uint32_t v) { __atomic_store_n(&team->finished, v, __ATOMIC_RELEASE); }
static uint32_t finished_locked(nw_team *team) { return load_finished(team); }
static uint32_t finish_group(nw_team *team) { return __atomic_add_fetch(&team->finished, 1, __ATOMIC_ACQ_REL); }
static uint64_t load_claimed_ns(nw_team *team) { return __atomic_load_n(&team->claimed_ns, __ATOMIC_RELAXED); }
static void store_claimed_ns(nw_team *team, uint64_t v) { __atomic_store_n(&team->claimed_ns, v, __ATOMIC_RELAXED); }
/* The next unclaimed group of round `seen`, from the front (the caller) or the back (the
 * helpers), or NO_GROUP once none is left or the round is over. Each side thus keeps
 * coding the same groups block after block while both keep pace (their channel state stays
 * in that core's cache), and whichever side runs takes over what the other has not begun. */
static uint32_t claim_group(nw_team *team, unsigned long seen, int from_front) {
    uint64_t c = __atomic_load_n(&team->claim, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t front = (uint32_t)(c >> 16) & 0xFFFFu, back = (uint32_t)c & 0xFFFFu;
        if ((uint32_t)(c >> 32) != (uint32_t)seen || front >= back) return NO_GROUP;
        uint64_t next = from_front ? CLAIM(seen, front + 1, back) : CLAIM(seen, front, back - 1);
        if (__atomic_compare_exchange_n(&team->claim, &c, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return from_front ? front : back - 1;
    }
}
#else
static unsigned long load_round(nw_team *team) {
    pthread_mutex_lock(&team->lock);
    unsigned long v = team->round;
    pthread_mutex_unlock(&team->lock);
    return v;
}
static int load_quit(nw_team *team) {
    pthread_mutex_lock(&team->lock);
    int v = team->quit;
    pthread_mutex_unlock(&team->lock);
    return v;
}
static uint32_t load_finished(nw_team *team) {
    pthread_mutex_lock(&team->lock);
    uint32_t v = team->finished;
    pthread_mutex_unlock(&team->lock);
    return v;
}
static uint32_t finished_locked(nw_team *team) { return team->finished; }
static uint64_t load_claimed_ns(nw_team *team) {
    pthread_mutex_lock(&team->lock);
    uint64_t v = team->claimed_ns;
    pthread_mutex_unlock(&team->lock);
    return v;
}
static void store_claimed_ns(nw_team *team, uint64_t v) {
    pthread_mutex_lock(&team->lock);
    team->claimed_ns = v;
    pthread_mutex_unlock(&team->lock);
}
static void store_round(nw_team *team, unsigned long v) { team->round = v; }
static void store_quit(nw_team *team) { team->quit = 1; }
static void store_claim(nw_team *team, uint64_t v) { team->claim = v; }
static void store_finished(nw_team *team, uint32_t v) { team->finished = v; }
static uint32_t finish_group(nw_team *team) {
    pthread_mutex_lock(&team->lock);
    uint32_t v = ++team->finished;
    pthread_mutex_unlock(&team->lock);
    return v;
}
static uint32_t claim_group(nw_team *team, unsigned long seen, int from_front) {
    pthread_mutex_lock(&team->lock);
    uint64_t c = team->claim;
    uint32_t front = (uint32_t)(c >> 16) & 0xFFFFu, back = (uint32_t)c & 0xFFFFu, g = NO_GROUP;
    if ((uint32_t)(c >> 32) == (uint32_t)seen && front < back) {
        g = from_front ? front : back - 1;
        team->claim = from_front ? CLAIM(seen, front + 1, back) : CLAIM(seen, front, back - 1);
    }
    pthread_mutex_unlock(&team->lock);
    return g;
}
#endif

/* Codes groups of round `seen` until none is left unclaimed; wakes the caller when the
 * round's last group is done. `job` is dereferenced only for a group claimed in its round,
 * so it is alive: the caller returns only when every group is finished. */
static void code_claimed(nw_team *team, const team_job *job, unsigned long seen, uint32_t groups,
                         int from_front) {
    for (uint32_t g; (g = claim_group(team, seen, from_front)) != NO_GROUP;) {
        const uint64_t started = now_ns();
        if (!from_front) store_claimed_ns(team, started);
        code_group(job, g, job->firsts[g]);
        if (from_front) {   /* the caller's: how long a group takes, for waiting on a helper's */
            const uint64_t took = now_ns() - started;
            team->group_ns = team->group_ns ? (3 * team->group_ns + took) / 4 : took;
        }
        if (finish_group(team) == groups && !from_front) {
            pthread_mutex_lock(&team->lock);
            pthread_cond_signal(&team->done);
            pthread_mutex_unlock(&team->lock);
        }
    }
}

static void cpu_relax(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#endif
}

/* Called and returns with the lock held. A helper that sleeps takes tens of microseconds to
 * wake (a VM's idle CPU halts), so with spin_us set it first polls for that long, without
 * the lock, so that the caller never has to wait for it to publish a round. */
static void wait_for_round(nw_team *team, unsigned long seen) {
    if (team->spin_us && !team->quit && team->round == seen) {
        const uint64_t deadline = now_ns() + (uint64_t)team->spin_us * 1000u;
        pthread_mutex_unlock(&team->lock);
        for (uint32_t poll = 1; load_round(team) == seen && !load_quit(team); poll++) {
            if (poll % 64 == 0 && now_ns() >= deadline) break;
            cpu_relax();
        }
        pthread_mutex_lock(&team->lock);
    }
    while (!team->quit && team->round == seen) pthread_cond_wait(&team->wake, &team->lock);
}

static void *helper_main(void *arg) {
    helper *self = arg;
    nw_team *team = self->team;
    unsigned long seen = 0;
    pthread_mutex_lock(&team->lock);
    for (;;) {
        wait_for_round(team, seen);
        if (team->quit) break;
        seen = team->round;
        const team_job *job = team->job;   /* may be gone already: see code_claimed */
        uint32_t groups = team->groups;
        pthread_mutex_unlock(&team->lock);
        code_claimed(team, job, seen, groups, 0);
        pthread_mutex_lock(&team->lock);
    }
    pthread_mutex_unlock(&team->lock);
    return NULL;
}

static void bind_to_cpu(pthread_t thread, int cpu) {
#if defined(__linux__) && defined(CPU_SET)
    if (cpu < 0 || cpu >= CPU_SETSIZE) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)pthread_setaffinity_np(thread, sizeof set, &set);   /* a refusal only costs speed */
#else
    (void)thread;
    (void)cpu;
#endif
}

nw_team *nw_team_new(uint32_t helpers, const int *cpus) {
    if (helpers > NW_MAX_CHANNELS) return NULL;
    nw_team *team = calloc(1, sizeof *team);
    if (!team) return NULL;
    team->helpers = calloc(helpers ? helpers : 1, sizeof *team->helpers);
    if (!team->helpers || pthread_mutex_init(&team->lock, NULL) != 0) {
        free(team->helpers);
        free(team);
        return NULL;
    }
    if (pthread_cond_init(&team->wake, NULL) != 0 || pthread_cond_init(&team->done, NULL) != 0) {
        /* Both conditions are destroyed by nw_team_free only when both exist. */
        pthread_mutex_destroy(&team->lock);
        free(team->helpers);
        free(team);
        return NULL;
    }
    team->owner = getpid();
    pthread_mutex_lock(&team->lock);   /* helpers read `started` only after a round begins */
    for (uint32_t i = 0; i < helpers; i++) {
        helper *h = &team->helpers[i];
        h->team = team;
        if (pthread_create(&h->thread, NULL, helper_main, h) != 0) break;
        if (cpus) bind_to_cpu(h->thread, cpus[i]);
        team->started++;
    }
    pthread_mutex_unlock(&team->lock);
    return team;
}

uint32_t nw_team_helpers(const nw_team *team) { return team ? team->started : 0; }

int nw_team_set_spin(nw_team *team, uint32_t microseconds) {
    if (!team || microseconds > NW_TEAM_SPIN_LIMIT_US) return NW_ERR_ARGUMENT;
    pthread_mutex_lock(&team->lock);
    team->spin_us = microseconds;
    pthread_mutex_unlock(&team->lock);
    return NW_OK;
}

void nw_team_free(nw_team *team) {
    if (!team) return;
    if (team->owner != getpid()) {   /* a forked child: no helpers to stop, a lock in any state */
        free(team->firsts);
        free(team->helpers);
        free(team);
        return;
    }
    pthread_mutex_lock(&team->lock);
    store_quit(team);
    pthread_cond_broadcast(&team->wake);
    pthread_mutex_unlock(&team->lock);
    for (uint32_t i = 0; i < team->started; i++) pthread_join(team->helpers[i].thread, NULL);
    pthread_cond_destroy(&team->wake);
    pthread_cond_destroy(&team->done);
    pthread_mutex_destroy(&team->lock);
    free(team->firsts);
    free(team->helpers);
    free(team);
}

/* First channel of each group, in the team's buffer (the caller's alone between rounds);
 * NULL when it cannot grow. */
static const size_t *group_firsts(nw_team *team, const team_job *job) {
    if (job->groups > team->firsts_cap) {
        size_t *grown = realloc(team->firsts, job->groups * sizeof *grown);
        if (!grown) return NULL;
        team->firsts = grown;
        team->firsts_cap = job->groups;
    }
    size_t first = 0;
    for (uint32_t g = 0; g < job->groups; g++) {
        team->firsts[g] = first;
        first += job->encoders ? nw_stream_encoder_channels(job->encoders[g])
                               : nw_stream_decoder_channels(job->decoders[g]);
    }
    return team->firsts;
}

static void run_round(nw_team *team, team_job *job) {
    if (team->started == 0 || job->groups < 2 || team->owner != getpid()
        || !(job->firsts = group_firsts(team, job))) {
        size_t first = 0;
        for (uint32_t g = 0; g < job->groups; g++) {
            code_group(job, g, first);
            first += job->encoders ? nw_stream_encoder_channels(job->encoders[g])
                                   : nw_stream_decoder_channels(job->decoders[g]);
        }
        return;
    }
    pthread_mutex_lock(&team->lock);
    team->job = job;
    team->groups = job->groups;
    store_finished(team, 0);
    store_claim(team, CLAIM(team->round + 1, 0, job->groups));
    store_round(team, team->round + 1);
    const unsigned long round = team->round;
    pthread_cond_broadcast(&team->wake);
    pthread_mutex_unlock(&team->lock);
    code_claimed(team, job, round, job->groups, 1);
    /* Every group is claimed now; any left is a helper's, under way. With spin_us set (CPUs
     * given to the team) the caller polls as long as the helpers do; else see DONE_AHEAD_NS. */
    uint64_t deadline = 0;
    if (load_finished(team) < job->groups) {
        const uint64_t now = now_ns();
        const uint64_t due = load_claimed_ns(team) + team->group_ns;
        if (team->spin_us)
            deadline = now + (uint64_t)team->spin_us * 1000u;
        else if (due <= now + DONE_AHEAD_NS)
            deadline = (due > now ? due : now) + DONE_SLACK_NS;
    }
    for (uint32_t poll = 1; deadline && load_finished(team) < job->groups; poll++) {
        if (poll % 16 == 0 && now_ns() >= deadline) break;
        cpu_relax();
    }
    pthread_mutex_lock(&team->lock);
    while (finished_locked(team) < job->groups) pthread_cond_wait(&team->done, &team->lock);
    pthread_mutex_unlock(&team->lock);
}

/* Every group has its coder and all their channels fit in a row of `stride`. */
static int groups_fit(uint32_t groups, nw_stream_encoder *const *encoders, nw_stream_decoder *const *decoders,
                      size_t stride) {
    size_t channels = 0;
    for (uint32_t g = 0; g < groups; g++) {
        if (encoders ? !encoders[g] : !decoders[g]) return 0;
        channels += encoders ? nw_stream_encoder_channels(encoders[g]) : nw_stream_decoder_channels(decoders[g]);
    }
    return channels <= stride;
}

int nw_team_encode(nw_team *team, uint32_t groups, nw_stream_encoder *const *encoders,
                   const int16_t *samples, uint32_t n_samples, size_t stride, int keyframe,
                   uint8_t *out, size_t out_cap, const size_t *offsets, int64_t *sizes) {
    if (!team || !groups || !encoders || !out || !offsets || !sizes || !samples
        || !groups_fit(groups, encoders, NULL, stride))
        return NW_ERR_ARGUMENT;
    team_job job = {.groups = groups, .samples = samples, .stride = stride,
                          .n_samples = n_samples, .keyframe = keyframe, .encoders = encoders,
                          .out = out, .out_cap = out_cap, .offsets = offsets, .sizes = sizes};
    run_round(team, &job);
    for (uint32_t g = 0; g < groups; g++)
        if (sizes[g] < 0) return (int)sizes[g];
    return NW_OK;
}

int nw_team_decode(nw_team *team, uint32_t groups, nw_stream_decoder *const *decoders,
                   const uint8_t *const *blocks, const size_t *lengths, int16_t *samples,
                   size_t rows_cap, size_t stride, int *statuses, nw_block_info *infos) {
    if (!team || !groups || !decoders || !blocks || !lengths || !samples || !statuses || !infos
        || !groups_fit(groups, NULL, decoders, stride))
        return NW_ERR_ARGUMENT;
    for (uint32_t g = 0; g < groups; g++)
        if (!blocks[g]) return NW_ERR_ARGUMENT;
    team_job job = {.groups = groups, .stride = stride, .decoders = decoders,
                          .blocks = blocks, .lengths = lengths, .decoded = samples,
                          .rows_cap = rows_cap, .statuses = statuses, .infos = infos};
    run_round(team, &job);
    for (uint32_t g = 0; g < groups; g++)
        if (statuses[g] != NW_OK) return statuses[g];
    return NW_OK;
}
