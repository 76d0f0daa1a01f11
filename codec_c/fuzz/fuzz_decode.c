/*
 * libFuzzer target for every decoder entry point: the input is tried as a block stream
 * (with a decoder of the channel count its header names, and one of a fixed count; each
 * block also decoded into rows wider than its channels, which must give the same samples
 * and leave the rest of the rows alone), as a file container, and as samples that must
 * survive an encode/decode round trip (also encoded from wider rows: the same blocks).
 *
 * Lane blocks (version 2) get the same: decoded by a stream decoder (which reads both
 * versions), and samples round-tripped through a lane encoder, lossless and bounded-error.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icodec_c/src \
 *       codec_c/fuzz/fuzz_decode.c codec_c/src/nw_codec.c codec_c/src/nw_file.c \
 *       codec_c/src/nw_lanes*.c -o fuzz_decode                         (or: make fuzz)
 */
#include "neurowire.h"
#include "nw_lanes.h"

#include <stdlib.h>
#include <string.h>

/* Keeps one iteration's memory bounded while still allowing blocks far larger than the
 * input (a silent block expands a lot). */
#define MAX_DECODED_VALUES (1u << 22)
#define MAX_FILE_BYTES (1u << 24)
#define GUARD 0x5A5A          /* fills the columns a strided decode must not touch */
#define EXTRA_COLUMNS 2

/* A strided decode into wider rows gave the same samples and left the extra columns alone. */
static void check_wide_rows(const int16_t *samples, const int16_t *wide, uint32_t n,
                            uint32_t channels, size_t stride) {
    for (uint32_t t = 0; t < n; t++) {
        const int16_t *row = wide + (size_t)t * stride;
        if (memcmp(row, samples + (size_t)t * channels, channels * sizeof *row) != 0) abort();
        for (size_t c = channels; c < stride; c++)
            if (row[c] != (int16_t)GUARD) abort();
    }
}

static void decode_blocks(const uint8_t *data, size_t size, uint32_t fixed_channels) {
    nw_block_info info;
    if (nw_block_peek(data, size, &info) != NW_OK) return;
    uint32_t channels = fixed_channels ? fixed_channels : info.channels;
    nw_decoder *dec = nw_decoder_new(channels), *wide_dec = nw_decoder_new(channels);
    if (!dec || !wide_dec) abort();
    const size_t stride = channels + EXTRA_COLUMNS;
    while (size > 0) {
        if (nw_block_peek(data, size, &info) != NW_OK) break;
        size_t values = (size_t)info.n_samples * channels;
        if ((size_t)info.n_samples * stride > MAX_DECODED_VALUES) break;
        int16_t *samples = malloc(values * sizeof *samples + 1);
        int16_t *wide = malloc((size_t)info.n_samples * stride * sizeof *wide + 1);
        if (!samples || !wide) abort();
        for (size_t i = 0; i < (size_t)info.n_samples * stride; i++) wide[i] = GUARD;
        int status = nw_decode_block(dec, data, size, samples, values, &info);
        nw_block_info wide_info;
        int wide_status = nw_decode_block_strided(wide_dec, data, size, wide, info.n_samples,
                                                  stride, &wide_info);
        if (wide_status != status) abort();
        if (status == NW_OK) check_wide_rows(samples, wide, info.n_samples, channels, stride);
        free(samples);
        free(wide);
        if (status != NW_OK || info.block_bytes == 0 || info.block_bytes > size) break;
        data += info.block_bytes;
        size -= info.block_bytes;
    }
    nw_decoder_free(dec);
    nw_decoder_free(wide_dec);
}

