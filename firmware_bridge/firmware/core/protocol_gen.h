/* protocol_gen.h: GENERATED from firmware_bridge/spec.py by
 *     python -m firmware_bridge.spec --write
 * Do not edit by hand; a test checks this file against the generator. */
#ifndef VX_PROTOCOL_GEN_H
#define VX_PROTOCOL_GEN_H

#include <stdint.h>
#include <string.h>

/* The pack/unpack helpers copy floats bit for bit: IEEE-754 binary32 is assumed. */
typedef char vx_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];

#define VX_SCHEMA_HASH 0x4497F127u

/* ---- constants (unit: meaning) */
#define VX_PROTOCOL_VERSION 1u /* -: wire format version carried in every header */
#define VX_BAUD_RATE 115200u /* baud: UART speed of the real board (a pseudo-terminal ignores it) */
#define VX_HEADER_SIZE 11u /* bytes: frame header before the payload */
#define VX_CRC_SIZE 4u /* bytes: CRC-32 trailer after the payload */
#define VX_MAX_PAYLOAD 96u /* bytes: largest payload of any message */
#define VX_MAX_FRAME 111u /* bytes: largest decoded frame (header + payload + CRC) */
#define VX_MAX_ENCODED_FRAME 112u /* bytes: largest COBS-encoded frame without its 0x00 delimiter; longer runs are dropped as oversize */
#define VX_BUILD_ID_SIZE 24u /* bytes: firmware build id field, NUL padded */
#define VX_SETPOINT_PERIOD_MS 50u /* ms: host setpoint stream period (20 Hz); setpoints are never retransmitted */
#define VX_WATCHDOG_TIMEOUT_MS 250u /* ms: armed with no valid setpoint for this long -> failsafe latched */
#define VX_STOP_RAMP_MS 80u /* ms: firmware ramps from full wheel speed to zero in this time (limit: 100 ms) */
#define VX_TTL_DEFAULT_MS 200u /* ms: default time-to-live of a setpoint */
#define VX_TTL_MAX_MS 1000u /* ms: longest time-to-live the firmware accepts */
#define VX_CLOCK_DRIFT_MAX_PPM 5000u /* ppm: largest MCU-vs-host clock drift the offset estimator allows for (0.5 %: ceramic resonators) */
#define VX_CLOCK_STEP_MAX_MS 50u /* ms: one setpoint may lower the clock-offset estimate by at most this; one further ahead is rejected AHEAD */
#define VX_SEQ_AHEAD_MAX 1000u /* frames: a setpoint more than this many sequence numbers past the last accepted one is rejected AHEAD */
#define VX_CONTROL_ID_WINDOW 16u /* ids: control ids the firmware remembers to re-ack duplicates */
#define VX_CONTROL_ACK_TIMEOUT_MS 100u /* ms: host waits this long for an ack before retrying a control */
#define VX_CONTROL_ATTEMPTS 5u /* attempts: sends of one control (same id) before it is reported failed */
#define VX_TELEMETRY_PERIOD_MS 50u /* ms: default telemetry period (20 Hz) */
#define VX_TELEMETRY_PERIOD_MIN_MS 20u /* ms: fastest configurable telemetry period (50 Hz: 45 % of a 115200-baud UART) */
#define VX_TELEMETRY_PERIOD_MAX_MS 1000u /* ms: slowest configurable telemetry period (1 Hz) */
#define VX_HANDSHAKE_RETRY_MS 200u /* ms: host resends HELLO this often until HELLO_ACK arrives */
#define VX_HANDSHAKE_TIMEOUT_MS 2000u /* ms: host gives up on one connection attempt after this */
#define VX_LINK_SILENCE_TIMEOUT_MS 1000u /* ms: host drops and reopens a port that sent no valid frame this long */
#define VX_RECONNECT_BACKOFF_MIN_MS 500u /* ms: first wait after a failed connection attempt */
#define VX_RECONNECT_BACKOFF_MAX_MS 5000u /* ms: longest wait between connection attempts */
#define VX_PORT_POLL_MS 50u /* ms: host checks this often whether an absent port path has come back */
#define VX_MAX_LINEAR_M_S 0.5f /* m/s: hard clamp on forward/backward speed (host and firmware) */
#define VX_MAX_ANGULAR_RAD_S 3.0f /* rad/s: hard clamp on turn rate (host and firmware) */
#define VX_MAX_WHEEL_M_S 0.6f /* m/s: wheel surface speed at full motor duty */
#define VX_ACCEL_LIMIT_M_S2 1.5f /* m/s^2: wheel acceleration limit while driving */
#define VX_WHEEL_BASE_M 0.16f /* m: distance between the wheel contact points */
#define VX_ENCODER_TICKS_PER_M 7000u /* ticks/m: quadrature counts per metre of wheel travel */

