/* The baseline for `neurowire bench stream`: a bare PULL -> PUB relay in C on the libzmq that
 * pyzmq bundles, forwarding every frame unchanged. Its CPU per packet is the floor under any
 * daemon on this machine's libzmq and kernel. pyzmq ships the library but not zmq.h, so the
 * few functions used are declared here (libzmq 4.x ABI).
 * Usage: bare_relay PULL_ENDPOINT PUB_ENDPOINT (runs until killed). */
#include <stdio.h>

typedef struct { unsigned char bytes[64]; } __attribute__((aligned(8))) zmq_msg_t;
void *zmq_ctx_new(void);
void *zmq_socket(void *context, int type);
int zmq_bind(void *socket, const char *endpoint);
int zmq_setsockopt(void *socket, int option, const void *value, unsigned long size);
int zmq_msg_init(zmq_msg_t *msg);
int zmq_msg_recv(zmq_msg_t *msg, void *socket, int flags);
int zmq_msg_send(zmq_msg_t *msg, void *socket, int flags);
int zmq_msg_more(const zmq_msg_t *msg);
int zmq_msg_close(zmq_msg_t *msg);

enum { ZMQ_PUB = 1, ZMQ_PULL = 7, ZMQ_SNDMORE = 2, ZMQ_SNDHWM = 23, ZMQ_RCVHWM = 24 };

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PULL_ENDPOINT PUB_ENDPOINT\n", argv[0]);
        return 2;
    }
    void *context = zmq_ctx_new();
    void *in = zmq_socket(context, ZMQ_PULL), *out = zmq_socket(context, ZMQ_PUB);
    int hwm = 100000;
    zmq_setsockopt(in, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(out, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_bind(in, argv[1]) != 0 || zmq_bind(out, argv[2]) != 0) {
        fprintf(stderr, "bare_relay: cannot bind\n");
        return 1;
    }
    zmq_msg_t msg;
    for (;;) {
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, in, 0) < 0)
            return 1;
        int more = zmq_msg_more(&msg);
        if (zmq_msg_send(&msg, out, more ? ZMQ_SNDMORE : 0) < 0)
            zmq_msg_close(&msg);
    }
}