/* Any block stream through a stream decoder (both versions), whole rows and wider rows. */
static void decode_stream_blocks(const uint8_t *data, size_t size) {
    nw_block_info info;
    if (nw_stream_block_peek(data, size, &info) != NW_OK) return;
    const uint32_t channels = info.channels;
    nw_stream_decoder *dec = nw_stream_decoder_new(channels), *wide_dec = nw_stream_decoder_new(channels);
    if (!dec || !wide_dec) abort();
    const size_t stride = channels + EXTRA_COLUMNS;
    while (size > 0) {
        if (nw_stream_block_peek(data, size, &info) != NW_OK) break;
        if ((size_t)info.n_samples * stride > MAX_DECODED_VALUES) break;
        int16_t *samples = malloc((size_t)info.n_samples * channels * sizeof *samples + 1);
        int16_t *wide = malloc((size_t)info.n_samples * stride * sizeof *wide + 1);
        if (!samples || !wide) abort();
        for (size_t i = 0; i < (size_t)info.n_samples * stride; i++) wide[i] = GUARD;
        int status = nw_stream_decode_block(dec, data, size, samples, info.n_samples, channels, &info);
        int wide_status = nw_stream_decode_block(wide_dec, data, size, wide, info.n_samples, stride, NULL);
        if (wide_status != status) abort();
        if (status == NW_OK) check_wide_rows(samples, wide, info.n_samples, channels, stride);
        free(samples);
        free(wide);
        if (status != NW_OK || info.block_bytes == 0 || info.block_bytes > size) break;
        data += info.block_bytes;
        size -= info.block_bytes;
    }
    nw_stream_decoder_free(dec);
    nw_stream_decoder_free(wide_dec);
}

/* Samples through a lane encoder and back: exact, or within max_error. */
static void roundtrip_lanes(const uint8_t *data, size_t size) {
    if (size < 3) return;
    uint32_t channels = 1 + data[0] % 24;
    uint32_t max_error = data[1] % 5 == 4 ? 1 + data[1] % 3 : 0;
    data += 2;
    size -= 2;
    uint32_t n = (uint32_t)(size / (2 * channels));
    if (n == 0) return;
    int16_t *in = malloc((size_t)n * channels * sizeof *in);
    int16_t *back = malloc((size_t)n * channels * sizeof *back);
    size_t cap = nw_encode_bound(channels, n);
    uint8_t *blob = malloc(cap);
    nw_stream_encoder *enc = nw_stream_encoder_new(channels, NW_LANE_FORMAT_VERSION);
    nw_stream_decoder *dec = nw_stream_decoder_new(channels);
    if (!in || !back || !blob || !enc || !dec) abort();
    if (nw_stream_encoder_set_max_error(enc, max_error) != NW_OK) abort();
    memcpy(in, data, (size_t)n * channels * sizeof *in);
    uint32_t done = 0;
    for (int b = 0; done < n; b++) {
        uint32_t len = 1 + (uint32_t)(data[b % size] % 23);
        if (len > n - done) len = n - done;
        const int16_t *src = in + (size_t)done * channels;
        int64_t got = nw_stream_encode_block(enc, src, len, channels, b % 3 == 0, blob, cap);
        if (got <= 0 || (size_t)got > nw_encode_bound(channels, len)) abort();
        if (nw_stream_decode_block(dec, blob, (size_t)got, back, len, channels, NULL) != NW_OK) abort();
        for (size_t i = 0; i < (size_t)len * channels; i++) {
            if (max_error == 0) {
                if (back[i] != src[i]) abort();
            } else if (back[i] != src[i]) {
                /* Within max_error codes on the grid, or value units off it: a loose bound
                 * here (a grid step is at most 66 units); the Python tests check it exactly. */
                long diff = (long)back[i] - src[i];
                if (diff < 0) diff = -diff;
                if (diff > 67L * (long)max_error) abort();
            }
        }
        done += len;
    }
    nw_stream_encoder_free(enc);
    nw_stream_decoder_free(dec);
    free(blob);
    free(back);
    free(in);
}

