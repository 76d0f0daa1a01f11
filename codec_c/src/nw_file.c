/*
 * File container: wraps any byte string. A 16-bit PCM WAV file has its samples coded as
 * codec blocks and everything else (header, extra chunks, odd trailing bytes) kept
 * verbatim, so decompression gives back the file byte for byte. Layout: docs/FORMAT.md.
 */
#include "neurowire.h"
#include "nw_internal.h"

#include <stdlib.h>
#include <string.h>

#define KIND_STORED 0
#define KIND_WAV 1
#define HEADER_CANONICAL 0   /* the usual 44-byte header, rebuilt from channels and rate */
#define HEADER_VERBATIM 1
#define CANONICAL_BYTES 44
/* Version 1 files hold the samples as blocks of the stream format; versions 2 and the
 * current one (NW_FILE_FORMAT_VERSION) as one payload with the analog model
 * (nw_file_encode_samples). */
#define FILE_VERSION_BLOCKS 1

/* ---- varints (LEB128), every read bounds-checked --------------------------------- */
static size_t put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    do {
        uint8_t byte = (uint8_t)(v & 0x7F);
        v >>= 7;
        out[n++] = (uint8_t)(byte | (v ? 0x80 : 0));
    } while (v);
    return n;
}

typedef struct reader {
    const uint8_t *p;
    size_t len, pos;
    int error;
} reader;

static uint64_t get_varint(reader *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len) { r->error = NW_ERR_TRUNCATED; return 0; }
        uint8_t byte = r->p[r->pos++];
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) return v;
    }
    r->error = NW_ERR_CORRUPT;
    return 0;
}

static const uint8_t *get_bytes(reader *r, uint64_t n) {
    if (r->error) return NULL;
    if (n > r->len - r->pos) { r->error = NW_ERR_TRUNCATED; return NULL; }
    const uint8_t *p = r->p + r->pos;
    r->pos += (size_t)n;
    return p;
}

/* ---- WAV parsing ------------------------------------------------------------------ */
typedef struct wav_layout {
    uint32_t channels, rate;
    size_t data_offset;   /* first sample byte */
    uint64_t frames;      /* whole frames present in the file */
} wav_layout;

/* Finds 16-bit PCM samples in a RIFF/WAVE file; returns 0 when the bytes are not one. */
static int parse_wav(const uint8_t *in, size_t len, wav_layout *wav) {
    if (len < 12 || memcmp(in, "RIFF", 4) || memcmp(in + 8, "WAVE", 4)) return 0;
    size_t pos = 12;
    int have_fmt = 0;
    while (pos + 8 <= len) {
        uint32_t size = nw_get_u32(in + pos + 4);
        if (!memcmp(in + pos, "fmt ", 4)) {
            if (size < 16 || pos + 8 + 16 > len) return 0;
            const uint8_t *f = in + pos + 8;
            uint32_t tag = nw_get_u16(f), channels = nw_get_u16(f + 2);
            uint32_t align = nw_get_u16(f + 12), bits = nw_get_u16(f + 14);
            if ((tag != 1 && tag != 0xFFFE) || bits != 16 || channels < 1 ||
                channels > NW_MAX_CHANNELS || align != 2 * channels) return 0;
            wav->channels = channels;
            wav->rate = nw_get_u32(f + 4);
            have_fmt = 1;
        } else if (!memcmp(in + pos, "data", 4)) {
            if (!have_fmt) return 0;
            wav->data_offset = pos + 8;
            uint64_t available = len - wav->data_offset;
            uint64_t bytes = size < available ? size : available;
            wav->frames = bytes / (2u * wav->channels);
            return 1;
        }
        /* RIFF pads chunks to an even size */
        uint64_t next = (uint64_t)pos + 8 + size + (size & 1);
        if (next > len) return 0;
        pos = (size_t)next;
    }
    return 0;
}

static void canonical_header(uint8_t *h, uint32_t channels, uint32_t rate, uint64_t frames) {
    uint32_t data = (uint32_t)(frames * 2 * channels);
    memcpy(h, "RIFF", 4); nw_put_u32(h + 4, 36 + data); memcpy(h + 8, "WAVEfmt ", 8);
    nw_put_u32(h + 16, 16); nw_put_u16(h + 20, 1); nw_put_u16(h + 22, channels);
    nw_put_u32(h + 24, rate); nw_put_u32(h + 28, rate * 2 * channels);
    nw_put_u16(h + 32, 2 * channels); nw_put_u16(h + 34, 16);
    memcpy(h + 36, "data", 4); nw_put_u32(h + 40, data);
}

