"""``voxedge bridge``: talk to the robot's microcontroller (or the host simulator) from a terminal.

Examples::

    voxedge bridge --sim --arm --drive 0.2 0.0 --seconds 1     # simulated robot, drive forward for 1 s
    voxedge bridge --link /dev/robot --telemetry --seconds 5   # watch telemetry
    voxedge bridge --link /dev/robot --estop                   # emergency stop (latched)
    voxedge bridge --link /dev/robot --clear-failsafe --arm    # recover explicitly

Actions run in this order: clear failsafe, arm, gripper, drive, disarm, e-stop;
then telemetry is shown. Exit status 0 when everything asked for worked, 2 on a
user error (bad port, refused or failed control, bad value).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

DEFAULT_PORT = "/dev/robot"
DRIVE_MAX_S = 30.0  # hold-to-move: a drive from the command line stops by itself
SETPOINT_PERIOD_S = 0.05  # the 20 Hz stream (firmware_bridge.spec SETPOINT_PERIOD_MS)
PRINT_PERIOD_S = 0.1


def _fmt(t) -> str:
    return (f"state={t.state.name:<8} reason={t.reason.name:<8} x={t.x_m:+.3f} m y={t.y_m:+.3f} m "
            f"theta={t.theta_rad:+.3f} rad wheels={t.wheel_left_m_s:+.2f}/{t.wheel_right_m_s:+.2f} m/s "
            f"battery={t.battery_v:.2f} V gripper={t.gripper.name}")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seconds {text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= DRIVE_MAX_S):
        raise argparse.ArgumentTypeError(f"--seconds {text!r}: use a value in (0, {DRIVE_MAX_S:g}]")
    return value


def _control(name: str, future, timeout_s: float = 2.0):
    from firmware_bridge.errors import BridgeTimeoutError

    try:
        result = future.result(timeout=timeout_s)
    except TimeoutError as exc:
        raise BridgeTimeoutError(f"{name}: no result within {timeout_s:.1f} s; check the link") from exc
    result.raise_for_status()
    print(f"{name}: {result.detail} (attempts={result.attempts})")
    return result


def _run(args: argparse.Namespace, link) -> dict:
    from firmware_bridge.errors import LinkStateError

    info = link.handshake
    print(f"connected to {link.port}: firmware {info.build_id!r}, schema 0x{info.schema_hash:08X} "
          f"({'matches' if info.schema_match else 'DIFFERS from'} host 0x{info.host_schema_hash:08X}), "
          f"capabilities {sorted(c.name for c in info.capabilities)}")
    link.wait_for_telemetry(timeout_s=2.0)
    if args.clear_failsafe:
        _control("clear failsafe", link.clear_failsafe())
    if args.arm:
        _control("arm", link.arm())
    if args.gripper:
        _control(f"gripper {args.gripper}", link.gripper(args.gripper == "open"))
    if args.drive:
        linear, angular = _clamped_drive(*args.drive)
        t = link.wait_for_telemetry(timeout_s=1.0)
        if not t.armed:
            raise LinkStateError(f"cannot drive: the robot is {t.state.name} (reason {t.reason.name}); add --arm "
                                 "(and --clear-failsafe after an e-stop)")
        start = time.monotonic()
        next_print = start
        while (now := time.monotonic()) - start < args.seconds:
            link.send_setpoint(linear, angular)
            if now >= next_print and link.telemetry is not None:
                print(f"t={now - start:5.2f} s {_fmt(link.telemetry)}")
                next_print += PRINT_PERIOD_S
            time.sleep(SETPOINT_PERIOD_S)
        for _ in range(6):  # zeros for 0.3 s: a clean stop rather than a watchdog trip
            link.send_setpoint(0.0, 0.0)
            time.sleep(SETPOINT_PERIOD_S)
    if args.disarm:
        _control("disarm", link.disarm())
    if args.estop:
        _control("e-stop", link.estop(), timeout_s=5.0)
    if args.telemetry:
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            t = link.wait_for_telemetry(timeout_s=2.0)
            print(f"t={time.monotonic() - start:5.2f} s {_fmt(t)}")
            time.sleep(PRINT_PERIOD_S)
    final = link.wait_for_telemetry(timeout_s=2.0)
    stats = link.stats
    print(f"final: {_fmt(final)}")
    rtt = f"{stats.rtt_p50_s * 1000:.2f} ms" if stats.rtt_p50_s is not None else "n/a"
    print(f"link: frames sent={stats.frames_sent} received={stats.frames_received} crc_errors={stats.crc_errors} "
          f"retries={stats.retries} failed_controls={stats.controls_failed} reconnects={stats.reconnects} lockouts={stats.lockouts} "
          f"rtt_p50={rtt} watchdog_trips={stats.watchdog_trips}")
    return {"state": final.state.name, "reason": final.reason.name, "x_m": final.x_m, "y_m": final.y_m,
            "theta_rad": final.theta_rad, "battery_v": final.battery_v, "gripper": final.gripper.name,
            "build_id": info.build_id, "schema_match": info.schema_match, "stats": stats.as_dict()}


def _clamped_drive(linear_m_s: float, angular_rad_s: float) -> tuple[float, float]:
    """``--drive`` within the hard limits the link and the firmware apply anyway, saying so when it is not."""
    from firmware_bridge.spec import CONST

    limits = (float(CONST["MAX_LINEAR_M_S"]), float(CONST["MAX_ANGULAR_RAD_S"]))
    out = []
    for value, limit, unit in zip((linear_m_s, angular_rad_s), limits, ("m/s", "rad/s")):
        clamped = min(max(value, -limit), limit)
        if clamped != value:
            print(f"note: --drive {value:g} {unit} is beyond the hard limit of {limit:g} {unit}; driving at "
                  f"{clamped:g} {unit}")
        out.append(clamped)
    return out[0], out[1]


def _cmd_bridge(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError, InvalidValueError

    try:
        from firmware_bridge.link import BAUD_RATE, Link
    except ImportError as exc:
        raise BridgeError(f"{exc}: the bridge needs pyserial and cobs: pip install 'voxedge[bridge]'") from exc

    if args.drive is not None and not all(math.isfinite(v) for v in args.drive):
        raise InvalidValueError(f"--drive {args.drive[0]!r} {args.drive[1]!r}: give finite speeds (m/s, rad/s)")
    sim = None
    port = args.port
    try:
        if args.sim:
            from firmware_bridge.simulator import McuSimulator

            sim = McuSimulator().start()
            port = sim.port
            print(f"simulator: pid {sim.pid}, port {port} -> {sim.slave_path}")
        with Link(port, baudrate=args.baud or BAUD_RATE) as link:
            summary = _run(args, link)
    finally:
        if sim is not None:
            sim.stop()
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    return 0


def _plain_doc() -> str:
    """The module docstring for --help: its examples and notes without reST markup (``x``, ``Examples::``)."""
    text = __doc__.split("\n", 1)[1].strip()
    return text.replace("``", "").replace("Examples::", "Examples:")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``bridge`` on the ``voxedge`` parser."""
    p = sub.add_parser("bridge", help="connect to the robot's microcontroller (or --sim): telemetry, arm, drive, e-stop",
                       description=_plain_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--link", dest="port", default=DEFAULT_PORT,
                       help="the robot's serial port (default: %(default)s, the udev rule's symlink; or "
                            "/dev/serial/by-id/...)")
    where.add_argument("--sim", action="store_true", help="start the host-built firmware simulator and use it")
    from edge.cli_args import add_deprecated

    add_deprecated(where, "--port", "--link", dest="port")
    p.add_argument("--baud", type=int, help="baud rate (default: the protocol's, 115200)")
    p.add_argument("--clear-failsafe", action="store_true", help="leave FAILSAFE/ESTOP for DISARMED")
    p.add_argument("--arm", action="store_true", help="arm (needed before --drive)")
    p.add_argument("--gripper", choices=("open", "close"), help="open or close the gripper")
    p.add_argument("--drive", nargs=2, type=float, metavar=("LINEAR_M_S", "ANGULAR_RAD_S"),
                   help="stream this setpoint at 20 Hz for --seconds, then stop")
    p.add_argument("--disarm", action="store_true", help="disarm (after the other actions)")
    p.add_argument("--estop", action="store_true", help="emergency stop (latched until --clear-failsafe)")
    p.add_argument("--telemetry", action="store_true", help="print telemetry for --seconds")
    p.add_argument("--seconds", type=_positive_seconds, default=1.0,
                   help=f"how long to drive / show telemetry (default: %(default)s, at most {DRIVE_MAX_S:g})")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=_cmd_bridge)
