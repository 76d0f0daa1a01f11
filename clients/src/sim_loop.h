/* The simulator's send loop: paces packets by deadline and sends each as the two ingest
 * frames, with no Python work per packet (clients/simulate.py owns everything else: the
 * signal table, the header's bytes from neurowire.wire, the report).
 *
 * No ZeroMQ header is included: clients/simulate.py hands over the address of zmq_send from
 * the libzmq pyzmq loaded, so the socket pointer it passes belongs to that same instance.
 *
 * The part between the cdef markers is read by clients/build_sim_loop.py as the cffi
 * declarations: keep it free of preprocessor lines. */
#ifndef NW_SIM_LOOP_H
#define NW_SIM_LOOP_H

#include <stddef.h>
#include <stdint.h>

/* cdef begin */
typedef struct nw_sim_zmq {
    int (*send)(void *socket, const void *buf, size_t len, int flags);
    int (*errno_value)(void);
} nw_sim_zmq;

/* One simulated implant. Python fills every field before the first call; the counters
 * (seq .. packet_number) are the state both sides read. */
typedef struct nw_sim {
    const int16_t *table;       /* loop_rows x channels, C order: the signal, looped */
    uint64_t loop_rows;
    uint32_t channels, packet_samples;
    int16_t *scratch;           /* packet_samples x channels: a packet across the loop's end */
    uint8_t *header;            /* the packed ingest header + stream id, patched per packet */
    size_t header_len;
    size_t seq_at, first_at, acquired_at;  /* offsets of the u64/i64 fields it patches */
    int64_t start_ns;           /* CLOCK_MONOTONIC: packet k is due at start + (k+1) x period */
    int64_t period_ns;
    uint64_t seq, next_sample;  /* of the next packet */
    uint64_t sent, refused;
    uint64_t packet_number;     /* packets paced so far (sent or refused) */
} nw_sim;

/* Sends the next packet now (no pacing): 1 sent, 0 refused (the socket's queue is full; the
 * implant never waits), -EINVAL if `sim` is not filled in, or -errno of a socket error. */
int nw_sim_send(const nw_sim_zmq *zmq, void *socket, nw_sim *sim);

/* Sends packets at their deadlines until packet_number reaches `until` or `cap` were sent
 * in this call, writing each one's lateness (ns past its deadline when it went) to
 * lateness[]. Returns how many it paced; fewer when a signal woke it (the caller runs the
 * handler and calls again), -EINVAL if `sim` is not filled in, or -errno of a socket
 * error. */
int64_t nw_sim_run(const nw_sim_zmq *zmq, void *socket, nw_sim *sim, uint64_t until,
                   int64_t *lateness, uint32_t cap);
/* cdef end */

#endif
