// hal_arduino.cpp: see hal_arduino.h. Not compiled here (no Arduino toolchain in CI).
#include "hal_arduino.h"

#include <Servo.h>

#include "board_config.h"

static volatile int32_t enc_left_ticks = 0;
static volatile int32_t enc_right_ticks = 0;
static Servo gripper_servo;
static uint8_t gripper_position = VX_GRIPPER_UNKNOWN;
static uint8_t gripper_target = VX_GRIPPER_UNKNOWN;
static uint32_t gripper_since_ms = 0;
static vx_hal_t hal;

// x2 decoding on channel A: on every edge of A, A == B means one direction, A != B the other.
static void isr_left() {
    bool a = digitalRead(PIN_LEFT_ENC_A), b = digitalRead(PIN_LEFT_ENC_B);
    enc_left_ticks += (a == b) ? -1 : 1;
}
static void isr_right() {
    bool a = digitalRead(PIN_RIGHT_ENC_A), b = digitalRead(PIN_RIGHT_ENC_B);
    enc_right_ticks += (a == b) ? 1 : -1;  // mirrored mounting
}

static uint32_t h_millis(void *) { return millis(); }
static uint32_t h_micros(void *) { return micros(); }

static void drive_one(uint8_t pwm_pin, uint8_t dir_pin, bool inverted, float duty) {
    if (duty > 1.0f) duty = 1.0f;
    if (duty < -1.0f) duty = -1.0f;
    bool forward = duty >= 0.0f;
    digitalWrite(dir_pin, (forward != inverted) ? HIGH : LOW);
    analogWrite(pwm_pin, (int)(fabs(duty) * 255.0f + 0.5f));
}

static void h_motors(void *, float left, float right) {
    drive_one(PIN_LEFT_PWM, PIN_LEFT_DIR, LEFT_DIR_INVERTED, left);
    drive_one(PIN_RIGHT_PWM, PIN_RIGHT_DIR, RIGHT_DIR_INVERTED, right);
}

static void h_encoders(void *, int32_t *left, int32_t *right) {
    noInterrupts();  // 32-bit reads are not atomic on an 8-bit MCU
    *left = enc_left_ticks;
    *right = enc_right_ticks;
    interrupts();
}

static void h_gripper_set(void *, uint8_t open) {
    gripper_target = open ? VX_GRIPPER_OPEN : VX_GRIPPER_CLOSED;
    gripper_servo.write(open ? GRIPPER_OPEN_DEG : GRIPPER_CLOSED_DEG);
    gripper_position = VX_GRIPPER_MOVING;
    gripper_since_ms = millis();
}

static uint8_t h_gripper_state(void *) {
    if (gripper_position == VX_GRIPPER_MOVING && millis() - gripper_since_ms >= GRIPPER_TRAVEL_MS) {
        gripper_position = gripper_target;
    }
    return gripper_position;
}

static uint16_t h_battery(void *) {
    float mv = analogRead(PIN_BATTERY) * (ADC_REFERENCE_MV / ADC_COUNTS) * BATTERY_DIVIDER;
    return (uint16_t)mv;
}

// Serial.write blocks while the TX ring (64 bytes on AVR) is full: a telemetry frame (103 bytes) holds the
// loop for ~9 ms at 115200 baud, well inside the 250 ms watchdog. Raise SERIAL_TX_BUFFER_SIZE to avoid it.
static void h_serial_write(void *, const uint8_t *data, uint16_t len) { Serial.write(data, len); }

const vx_hal_t *hal_arduino_begin() {
    pinMode(PIN_LEFT_PWM, OUTPUT);
    pinMode(PIN_LEFT_DIR, OUTPUT);
    pinMode(PIN_RIGHT_PWM, OUTPUT);
    pinMode(PIN_RIGHT_DIR, OUTPUT);
    analogWrite(PIN_LEFT_PWM, 0);
    analogWrite(PIN_RIGHT_PWM, 0);
    pinMode(PIN_LEFT_ENC_A, INPUT_PULLUP);
    pinMode(PIN_LEFT_ENC_B, INPUT_PULLUP);
    pinMode(PIN_RIGHT_ENC_A, INPUT_PULLUP);
    pinMode(PIN_RIGHT_ENC_B, INPUT_PULLUP);
    attachInterrupt(digitalPinToInterrupt(PIN_LEFT_ENC_A), isr_left, CHANGE);
    attachInterrupt(digitalPinToInterrupt(PIN_RIGHT_ENC_A), isr_right, CHANGE);
    gripper_servo.attach(PIN_GRIPPER_SERVO);
    Serial.begin(VX_BAUD_RATE);

    hal.ctx = nullptr;
    hal.millis = h_millis;
    hal.micros = h_micros;
    hal.motors_set = h_motors;
    hal.encoders_read = h_encoders;
    hal.gripper_set = h_gripper_set;
    hal.gripper_state = h_gripper_state;
    hal.battery_mv = h_battery;
    hal.serial_write = h_serial_write;
    hal.on_event = nullptr;
    return &hal;
}

void hal_arduino_poll_serial(vx_core_t *core) {
    uint8_t buf[32];
    int n;
    while ((n = Serial.available()) > 0) {
        if (n > (int)sizeof buf) n = sizeof buf;
        n = Serial.readBytes(buf, n);
        vx_core_rx(core, buf, (uint16_t)n);
    }
}
