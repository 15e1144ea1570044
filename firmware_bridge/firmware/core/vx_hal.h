/* vx_hal.h: the small hardware interface the portable core runs on.
 *
 * A board (Arduino sketch), the host simulator and the test harness each fill
 * one vx_hal_t. Every callback is called from the single thread that calls
 * vx_core_rx()/vx_core_step(); none may block for long. */
#ifndef VX_HAL_H
#define VX_HAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Diagnostic events (optional hook): the simulator logs them, a board may ignore them. */
typedef enum {
    VX_EV_CONTROL = 1,       /* a control was executed (once): id, op, result */
    VX_EV_CONTROL_DUPLICATE, /* a control id seen before: re-acked, not executed */
    VX_EV_CONTROL_TOO_OLD,   /* a control id older than the duplicate window: dropped, not executed */
    VX_EV_SETPOINT,          /* a setpoint was judged: id=seq, result=VX_ECHO_RESULT_*, age, ttl, a=linear, b=angular */
    VX_EV_HELLO,             /* handshake: id=session nonce, result=schema_ok */
    VX_EV_STATE,             /* state change: state, result=reason */
    VX_EV_FRAME_ERROR        /* result=vx_frame_status_t of a dropped frame */
} vx_event_kind_t;

typedef struct {
    uint8_t kind;
    uint8_t op;
    uint8_t result;
    uint8_t state;
    uint32_t id;
    uint32_t host_ts_ms;
    uint32_t age_ms;
    uint16_t ttl_ms;
    float a;
    float b;
} vx_event_t;

typedef struct {
    void *ctx; /* passed back to every callback */
    uint32_t (*millis)(void *ctx); /* monotonic ms, wraps at 2^32 */
    uint32_t (*micros)(void *ctx); /* monotonic us, wraps at 2^32 */
    void (*motors_set)(void *ctx, float left_duty, float right_duty); /* each in [-1, 1], + = forward */
    void (*encoders_read)(void *ctx, int32_t *left_ticks, int32_t *right_ticks); /* cumulative, + = forward */
    void (*gripper_set)(void *ctx, uint8_t open);
    uint8_t (*gripper_state)(void *ctx); /* VX_GRIPPER_* */
    uint16_t (*battery_mv)(void *ctx);
    void (*serial_write)(void *ctx, const uint8_t *data, uint16_t len); /* may drop bytes, never blocks long */
    void (*on_event)(void *ctx, const vx_event_t *event); /* may be NULL */
} vx_hal_t;

#ifdef __cplusplus
}
#endif

#endif /* VX_HAL_H */
