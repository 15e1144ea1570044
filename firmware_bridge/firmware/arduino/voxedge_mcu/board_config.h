// board_config.h: wiring of the reference robot (an Arduino Mega 2560 with a dual H-bridge such as the
// TB6612FNG or L298N in PWM + DIR mode, two quadrature encoders and a hobby-servo gripper).
// Change these to your wiring. The encoder resolution and wheel geometry are protocol constants
// (VX_ENCODER_TICKS_PER_M, VX_WHEEL_BASE_M in firmware_bridge/spec.py): change them there, regenerate
// protocol_gen.h and rebuild host and firmware together (the schema hash changes with them).
#pragma once

// Motor driver: one PWM (speed) and one DIR (direction) pin per motor.
#define PIN_LEFT_PWM 5
#define PIN_LEFT_DIR 4
#define PIN_RIGHT_PWM 6
#define PIN_RIGHT_DIR 7
// Set to 1 when a motor is mounted mirrored and "forward" needs DIR low.
#define LEFT_DIR_INVERTED 0
#define RIGHT_DIR_INVERTED 1

// Quadrature encoders: channel A on an external-interrupt pin, channel B on any digital pin.
#define PIN_LEFT_ENC_A 2
#define PIN_LEFT_ENC_B 8
#define PIN_RIGHT_ENC_A 3
#define PIN_RIGHT_ENC_B 9

// Gripper servo and its two positions (degrees); it has no feedback, so "MOVING" lasts GRIPPER_TRAVEL_MS.
#define PIN_GRIPPER_SERVO 10
#define GRIPPER_OPEN_DEG 90
#define GRIPPER_CLOSED_DEG 20
#define GRIPPER_TRAVEL_MS 300

// Battery through a resistor divider into an analog pin: V_batt = V_pin * BATTERY_DIVIDER.
#define PIN_BATTERY A0
#define ADC_REFERENCE_MV 5000.0f
#define ADC_COUNTS 1023.0f
#define BATTERY_DIVIDER 3.0f
