"""Exceptions of the firmware bridge; each message quotes the bad value and says what to do.

Tree::

    BridgeError
    ├── InvalidValueError        an argument out of range or not finite
    ├── ProtocolError            a frame that cannot be decoded (raised by the codec)
    │   ├── FrameError           COBS, size, version or unknown type
    │   └── CrcError             checksum mismatch
    ├── LinkStateError           a call in the wrong state
    │   └── NotConnectedError    the link is not started or the port is down
    ├── PortError                the serial port cannot be used
    │   ├── PortNotFoundError
    │   ├── PortPermissionError
    │   └── PortBusyError        another process holds it (exclusive open)
    ├── HandshakeError           the MCU did not answer HELLO (or answered nonsense)
    ├── ControlError             a control was refused by the MCU or not delivered
    │   ├── ControlRefusedError
    │   └── ControlFailedError
    ├── BridgeTimeoutError       waiting for the MCU took too long
    └── SimulatorError           building or running the host simulator failed
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error raised by ``firmware_bridge``."""


class InvalidValueError(BridgeError, ValueError):
    """An argument is out of range, not finite or of the wrong kind."""


class ProtocolError(BridgeError):
    """A received frame is not a valid protocol frame (it is dropped and counted)."""


class FrameError(ProtocolError):
    """Bad COBS encoding, wrong size, unsupported version or unknown message type."""


class CrcError(ProtocolError):
    """The frame's CRC-32 does not match its contents."""


class LinkStateError(BridgeError):
    """The call does not fit the link's current state."""


class NotConnectedError(LinkStateError):
    """The link is not started, or the port is down and reconnecting."""


class PortError(BridgeError):
    """The serial port cannot be opened or used."""


class PortNotFoundError(PortError):
    """The port path does not exist."""


class PortPermissionError(PortError):
    """The user may not open the port."""


class PortBusyError(PortError):
    """Another process holds the port (it is opened exclusively)."""


class HandshakeError(BridgeError):
    """The MCU did not complete the handshake."""


class ControlError(BridgeError):
    """A control message was not carried out."""


class ControlRefusedError(ControlError):
    """The MCU received the control and refused it (its result code says why)."""


class ControlFailedError(ControlError):
    """The control was not acknowledged after all retries, or the link went down."""


class SimulatorError(BridgeError):
    """The host-built firmware simulator could not be built, started or stopped."""


class BridgeTimeoutError(BridgeError, TimeoutError):
    """Waiting for the MCU (telemetry, an answer) took longer than allowed."""