/* ---- enums */
#define VX_MSG_TYPE_HELLO 1u
#define VX_MSG_TYPE_SETPOINT 2u
#define VX_MSG_TYPE_CONTROL 3u
#define VX_MSG_TYPE_HELLO_ACK 129u
#define VX_MSG_TYPE_ACK 130u
#define VX_MSG_TYPE_SETPOINT_ECHO 131u
#define VX_MSG_TYPE_TELEMETRY 132u

#define VX_HEADER_FLAG_ECHO_REQUEST 1u

#define VX_OP_ARM 1u
#define VX_OP_DISARM 2u
#define VX_OP_ESTOP 3u
#define VX_OP_CLEAR_FAILSAFE 4u
#define VX_OP_GRIPPER_OPEN 5u
#define VX_OP_GRIPPER_CLOSE 6u
#define VX_OP_CONFIG 7u

#define VX_RESULT_OK 0u
#define VX_RESULT_REFUSED_NO_SESSION 1u
#define VX_RESULT_REFUSED_SCHEMA 2u
#define VX_RESULT_REFUSED_ESTOP 3u
#define VX_RESULT_BAD_ARGS 4u
#define VX_RESULT_UNKNOWN_OP 5u
#define VX_RESULT_EXPIRED 6u

#define VX_STATE_DISARMED 0u
#define VX_STATE_ARMED 1u
#define VX_STATE_FAILSAFE 2u
#define VX_STATE_ESTOP 3u

#define VX_REASON_NONE 0u
#define VX_REASON_WATCHDOG 1u
#define VX_REASON_ESTOP 2u

#define VX_GRIPPER_UNKNOWN 0u
#define VX_GRIPPER_OPEN 1u
#define VX_GRIPPER_CLOSED 2u
#define VX_GRIPPER_MOVING 3u

#define VX_ECHO_RESULT_APPLIED 0u
#define VX_ECHO_RESULT_IGNORED_DISARMED 1u
#define VX_ECHO_RESULT_STALE 2u
#define VX_ECHO_RESULT_OUT_OF_ORDER 3u
#define VX_ECHO_RESULT_DUPLICATE 4u
#define VX_ECHO_RESULT_INVALID 5u
#define VX_ECHO_RESULT_NO_SESSION 6u
#define VX_ECHO_RESULT_AHEAD 7u

#define VX_CAPABILITY_GRIPPER 1u
#define VX_CAPABILITY_ODOMETRY 2u
#define VX_CAPABILITY_BATTERY 4u
#define VX_CAPABILITY_SIMULATOR 8u

#define VX_LINK_FLAG_SESSION 1u
#define VX_LINK_FLAG_SCHEMA_OK 2u

