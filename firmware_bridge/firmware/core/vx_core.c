/* vx_core.c: the portable firmware core; see vx_core.h for the rules it enforces. */
#include "vx_core.h"

#include <math.h>

/* Deceleration that takes full wheel speed to zero in VX_STOP_RAMP_MS. */
#define STOP_DECEL_M_S2 (VX_MAX_WHEEL_M_S * 1000.0f / (float)VX_STOP_RAMP_MS)
/* A longer pause between steps is integrated as this long (keeps ramps bounded). */
#define MAX_STEP_US 50000u
/* Wheel speeds are measured from encoder counts over windows of this length. */
#define SPEED_WINDOW_US 20000u
/* Cap of the drift allowance the offset estimator may bank (us). */
#define DRIFT_CREDIT_MAX_US ((uint32_t)VX_TTL_MAX_MS * 1000u) /* 32-bit: int is 16 bits on AVR */
#define VX_PI_F 3.14159265358979f

static uint32_t now_ms(const vx_core_t *c) { return c->hal->millis(c->hal->ctx); }

static void emit(const vx_core_t *c, const vx_event_t *ev) {
    if (c->hal->on_event != NULL) {
        c->hal->on_event(c->hal->ctx, ev);
    }
}

static void emit_simple(const vx_core_t *c, uint8_t kind, uint8_t result, uint32_t id) {
    vx_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    ev.result = result;
    ev.id = id;
    ev.state = c->state;
    emit(c, &ev);
}

static void send_frame(vx_core_t *c, uint8_t type, uint8_t flags, const uint8_t *payload, size_t len) {
    vx_header_t h;
    size_t n;
    h.version = VX_PROTOCOL_VERSION;
    h.msg_type = type;
    h.flags = flags;
    h.seq = c->tx_seq++;
    h.timestamp_ms = now_ms(c);
    n = vx_frame_encode(&h, payload, len, c->tx_wire, sizeof c->tx_wire);
    if (n > 0) {
        c->hal->serial_write(c->hal->ctx, c->tx_wire, (uint16_t)n);
    }
}