static void decode_file(const uint8_t *data, size_t size) {
    uint64_t original;
    if (nw_file_original_size(data, size, &original) != NW_OK) return;
    if (original > MAX_FILE_BYTES) return;
    uint8_t *out = malloc((size_t)original + 1);
    if (!out) return;
    nw_file_decompress(data, size, out, (size_t)original);
    /* A buffer one byte short must be refused, not overrun. */
    if (original > 0 && nw_file_decompress(data, size, out, (size_t)original - 1) >= 0) abort();
    free(out);
}

static void roundtrip_samples(const uint8_t *data, size_t size) {
    if (size < 3) return;
    uint32_t channels = 1 + data[0] % 16;
    int keyframe_every = 1 + data[1] % 4;
    data += 2;
    size -= 2;
    uint32_t n = (uint32_t)(size / (2 * channels));
    if (n == 0) return;
    int16_t *in = malloc((size_t)n * channels * sizeof *in);
    int16_t *back = malloc((size_t)n * channels * sizeof *back);
    /* The same samples as columns 1..channels of wider rows. */
    const size_t stride = channels + 1 + EXTRA_COLUMNS;
    int16_t *wide = malloc((size_t)n * stride * sizeof *wide);
    size_t cap = nw_encode_bound(channels, n);
    uint8_t *blob = malloc(cap), *wide_blob = malloc(cap);
    nw_encoder *enc = nw_encoder_new(channels), *wide_enc = nw_encoder_new(channels);
    nw_decoder *dec = nw_decoder_new(channels);
    if (!in || !back || !wide || !blob || !wide_blob || !enc || !wide_enc || !dec) abort();
    memcpy(in, data, (size_t)n * channels * sizeof *in);
    for (size_t t = 0; t < n; t++)
        for (size_t c = 0; c < stride; c++)
            wide[t * stride + c] = c >= 1 && c <= channels ? in[t * channels + c - 1] : (int16_t)GUARD;
    /* Cut into blocks of varying length so that state carries across block borders. */
    uint32_t done = 0;
    for (int b = 0; done < n; b++) {
        uint32_t len = 1 + (uint32_t)(data[b % size] % 37);
        if (len > n - done) len = n - done;
        const int16_t *src = in + (size_t)done * channels;
        int64_t got = nw_encode_block(enc, src, len, b % keyframe_every == 0, blob, cap);
        if (got <= 0 || (size_t)got > nw_encode_bound(channels, len)) abort();
        int64_t wide_got = nw_encode_block_strided(wide_enc, wide + (size_t)done * stride + 1, len,
                                                   stride, b % keyframe_every == 0, wide_blob, cap);
        if (wide_got != got || memcmp(wide_blob, blob, (size_t)got) != 0) abort();
        nw_block_info info;
        if (nw_decode_block(dec, blob, (size_t)got, back, (size_t)len * channels, &info) != NW_OK)
            abort();
        if (memcmp(back, src, (size_t)len * channels * sizeof *back) != 0) abort();
        done += len;
    }
    nw_encoder_free(enc);
    nw_encoder_free(wide_enc);
    nw_decoder_free(dec);
    free(blob);
    free(wide_blob);
    free(wide);
    free(back);
    free(in);
}

static void roundtrip_file(const uint8_t *data, size_t size) {
    size_t cap = nw_file_bound(size);
    uint8_t *packed = malloc(cap), *back = malloc(size + 1);
    if (!packed || !back) abort();
    int64_t n = nw_file_compress(data, size, packed, cap);
    if (n < 0) abort();
    if (nw_file_decompress(packed, (size_t)n, back, size) != (int64_t)size) abort();
    if (memcmp(back, data, size) != 0) abort();
    free(packed);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    decode_blocks(data, size, 0);
    decode_blocks(data, size, 1 + (size ? data[size - 1] % 8 : 0));
    decode_file(data, size);
    decode_stream_blocks(data, size);
    roundtrip_samples(data, size);
    roundtrip_lanes(data, size);
    roundtrip_file(data, size);
    return 0;
}
