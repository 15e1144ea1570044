/* mcu_sim.c: the firmware core built for the host as `voxedge-mcu-sim`.
 *
 * Speaks the real protocol on a pseudo-terminal, drives a simulated
 * differential-drive robot (motors with a ramp response, quadrature encoders,
 * exact-arc pose, gripper, battery) and injects faults on the link.
 *
 *   voxedge-mcu-sim [--pty-link PATH] [--seed N] [--drop P] [--corrupt P] [--duplicate P]
 *                   [--delay-prob P --delay-ms MS] [--byte-drop P] [--byte-corrupt P] [--fault-dir rx|tx|both]
 *                   [--unplug-every S [--unplug-for S]] [--motor-log PATH] [--event-log PATH]
 *                   [--schema-hash HEX] [--build-id STR] [--clock-start-ms N] [--clock-ppm X] [--parent-pid PID]
 *
 * stdout: one line "PTY <slave path>" per (re)plug, flushed at once.
 * Signals: SIGTERM/SIGINT exit cleanly (the --pty-link symlink is removed);
 * SIGUSR1 unplugs (closes the pty) or, when unplugged, replugs on a new pty;
 * SIGUSR2 resets the MCU (the core restarts from power-on state).
 * The simulator exits by itself when its parent process dies (it polls getppid()).
 * Log timestamps are CLOCK_MONOTONIC seconds, the clock of Python's time.monotonic(). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../core/vx_core.h"

#ifndef VX_BUILD_ID
#define VX_BUILD_ID "mcu-sim-dev"
#endif

#define MOTOR_ACCEL_M_S2 10.0     /* physical wheel acceleration limit of the simulated motors */
#define LOOP_PERIOD_MS 2          /* poll timeout: the core steps at >= 500 Hz */
#define PARENT_CHECK_S 0.02       /* how often the parent's presence is checked */
#define GRIPPER_TRAVEL_S 0.3      /* gripper open/close duration */
#define DELAY_SLOTS 64            /* delayed frames held at once (more are dropped) */
#define FRAME_CAP 512             /* fault filter: longest run kept as one frame (garbage passes through) */
#define MOTOR_LOG_HEARTBEAT_S 0.1 /* a motor log line at least this often */
#define BATTERY_FULL_MV 12600.0
#define BATTERY_DRAIN_MV_S 2.0 /* at full duty on both motors */

typedef struct {
    double prob_drop, prob_corrupt, prob_dup, prob_delay, delay_s, prob_byte_drop, prob_byte_corrupt;
    int rx, tx;
} faults_t;

typedef struct {
    double release;
    int dir; /* 0 rx (to the core), 1 tx (to the host) */
    uint16_t len;
    uint8_t data[FRAME_CAP];
} delayed_t;

typedef struct {
    /* options */
    const char *pty_link, *motor_log_path, *event_log_path, *build_id;
    uint64_t seed;
    faults_t faults;
    double unplug_every, unplug_for;
    uint32_t schema_hash, clock_start_ms;
    double clock_ppm;
    pid_t parent_pid, initial_ppid;
    /* pty */
    int master, slave;
    char slave_path[128];
    int plugged;
    double plugged_at, unplugged_at;
    /* fault filter state: one partial frame per direction */
    uint8_t part[2][FRAME_CAP];
    uint16_t part_len[2];
    delayed_t delayed[DELAY_SLOTS];
    uint64_t rng;
    /* time */
    double t0;
    /* robot */
    double duty_l, duty_r, v_l, v_r, dist_l, dist_r, x, y, theta, battery_mv;
    uint8_t gripper_target, gripper;
    double gripper_done_at;
    /* logs */
    FILE *motor_log, *event_log;
    double last_motor_log;
    double logged[5];
    vx_core_t core;
    vx_hal_t hal;
} sim_t;

static sim_t S;
static volatile sig_atomic_t g_stop, g_toggle_plug, g_reset;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ random (xorshift64*) */

static uint64_t rnd_u64(void) {
    S.rng ^= S.rng >> 12;
    S.rng ^= S.rng << 25;
    S.rng ^= S.rng >> 27;
    return S.rng * 2685821657736338717ull;
}

static double rnd_unit(void) { return (double)(rnd_u64() >> 11) * (1.0 / 9007199254740992.0); }

