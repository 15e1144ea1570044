"""Serial link between the robot host and its microcontroller (protocol, host link, firmware).

Filled in by the firmware-bridge issue. Imports nothing of ours.
"""