/* ---- compress ------------------------------------------------------------------------ */
size_t nw_file_bound(size_t in_len) {
    return in_len + 1024 + 32 * (in_len / (2 * (size_t)NW_MAX_BLOCK_SAMPLES) + 1);
}

static size_t put_prefix(uint8_t *out, int kind, size_t in_len, uint32_t crc) {
    out[0] = 'N'; out[1] = 'W'; out[2] = 'F'; out[3] = NW_FILE_FORMAT_VERSION; out[4] = (uint8_t)kind;
    size_t n = 5 + put_varint(out + 5, in_len);
    nw_put_u32(out + n, crc);
    return n + 4;
}

static int64_t compress_stored(const uint8_t *in, size_t in_len, uint32_t crc, uint8_t *out) {
    size_t n = put_prefix(out, KIND_STORED, in_len, crc);
    if (in_len) memcpy(out + n, in, in_len);
    return (int64_t)(n + in_len);
}

int64_t nw_file_compress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap) {
    if ((!in && in_len) || !out) return NW_ERR_ARGUMENT;
    if (out_cap < nw_file_bound(in_len)) return NW_ERR_OUTPUT_FULL;
    uint32_t crc = nw_crc32(0, in, in_len);
    wav_layout wav = {0, 0, 0, 0};
    if (!parse_wav(in, in_len, &wav) || wav.frames > UINT32_MAX)
        return compress_stored(in, in_len, crc, out);

    const uint32_t ch = wav.channels;
    const size_t count = (size_t)wav.frames * ch;
    int16_t *samples = malloc(count ? count * sizeof *samples : 1);
    if (!samples) return NW_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) samples[i] = (int16_t)nw_get_u16(in + wav.data_offset + 2 * i);

    size_t pos = put_prefix(out, KIND_WAV, in_len, crc);
    pos += put_varint(out + pos, ch);
    pos += put_varint(out + pos, wav.frames);
    uint8_t canonical[CANONICAL_BYTES];
    canonical_header(canonical, ch, wav.rate, wav.frames);
    if (wav.data_offset == CANONICAL_BYTES && !memcmp(in, canonical, CANONICAL_BYTES)) {
        out[pos++] = HEADER_CANONICAL;
        pos += put_varint(out + pos, wav.rate);
    } else {
        out[pos++] = HEADER_VERBATIM;
        pos += put_varint(out + pos, wav.data_offset);
        memcpy(out + pos, in, wav.data_offset);
        pos += wav.data_offset;
    }
    size_t suffix_at = wav.data_offset + 2 * count;
    pos += put_varint(out + pos, in_len - suffix_at);
    memcpy(out + pos, in + suffix_at, in_len - suffix_at);
    pos += in_len - suffix_at;

    /* The payload may take no more than storing would (out_cap holds that much). */
    uint8_t probe[16];
    const size_t stored_bytes = put_prefix(probe, KIND_STORED, in_len, crc) + in_len;
    int64_t status = pos < stored_bytes
        ? nw_file_encode_samples(samples, (uint32_t)wav.frames, ch, out + pos, stored_bytes - pos)
        : NW_ERR_OUTPUT_FULL;
    free(samples);
    /* Coding never pays on some inputs (noise, a header without frames): store instead. */
    if (status == NW_ERR_OUTPUT_FULL || (status >= 0 && pos + (size_t)status >= stored_bytes))
        return compress_stored(in, in_len, crc, out);
    if (status < 0) return status;
    return (int64_t)(pos + (size_t)status);
}

/* ---- decompress ---------------------------------------------------------------------- */
static int read_prefix(reader *r, int *version, int *kind, uint64_t *size, uint32_t *crc) {
    if (r->len < 3 || memcmp(r->p, "NWF", 3)) return r->len < 3 ? NW_ERR_TRUNCATED : NW_ERR_MAGIC;
    if (r->len < 5) return NW_ERR_TRUNCATED;
    *version = r->p[3];
    if (*version < FILE_VERSION_BLOCKS || *version > NW_FILE_FORMAT_VERSION) return NW_ERR_VERSION;
    *kind = r->p[4];
    if (*kind != KIND_STORED && *kind != KIND_WAV) return NW_ERR_CORRUPT;
    r->pos = 5;
    *size = get_varint(r);
    const uint8_t *c = get_bytes(r, 4);
    if (r->error) return r->error;
    *crc = nw_get_u32(c);
    return NW_OK;
}

