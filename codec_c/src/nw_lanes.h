/*
 * Block streams in either format: version 1 (nw_codec.c, a channel at a time, one range
 * coder) or the lane format, version 2 (nw_lanes.c): the same per-channel model, run on
 * groups of NW_LANES channels side by side, whose samples feed NW_LANE_CODERS range coders
 * interleaved in one byte string, so that the model vectorises across channels and the
 * decoder runs several independent chains at once. docs/FORMAT.md has the bitstream.
 *
 * A stream decoder reads both versions (streams and archives written before version 2 keep
 * decoding); an encoder writes the version it was made for. Not in the challenge tools.
 */
#ifndef NW_LANES_H
#define NW_LANES_H

#include "neurowire.h"

#define NW_LANE_FORMAT_VERSION 2
#define NW_LANES 8          /* channels coded side by side */
#define NW_LANE_CODERS 4    /* interleaved range coders per block: lane l uses coder l % 4 */

typedef struct nw_stream_encoder nw_stream_encoder;
typedef struct nw_stream_decoder nw_stream_decoder;

/* version: NW_FORMAT_VERSION (1) or NW_LANE_FORMAT_VERSION (2); NULL for anything else. */
nw_stream_encoder *nw_stream_encoder_new(uint32_t channels, uint32_t version);
void nw_stream_encoder_free(nw_stream_encoder *encoder);
uint32_t nw_stream_encoder_channels(const nw_stream_encoder *encoder);
/* As nw_encoder_set_max_error and nw_encoder_channel_bytes. */
int nw_stream_encoder_set_max_error(nw_stream_encoder *encoder, uint32_t max_error);
uint32_t nw_stream_encoder_channel_bytes(const nw_stream_encoder *encoder, uint64_t *totals,
                                         uint32_t count);
/* As nw_encode_block_strided (the bound is nw_encode_bound's for both versions). */
int64_t nw_stream_encode_block(nw_stream_encoder *encoder, const int16_t *samples,
                               uint32_t n_samples, size_t stride, int keyframe,
                               uint8_t *out, size_t out_cap);

nw_stream_decoder *nw_stream_decoder_new(uint32_t channels);
void nw_stream_decoder_free(nw_stream_decoder *decoder);
uint32_t nw_stream_decoder_channels(const nw_stream_decoder *decoder);
void nw_stream_decoder_reset(nw_stream_decoder *decoder);
/* nw_block_peek for a block of either version (byte 2 of the block says which). */
int nw_stream_block_peek(const uint8_t *in, size_t in_len, nw_block_info *info);
/* As nw_decode_block_strided, for blocks of either version. A stream that changes version
 * does so at a keyframe (anything else: NW_ERR_NEED_KEYFRAME). */
int nw_stream_decode_block(nw_stream_decoder *decoder, const uint8_t *in, size_t in_len,
                           int16_t *samples, size_t rows_cap, size_t stride,
                           nw_block_info *info);

/* Which code the lane format runs on (identical bytes on each, which the tests check):
 * NW_SIMD_AUTO picks the best this CPU has. Returns the one in use after the call, or
 * NW_ERR_ARGUMENT when the CPU lacks the one asked for. Process-wide; set it before
 * coding starts (tests and benchmarks only). */
enum nw_simd { NW_SIMD_AUTO = -1, NW_SIMD_SCALAR = 0, NW_SIMD_SSE2 = 1, NW_SIMD_AVX2 = 2, NW_SIMD_AVX512 = 3 };
int nw_lanes_set_simd(int simd);

#endif
