// hal_arduino.h: the vx_hal_t of a real board (motor driver PWM/DIR, quadrature encoders, servo gripper,
// battery divider, hardware serial). Pin numbers and scales live in board_config.h.
//
// NOT COMPILED IN THIS REPOSITORY'S CI (there is no Arduino toolchain here): written against the
// Arduino core API (analogWrite, digitalWrite, attachInterrupt, Servo, Serial) and checked by reading.
#pragma once

#include <Arduino.h>

#include "src/vx_core/vx_core.h"  // C headers with extern "C" guards

// Sets up the pins, interrupts and serial port, and returns the HAL the core runs on.
const vx_hal_t *hal_arduino_begin();
// Moves bytes from the serial receive buffer into the core (call from loop()).
void hal_arduino_poll_serial(vx_core_t *core);
