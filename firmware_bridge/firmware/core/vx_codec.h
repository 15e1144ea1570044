/* vx_codec.h: COBS framing and CRC-32 of the voxedge serial protocol (portable C99, no malloc).
 *
 * Frame on the wire: COBS(header | payload | CRC-32 LE) 0x00. The decoder checks,
 * in the same order as the Python host (firmware_bridge/codec.py): COBS, minimum
 * size, CRC, protocol version, known type, exact payload size for that type. */
#ifndef VX_CODEC_H
#define VX_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "protocol_gen.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-32/ISO-HDLC (zlib): reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF. */
uint32_t vx_crc32(const uint8_t *data, size_t len);

/* COBS-encode len bytes into out (capacity cap). Returns 0 and sets *out_len, or -1 if out is too small. */
int vx_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);
/* Decode one COBS block (no delimiter). Returns 0 and sets *out_len, or -1 on bad input / small out. */
int vx_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

typedef enum {
    VX_FRAME_OK = 0,
    VX_FRAME_ERR_COBS,
    VX_FRAME_ERR_SHORT,
    VX_FRAME_ERR_CRC,
    VX_FRAME_ERR_VERSION,
    VX_FRAME_ERR_TYPE,
    VX_FRAME_ERR_SIZE,
    VX_FRAME_ERR_OVERSIZE
} vx_frame_status_t;

/* A decoded frame; payload points into the caller's decode buffer. */
typedef struct {
    vx_header_t header;
    const uint8_t *payload;
    uint16_t payload_len;
} vx_frame_t;

/* Decode one COBS block into buf (capacity VX_MAX_FRAME is enough) and fill *frame. */
vx_frame_status_t vx_frame_decode(const uint8_t *block, size_t len, uint8_t *buf, size_t cap, vx_frame_t *frame);

/* Encode header + payload as wire bytes (COBS + CRC + trailing 0x00) into out.
 * Returns the number of bytes written, or 0 if the payload or out is too small. */
size_t vx_frame_encode(const vx_header_t *header, const uint8_t *payload, size_t payload_len, uint8_t *out,
                       size_t cap);

/* Byte-at-a-time deframer with a bounded buffer. */
typedef struct {
    uint8_t buf[VX_MAX_ENCODED_FRAME];
    uint16_t len;
    uint8_t overflow;
} vx_deframer_t;

typedef enum { VX_DF_NONE = 0, VX_DF_BLOCK, VX_DF_OVERSIZE } vx_deframer_result_t;

void vx_deframer_reset(vx_deframer_t *d);
/* Push one byte. VX_DF_BLOCK: block and block_len hold a complete COBS block (valid until the next push).
 * VX_DF_OVERSIZE: a run longer than VX_MAX_ENCODED_FRAME ended and was discarded. */
vx_deframer_result_t vx_deframer_push(vx_deframer_t *d, uint8_t byte, const uint8_t **block, uint16_t *block_len);

#ifdef __cplusplus
}
#endif

#endif /* VX_CODEC_H */
