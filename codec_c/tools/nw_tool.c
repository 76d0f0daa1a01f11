/*
 * ./encode IN OUT and ./decode IN OUT: the challenge's programs. Their byte sizes count in
 * the challenge score, and the encoder and decoder share nearly all their code (model, range
 * coder, WAV container, tables), so they are one binary: ./encode, which decodes when its
 * first argument is -d, and ./decode, a two-line script (codec_c/tools/decode.sh) that runs
 * `encode -d` from its own folder. No dependencies beyond libc (and POSIX for the
 * temporary file that makes writing OUT all or nothing).
 */
#define _POSIX_C_SOURCE 200809L  /* stat */
#include "neurowire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *tool = "encode";   /* which program the messages speak for */

static int fail(const char *path, const char *why) {
    fprintf(stderr, "%s: %s: %s\n", tool, path, why);
    return 1;
}

/* Reads a whole file; works for pipes too, whose size is not known in advance. Stops at
 * 4 GiB (EFBIG, "File too large"), what a WAV's 32-bit sizes can describe: /dev/zero or a
 * pipe that never ends would otherwise be read until memory runs out. */
static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *bigger = cap < ((size_t)1 << 32) ? realloc(buf, cap * 2) : (errno = EFBIG, NULL);
        if (!bigger) { free(buf); buf = NULL; break; }
        buf = bigger;
        cap *= 2;
    }
    if (buf && ferror(f)) { free(buf); buf = NULL; }
    fclose(f);
    *len = n;
    return buf;
}

/* Writes OUT all or nothing: into OUT.partial beside it, renamed over OUT once complete, so
 * a failed write (a full disk) leaves what was there, the input itself when IN and OUT are
 * one file. OUT.partial is created exclusively ("x": never through a planted link, never over
 * a file of someone else's). What is not a regular file (a device, a pipe) is written
 * directly: renaming over it would replace it. */
static int write_file(const char *path, const uint8_t *data, size_t n) {
    struct stat st;
    const int direct = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
    char tmp[4096 + sizeof ".partial"];    /* PATH_MAX: no longer path can be opened */
    size_t len = strlen(path);
    if (len > 4096) return fail(path, strerror(ENAMETOOLONG));
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".partial", sizeof ".partial");
    FILE *f = fopen(direct ? path : tmp, direct ? "wb" : "wbx");
    int error = f ? 0 : errno;
    if (f && fwrite(data, 1, n, f) != n) error = errno;
    if (f && fclose(f) != 0 && !error) error = errno;
    if (f && !direct && !error && rename(tmp, path) != 0) error = errno;
    if (f && error && !direct) remove(tmp);
    /* A leftover OUT.partial (an interrupted run) is named: it is what to remove. */
    return error ? fail(error == EEXIST && !f ? tmp : path, strerror(error)) : 0;
}

int main(int argc, char **argv) {
    const int decoding = argc > 1 && strcmp(argv[1], "-d") == 0;   /* (./-d names a file) */
    if (decoding) { tool = "decode"; argv++; argc--; }
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", tool);
        return 2;
    }
    size_t in_len;
    uint8_t *in = read_all(argv[1], &in_len);
    if (!in) return fail(argv[1], strerror(errno));
    uint64_t size = 0;
    int64_t result = decoding ? nw_file_original_size(in, in_len, &size) : NW_OK;
    size_t cap = !decoding ? nw_file_bound(in_len) : result == NW_OK ? (size_t)size : 0;
    uint8_t *out = result == NW_OK ? malloc(cap ? cap : 1) : NULL;
    if (result == NW_OK && !out) result = NW_ERR_NOMEM;
    if (result == NW_OK)
        result = decoding ? nw_file_decompress(in, in_len, out, cap) : nw_file_compress(in, in_len, out, cap);
    free(in);
    if (result < 0) { free(out); return fail(argv[1], nw_strerror((int)result)); }
    int status = write_file(argv[2], out, (size_t)result);
    free(out);
    return status;
}