static int chance(double p) { return p > 0.0 && rnd_unit() < p; }

/* ------------------------------------------------------------------ logs */

static void event_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void event_line(const char *fmt, ...) {
    va_list ap;
    if (S.event_log == NULL) {
        return;
    }
    fprintf(S.event_log, "%.6f ", mono_s());
    va_start(ap, fmt);
    vfprintf(S.event_log, fmt, ap);
    va_end(ap);
    fputc('\n', S.event_log);
}

static void on_event(void *ctx, const vx_event_t *ev) {
    (void)ctx;
    switch (ev->kind) {
    case VX_EV_CONTROL:
        event_line("CTRL id=%u op=%u result=%u state=%u host_ts=%u ttl=%u", ev->id, ev->op, ev->result, ev->state,
                   ev->host_ts_ms, ev->ttl_ms);
        break;
    case VX_EV_CONTROL_DUPLICATE:
        event_line("CTRL_DUP id=%u result=%u", ev->id, ev->result);
        break;
    case VX_EV_CONTROL_TOO_OLD:
        event_line("CTRL_OLD id=%u", ev->id);
        break;
    case VX_EV_SETPOINT:
        event_line("SETPOINT seq=%u result=%u host_ts=%u age=%u ttl=%u lin=%.4f ang=%.4f state=%u", ev->id,
                   ev->result, ev->host_ts_ms, ev->age_ms, ev->ttl_ms, (double)ev->a, (double)ev->b, ev->state);
        break;
    case VX_EV_HELLO:
        event_line("HELLO nonce=%u schema_ok=%u state=%u", ev->id, ev->result, ev->state);
        break;
    case VX_EV_STATE:
        event_line("STATE state=%u reason=%u", ev->state, ev->result);
        break;
    case VX_EV_FRAME_ERROR:
        event_line("FRAME_ERROR code=%u", ev->result);
        break;
    default:
        break;
    }
}

static void motor_log(double now, int force) {
    double v[5];
    int i, changed = force;
    if (S.motor_log == NULL) {
        return;
    }
    v[0] = S.duty_l;
    v[1] = S.duty_r;
    v[2] = S.v_l;
    v[3] = S.v_r;
    v[4] = (double)vx_core_state(&S.core);
    for (i = 0; i < 5; ++i) {
        if (fabs(v[i] - S.logged[i]) > 1e-6) {
            changed = 1;
        }
    }
    if (!changed && now - S.last_motor_log < MOTOR_LOG_HEARTBEAT_S) {
        return;
    }
    memcpy(S.logged, v, sizeof v);
    S.last_motor_log = now;
    fprintf(S.motor_log, "%.6f %.6f %.6f %.6f %.6f %.6f %.6f %.6f %d\n", now, S.duty_l, S.duty_r, S.v_l, S.v_r, S.x,
            S.y, S.theta, (int)v[4]);
}

/* ------------------------------------------------------------------ HAL */

static uint32_t hal_millis(void *ctx) {
    double t = (mono_s() - S.t0) * (1.0 + S.clock_ppm * 1e-6);
    (void)ctx;
    return S.clock_start_ms + (uint32_t)(uint64_t)(t * 1000.0);
}

static uint32_t hal_micros(void *ctx) {
    double t = (mono_s() - S.t0) * (1.0 + S.clock_ppm * 1e-6);
    (void)ctx;
    /* Starts 3 s before the 32-bit wrap so that every run crosses it. */
    return (uint32_t)(4294967296.0 - 3e6) + (uint32_t)(uint64_t)(t * 1e6);
}

static void hal_motors(void *ctx, float left, float right) {
    (void)ctx;
    S.duty_l = left < -1.0f ? -1.0 : (left > 1.0f ? 1.0 : (double)left);
    S.duty_r = right < -1.0f ? -1.0 : (right > 1.0f ? 1.0 : (double)right);
}

static void hal_encoders(void *ctx, int32_t *l, int32_t *r) {
    (void)ctx;
    *l = (int32_t)floor(S.dist_l * VX_ENCODER_TICKS_PER_M);
    *r = (int32_t)floor(S.dist_r * VX_ENCODER_TICKS_PER_M);
}

