/*
 * ./encode IN OUT and ./decode IN OUT: the challenge's programs. One source, built twice
 * (NW_TOOL_DECODE selects the direction), so both share the file handling and messages.
 * Their size counts in the challenge score: no dependencies beyond libc.
 */
#include "neurowire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef NW_TOOL_DECODE
#define TOOL "decode"
#else
#define TOOL "encode"
#endif

static int fail(const char *path, const char *why) {
    fprintf(stderr, TOOL ": %s: %s\n", path, why);
    return 1;
}

/* Reads a whole file; works for pipes too, whose size is not known in advance. */
static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *bigger = cap < ((size_t)1 << 40) ? realloc(buf, cap * 2) : NULL;
        if (!bigger) { free(buf); buf = NULL; errno = ENOMEM; break; }
        buf = bigger;
        cap *= 2;
    }
    if (buf && ferror(f)) { free(buf); buf = NULL; }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: " TOOL " IN OUT\n");
        return 2;
    }
    size_t in_len;
    uint8_t *in = read_all(argv[1], &in_len);
    if (!in) return fail(argv[1], strerror(errno));
#ifdef NW_TOOL_DECODE
    uint64_t size;
    int64_t result = nw_file_original_size(in, in_len, &size);
    size_t cap = result == NW_OK ? (size_t)size : 0;
#else
    int64_t result = NW_OK;
    size_t cap = nw_file_bound(in_len);
#endif
    uint8_t *out = result == NW_OK ? malloc(cap ? cap : 1) : NULL;
    if (result == NW_OK && !out) result = NW_ERR_NOMEM;
    if (result == NW_OK) {
#ifdef NW_TOOL_DECODE
        result = nw_file_decompress(in, in_len, out, cap);
#else
        result = nw_file_compress(in, in_len, out, cap);
#endif
    }
    free(in);
    if (result < 0) { free(out); return fail(argv[1], nw_strerror((int)result)); }
    FILE *f = fopen(argv[2], "wb");
    if (!f) { free(out); return fail(argv[2], strerror(errno)); }
    size_t written = fwrite(out, 1, (size_t)result, f);
    int closed = fclose(f);
    free(out);
    if (written != (size_t)result || closed != 0) return fail(argv[2], "write failed");
    return 0;
}
