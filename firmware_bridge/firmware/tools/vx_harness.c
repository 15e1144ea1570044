/* vx_harness.c: line-oriented test driver for the firmware core (built by the tests, never flashed).
 *
 * Reads one command per line on stdin, answers exactly one line on stdout:
 *   crc HEX                          -> CRC-32 as 8 hex digits
 *   cobs_enc HEX | cobs_dec HEX      -> HEX, or "ERR" ("-" stands for no bytes)
 *   frame_enc TYPE FLAGS SEQ TS HEX  -> wire bytes (COBS + delimiter) as HEX
 *   frame_dec HEX                    -> "OK type flags seq ts <fields...>" or "ERR <status>"
 *   msg_rt TYPE HEX                  -> the payload unpacked into the C struct and packed again
 *   core_init [SCHEMA_HEX] [CLOCK_START_MS]   -> "OK": a fresh core on a virtual clock
 *   core_rx HEX                      -> "OK": bytes into the core
 *   core_advance MS [STEP_US]        -> "OK": run vx_core_step on the virtual clock
 *   core_status                      -> "state=.. reason=.. cmd_l=.. cmd_r=.. duty_l=.. ... counters"
 *   core_tx                          -> bytes the core sent since the last core_tx (HEX or "-")
 *   core_events                      -> events since the last call: "kind,id,op,result,age,ttl;..." or "-"
 *   core_trace MS STEP_US            -> like core_advance, answers "t_ms:cmd_l:cmd_r:state;..." per step
 * The virtual robot has ideal motors (wheel speed = duty * VX_MAX_WHEEL_M_S) and exact encoders. */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vx_codec.h"
#include "../core/vx_core.h"
#include "vx_print_gen.h"

#define LINE_CAP 65536
#define TX_CAP 262144
#define EVENTS_CAP 4096

static char line[LINE_CAP];
static uint8_t bytes[LINE_CAP / 2];
static uint8_t tx[TX_CAP];
static size_t tx_len;
static vx_event_t events[EVENTS_CAP];
static size_t n_events;

static vx_core_t core;
static vx_hal_t hal;
static vx_identity_t identity;
static uint64_t virt_us;
static uint32_t clock_start_ms;
static float duty_l, duty_r;
static double dist_l, dist_r;
static uint8_t gripper = VX_GRIPPER_UNKNOWN;

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses HEX ("-" = empty) into bytes; returns the length or -1. */
static long parse_hex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    if (s == NULL) return -1;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] && s[1]) {
        int hi = hexval(s[0]), lo = hexval(s[1]);
        if (hi < 0 || lo < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)(hi * 16 + lo);
        s += 2;
    }
    return s[0] ? -1 : (long)n;
}

static void print_hex(const uint8_t *b, size_t n) {
    size_t i;
    if (n == 0) {
        fputc('-', stdout);
        return;
    }
    for (i = 0; i < n; ++i) printf("%02x", b[i]);
}

/* ---- virtual HAL */
static uint32_t v_millis(void *ctx) { (void)ctx; return clock_start_ms + (uint32_t)(virt_us / 1000u); }
static uint32_t v_micros(void *ctx) { (void)ctx; return (uint32_t)(4294967296.0 - 2e6) + (uint32_t)virt_us; }
static void v_motors(void *ctx, float l, float r) { (void)ctx; duty_l = l; duty_r = r; }
static void v_encoders(void *ctx, int32_t *l, int32_t *r) {
    (void)ctx;
    *l = (int32_t)(dist_l * VX_ENCODER_TICKS_PER_M);
    *r = (int32_t)(dist_r * VX_ENCODER_TICKS_PER_M);
}
static void v_gripper_set(void *ctx, uint8_t open) { (void)ctx; gripper = open ? VX_GRIPPER_OPEN : VX_GRIPPER_CLOSED; }
static uint8_t v_gripper_state(void *ctx) { (void)ctx; return gripper; }
static uint16_t v_battery(void *ctx) { (void)ctx; return 12000u; }
static void v_serial_write(void *ctx, const uint8_t *d, uint16_t n) {
    (void)ctx;
    if (tx_len + n <= TX_CAP) {
        memcpy(tx + tx_len, d, n);
        tx_len += n;
    }
}
static void v_event(void *ctx, const vx_event_t *ev) {
    (void)ctx;
    if (n_events < EVENTS_CAP) events[n_events++] = *ev;
}

