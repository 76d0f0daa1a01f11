/*
 * neurowire codec: lossless adaptive compression of 16-bit electrode samples.
 *
 * Two layers, both documented byte for byte in docs/FORMAT.md:
 *  - blocks: `n_samples x channels` int16 samples (row = one time step), coded with
 *    per-channel state that persists from block to block; a keyframe block resets that
 *    state so it decodes without any earlier block.
 *  - files: any byte string (a WAV file or not) wrapped in a container whose samples, when
 *    it is 16-bit PCM WAV, are coded as blocks. This is what ./encode and ./decode write.
 *
 * Portable C99, no allocation after *_new (but for bounded-error blocks), every read of compressed input bounds-checked.
 * Functions return NW_OK (0) or a negative nw_status; nw_strerror() names it.
 */
#ifndef NEUROWIRE_H
#define NEUROWIRE_H

#include <stddef.h>
#include <stdint.h>

#define NW_FORMAT_VERSION 1
#define NW_MAX_CHANNELS 4096
/* Largest block, in time steps; longer recordings are cut into several blocks. */
#define NW_MAX_BLOCK_SAMPLES (1u << 20)
/* Bytes of a block header (see nw_block_info). */
#define NW_BLOCK_HEADER_BYTES 22
/* Largest max_error (bounded-error coding), in domain units (ADC codes on the grid). */
#define NW_MAX_ERROR_LIMIT 63
/* Codes of the ADC whose 16-bit values the codec knows (the recordings' 10-bit grid). */
#define NW_GRID_CODES 1024

enum nw_status {
    NW_OK = 0,
    NW_ERR_ARGUMENT = -1,      /* bad argument: channel count, sizes, NULL pointer */
    NW_ERR_NOMEM = -2,         /* allocation failed */
    NW_ERR_OUTPUT_FULL = -3,   /* output buffer too small */
    NW_ERR_MAGIC = -4,         /* input does not start with a neurowire header */
    NW_ERR_VERSION = -5,       /* written by an unsupported format version */
    NW_ERR_TRUNCATED = -6,     /* input ends before the block or file does */
    NW_ERR_CORRUPT = -7,       /* impossible value inside the compressed data */
    NW_ERR_CHECKSUM = -8,      /* decoded samples fail the integrity check */
    NW_ERR_CHANNELS = -9,      /* block channel count differs from the decoder's */
    NW_ERR_NEED_KEYFRAME = -10,/* decoder has no valid state: it must resume at a keyframe */
    NW_ERR_SEQUENCE = -11      /* block index is not the one after the previous block */
};

const char *nw_strerror(int status);

/* What a block header says; filled by nw_block_peek and nw_decode_block. */
typedef struct nw_block_info {
    uint32_t channels;
    uint32_t n_samples;    /* time steps in the block */
    uint32_t index;        /* block counter of the stream, from 0 at its first block */
    uint32_t block_bytes;  /* header + payload */
    uint32_t crc32;        /* CRC-32 of the decoded samples (little-endian int16) */
    int keyframe;          /* 1: decodes without earlier blocks */
    int stored;            /* 1: payload holds the samples uncompressed */
    uint32_t max_error;    /* 0: lossless; k: every sample within k ADC codes (see FORMAT.md) */
} nw_block_info;

/* The 16-bit sample value of each of the NW_GRID_CODES ADC codes, in code order. */
void nw_grid_values(int16_t *values);

/* Builds the codec's shared tables. The first coder made (or the first call that needs
 * them) does it too; a program that may do either from several threads at once calls
 * nw_prepare first, once (the Python package does at import). */
void nw_prepare(void);

/* ---- block stream -------------------------------------------------------------- */

typedef struct nw_encoder nw_encoder;
typedef struct nw_decoder nw_decoder;

nw_encoder *nw_encoder_new(uint32_t channels);
void nw_encoder_free(nw_encoder *encoder);
uint32_t nw_encoder_channels(const nw_encoder *encoder);
/* Largest possible size of one encoded block (never more than raw + header + a little). */
size_t nw_encode_bound(uint32_t channels, uint32_t n_samples);
/* Encode n_samples time steps of `samples` (n_samples * channels int16, row-major).
 * keyframe != 0 resets the channel state first; the first block is always a keyframe.
 * Returns the block size in bytes (> 0) or a negative nw_status. */
int64_t nw_encode_block(nw_encoder *encoder, const int16_t *samples, uint32_t n_samples,
                        int keyframe, uint8_t *out, size_t out_cap);
/* The same from rows `stride` (>= channels) samples apart: the encoder's channels are a
 * slice of wider rows, as when a stream's channel groups are coded separately. The block
 * is the one nw_encode_block makes of those samples copied out. */
int64_t nw_encode_block_strided(nw_encoder *encoder, const int16_t *samples, uint32_t n_samples,
                                size_t stride, int keyframe, uint8_t *out, size_t out_cap);
/* Bounded-error coding from the next block on: every decoded sample then lies within
 * max_error (0..NW_MAX_ERROR_LIMIT) ADC codes of the original (value units for channels
 * off the ADC grid); 0 (the default) is lossless. Decoders need no setting: each block
 * header carries it. */
int nw_encoder_set_max_error(nw_encoder *encoder, uint32_t max_error);
/* Compressed bytes spent on each channel since the encoder was created (approximate to
 * a byte per block and channel): copies min(count, channels) totals, returns that number. */
uint32_t nw_encoder_channel_bytes(const nw_encoder *encoder, uint64_t *totals, uint32_t count);

nw_decoder *nw_decoder_new(uint32_t channels);
void nw_decoder_free(nw_decoder *decoder);
uint32_t nw_decoder_channels(const nw_decoder *decoder);
/* Forget the channel state: the next block must be a keyframe. */
void nw_decoder_reset(nw_decoder *decoder);
/* Read and check a block header without decoding it. */
int nw_block_peek(const uint8_t *in, size_t in_len, nw_block_info *info);
/* Decode one block into `samples` (capacity samples_cap int16 values). On any error the
 * decoder forgets its state (next block must be a keyframe) and `samples` is unspecified. */
int nw_decode_block(nw_decoder *decoder, const uint8_t *in, size_t in_len,
                    int16_t *samples, size_t samples_cap, nw_block_info *info);
/* The same into rows `stride` (>= channels) samples apart, of which the buffer holds
 * rows_cap; samples between a row's channels and the next row are left untouched. */
int nw_decode_block_strided(nw_decoder *decoder, const uint8_t *in, size_t in_len,
                            int16_t *samples, size_t rows_cap, size_t stride,
                            nw_block_info *info);

/* ---- file container (./encode, ./decode, neurowire.codec.compress) --------------- */

/* Version of the files written now (3: the samples as one payload with the analog model,
 * its share learned as the file is coded); files of version 2 (the share fixed) and 1 (the
 * samples as version 1 blocks) still decompress. */
#define NW_FILE_FORMAT_VERSION 4

size_t nw_file_bound(size_t in_len);
/* Returns the compressed size or a negative nw_status. */
int64_t nw_file_compress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);
/* Size the original file had, read from the container header. */
int nw_file_original_size(const uint8_t *in, size_t in_len, uint64_t *size);
/* Returns the original size or a negative nw_status. */
int64_t nw_file_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);

#endif