static void hal_gripper_set(void *ctx, uint8_t open) {
    (void)ctx;
    uint8_t target = open ? VX_GRIPPER_OPEN : VX_GRIPPER_CLOSED;
    if (target != S.gripper_target || S.gripper == VX_GRIPPER_UNKNOWN) {
        S.gripper_target = target;
        S.gripper = VX_GRIPPER_MOVING;
        S.gripper_done_at = mono_s() + GRIPPER_TRAVEL_S;
    }
}

static uint8_t hal_gripper_state(void *ctx) {
    (void)ctx;
    return S.gripper;
}

static uint16_t hal_battery(void *ctx) {
    (void)ctx;
    return (uint16_t)S.battery_mv;
}

static void write_host(const uint8_t *data, size_t len) {
    size_t off = 0;
    if (!S.plugged) {
        return; /* nobody listens: a UART would drop the bytes too */
    }
    while (off < len) {
        ssize_t n = write(S.master, data + off, len - off);
        if (n <= 0) {
            return; /* buffer full (host not reading) or hung up: drop the rest */
        }
        off += (size_t)n;
    }
}

static void deliver(int dir, const uint8_t *data, size_t len);

static void filter_frame(int dir, const uint8_t *data, size_t len) {
    const faults_t *f = &S.faults;
    uint8_t buf[FRAME_CAP];
    size_t i, n = 0;
    int active = dir == 0 ? f->rx : f->tx;
    if (!active) {
        deliver(dir, data, len);
        return;
    }
    if (chance(f->prob_drop)) {
        event_line("FAULT drop dir=%s len=%zu", dir ? "tx" : "rx", len);
        return;
    }
    for (i = 0; i < len; ++i) {
        if (chance(f->prob_byte_drop)) {
            continue;
        }
        buf[n] = data[i];
        if (chance(f->prob_byte_corrupt)) {
            buf[n] ^= (uint8_t)(1u << (rnd_u64() % 8u));
        }
        ++n;
    }
    if (n > 0 && chance(f->prob_corrupt)) {
        size_t at = (size_t)(rnd_u64() % n);
        buf[at] ^= (uint8_t)(1u + rnd_u64() % 255u);
        event_line("FAULT corrupt dir=%s at=%zu", dir ? "tx" : "rx", at);
    }
    if (chance(f->prob_delay)) {
        int k;
        for (k = 0; k < DELAY_SLOTS; ++k) {
            if (S.delayed[k].len == 0) {
                S.delayed[k].release = mono_s() + f->delay_s;
                S.delayed[k].dir = dir;
                S.delayed[k].len = (uint16_t)n;
                memcpy(S.delayed[k].data, buf, n);
                break;
            }
        }
        event_line("FAULT delay dir=%s len=%zu%s", dir ? "tx" : "rx", n, k == DELAY_SLOTS ? " lost=1" : "");
    } else {
        deliver(dir, buf, n);
    }
    if (chance(f->prob_dup)) {
        event_line("FAULT duplicate dir=%s", dir ? "tx" : "rx");
        deliver(dir, buf, n);
    }
}

/* Split a byte stream into frames (at 0x00) for the frame-level faults. */
static void filter_bytes(int dir, const uint8_t *data, size_t len) {
    size_t i;
    for (i = 0; i < len; ++i) {
        S.part[dir][S.part_len[dir]++] = data[i];
        if (data[i] == 0 || S.part_len[dir] == FRAME_CAP) {
            filter_frame(dir, S.part[dir], S.part_len[dir]);
            S.part_len[dir] = 0;
        }
    }
}

static void deliver(int dir, const uint8_t *data, size_t len) {
    if (len == 0) {
        return;
    }
    if (dir == 0) {
        vx_core_rx(&S.core, data, (uint16_t)len);
    } else {
        write_host(data, len);
    }
}

static void release_delayed(double now) {
    int k;
    for (k = 0; k < DELAY_SLOTS; ++k) {
        if (S.delayed[k].len > 0 && now >= S.delayed[k].release) {
            uint16_t n = S.delayed[k].len;
            S.delayed[k].len = 0;
            deliver(S.delayed[k].dir, S.delayed[k].data, n);
        }
    }
}

static void hal_serial_write(void *ctx, const uint8_t *data, uint16_t len) {
    (void)ctx;
    if (!S.plugged) {
        return;
    }
    filter_bytes(1, data, len);
}