static void advance(unsigned long ms, unsigned long step_us, int trace) {
    uint64_t end = virt_us + (uint64_t)ms * 1000u;
    int first = 1;
    if (step_us == 0) step_us = 1000;
    while (virt_us < end) {
        float cl, cr;
        virt_us += step_us;
        dist_l += (double)duty_l * VX_MAX_WHEEL_M_S * (double)step_us * 1e-6;
        dist_r += (double)duty_r * VX_MAX_WHEEL_M_S * (double)step_us * 1e-6;
        vx_core_step(&core);
        if (trace) {
            vx_core_motor_cmd(&core, &cl, &cr);
            printf("%s%.3f:%.6f:%.6f:%u", first ? "" : ";", (double)virt_us / 1000.0, (double)cl, (double)cr,
                   vx_core_state(&core));
            first = 0;
        }
    }
}

static void cmd_core_status(void) {
    float cl, cr;
    const vx_counters_t *k = vx_core_counters(&core);
    vx_core_motor_cmd(&core, &cl, &cr);
    printf("state=%u reason=%u cmd_l=%.6f cmd_r=%.6f duty_l=%.6f duty_r=%.6f x=%.6f y=%.6f theta=%.6f "
           "gripper=%u max_linear=%.6f max_angular=%.6f telemetry_ms=%u "
           "frames_ok=%lu crc_errors=%lu malformed=%lu oversize=%lu stale_dropped=%lu out_of_order=%lu "
           "duplicates=%lu seq_gaps=%lu watchdog_trips=%lu setpoints_applied=%lu rejected=%lu "
           "controls_executed=%lu now_ms=%lu",
           vx_core_state(&core), vx_core_reason(&core), (double)cl, (double)cr, (double)duty_l, (double)duty_r,
           (double)core.x, (double)core.y, (double)core.theta, gripper, (double)core.max_linear,
           (double)core.max_angular, core.telemetry_period_ms, (unsigned long)k->frames_ok,
           (unsigned long)k->crc_errors, (unsigned long)k->malformed, (unsigned long)k->oversize,
           (unsigned long)k->stale_dropped, (unsigned long)k->out_of_order, (unsigned long)k->duplicates,
           (unsigned long)k->seq_gaps, (unsigned long)k->watchdog_trips, (unsigned long)k->setpoints_applied,
           (unsigned long)k->rejected, (unsigned long)k->controls_executed, (unsigned long)v_millis(NULL));
}