/* ---- little-endian field access (portable: no struct packing, no alignment needs) */
static inline void vx_put_u8(uint8_t *b, uint8_t v) { b[0] = v; }
static inline void vx_put_u16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); }
static inline void vx_put_u32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
}
static inline void vx_put_i32(uint8_t *b, int32_t v) { vx_put_u32(b, (uint32_t)v); }
static inline void vx_put_f32(uint8_t *b, float v) { uint32_t u; memcpy(&u, &v, 4); vx_put_u32(b, u); }
static inline uint8_t vx_get_u8(const uint8_t *b) { return b[0]; }
static inline uint16_t vx_get_u16(const uint8_t *b) { return (uint16_t)(b[0] | ((uint16_t)b[1] << 8)); }
static inline uint32_t vx_get_u32(const uint8_t *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static inline int32_t vx_get_i32(const uint8_t *b) { return (int32_t)vx_get_u32(b); }
static inline float vx_get_f32(const uint8_t *b) {
    uint32_t u = vx_get_u32(b); float v; memcpy(&v, &u, 4); return v;
}

/* ---- frame header */
#define VX_HEADER_SIZE 11u
typedef struct {
    uint8_t version;
    uint8_t msg_type;
    uint8_t flags;
    uint32_t seq; /* frames */
    uint32_t timestamp_ms; /* ms */
} vx_header_t;
static inline void vx_pack_header(const vx_header_t *m, uint8_t *b) {
    vx_put_u8(b + 0, m->version);
    vx_put_u8(b + 1, m->msg_type);
    vx_put_u8(b + 2, m->flags);
    vx_put_u32(b + 3, m->seq);
    vx_put_u32(b + 7, m->timestamp_ms);
}
static inline void vx_unpack_header(const uint8_t *b, vx_header_t *m) {
    m->version = vx_get_u8(b + 0);
    m->msg_type = vx_get_u8(b + 1);
    m->flags = vx_get_u8(b + 2);
    m->seq = vx_get_u32(b + 3);
    m->timestamp_ms = vx_get_u32(b + 7);
}

/* ---- messages (payload layouts) */
/* hello (type 0x01): host -> MCU on connect; a new nonce (new host session) clears the MCU's duplicate-id memory */
#define VX_HELLO_SIZE 8u
typedef struct {
    uint32_t schema_hash;
    uint32_t session_nonce;
} vx_hello_t;
static inline void vx_pack_hello(const vx_hello_t *m, uint8_t *b) {
    vx_put_u32(b + 0, m->schema_hash);
    vx_put_u32(b + 4, m->session_nonce);
}
static inline void vx_unpack_hello(const uint8_t *b, vx_hello_t *m) {
    m->schema_hash = vx_get_u32(b + 0);
    m->session_nonce = vx_get_u32(b + 4);
}

/* setpoint (type 0x02): host -> MCU at 20 Hz, never retransmitted; dropped when stale, out of order or duplicated */
#define VX_SETPOINT_SIZE 10u
typedef struct {
    float linear_m_s; /* m/s */
    float angular_rad_s; /* rad/s */
    uint16_t ttl_ms; /* ms */
} vx_setpoint_t;
static inline void vx_pack_setpoint(const vx_setpoint_t *m, uint8_t *b) {
    vx_put_f32(b + 0, m->linear_m_s);
    vx_put_f32(b + 4, m->angular_rad_s);
    vx_put_u16(b + 8, m->ttl_ms);
}
static inline void vx_unpack_setpoint(const uint8_t *b, vx_setpoint_t *m) {
    m->linear_m_s = vx_get_f32(b + 0);
    m->angular_rad_s = vx_get_f32(b + 4);
    m->ttl_ms = vx_get_u16(b + 8);
}

/* control (type 0x03): host -> MCU, acknowledged; CONFIG: arg0 max linear m/s, arg1 max angular rad/s, arg2 telemetry ms */
#define VX_CONTROL_SIZE 17u
typedef struct {
    uint32_t control_id;
    uint8_t op;
    uint16_t ttl_ms; /* ms */
    float arg0;
    float arg1;
    uint16_t arg2;
} vx_control_t;
static inline void vx_pack_control(const vx_control_t *m, uint8_t *b) {
    vx_put_u32(b + 0, m->control_id);
    vx_put_u8(b + 4, m->op);
    vx_put_u16(b + 5, m->ttl_ms);
    vx_put_f32(b + 7, m->arg0);
    vx_put_f32(b + 11, m->arg1);
    vx_put_u16(b + 15, m->arg2);
}
static inline void vx_unpack_control(const uint8_t *b, vx_control_t *m) {
    m->control_id = vx_get_u32(b + 0);
    m->op = vx_get_u8(b + 4);
    m->ttl_ms = vx_get_u16(b + 5);
    m->arg0 = vx_get_f32(b + 7);
    m->arg1 = vx_get_f32(b + 11);
    m->arg2 = vx_get_u16(b + 15);
}

/* hello_ack (type 0x81): MCU -> host answer to HELLO: firmware identity, schema hash and capabilities */
#define VX_HELLO_ACK_SIZE 46u
typedef struct {
    uint32_t echo_seq; /* frames */
    uint32_t schema_hash;
    uint32_t capabilities;
    uint8_t schema_ok;
    uint8_t state;
    char build_id[24];
    float max_linear_m_s; /* m/s */
    float max_angular_rad_s; /* rad/s */
} vx_hello_ack_t;
static inline void vx_pack_hello_ack(const vx_hello_ack_t *m, uint8_t *b) {
    vx_put_u32(b + 0, m->echo_seq);
    vx_put_u32(b + 4, m->schema_hash);
    vx_put_u32(b + 8, m->capabilities);
    vx_put_u8(b + 12, m->schema_ok);
    vx_put_u8(b + 13, m->state);
    memcpy(b + 14, m->build_id, 24);
    vx_put_f32(b + 38, m->max_linear_m_s);
    vx_put_f32(b + 42, m->max_angular_rad_s);
}
static inline void vx_unpack_hello_ack(const uint8_t *b, vx_hello_ack_t *m) {
    m->echo_seq = vx_get_u32(b + 0);
    m->schema_hash = vx_get_u32(b + 4);
    m->capabilities = vx_get_u32(b + 8);
    m->schema_ok = vx_get_u8(b + 12);
    m->state = vx_get_u8(b + 13);
    memcpy(m->build_id, b + 14, 24);
    m->max_linear_m_s = vx_get_f32(b + 38);
    m->max_angular_rad_s = vx_get_f32(b + 42);
}

/* ack (type 0x82): MCU -> host: a control's outcome; duplicate=1 when re-acked without executing */
#define VX_ACK_SIZE 8u
typedef struct {
    uint32_t control_id;
    uint8_t op;
    uint8_t result;
    uint8_t duplicate;
    uint8_t state;
} vx_ack_t;
static inline void vx_pack_ack(const vx_ack_t *m, uint8_t *b) {
    vx_put_u32(b + 0, m->control_id);
    vx_put_u8(b + 4, m->op);
    vx_put_u8(b + 5, m->result);
    vx_put_u8(b + 6, m->duplicate);
    vx_put_u8(b + 7, m->state);
}
static inline void vx_unpack_ack(const uint8_t *b, vx_ack_t *m) {
    m->control_id = vx_get_u32(b + 0);
    m->op = vx_get_u8(b + 4);
    m->result = vx_get_u8(b + 5);
    m->duplicate = vx_get_u8(b + 6);
    m->state = vx_get_u8(b + 7);
}

/* setpoint_echo (type 0x83): MCU -> host answer to a setpoint with the ECHO_REQUEST flag */
#define VX_SETPOINT_ECHO_SIZE 7u
typedef struct {
    uint32_t echo_seq; /* frames */
    uint8_t result;
    uint16_t age_ms; /* ms */
} vx_setpoint_echo_t;
static inline void vx_pack_setpoint_echo(const vx_setpoint_echo_t *m, uint8_t *b) {
    vx_put_u32(b + 0, m->echo_seq);
    vx_put_u8(b + 4, m->result);
    vx_put_u16(b + 5, m->age_ms);
}
static inline void vx_unpack_setpoint_echo(const uint8_t *b, vx_setpoint_echo_t *m) {
    m->echo_seq = vx_get_u32(b + 0);
    m->result = vx_get_u8(b + 4);
    m->age_ms = vx_get_u16(b + 5);
}

/* telemetry (type 0x84): MCU -> host every telemetry period: odometry pose, wheels, battery, state, link counters */
#define VX_TELEMETRY_SIZE 86u
typedef struct {
    float x_m; /* m */
    float y_m; /* m */
    float theta_rad; /* rad */
    float wheel_left_m_s; /* m/s */
    float wheel_right_m_s; /* m/s */
    float motor_left_m_s; /* m/s */
    float motor_right_m_s; /* m/s */
    uint16_t battery_mv; /* mV */
    uint8_t state;
    uint8_t reason;
    uint8_t gripper;
    uint8_t link_flags;
    uint32_t last_setpoint_seq; /* frames */
    uint32_t controls_executed; /* controls */
    uint32_t frames_ok; /* count */
    uint32_t crc_errors; /* count */
    uint32_t malformed; /* count */
    uint32_t oversize; /* count */
    uint32_t stale_dropped; /* count */
    uint32_t out_of_order; /* count */
    uint32_t duplicates; /* count */
    uint32_t seq_gaps; /* count */
    uint32_t watchdog_trips; /* count */
    uint32_t setpoints_applied; /* count */
    uint32_t rejected; /* count */
} vx_telemetry_t;
static inline void vx_pack_telemetry(const vx_telemetry_t *m, uint8_t *b) {
    vx_put_f32(b + 0, m->x_m);
    vx_put_f32(b + 4, m->y_m);
    vx_put_f32(b + 8, m->theta_rad);
    vx_put_f32(b + 12, m->wheel_left_m_s);
    vx_put_f32(b + 16, m->wheel_right_m_s);
    vx_put_f32(b + 20, m->motor_left_m_s);
    vx_put_f32(b + 24, m->motor_right_m_s);
    vx_put_u16(b + 28, m->battery_mv);
    vx_put_u8(b + 30, m->state);
    vx_put_u8(b + 31, m->reason);
    vx_put_u8(b + 32, m->gripper);
    vx_put_u8(b + 33, m->link_flags);
    vx_put_u32(b + 34, m->last_setpoint_seq);
    vx_put_u32(b + 38, m->controls_executed);
    vx_put_u32(b + 42, m->frames_ok);
    vx_put_u32(b + 46, m->crc_errors);
    vx_put_u32(b + 50, m->malformed);
    vx_put_u32(b + 54, m->oversize);
    vx_put_u32(b + 58, m->stale_dropped);
    vx_put_u32(b + 62, m->out_of_order);
    vx_put_u32(b + 66, m->duplicates);
    vx_put_u32(b + 70, m->seq_gaps);
    vx_put_u32(b + 74, m->watchdog_trips);
    vx_put_u32(b + 78, m->setpoints_applied);
    vx_put_u32(b + 82, m->rejected);
}
static inline void vx_unpack_telemetry(const uint8_t *b, vx_telemetry_t *m) {
    m->x_m = vx_get_f32(b + 0);
    m->y_m = vx_get_f32(b + 4);
    m->theta_rad = vx_get_f32(b + 8);
    m->wheel_left_m_s = vx_get_f32(b + 12);
    m->wheel_right_m_s = vx_get_f32(b + 16);
    m->motor_left_m_s = vx_get_f32(b + 20);
    m->motor_right_m_s = vx_get_f32(b + 24);
    m->battery_mv = vx_get_u16(b + 28);
    m->state = vx_get_u8(b + 30);
    m->reason = vx_get_u8(b + 31);
    m->gripper = vx_get_u8(b + 32);
    m->link_flags = vx_get_u8(b + 33);
    m->last_setpoint_seq = vx_get_u32(b + 34);
    m->controls_executed = vx_get_u32(b + 38);
    m->frames_ok = vx_get_u32(b + 42);
    m->crc_errors = vx_get_u32(b + 46);
    m->malformed = vx_get_u32(b + 50);
    m->oversize = vx_get_u32(b + 54);
    m->stale_dropped = vx_get_u32(b + 58);
    m->out_of_order = vx_get_u32(b + 62);
    m->duplicates = vx_get_u32(b + 66);
    m->seq_gaps = vx_get_u32(b + 70);
    m->watchdog_trips = vx_get_u32(b + 74);
    m->setpoints_applied = vx_get_u32(b + 78);
    m->rejected = vx_get_u32(b + 82);
}

/* Payload size of a message type, or -1 for an unknown type. */
static inline int vx_payload_size(uint8_t msg_type) {
    switch (msg_type) {
    case 1u: return (int)VX_HELLO_SIZE;
    case 2u: return (int)VX_SETPOINT_SIZE;
    case 3u: return (int)VX_CONTROL_SIZE;
    case 129u: return (int)VX_HELLO_ACK_SIZE;
    case 130u: return (int)VX_ACK_SIZE;
    case 131u: return (int)VX_SETPOINT_ECHO_SIZE;
    case 132u: return (int)VX_TELEMETRY_SIZE;
    default: return -1;
    }
}

#endif /* VX_PROTOCOL_GEN_H */
