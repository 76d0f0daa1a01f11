/* The simulator's send loop: see sim_loop.h. */
#define _POSIX_C_SOURCE 200112L
#include "sim_loop.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* libzmq 4.x ABI, declared here because pyzmq's wheel ships the library without zmq.h. */
enum { ZMQ_DONTWAIT = 1, ZMQ_SNDMORE = 2 };

static int64_t clock_ns(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* The header is little-endian whatever the host (neurowire.wire packs it with "<"). */
static void put_u64(uint8_t *at, uint64_t value) {
    for (int i = 0; i < 8; i++)
        at[i] = (uint8_t)(value >> (8 * i));
}

/* The packet's rows: a pointer into the table, or, across the loop's end, a copy in scratch
 * (row by row, so a packet longer than the loop wraps as often as it must). */
static const int16_t *packet_rows(nw_sim *sim) {
    const uint64_t start = sim->next_sample % sim->loop_rows;
    const size_t row_values = sim->channels;
    if (start + sim->packet_samples <= sim->loop_rows)
        return sim->table + start * row_values;
    for (uint32_t r = 0; r < sim->packet_samples; r++)
        memcpy(sim->scratch + (size_t)r * row_values,
               sim->table + ((start + r) % sim->loop_rows) * row_values,
               row_values * sizeof(int16_t));
    return sim->scratch;
}

/* The fields Python filled must describe memory that is there: a patched field inside the
 * header, a table with rows to loop over. */
static int usable(const nw_sim *sim) {
    return sim->table && sim->scratch && sim->header && sim->loop_rows > 0 &&
           sim->channels > 0 && sim->packet_samples > 0 && sim->header_len >= 8 &&
           sim->seq_at <= sim->header_len - 8 && sim->first_at <= sim->header_len - 8 &&
           sim->acquired_at <= sim->header_len - 8;
}

int nw_sim_send(const nw_sim_zmq *zmq, void *socket, nw_sim *sim) {
    if (!usable(sim)) return -EINVAL;
    const int16_t *rows = packet_rows(sim);
    put_u64(sim->header + sim->seq_at, sim->seq);
    put_u64(sim->header + sim->first_at, sim->next_sample);
    put_u64(sim->header + sim->acquired_at, (uint64_t)clock_ns(CLOCK_REALTIME));
    sim->seq++;
    sim->next_sample += sim->packet_samples;
    /* libzmq checks the queue's limit on a message's first frame only, so a header it takes
     * means the samples go too: a message is queued whole or not at all. */
    if (zmq->send(socket, sim->header, sim->header_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0 ||
        zmq->send(socket, rows, (size_t)sim->packet_samples * sim->channels * sizeof(int16_t),
                  ZMQ_DONTWAIT) < 0) {
        int error = zmq->errno_value();
        if (error != EAGAIN) return -error;
        sim->refused++;
        return 0;
    }
    sim->sent++;
    return 1;
}

int64_t nw_sim_run(const nw_sim_zmq *zmq, void *socket, nw_sim *sim, uint64_t until,
                   int64_t *lateness, uint32_t cap) {
    uint32_t done = 0;
    if (!usable(sim) || sim->period_ns <= 0 || !lateness) return -EINVAL;
    while (sim->packet_number < until && done < cap) {
        const int64_t due = sim->start_ns + (int64_t)(sim->packet_number + 1) * sim->period_ns;
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        if (due > now) {
            /* An absolute deadline: a late wake-up is caught up on the next packets rather
             * than pushing every later one back. */
            struct timespec at = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
            if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
                break;  /* back to Python, where the signal's handler runs */
            now = clock_ns(CLOCK_MONOTONIC);
        }
        int status = nw_sim_send(zmq, socket, sim);
        if (status < 0) return status;
        lateness[done++] = now - due;
        sim->packet_number++;
    }
    return done;
}