static void set_state(vx_core_t *c, uint8_t state, uint8_t reason) {
    if (c->state == state && c->reason == reason) {
        return;
    }
    c->state = state;
    c->reason = reason;
    emit_simple(c, VX_EV_STATE, reason, 0);
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* ------------------------------------------------------------------ clock offset */

/* One frame may lower the estimate by at most this (ms); see clock_observe. */
#ifndef VX_CORE_CLOCK_STEP_MAX_MS /* overridable only to emulate firmware older than the bound in tests */
#define VX_CORE_CLOCK_STEP_MAX_MS VX_CLOCK_STEP_MAX_MS
#endif
#ifndef VX_CORE_SEQ_AHEAD_MAX
#define VX_CORE_SEQ_AHEAD_MAX VX_SEQ_AHEAD_MAX
#endif

/* Feed one (host_ts, rx time) sample to the lower-envelope estimator; returns the frame's age in ms.
 * A sample more than VX_CLOCK_STEP_MAX_MS below the estimate (a host time implausibly far ahead: a
 * corrupted frame whose CRC still matched, a host clock jump) lowers it by that step only, and *ahead
 * is set so the caller rejects the frame: one bad frame moves the estimate by a bounded amount, and a
 * genuine step (a handshake that itself was delayed) is followed within a few frames. */
static uint32_t clock_observe(vx_core_t *c, uint32_t host_ts, uint32_t now, uint8_t *ahead) {
    uint32_t sample = now - host_ts; /* mcu - host, modulo 2^32 */
    uint32_t elapsed;
    int32_t d;
    *ahead = 0;
    if (!c->offset_valid) {
        c->offset_valid = 1;
        c->offset_ms = sample;
        c->offset_at_ms = now;
        c->drift_credit_us = 0;
        return 0;
    }
    elapsed = now - c->offset_at_ms;
    c->offset_at_ms = now;
    if (elapsed > DRIFT_CREDIT_MAX_US) {
        elapsed = DRIFT_CREDIT_MAX_US; /* keeps the product below 2^32 */
    }
    c->drift_credit_us += elapsed * VX_CLOCK_DRIFT_MAX_PPM / 1000u; /* ms * ppm / 1000 = us */
    if (c->drift_credit_us > DRIFT_CREDIT_MAX_US) {
        c->drift_credit_us = DRIFT_CREDIT_MAX_US;
    }
    d = (int32_t)(sample - c->offset_ms);
    if (d < -(int32_t)VX_CORE_CLOCK_STEP_MAX_MS) {
        c->offset_ms -= (uint32_t)VX_CORE_CLOCK_STEP_MAX_MS;
        c->drift_credit_us = 0;
        *ahead = 1;
        return 0;
    } else if (d <= 0) {
        /* Faster than every recent frame: the envelope drops to it. */
        c->offset_ms = sample;
        c->drift_credit_us = 0;
        return 0;
    } else {
        /* Slower: the envelope may rise only by the drift allowance earned since the last sample. */
        uint32_t allowed_ms = c->drift_credit_us / 1000u;
        uint32_t rise = (uint32_t)d < allowed_ms ? (uint32_t)d : allowed_ms;
        c->offset_ms += rise;
        c->drift_credit_us -= rise * 1000u;
        return (uint32_t)d - rise;
    }
}

/* Age of a frame from the current estimate, without feeding it (controls carry their first send time). */
static uint32_t frame_age(const vx_core_t *c, uint32_t host_ts, uint32_t now) {
    int32_t d;
    if (!c->offset_valid) {
        return 0;
    }
    d = (int32_t)((now - host_ts) - c->offset_ms);
    return d > 0 ? (uint32_t)d : 0u;
}

/* ------------------------------------------------------------------ messages */

static void send_ack(vx_core_t *c, uint32_t id, uint8_t op, uint8_t result, uint8_t duplicate) {
    vx_ack_t a;
    uint8_t buf[VX_ACK_SIZE];
    a.control_id = id;
    a.op = op;
    a.result = result;
    a.duplicate = duplicate;
    a.state = c->state;
    vx_pack_ack(&a, buf);
    send_frame(c, VX_MSG_TYPE_ACK, 0, buf, sizeof buf);
}

static void send_telemetry(vx_core_t *c) {
    vx_telemetry_t t;
    uint8_t buf[VX_TELEMETRY_SIZE];
    const vx_counters_t *k = &c->counters;
    t.x_m = c->x;
    t.y_m = c->y;
    t.theta_rad = c->theta;
    t.wheel_left_m_s = c->speed_left;
    t.wheel_right_m_s = c->speed_right;
    t.motor_left_m_s = c->cmd_left;
    t.motor_right_m_s = c->cmd_right;
    t.battery_mv = c->hal->battery_mv(c->hal->ctx);
    t.state = c->state;
    t.reason = c->reason;
    t.gripper = c->hal->gripper_state(c->hal->ctx);
    t.link_flags = (uint8_t)((c->session ? VX_LINK_FLAG_SESSION : 0u) | (c->schema_ok ? VX_LINK_FLAG_SCHEMA_OK : 0u));
    t.last_setpoint_seq = c->last_sp_seq_applied;
    t.controls_executed = k->controls_executed;
    t.frames_ok = k->frames_ok;
    t.crc_errors = k->crc_errors;
    t.malformed = k->malformed;
    t.oversize = k->oversize;
    t.stale_dropped = k->stale_dropped;
    t.out_of_order = k->out_of_order;
    t.duplicates = k->duplicates;
    t.seq_gaps = k->seq_gaps;
    t.watchdog_trips = k->watchdog_trips;
    t.setpoints_applied = k->setpoints_applied;
    t.rejected = k->rejected;
    vx_pack_telemetry(&t, buf);
    send_frame(c, VX_MSG_TYPE_TELEMETRY, 0, buf, sizeof buf);
}

static void handle_hello(vx_core_t *c, const vx_header_t *h, const uint8_t *payload, uint32_t now) {
    vx_hello_t m;
    vx_hello_ack_t a;
    uint8_t buf[VX_HELLO_ACK_SIZE], ahead;
    size_t n = strlen(c->identity.build_id);
    vx_unpack_hello(payload, &m);
    if (c->have_nonce && m.session_nonce == c->session_nonce && (int32_t)(h->seq - c->hello_seq) <= 0) {
        /* An old HELLO of the current session (delayed or duplicated): answering it would disarm. */
        c->counters.out_of_order++;
        return;
    }
    c->hello_seq = h->seq;
    c->last_host_seq = h->seq; /* sequence gaps count from the handshake */
    if (!c->have_nonce || m.session_nonce != c->session_nonce) {
        /* A new host session: its control ids start over, so forget the old ones. */
        c->ring_count = 0;
        c->ring_head = 0;
        c->ctl_any = 0;
    }
    c->have_nonce = 1;
    c->session_nonce = m.session_nonce;
    c->session = 1;
    c->schema_ok = (uint8_t)(m.schema_hash == c->identity.schema_hash);
    /* Setpoints sent before this HELLO (e.g. delayed from the previous connection) are out of order. */
    c->sp_have = 1;
    c->sp_last_seq = h->seq;
    c->sp_last_ts = h->timestamp_ms;
    c->offset_valid = 0;
    (void)clock_observe(c, h->timestamp_ms, now, &ahead); /* the first sample: never ahead */
    if (c->state == VX_STATE_ARMED) {
        /* A handshake never leaves the robot armed: re-arming is the host's explicit decision. */
        set_state(c, VX_STATE_DISARMED, VX_REASON_NONE);
        c->target_valid = 0;
    }
    a.echo_seq = h->seq;
    a.schema_hash = c->identity.schema_hash;
    a.capabilities = c->identity.capabilities;
    a.schema_ok = c->schema_ok;
    a.state = c->state;
    memset(a.build_id, 0, sizeof a.build_id);
    memcpy(a.build_id, c->identity.build_id, n < sizeof a.build_id ? n : sizeof a.build_id);
    a.max_linear_m_s = VX_MAX_LINEAR_M_S;
    a.max_angular_rad_s = VX_MAX_ANGULAR_RAD_S;
    vx_pack_hello_ack(&a, buf);
    send_frame(c, VX_MSG_TYPE_HELLO_ACK, 0, buf, sizeof buf);
    emit_simple(c, VX_EV_HELLO, c->schema_ok, m.session_nonce);
}

static void apply_setpoint(vx_core_t *c, float linear, float angular, uint32_t expiry_ms) {
    float v = clampf(linear, -c->max_linear, c->max_linear);
    float w = clampf(angular, -c->max_angular, c->max_angular);
    float half = 0.5f * VX_WHEEL_BASE_M * w;
    float l = v - half, r = v + half;
    float m = fabsf(l) > fabsf(r) ? fabsf(l) : fabsf(r);
    if (m > VX_MAX_WHEEL_M_S) {
        /* Scale both wheels: slower, but along the commanded curvature. */
        float k = VX_MAX_WHEEL_M_S / m;
        l *= k;
        r *= k;
    }
    c->target_left = l;
    c->target_right = r;
    c->target_valid = 1;
    c->target_expiry_ms = expiry_ms;
}

static void handle_setpoint(vx_core_t *c, const vx_header_t *h, const uint8_t *payload, uint32_t now) {
    vx_setpoint_t m;
    vx_event_t ev;
    uint8_t result, ahead = 0;
    uint32_t age = 0;
    vx_unpack_setpoint(payload, &m);
    if (!c->session) {
        result = VX_ECHO_RESULT_NO_SESSION;
        c->counters.rejected++;
    } else if (!isfinite(m.linear_m_s) || !isfinite(m.angular_rad_s) || m.ttl_ms == 0u ||
               m.ttl_ms > VX_TTL_MAX_MS) {
        result = VX_ECHO_RESULT_INVALID;
        c->counters.rejected++;
    } else if (c->sp_have && h->seq == c->sp_last_seq) {
        result = VX_ECHO_RESULT_DUPLICATE;
        c->counters.duplicates++;
    } else if (c->sp_have && ((int32_t)(h->seq - c->sp_last_seq) < 0 ||
                              (int32_t)(h->timestamp_ms - c->sp_last_ts) < 0)) {
        /* Older than one already seen, by sequence number or by host time. */
        result = VX_ECHO_RESULT_OUT_OF_ORDER;
        c->counters.out_of_order++;
    } else if (c->sp_have && (uint32_t)(h->seq - c->sp_last_seq) > (uint32_t)VX_CORE_SEQ_AHEAD_MAX) {
        /* Not remembered as the newest: one such frame would make every later one "out of order". */
        result = VX_ECHO_RESULT_AHEAD;
        c->counters.rejected++;
    } else if (age = clock_observe(c, h->timestamp_ms, now, &ahead), ahead) {
        result = VX_ECHO_RESULT_AHEAD;
        c->counters.rejected++;
    } else {
        c->sp_have = 1;
        c->sp_last_seq = h->seq;
        c->sp_last_ts = h->timestamp_ms;
        if (age > m.ttl_ms) {
            result = VX_ECHO_RESULT_STALE;
            c->counters.stale_dropped++;
        } else if (c->state != VX_STATE_ARMED) {
            result = VX_ECHO_RESULT_IGNORED_DISARMED;
        } else {
            result = VX_ECHO_RESULT_APPLIED;
            apply_setpoint(c, m.linear_m_s, m.angular_rad_s, now + (m.ttl_ms - age));
            c->last_valid_sp_ms = now;
            c->last_sp_seq_applied = h->seq;
            c->counters.setpoints_applied++;
        }
    }
    memset(&ev, 0, sizeof ev);
    ev.kind = VX_EV_SETPOINT;
    ev.result = result;
    ev.state = c->state;
    ev.id = h->seq;
    ev.host_ts_ms = h->timestamp_ms;
    ev.age_ms = age;
    ev.ttl_ms = m.ttl_ms;
    ev.a = m.linear_m_s;
    ev.b = m.angular_rad_s;
    emit(c, &ev);
    if (h->flags & VX_HEADER_FLAG_ECHO_REQUEST) {
        vx_setpoint_echo_t e;
        uint8_t buf[VX_SETPOINT_ECHO_SIZE];
        e.echo_seq = h->seq;
        e.result = result;
        e.age_ms = (uint16_t)(age > 0xFFFFu ? 0xFFFFu : age);
        vx_pack_setpoint_echo(&e, buf);
        send_frame(c, VX_MSG_TYPE_SETPOINT_ECHO, 0, buf, sizeof buf);
    }
}

static uint8_t execute_control(vx_core_t *c, const vx_header_t *h, const vx_control_t *m, uint32_t now) {
    switch (m->op) {
    case VX_OP_ESTOP:
        /* Stopping is always allowed: no session, schema or age check. */
        set_state(c, VX_STATE_ESTOP, VX_REASON_ESTOP);
        c->target_valid = 0;
        c->cmd_left = 0.0f;
        c->cmd_right = 0.0f;
        c->hal->motors_set(c->hal->ctx, 0.0f, 0.0f);
        return VX_RESULT_OK;
    case VX_OP_DISARM:
        if (c->state == VX_STATE_ARMED) {
            set_state(c, VX_STATE_DISARMED, VX_REASON_NONE);
            c->target_valid = 0;
        }
        return VX_RESULT_OK;
    case VX_OP_ARM:
    case VX_OP_CLEAR_FAILSAFE:
    case VX_OP_GRIPPER_OPEN:
    case VX_OP_GRIPPER_CLOSE:
    case VX_OP_CONFIG:
        break;
    default:
        return VX_RESULT_UNKNOWN_OP;
    }
    if (!c->session) {
        return VX_RESULT_REFUSED_NO_SESSION;
    }
    if (!c->schema_ok) {
        return VX_RESULT_REFUSED_SCHEMA;
    }
    if (m->ttl_ms == 0u || m->ttl_ms > VX_TTL_MAX_MS) {
        return VX_RESULT_BAD_ARGS;
    }
    if (frame_age(c, h->timestamp_ms, now) > m->ttl_ms) {
        c->counters.stale_dropped++;
        return VX_RESULT_EXPIRED;
    }
    switch (m->op) {
    case VX_OP_ARM:
        if (c->state == VX_STATE_ESTOP) {
            return VX_RESULT_REFUSED_ESTOP;
        }
        set_state(c, VX_STATE_ARMED, VX_REASON_NONE);
        /* Motion needs a setpoint that arrives after ARM, within the watchdog time. */
        c->target_valid = 0;
        c->last_valid_sp_ms = now;
        return VX_RESULT_OK;
    case VX_OP_CLEAR_FAILSAFE:
        if (c->state == VX_STATE_FAILSAFE || c->state == VX_STATE_ESTOP) {
            set_state(c, VX_STATE_DISARMED, VX_REASON_NONE);
        }
        return VX_RESULT_OK;
    case VX_OP_GRIPPER_OPEN:
    case VX_OP_GRIPPER_CLOSE:
        if (c->state == VX_STATE_ESTOP) {
            return VX_RESULT_REFUSED_ESTOP;
        }
        c->hal->gripper_set(c->hal->ctx, (uint8_t)(m->op == VX_OP_GRIPPER_OPEN));
        return VX_RESULT_OK;
    default: /* VX_OP_CONFIG */
        if (!isfinite(m->arg0) || !isfinite(m->arg1) || !(m->arg0 > 0.0f) || m->arg0 > VX_MAX_LINEAR_M_S ||
            !(m->arg1 > 0.0f) || m->arg1 > VX_MAX_ANGULAR_RAD_S || m->arg2 < VX_TELEMETRY_PERIOD_MIN_MS ||
            m->arg2 > VX_TELEMETRY_PERIOD_MAX_MS) {
            return VX_RESULT_BAD_ARGS;
        }
        c->max_linear = m->arg0;
        c->max_angular = m->arg1;
        c->telemetry_period_ms = m->arg2;
        return VX_RESULT_OK;
    }
}

static void handle_control(vx_core_t *c, const vx_header_t *h, const uint8_t *payload, uint32_t now) {
    vx_control_t m;
    vx_event_t ev;
    uint8_t i, result;
    vx_unpack_control(payload, &m);
    for (i = 0; i < c->ring_count; ++i) {
        if (c->ring[i].id == m.control_id) {
            /* A retry (or a duplicated frame): answer again, never execute twice. */
            c->counters.duplicates++;
            send_ack(c, m.control_id, c->ring[i].op, c->ring[i].result, 1);
            emit_simple(c, VX_EV_CONTROL_DUPLICATE, c->ring[i].result, m.control_id);
            return;
        }
    }
    if (c->ctl_any && (int32_t)(m.control_id - c->ctl_highest) <= -(int32_t)VX_CONTROL_ID_WINDOW) {
        /* Older than anything remembered: it was handled or abandoned long ago. */
        c->counters.duplicates++;
        emit_simple(c, VX_EV_CONTROL_TOO_OLD, 0, m.control_id);
        return;
    }
    result = execute_control(c, h, &m, now);
    c->ring[c->ring_head].id = m.control_id;
    c->ring[c->ring_head].op = m.op;
    c->ring[c->ring_head].result = result;
    c->ring_head = (uint8_t)((c->ring_head + 1u) % VX_CONTROL_ID_WINDOW);
    if (c->ring_count < VX_CONTROL_ID_WINDOW) {
        c->ring_count++;
    }
    if (!c->ctl_any || (int32_t)(m.control_id - c->ctl_highest) > 0) {
        c->ctl_highest = m.control_id;
        c->ctl_any = 1;
    }
    c->counters.controls_executed++;
    send_ack(c, m.control_id, m.op, result, 0);
    memset(&ev, 0, sizeof ev);
    ev.kind = VX_EV_CONTROL;
    ev.op = m.op;
    ev.result = result;
    ev.state = c->state;
    ev.id = m.control_id;
    ev.host_ts_ms = h->timestamp_ms;
    ev.ttl_ms = m.ttl_ms;
    emit(c, &ev);
}

static void handle_block(vx_core_t *c, const uint8_t *block, uint16_t len) {
    vx_frame_t f;
    uint32_t now;
    vx_frame_status_t st = vx_frame_decode(block, len, c->rx_frame, sizeof c->rx_frame, &f);
    if (st == VX_FRAME_OK && (f.header.msg_type & 0x80u) != 0u) {
        st = VX_FRAME_ERR_TYPE; /* an MCU-to-host message type sent to the MCU */
    }
    if (st != VX_FRAME_OK) {
        if (st == VX_FRAME_ERR_CRC) {
            c->counters.crc_errors++;
        } else {
            c->counters.malformed++;
        }
        emit_simple(c, VX_EV_FRAME_ERROR, (uint8_t)st, 0);
        return;
    }
    c->counters.frames_ok++;
    if (c->have_host_seq) {
        int32_t d = (int32_t)(f.header.seq - c->last_host_seq);
        if (d > 1) {
            c->counters.seq_gaps += (uint32_t)(d - 1);
        }
        if (d > 0) {
            c->last_host_seq = f.header.seq;
        }
    } else {
        c->have_host_seq = 1;
        c->last_host_seq = f.header.seq;
    }
    now = now_ms(c);
    switch (f.header.msg_type) {
    case VX_MSG_TYPE_HELLO:
        handle_hello(c, &f.header, f.payload, now);
        break;
    case VX_MSG_TYPE_SETPOINT:
        handle_setpoint(c, &f.header, f.payload, now);
        break;
    default: /* VX_MSG_TYPE_CONTROL: vx_frame_decode rejects unknown types */
        handle_control(c, &f.header, f.payload, now);
        break;
    }
}

/* ------------------------------------------------------------------ public */

void vx_core_init(vx_core_t *c, const vx_hal_t *hal, const vx_identity_t *identity) {
    memset(c, 0, sizeof *c);
    c->hal = hal;
    c->identity = *identity;
    vx_deframer_reset(&c->deframer);
    c->state = VX_STATE_DISARMED;
    c->reason = VX_REASON_NONE;
    c->max_linear = VX_MAX_LINEAR_M_S;
    c->max_angular = VX_MAX_ANGULAR_RAD_S;
    c->telemetry_period_ms = VX_TELEMETRY_PERIOD_MS;
    hal->motors_set(hal->ctx, 0.0f, 0.0f);
    hal->encoders_read(hal->ctx, &c->enc_left, &c->enc_right);
    c->win_left = c->enc_left;
    c->win_right = c->enc_right;
    c->win_start_us = hal->micros(hal->ctx);
    c->last_step_us = c->win_start_us;
    c->last_telemetry_ms = hal->millis(hal->ctx);
}

void vx_core_rx(vx_core_t *c, const uint8_t *data, uint16_t len) {
    uint16_t i;
    for (i = 0; i < len; ++i) {
        const uint8_t *block = NULL;
        uint16_t block_len = 0;
        vx_deframer_result_t r = vx_deframer_push(&c->deframer, data[i], &block, &block_len);
        if (r == VX_DF_OVERSIZE) {
            c->counters.oversize++;
            emit_simple(c, VX_EV_FRAME_ERROR, (uint8_t)VX_FRAME_ERR_OVERSIZE, 0);
        } else if (r == VX_DF_BLOCK) {
            handle_block(c, block, block_len);
        }
    }
}

void vx_integrate_arc(float *x, float *y, float *theta, float dl, float dr, float b) {
    float ds = 0.5f * (dl + dr);
    float dth = (dr - dl) / b;
    float half = 0.5f * dth;
    /* Chord of the arc: length ds * sin(h)/h, direction theta + h (exact for constant wheel speeds);
     * this form has no cancellation for small turns. */
    float k = fabsf(half) < 1e-4f ? 1.0f - half * half / 6.0f : sinf(half) / half;
    float th = *theta + half;
    *x += ds * k * cosf(th);
    *y += ds * k * sinf(th);
    th = *theta + dth;
    while (th > VX_PI_F) {
        th -= 2.0f * VX_PI_F;
    }
    while (th <= -VX_PI_F) {
        th += 2.0f * VX_PI_F;
    }
    *theta = th;
}

void vx_core_step(vx_core_t *c) {
    uint32_t now = now_ms(c);
    uint32_t us = c->hal->micros(c->hal->ctx);
    uint32_t dt_us = us - c->last_step_us;
    float dt, tl = 0.0f, tr = 0.0f;
    int32_t el, er;
    c->last_step_us = us;
    if (dt_us > MAX_STEP_US) {
        dt_us = MAX_STEP_US;
    }
    dt = (float)dt_us * 1e-6f;

    if (c->state == VX_STATE_ARMED) {
        if ((uint32_t)(now - c->last_valid_sp_ms) > VX_WATCHDOG_TIMEOUT_MS) {
            c->counters.watchdog_trips++;
            c->target_valid = 0;
            set_state(c, VX_STATE_FAILSAFE, VX_REASON_WATCHDOG);
        } else if (c->target_valid && (int32_t)(now - c->target_expiry_ms) >= 0) {
            c->target_valid = 0; /* the setpoint's TTL ran out: stop following it */
        }
    }
    if (c->state == VX_STATE_ARMED && c->target_valid) {
        tl = c->target_left;
        tr = c->target_right;
    }
    if (c->state == VX_STATE_ESTOP) {
        c->cmd_left = 0.0f;
        c->cmd_right = 0.0f;
    } else {
        /* Move both wheels toward the target along a straight line in wheel-speed space, so the
         * ratio (the path's curvature) holds while accelerating and braking. */
        float dl = tl - c->cmd_left, dr = tr - c->cmd_right;
        float m = fabsf(dl) > fabsf(dr) ? fabsf(dl) : fabsf(dr);
        float rate = (tl == 0.0f && tr == 0.0f) ? STOP_DECEL_M_S2 : VX_ACCEL_LIMIT_M_S2;
        float limit = rate * dt;
        if (m <= limit) {
            c->cmd_left = tl;
            c->cmd_right = tr;
        } else {
            float k = limit / m;
            c->cmd_left += dl * k;
            c->cmd_right += dr * k;
        }
    }
    c->hal->motors_set(c->hal->ctx, c->cmd_left / VX_MAX_WHEEL_M_S, c->cmd_right / VX_MAX_WHEEL_M_S);

    c->hal->encoders_read(c->hal->ctx, &el, &er);
    if (el != c->enc_left || er != c->enc_right) {
        vx_integrate_arc(&c->x, &c->y, &c->theta, (float)(el - c->enc_left) / (float)VX_ENCODER_TICKS_PER_M,
                         (float)(er - c->enc_right) / (float)VX_ENCODER_TICKS_PER_M, VX_WHEEL_BASE_M);
        c->enc_left = el;
        c->enc_right = er;
    }
    if ((uint32_t)(us - c->win_start_us) >= SPEED_WINDOW_US) {
        float span = (float)(uint32_t)(us - c->win_start_us) * 1e-6f;
        c->speed_left = (float)(el - c->win_left) / (float)VX_ENCODER_TICKS_PER_M / span;
        c->speed_right = (float)(er - c->win_right) / (float)VX_ENCODER_TICKS_PER_M / span;
        c->win_left = el;
        c->win_right = er;
        c->win_start_us = us;
    }
    if ((uint32_t)(now - c->last_telemetry_ms) >= c->telemetry_period_ms) {
        /* Keep the average rate exact despite loop jitter; after a long stall, restart from now. */
        c->last_telemetry_ms += c->telemetry_period_ms;
        if ((uint32_t)(now - c->last_telemetry_ms) >= c->telemetry_period_ms) {
            c->last_telemetry_ms = now;
        }
        send_telemetry(c);
    }
}

uint8_t vx_core_state(const vx_core_t *c) { return c->state; }

uint8_t vx_core_reason(const vx_core_t *c) { return c->reason; }

void vx_core_motor_cmd(const vx_core_t *c, float *left_m_s, float *right_m_s) {
    *left_m_s = c->cmd_left;
    *right_m_s = c->cmd_right;
}

const vx_counters_t *vx_core_counters(const vx_core_t *c) { return &c->counters; }
