/* vx_codec.c: COBS, CRC-32 and frame (de)coding; see vx_codec.h. */
#include "vx_codec.h"

/* Nibble table: 64 bytes of constants instead of 1 KiB, fast enough for a 115200-baud link. */
static const uint32_t crc32_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t vx_crc32(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc32_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc32_nibble[crc & 0x0Fu];
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Appends code byte + n data bytes; -1 when out has no room. */
static int cobs_emit(uint8_t code, const uint8_t *data, size_t n, uint8_t *out, size_t cap, size_t *w) {
    if (*w + 1u + n > cap) {
        return -1;
    }
    out[(*w)++] = code;
    if (n > 0) {
        memcpy(out + *w, data, n);
        *w += n;
    }
    return 0;
}

/* Same block boundaries as the Python `cobs` package: a 254-byte run ending the input gets no extra code. */
int vx_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
    size_t idx, start = 0, w = 0;
    int final_zero = 1;
    for (idx = 0; idx < len; ++idx) {
        if (in[idx] == 0) {
            final_zero = 1;
            if (cobs_emit((uint8_t)(idx - start + 1u), in + start, idx - start, out, cap, &w) != 0) {
                return -1;
            }
            start = idx + 1u;
        } else if (idx - start == 0xFDu) {
            final_zero = 0;
            if (cobs_emit(0xFFu, in + start, idx - start + 1u, out, cap, &w) != 0) {
                return -1;
            }
            start = idx + 1u;
        }
    }
    if (idx != start || final_zero) {
        if (cobs_emit((uint8_t)(idx - start + 1u), in + start, idx - start, out, cap, &w) != 0) {
            return -1;
        }
    }
    *out_len = w;
    return 0;
}

int vx_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
    size_t idx = 0, w = 0;
    if (len == 0) {
        *out_len = 0;
        return 0;
    }
    for (;;) {
        uint8_t code = in[idx];
        size_t end, k;
        if (code == 0) {
            return -1;
        }
        ++idx;
        end = idx + (size_t)code - 1u;
        if (end > len) {
            return -1; /* length code runs past the end */
        }
        for (k = idx; k < end; ++k) {
            if (in[k] == 0 || w >= cap) {
                return -1;
            }
            out[w++] = in[k];
        }
        idx = end;
        if (idx < len) {
            if (code < 0xFFu) {
                if (w >= cap) {
                    return -1;
                }
                out[w++] = 0;
            }
        } else {
            break;
        }
    }
    *out_len = w;
    return 0;
}

vx_frame_status_t vx_frame_decode(const uint8_t *block, size_t len, uint8_t *buf, size_t cap, vx_frame_t *frame) {
    size_t n = 0;
    uint32_t crc_rx;
    int expected;
    if (len > VX_MAX_ENCODED_FRAME) {
        return VX_FRAME_ERR_OVERSIZE;
    }
    if (vx_cobs_decode(block, len, buf, cap, &n) != 0) {
        return VX_FRAME_ERR_COBS;
    }
    if (n < VX_HEADER_SIZE + VX_CRC_SIZE) {
        return VX_FRAME_ERR_SHORT;
    }
    crc_rx = vx_get_u32(buf + n - VX_CRC_SIZE);
    if (crc_rx != vx_crc32(buf, n - VX_CRC_SIZE)) {
        return VX_FRAME_ERR_CRC;
    }
    vx_unpack_header(buf, &frame->header);
    if (frame->header.version != VX_PROTOCOL_VERSION) {
        return VX_FRAME_ERR_VERSION;
    }
    expected = vx_payload_size(frame->header.msg_type);
    if (expected < 0) {
        return VX_FRAME_ERR_TYPE;
    }
    if (n - VX_HEADER_SIZE - VX_CRC_SIZE != (size_t)expected) {
        return VX_FRAME_ERR_SIZE;
    }
    frame->payload = buf + VX_HEADER_SIZE;
    frame->payload_len = (uint16_t)expected;
    return VX_FRAME_OK;
}

size_t vx_frame_encode(const vx_header_t *header, const uint8_t *payload, size_t payload_len, uint8_t *out,
                       size_t cap) {
    uint8_t raw[VX_MAX_FRAME];
    size_t n, enc = 0;
    if (payload_len > VX_MAX_PAYLOAD) {
        return 0;
    }
    vx_pack_header(header, raw);
    if (payload_len > 0) {
        memcpy(raw + VX_HEADER_SIZE, payload, payload_len);
    }
    n = VX_HEADER_SIZE + payload_len;
    vx_put_u32(raw + n, vx_crc32(raw, n));
    n += VX_CRC_SIZE;
    if (cap < 1 || vx_cobs_encode(raw, n, out, cap - 1, &enc) != 0) {
        return 0;
    }
    out[enc] = 0;
    return enc + 1;
}

void vx_deframer_reset(vx_deframer_t *d) {
    d->len = 0;
    d->overflow = 0;
}

vx_deframer_result_t vx_deframer_push(vx_deframer_t *d, uint8_t byte, const uint8_t **block, uint16_t *block_len) {
    if (byte == 0) {
        if (d->overflow) {
            vx_deframer_reset(d);
            return VX_DF_OVERSIZE;
        }
        if (d->len == 0) {
            return VX_DF_NONE; /* idle fill between frames */
        }
        *block = d->buf;
        *block_len = d->len;
        d->len = 0;
        return VX_DF_BLOCK;
    }
    if (d->overflow) {
        return VX_DF_NONE;
    }
    if (d->len >= VX_MAX_ENCODED_FRAME) {
        d->overflow = 1;
        d->len = 0;
        return VX_DF_NONE;
    }
    d->buf[d->len++] = byte;
    return VX_DF_NONE;
}
