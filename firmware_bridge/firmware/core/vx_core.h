/* vx_core.h: the portable firmware core (C99, no malloc, no OS calls): protocol handling,
 * setpoint staleness and ordering, control de-duplication, watchdog, arming state
 * machine, ramps and clamps, odometry, telemetry.
 *
 * Use: vx_core_init() once, vx_core_rx() with every received byte chunk, and
 * vx_core_step() at 200 Hz or faster (the ramps and the watchdog run there).
 *
 * Safety rules enforced here (ARCHITECTURE.md "Safety model"):
 *  - armed and no valid setpoint for VX_WATCHDOG_TIMEOUT_MS -> ramp to zero
 *    (VX_STOP_RAMP_MS from full speed) and latch FAILSAFE(WATCHDOG);
 *  - a setpoint stops driving the motors when its TTL expires (ramp to zero);
 *  - ESTOP latches and zeroes the motors at once; only CLEAR_FAILSAFE leaves it;
 *  - ARM only after a handshake whose schema hash matched; a handshake disarms;
 *    nothing ever re-arms by itself;
 *  - speed and turn clamped (hard limits, lowered by CONFIG), wheel speeds scaled
 *    together so the path's curvature is kept.
 *
 * Host timestamps -> staleness: the MCU keeps an estimate of the clock offset
 * (mcu_ms - host_ms) as the lower envelope of the samples (rx_time - host_ts) of
 * HELLO and SETPOINT frames: a smaller sample lowers it at once, by at most
 * VX_CLOCK_STEP_MAX_MS per frame (a setpoint further ahead is rejected AHEAD, so
 * one corrupted timestamp cannot make every later frame look stale); it may rise
 * only as fast as clock drift allows (VX_CLOCK_DRIFT_MAX_PPM). A setpoint more
 * than VX_SEQ_AHEAD_MAX sequence numbers past the last accepted one is rejected
 * AHEAD too (else every later one would be "out of order"). The age of a
 * frame is rx_time - host_ts - offset, i.e. how much later it arrived than the
 * fastest recent frame; the age is never over-estimated, and under-estimated by
 * at most the link's minimum one-way latency (the frame's serialisation time on
 * a UART: ~2 ms at 115200 baud) plus drift. A handshake re-initialises it. */
#ifndef VX_CORE_H
#define VX_CORE_H

#include <stdint.h>

#include "protocol_gen.h"
#include "vx_codec.h"
#include "vx_hal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *build_id;  /* up to VX_BUILD_ID_SIZE chars */
    uint32_t schema_hash;  /* normally VX_SCHEMA_HASH; the simulator may override it for tests */
    uint32_t capabilities; /* VX_CAPABILITY_* bits */
} vx_identity_t;

typedef struct {
    uint32_t frames_ok, crc_errors, malformed, oversize, stale_dropped, out_of_order, duplicates, seq_gaps,
        watchdog_trips, setpoints_applied, rejected, controls_executed;
} vx_counters_t;

typedef struct {
    uint32_t id;
    uint8_t op;
    uint8_t result;
} vx_ctl_record_t;

/* All state lives here (allocate it statically); fields are private to vx_core.c. */
typedef struct {
    const vx_hal_t *hal;
    vx_identity_t identity;
    vx_deframer_t deframer;
    uint8_t rx_frame[VX_MAX_FRAME];
    uint8_t tx_wire[VX_MAX_ENCODED_FRAME + 1];
    uint32_t tx_seq;
    /* session (handshake) */
    uint8_t session, schema_ok, have_nonce;
    uint32_t session_nonce, hello_seq;
    uint8_t have_host_seq;
    uint32_t last_host_seq;
    /* clock offset estimate */
    uint8_t offset_valid;
    uint32_t offset_ms, offset_at_ms, drift_credit_us;
    /* setpoints */
    uint8_t sp_have;
    uint32_t sp_last_seq, sp_last_ts;
    uint8_t target_valid;
    float target_left, target_right; /* wheel m/s */
    uint32_t target_expiry_ms, last_valid_sp_ms, last_sp_seq_applied;
    /* state machine */
    uint8_t state, reason;
    float max_linear, max_angular;
    uint16_t telemetry_period_ms;
    /* motors and odometry */
    float cmd_left, cmd_right; /* wheel m/s after the ramp */
    uint32_t last_step_us;
    uint8_t stepped;
    int32_t enc_left, enc_right;
    int32_t win_left, win_right;
    uint32_t win_start_us;
    float x, y, theta, speed_left, speed_right;
    /* controls */
    vx_ctl_record_t ring[VX_CONTROL_ID_WINDOW];
    uint8_t ring_head, ring_count, ctl_any;
    uint32_t ctl_highest;
    uint32_t last_telemetry_ms;
    vx_counters_t counters;
} vx_core_t;

void vx_core_init(vx_core_t *core, const vx_hal_t *hal, const vx_identity_t *identity);
/* Feed received bytes (any chunking); complete frames are handled immediately. */
void vx_core_rx(vx_core_t *core, const uint8_t *data, uint16_t len);
/* Run the watchdog, ramps, odometry and telemetry; call at >= 200 Hz. */
void vx_core_step(vx_core_t *core);

/* Read-only views for the simulator and tests. */
uint8_t vx_core_state(const vx_core_t *core);
uint8_t vx_core_reason(const vx_core_t *core);
void vx_core_motor_cmd(const vx_core_t *core, float *left_m_s, float *right_m_s);
const vx_counters_t *vx_core_counters(const vx_core_t *core);

/* Exact-arc differential-drive pose update for wheel travels dl, dr (m) and wheel base b (m). */
void vx_integrate_arc(float *x, float *y, float *theta, float dl, float dr, float b);

#ifdef __cplusplus
}
#endif

#endif /* VX_CORE_H */
