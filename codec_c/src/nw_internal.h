/* Pieces shared by the block codec and the file container; not part of the public API. */
#ifndef NW_INTERNAL_H
#define NW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

uint32_t nw_crc32(uint32_t crc, const uint8_t *data, size_t len);

static inline void nw_put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void nw_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t nw_get_u16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static inline uint32_t nw_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* A file's samples (frames x channels, interleaved) as one range-coded payload, with the
 * analog model: file container versions 2 and 3 (nw_codec.c). The encoder writes the
 * current version (NW_FILE_FORMAT_VERSION) and returns the payload's bytes or a negative
 * nw_status (NW_ERR_OUTPUT_FULL when out_cap is too small); the decoder reads either. */
int64_t nw_file_encode_samples(const int16_t *samples, uint32_t frames, uint32_t channels,
                               uint8_t *out, size_t out_cap);
int nw_file_decode_samples(const uint8_t *in, size_t len, int16_t *samples, uint32_t frames,
                           uint32_t channels, int version);

#endif