/* ------------------------------------------------------------------ pty */

static void remove_link(void) {
    char target[256];
    ssize_t n;
    if (S.pty_link == NULL) {
        return;
    }
    n = readlink(S.pty_link, target, sizeof target - 1);
    if (n >= 0) {
        target[n] = 0;
        if (strcmp(target, S.slave_path) == 0) {
            unlink(S.pty_link);
        }
    }
}

static int plug(void) {
    struct termios tio;
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, S.slave_path, sizeof S.slave_path) != 0) {
        perror("voxedge-mcu-sim: posix_openpt");
        if (m >= 0) {
            close(m);
        }
        return -1;
    }
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    fcntl(m, F_SETFD, FD_CLOEXEC);
    /* Keep a slave fd open: the line discipline stays raw (no echo of our own output) before the host
     * configures it, and the master never sees a hang-up when a host process dies. */
    S.slave = open(S.slave_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (S.slave < 0 || tcgetattr(S.slave, &tio) != 0) {
        perror("voxedge-mcu-sim: open slave");
        close(m);
        return -1;
    }
    cfmakeraw(&tio);
    tcsetattr(S.slave, TCSANOW, &tio);
    S.master = m;
    S.plugged = 1;
    S.plugged_at = mono_s();
    S.part_len[0] = S.part_len[1] = 0;
    if (S.pty_link != NULL) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s.tmp%ld", S.pty_link, (long)getpid());
        unlink(tmp);
        if (symlink(S.slave_path, tmp) != 0 || rename(tmp, S.pty_link) != 0) {
            perror("voxedge-mcu-sim: --pty-link");
            unlink(tmp);
            return -1;
        }
    }
    event_line("REPLUG path=%s", S.slave_path);
    printf("PTY %s\n", S.slave_path);
    fflush(stdout);
    return 0;
}

static void unplug(void) {
    if (!S.plugged) {
        return;
    }
    remove_link();
    close(S.master);
    close(S.slave);
    S.master = S.slave = -1;
    S.plugged = 0;
    S.unplugged_at = mono_s();
    event_line("UNPLUG path=%s", S.slave_path);
}

/* ------------------------------------------------------------------ physics */

static void physics(double dt) {
    double dl, dr, ds, dth, half, k;
    double target_l = S.duty_l * VX_MAX_WHEEL_M_S, target_r = S.duty_r * VX_MAX_WHEEL_M_S;
    double step = MOTOR_ACCEL_M_S2 * dt;
    /* Motors follow their command with a ramp (torque-limited) response. */
    S.v_l += fabs(target_l - S.v_l) <= step ? target_l - S.v_l : (target_l > S.v_l ? step : -step);
    S.v_r += fabs(target_r - S.v_r) <= step ? target_r - S.v_r : (target_r > S.v_r ? step : -step);
    dl = S.v_l * dt;
    dr = S.v_r * dt;
    S.dist_l += dl;
    S.dist_r += dr;
    ds = 0.5 * (dl + dr);
    dth = (dr - dl) / VX_WHEEL_BASE_M;
    half = 0.5 * dth;
    k = fabs(half) < 1e-9 ? 1.0 : sin(half) / half; /* exact arc: chord = ds * sin(h) / h */
    S.x += ds * k * cos(S.theta + half);
    S.y += ds * k * sin(S.theta + half);
    S.theta = remainder(S.theta + dth, 2.0 * M_PI);
    S.battery_mv -= BATTERY_DRAIN_MV_S * 0.5 * (fabs(S.duty_l) + fabs(S.duty_r)) * dt;
    if (S.gripper == VX_GRIPPER_MOVING && mono_s() >= S.gripper_done_at) {
        S.gripper = S.gripper_target;
    }
}

/* ------------------------------------------------------------------ main */

static void on_signal(int sig) {
    if (sig == SIGUSR1) {
        g_toggle_plug = 1;
    } else if (sig == SIGUSR2) {
        g_reset = 1;
    } else {
        g_stop = 1;
    }
}

