/*
 * libFuzzer target for the subscriber's spooling checks (clients/src/spool_loop.c): one
 * message per input, as its frames, through nw_spool_take, the function every message from
 * the network goes through. The spool state carries over between inputs (streams, trackers,
 * the buffer), as it does between messages; records go to /dev/null.
 *
 * Input: byte 0 = frames given (0..8), byte 1 = frames beyond them (0..2), then per frame a
 * little-endian u16 length and that many bytes (cut short where the input ends). Each frame
 * is copied to an allocation of its own, so ASan sees each frame's bounds.
 * `make fuzz-spool` builds and runs it; seeds in clients/fuzz/corpus.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool_loop.h"

enum { MAX_FRAMES = 8 };

static nw_spool spool;
static uint8_t buffer[300];  /* small: records larger than it take the direct-write path */

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len) {
    if (!spool.buffer) {
        spool.fd = open("/dev/null", O_WRONLY);
        spool.buffer = buffer;
        spool.buffer_cap = sizeof buffer;
        spool.until_sample = 1000;
    }
    if (len < 2) return 0;
    const uint32_t frames = in[0] % (MAX_FRAMES + 1), excess = in[1] % 3;
    in += 2;
    len -= 2;
    const uint8_t *data[MAX_FRAMES];
    size_t size[MAX_FRAMES];
    uint8_t *copies[MAX_FRAMES];
    for (uint32_t k = 0; k < frames; k++) {
        size_t n = 0;
        if (len >= 2) {
            n = (size_t)in[0] | (size_t)in[1] << 8;
            in += 2;
            len -= 2;
        }
        if (n > len) n = len;
        copies[k] = n ? malloc(n) : NULL;
        if (n) memcpy(copies[k], in, n);
        data[k] = copies[k];
        size[k] = n;
        in += n;
        len -= n;
    }
    nw_spool_take(&spool, data, size, frames, excess, 1);
    for (uint32_t k = 0; k < frames; k++) free(copies[k]);
    if (spool.streams == NW_SPOOL_MAX_STREAMS) spool.streams = 0;  /* room for new ones */
    spool.reached = 0;
    return 0;
}
