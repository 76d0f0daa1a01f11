/*
 * libFuzzer target for every decoder entry point: the input is tried as a block stream
 * (with a decoder of the channel count its header names, and one of a fixed count), as a
 * file container, and as samples that must survive an encode/decode round trip.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icodec_c/src \
 *       codec_c/fuzz/fuzz_decode.c codec_c/src/*.c -o fuzz_decode     (or: make fuzz)
 */
#include "neurowire.h"

#include <stdlib.h>
#include <string.h>

/* Keeps one iteration's memory bounded while still allowing blocks far larger than the
 * input (a silent block expands a lot). */
#define MAX_DECODED_VALUES (1u << 22)
#define MAX_FILE_BYTES (1u << 24)

static void decode_blocks(const uint8_t *data, size_t size, uint32_t fixed_channels) {
    nw_block_info info;
    if (nw_block_peek(data, size, &info) != NW_OK) return;
    uint32_t channels = fixed_channels ? fixed_channels : info.channels;
    nw_decoder *dec = nw_decoder_new(channels);
    if (!dec) return;
    while (size > 0) {
        if (nw_block_peek(data, size, &info) != NW_OK) break;
        size_t values = (size_t)info.n_samples * channels;
        if (values > MAX_DECODED_VALUES) break;
        int16_t *samples = malloc(values * sizeof *samples + 1);
        if (!samples) break;
        int status = nw_decode_block(dec, data, size, samples, values, &info);
        free(samples);
        if (status != NW_OK || info.block_bytes == 0 || info.block_bytes > size) break;
        data += info.block_bytes;
        size -= info.block_bytes;
    }
    nw_decoder_free(dec);
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
    size_t cap = nw_encode_bound(channels, n);
    uint8_t *blob = malloc(cap);
    nw_encoder *enc = nw_encoder_new(channels);
    nw_decoder *dec = nw_decoder_new(channels);
    if (!in || !back || !blob || !enc || !dec) abort();
    memcpy(in, data, (size_t)n * channels * sizeof *in);
    /* Cut into blocks of varying length so that state carries across block borders. */
    uint32_t done = 0;
    for (int b = 0; done < n; b++) {
        uint32_t len = 1 + (uint32_t)(data[b % size] % 37);
        if (len > n - done) len = n - done;
        const int16_t *src = in + (size_t)done * channels;
        int64_t got = nw_encode_block(enc, src, len, b % keyframe_every == 0, blob, cap);
        if (got <= 0 || (size_t)got > nw_encode_bound(channels, len)) abort();
        nw_block_info info;
        if (nw_decode_block(dec, blob, (size_t)got, back, (size_t)len * channels, &info) != NW_OK)
            abort();
        if (memcmp(back, src, (size_t)len * channels * sizeof *back) != 0) abort();
        done += len;
    }
    nw_encoder_free(enc);
    nw_decoder_free(dec);
    free(blob);
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
    roundtrip_samples(data, size);
    roundtrip_file(data, size);
    return 0;
}