int nw_file_original_size(const uint8_t *in, size_t in_len, uint64_t *size) {
    if (!in || !size) return NW_ERR_ARGUMENT;
    reader r = {in, in_len, 0, 0};
    int version, kind;
    uint32_t crc;
    return read_prefix(&r, &version, &kind, size, &crc);
}

/* Version 1: blocks of the stream format, at most 2^20 time steps each, the first a keyframe. */
static int decode_blocks(reader *r, uint64_t frames, uint32_t ch, int16_t *samples) {
    nw_decoder *dec = nw_decoder_new(ch);
    int status = dec ? NW_OK : NW_ERR_NOMEM;
    for (uint64_t t = 0; status == NW_OK && t < frames;) {
        nw_block_info info;
        uint32_t n = (uint32_t)(frames - t < NW_MAX_BLOCK_SAMPLES ? frames - t : NW_MAX_BLOCK_SAMPLES);
        status = nw_decode_block(dec, r->p + r->pos, r->len - r->pos, samples + t * ch,
                                 (size_t)n * ch, &info);
        if (status == NW_OK && (info.n_samples != n || (t == 0 && !info.keyframe))) status = NW_ERR_CORRUPT;
        if (status == NW_OK) { r->pos += info.block_bytes; t += n; }
    }
    if (status == NW_OK && r->pos != r->len) status = NW_ERR_CORRUPT;  /* trailing garbage */
    nw_decoder_free(dec);
    return status;
}

static int decode_wav(reader *r, int version, uint64_t size, uint8_t *out) {
    uint64_t ch = get_varint(r), frames = get_varint(r);
    const uint8_t *kind = get_bytes(r, 1);
    if (r->error) return r->error;
    if (ch < 1 || ch > NW_MAX_CHANNELS || frames > size / (2 * ch)) return NW_ERR_CORRUPT;
    size_t data_bytes = (size_t)(frames * 2 * ch), header_bytes;
    if (*kind == HEADER_CANONICAL) {
        uint64_t rate = get_varint(r);
        if (r->error) return r->error;
        if (rate > 0xFFFFFFFFu || size < CANONICAL_BYTES + data_bytes) return NW_ERR_CORRUPT;
        canonical_header(out, (uint32_t)ch, (uint32_t)rate, frames);
        header_bytes = CANONICAL_BYTES;
    } else if (*kind == HEADER_VERBATIM) {
        uint64_t n = get_varint(r);
        const uint8_t *h = get_bytes(r, n);
        if (r->error) return r->error;
        if (n > size - data_bytes) return NW_ERR_CORRUPT;
        memcpy(out, h, (size_t)n);
        header_bytes = (size_t)n;
    } else {
        return NW_ERR_CORRUPT;
    }
    uint64_t suffix = get_varint(r);
    const uint8_t *s = get_bytes(r, suffix);
    if (r->error) return r->error;
    if (header_bytes + data_bytes + suffix != size) return NW_ERR_CORRUPT;
    memcpy(out + header_bytes + data_bytes, s, (size_t)suffix);

    int16_t *samples = malloc(data_bytes ? data_bytes : 1);
    if (!samples) return NW_ERR_NOMEM;
    int status;
    if (version == FILE_VERSION_BLOCKS) status = decode_blocks(r, frames, (uint32_t)ch, samples);
    else if (frames > UINT32_MAX) status = NW_ERR_CORRUPT;
    else status = nw_file_decode_samples(r->p + r->pos, r->len - r->pos, samples, (uint32_t)frames, (uint32_t)ch, version);
    for (size_t i = 0; status == NW_OK && i < data_bytes / 2; i++)
        nw_put_u16(out + header_bytes + 2 * i, (uint16_t)samples[i]);
    free(samples);
    return status;
}

int64_t nw_file_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap) {
    if (!in || (!out && out_cap)) return NW_ERR_ARGUMENT;
    reader r = {in, in_len, 0, 0};
    int version, kind;
    uint64_t size;
    uint32_t crc;
    int status = read_prefix(&r, &version, &kind, &size, &crc);
    if (status != NW_OK) return status;
    if (size > out_cap) return NW_ERR_OUTPUT_FULL;
    if (kind == KIND_STORED) {
        const uint8_t *p = get_bytes(&r, size);
        if (r.error) return r.error;
        if (r.pos != r.len) return NW_ERR_CORRUPT;
        if (size) memcpy(out, p, (size_t)size);
    } else {
        status = decode_wav(&r, version, size, out);
        if (status != NW_OK) return status;
    }
    if (nw_crc32(0, out, (size_t)size) != crc) return NW_ERR_CHECKSUM;
    return (int64_t)size;
}