static void usage(void) {
    fputs("usage: voxedge-mcu-sim [--pty-link PATH] [--seed N] [--drop P] [--corrupt P] [--duplicate P]\n"
          "  [--delay-prob P --delay-ms MS] [--byte-drop P] [--byte-corrupt P] [--fault-dir rx|tx|both]\n"
          "  [--unplug-every S [--unplug-for S]] [--motor-log PATH] [--event-log PATH] [--schema-hash HEX]\n"
          "  [--build-id STR] [--clock-start-ms N] [--clock-ppm X] [--parent-pid PID]\n",
          stderr);
}

static int parse_prob(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (*end != 0 || !(v >= 0.0 && v <= 1.0)) {
        fprintf(stderr, "voxedge-mcu-sim: probability %s is not in [0, 1]\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv) {
    int i;
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        }
        if (v == NULL) {
            fprintf(stderr, "voxedge-mcu-sim: %s needs a value\n", a);
            return -1;
        }
        ++i;
        if (strcmp(a, "--pty-link") == 0) {
            S.pty_link = v;
        } else if (strcmp(a, "--seed") == 0) {
            S.seed = strtoull(v, NULL, 0);
        } else if (strcmp(a, "--drop") == 0) {
            rc = parse_prob(v, &S.faults.prob_drop);
        } else if (strcmp(a, "--corrupt") == 0) {
            rc = parse_prob(v, &S.faults.prob_corrupt);
        } else if (strcmp(a, "--duplicate") == 0) {
            rc = parse_prob(v, &S.faults.prob_dup);
        } else if (strcmp(a, "--delay-prob") == 0) {
            rc = parse_prob(v, &S.faults.prob_delay);
        } else if (strcmp(a, "--delay-ms") == 0) {
            S.faults.delay_s = strtod(v, NULL) / 1000.0;
        } else if (strcmp(a, "--byte-drop") == 0) {
            rc = parse_prob(v, &S.faults.prob_byte_drop);
        } else if (strcmp(a, "--byte-corrupt") == 0) {
            rc = parse_prob(v, &S.faults.prob_byte_corrupt);
        } else if (strcmp(a, "--fault-dir") == 0) {
            S.faults.rx = strcmp(v, "tx") != 0;
            S.faults.tx = strcmp(v, "rx") != 0;
            if (strcmp(v, "rx") != 0 && strcmp(v, "tx") != 0 && strcmp(v, "both") != 0) {
                fprintf(stderr, "voxedge-mcu-sim: --fault-dir %s: use rx, tx or both\n", v);
                rc = -1;
            }
        } else if (strcmp(a, "--unplug-every") == 0) {
            S.unplug_every = strtod(v, NULL);
        } else if (strcmp(a, "--unplug-for") == 0) {
            S.unplug_for = strtod(v, NULL);
        } else if (strcmp(a, "--motor-log") == 0) {
            S.motor_log_path = v;
        } else if (strcmp(a, "--event-log") == 0) {
            S.event_log_path = v;
        } else if (strcmp(a, "--schema-hash") == 0) {
            S.schema_hash = (uint32_t)strtoul(v, NULL, 16);
        } else if (strcmp(a, "--build-id") == 0) {
            S.build_id = v;
        } else if (strcmp(a, "--clock-start-ms") == 0) {
            S.clock_start_ms = (uint32_t)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--clock-ppm") == 0) {
            S.clock_ppm = strtod(v, NULL);
        } else if (strcmp(a, "--parent-pid") == 0) {
            S.parent_pid = (pid_t)strtol(v, NULL, 10);
        } else {
            fprintf(stderr, "voxedge-mcu-sim: unknown option %s\n", a);
            usage();
            return -1;
        }
        if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

static int parent_gone(void) {
    if (getppid() != S.initial_ppid) {
        return 1;
    }
    return S.parent_pid > 0 && kill(S.parent_pid, 0) != 0 && errno == ESRCH;
}

static void core_start(void) {
    static vx_identity_t id;
    id.build_id = S.build_id;
    id.schema_hash = S.schema_hash;
    id.capabilities = VX_CAPABILITY_GRIPPER | VX_CAPABILITY_ODOMETRY | VX_CAPABILITY_BATTERY | VX_CAPABILITY_SIMULATOR;
    vx_core_init(&S.core, &S.hal, &id);
}

int main(int argc, char **argv) {
    struct sigaction sa;
    double last, last_parent_check;
    uint8_t buf[1024];
    memset(&S, 0, sizeof S);
    S.master = S.slave = -1;
    S.seed = 1;
    S.unplug_for = 0.5;
    S.faults.rx = S.faults.tx = 1;
    S.schema_hash = VX_SCHEMA_HASH;
    S.build_id = VX_BUILD_ID;
    S.clock_start_ms = 4294967295u - 10000u; /* the MCU's ms clock wraps 10 s into every run */
    S.initial_ppid = getppid();
    if (parse_args(argc, argv) != 0) {
        return 2;
    }
    S.rng = S.seed * 0x9E3779B97F4A7C15ull + 1u;
    S.battery_mv = BATTERY_FULL_MV;
    S.gripper = VX_GRIPPER_UNKNOWN;
    {
        /* Without any fault configured, bytes bypass the frame filter (lowest latency). */
        int any = S.faults.prob_drop > 0 || S.faults.prob_corrupt > 0 || S.faults.prob_dup > 0 ||
                  S.faults.prob_delay > 0 || S.faults.prob_byte_drop > 0 || S.faults.prob_byte_corrupt > 0;
        S.faults.rx = S.faults.rx && any;
        S.faults.tx = S.faults.tx && any;
    }
    if (S.motor_log_path != NULL && (S.motor_log = fopen(S.motor_log_path, "w")) == NULL) {
        perror("voxedge-mcu-sim: --motor-log");
        return 2;
    }
    if (S.event_log_path != NULL && (S.event_log = fopen(S.event_log_path, "w")) == NULL) {
        perror("voxedge-mcu-sim: --event-log");
        return 2;
    }
    if (S.motor_log != NULL) {
        setvbuf(S.motor_log, NULL, _IOLBF, 0);
    }
    if (S.event_log != NULL) {
        setvbuf(S.event_log, NULL, _IOLBF, 0);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    S.t0 = mono_s();
    S.hal.ctx = &S;
    S.hal.millis = hal_millis;
    S.hal.micros = hal_micros;
    S.hal.motors_set = hal_motors;
    S.hal.encoders_read = hal_encoders;
    S.hal.gripper_set = hal_gripper_set;
    S.hal.gripper_state = hal_gripper_state;
    S.hal.battery_mv = hal_battery;
    S.hal.serial_write = hal_serial_write;
    S.hal.on_event = on_event;
    core_start();
    if (plug() != 0) {
        return 1;
    }
    last = last_parent_check = mono_s();
    motor_log(last, 1);
    while (!g_stop) {
        struct pollfd pfd;
        double now;
        int n = 0;
        if (S.plugged) {
            pfd.fd = S.master;
            pfd.events = POLLIN;
            pfd.revents = 0;
            n = poll(&pfd, 1, LOOP_PERIOD_MS);
        } else {
            struct timespec ts = {0, LOOP_PERIOD_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (n > 0 && (pfd.revents & POLLIN)) {
            ssize_t got = read(S.master, buf, sizeof buf);
            if (got > 0) {
                if (S.faults.rx) {
                    filter_bytes(0, buf, (size_t)got);
                } else {
                    vx_core_rx(&S.core, buf, (uint16_t)got);
                }
            }
        }
        now = mono_s();
        release_delayed(now);
        physics(now - last);
        last = now;
        vx_core_step(&S.core);
        motor_log(now, 0);
        if (g_reset) {
            g_reset = 0;
            event_line("RESET");
            core_start();
        }
        if (g_toggle_plug) {
            g_toggle_plug = 0;
            if (S.plugged) {
                unplug();
            } else if (plug() != 0) {
                break;
            }
        }
        if (S.unplug_every > 0) {
            if (S.plugged && now - S.plugged_at >= S.unplug_every) {
                unplug();
            } else if (!S.plugged && now - S.unplugged_at >= S.unplug_for && plug() != 0) {
                break;
            }
        }
        if (now - last_parent_check >= PARENT_CHECK_S) {
            last_parent_check = now;
            if (parent_gone()) {
                event_line("PARENT_GONE");
                break;
            }
        }
    }
    unplug();
    motor_log(mono_s(), 1);
    event_line("EXIT");
    if (S.motor_log != NULL) {
        fclose(S.motor_log);
    }
    if (S.event_log != NULL) {
        fclose(S.event_log);
    }
    return 0;
}
