// voxedge_mcu.ino: the voxedge firmware for an Arduino-compatible board.
//
// The protocol, safety rules and state machine are the portable C core in
// firmware_bridge/firmware/core (the same code the host simulator and the tests run);
// this sketch only wires it to the board through hal_arduino.cpp.
//
// Build (arduino-cli; the core is copied into src/ because the Arduino builder only
// compiles files inside the sketch folder):
//     mkdir -p src/vx_core && cp ../../core/*.c ../../core/*.h src/vx_core/
//     arduino-cli compile --fqbn arduino:avr:mega . && arduino-cli upload -p /dev/robot --fqbn arduino:avr:mega .
//
// NOT COMPILED IN THIS REPOSITORY'S CI: no Arduino toolchain is installed there. The code is kept small
// and written against the documented Arduino API; the core it calls is compiled and tested on the host
// (including under AddressSanitizer/UBSan). RAM: ~0.7 KiB for the core, so any AVR with 2 KiB or more.
#include "hal_arduino.h"
#include "src/vx_core/vx_core.h"

#ifndef VX_BUILD_ID
#define VX_BUILD_ID "voxedge-mcu-arduino"
#endif

static vx_core_t core;

void setup() {
    static const vx_identity_t identity = {
        VX_BUILD_ID, VX_SCHEMA_HASH, VX_CAPABILITY_GRIPPER | VX_CAPABILITY_ODOMETRY | VX_CAPABILITY_BATTERY};
    const vx_hal_t *hal = hal_arduino_begin();  // motors off before anything else
    vx_core_init(&core, hal, &identity);
}

void loop() {
    // Everything is non-blocking except Serial.write of a full TX buffer (see hal_arduino.cpp);
    // the core needs vx_core_step() at >= 200 Hz, this loop runs at several kHz.
    hal_arduino_poll_serial(&core);
    vx_core_step(&core);
}