static void handle(char *cmd) {
    char *tok[8] = {0};
    int nt = 0;
    char *save = NULL, *p = strtok_r(cmd, " \t\r\n", &save);
    while (p != NULL && nt < 8) {
        tok[nt++] = p;
        p = strtok_r(NULL, " \t\r\n", &save);
    }
    if (nt == 0) {
        puts("ERR empty");
        return;
    }
    if (strcmp(tok[0], "crc") == 0) {
        long n = parse_hex(tok[1], bytes, sizeof bytes);
        if (n < 0) { puts("ERR hex"); return; }
        printf("%08lx\n", (unsigned long)vx_crc32(bytes, (size_t)n));
    } else if (strcmp(tok[0], "cobs_enc") == 0 || strcmp(tok[0], "cobs_dec") == 0) {
        static uint8_t out[LINE_CAP];
        size_t out_len = 0;
        long n = parse_hex(tok[1], bytes, sizeof bytes);
        int rc;
        if (n < 0) { puts("ERR hex"); return; }
        rc = tok[0][5] == 'e' ? vx_cobs_encode(bytes, (size_t)n, out, sizeof out, &out_len)
                              : vx_cobs_decode(bytes, (size_t)n, out, sizeof out, &out_len);
        if (rc != 0) { puts("ERR"); return; }
        print_hex(out, out_len);
        putchar('\n');
    } else if (strcmp(tok[0], "frame_enc") == 0 && nt == 6) {
        static uint8_t out[VX_MAX_ENCODED_FRAME + 1];
        vx_header_t h;
        long n = parse_hex(tok[5], bytes, sizeof bytes);
        size_t w;
        if (n < 0) { puts("ERR hex"); return; }
        h.version = VX_PROTOCOL_VERSION;
        h.msg_type = (uint8_t)strtoul(tok[1], NULL, 0);
        h.flags = (uint8_t)strtoul(tok[2], NULL, 0);
        h.seq = (uint32_t)strtoul(tok[3], NULL, 0);
        h.timestamp_ms = (uint32_t)strtoul(tok[4], NULL, 0);
        w = vx_frame_encode(&h, bytes, (size_t)n, out, sizeof out);
        if (w == 0) { puts("ERR size"); return; }
        print_hex(out, w);
        putchar('\n');
    } else if (strcmp(tok[0], "frame_dec") == 0) {
        static uint8_t buf[VX_MAX_FRAME];
        vx_frame_t f;
        vx_frame_status_t st;
        long n = parse_hex(tok[1], bytes, sizeof bytes);
        if (n < 0) { puts("ERR hex"); return; }
        st = vx_frame_decode(bytes, (size_t)n, buf, sizeof buf, &f);
        if (st != VX_FRAME_OK) { printf("ERR %d\n", (int)st); return; }
        printf("OK %u %u %lu %lu ", f.header.msg_type, f.header.flags, (unsigned long)f.header.seq,
               (unsigned long)f.header.timestamp_ms);
        vx_print_payload(f.header.msg_type, f.payload, stdout);
        putchar('\n');
    } else if (strcmp(tok[0], "msg_rt") == 0 && nt == 3) {
        static uint8_t out[VX_MAX_PAYLOAD];
        uint8_t type = (uint8_t)strtoul(tok[1], NULL, 0);
        long n = parse_hex(tok[2], bytes, sizeof bytes);
        int size = vx_payload_size(type);
        if (n < 0 || size < 0 || n != size) { puts("ERR size"); return; }
        memset(out, 0xAA, sizeof out);
        switch (type) {
#define RT(T, name) case T: { vx_##name##_t m; vx_unpack_##name(bytes, &m); vx_pack_##name(&m, out); break; }
        RT(VX_MSG_TYPE_HELLO, hello)
        RT(VX_MSG_TYPE_SETPOINT, setpoint)
        RT(VX_MSG_TYPE_CONTROL, control)
        RT(VX_MSG_TYPE_HELLO_ACK, hello_ack)
        RT(VX_MSG_TYPE_ACK, ack)
        RT(VX_MSG_TYPE_SETPOINT_ECHO, setpoint_echo)
        RT(VX_MSG_TYPE_TELEMETRY, telemetry)
#undef RT
        default: puts("ERR type"); return;
        }
        print_hex(out, (size_t)size);
        putchar('\n');
    } else if (strcmp(tok[0], "core_init") == 0) {
        identity.build_id = "harness";
        identity.schema_hash = nt > 1 ? (uint32_t)strtoul(tok[1], NULL, 16) : VX_SCHEMA_HASH;
        identity.capabilities = VX_CAPABILITY_GRIPPER | VX_CAPABILITY_ODOMETRY;
        clock_start_ms = nt > 2 ? (uint32_t)strtoul(tok[2], NULL, 0) : 1000u;
        virt_us = 0;
        duty_l = duty_r = 0.0f;
        dist_l = dist_r = 0.0;
        gripper = VX_GRIPPER_UNKNOWN;
        tx_len = 0;
        n_events = 0;
        hal.ctx = NULL;
        hal.millis = v_millis;
        hal.micros = v_micros;
        hal.motors_set = v_motors;
        hal.encoders_read = v_encoders;
        hal.gripper_set = v_gripper_set;
        hal.gripper_state = v_gripper_state;
        hal.battery_mv = v_battery;
        hal.serial_write = v_serial_write;
        hal.on_event = v_event;
        vx_core_init(&core, &hal, &identity);
        puts("OK");
    } else if (strcmp(tok[0], "core_rx") == 0) {
        long n = parse_hex(tok[1], bytes, sizeof bytes), off = 0;
        if (n < 0) { puts("ERR hex"); return; }
        while (off < n) { /* vx_core_rx takes uint16 lengths */
            long chunk = n - off > 4096 ? 4096 : n - off;
            vx_core_rx(&core, bytes + off, (uint16_t)chunk);
            off += chunk;
        }
        puts("OK");
    } else if (strcmp(tok[0], "core_advance") == 0 && nt >= 2) {
        advance(strtoul(tok[1], NULL, 0), nt > 2 ? strtoul(tok[2], NULL, 0) : 1000u, 0);
        puts("OK");
    } else if (strcmp(tok[0], "core_trace") == 0 && nt == 3) {
        advance(strtoul(tok[1], NULL, 0), strtoul(tok[2], NULL, 0), 1);
        putchar('\n');
    } else if (strcmp(tok[0], "core_status") == 0) {
        cmd_core_status();
        putchar('\n');
    } else if (strcmp(tok[0], "core_tx") == 0) {
        print_hex(tx, tx_len);
        tx_len = 0;
        putchar('\n');
    } else if (strcmp(tok[0], "core_events") == 0) {
        size_t i;
        if (n_events == 0) fputc('-', stdout);
        for (i = 0; i < n_events; ++i) {
            printf("%s%u,%lu,%u,%u,%lu,%u", i ? ";" : "", events[i].kind, (unsigned long)events[i].id, events[i].op,
                   events[i].result, (unsigned long)events[i].age_ms, events[i].ttl_ms);
        }
        n_events = 0;
        putchar('\n');
    } else {
        printf("ERR unknown command %s\n", tok[0]);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    while (fgets(line, sizeof line, stdin) != NULL) {
        handle(line);
        fflush(stdout);
    }
    return 0;
}
