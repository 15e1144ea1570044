"""``voxedge doctor``: check a robot before first use and say what to fix.

Checks, each OK / WARN / FAIL with a reason and a remedy:
the CPU's int8 arithmetic and the model file serve would run; camera opens and delivers frames; the microphone delivers audio at a rate we
can resample; the serial link handshakes with matching firmware; the bundle
loads and its engine (TensorRT) matches this device; disk space; the clock.
Settings come from the same layers as ``voxedge serve``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edge.precision import CHOICES as PRECISION_CHOICES
from edge.settings import ServeSettings

MIN_FREE_BYTES = 2 * 1024**3  # engines, timing cache and the audit log need room
CAMERA_WAIT_S = 5.0
MIC_LISTEN_S = 1.5
ROS2_WAIT_S = 2.0  # DDS discovery of the base's /cmd_vel reader and its first /odom
BUILD_YEAR = 2026  # a clock before this is certainly wrong (no RTC battery, no NTP yet)


@dataclass
class Check:
    name: str
    status: str  # OK, WARN, FAIL, SKIP
    detail: str


def check_camera(settings: ServeSettings) -> Check:
    from edge.sensors import make_camera

    if settings.camera.source.sim:
        return Check("camera", "SKIP", "sim camera (no device to check)")
    spec = settings.camera.spec()
    try:
        with make_camera(spec.type, first_frame_timeout_s=CAMERA_WAIT_S, **spec.options) as cam:
            time.sleep(1.0)
            st = cam.stats()
            frame = cam.read()
    except Exception as exc:
        return Check("camera", "FAIL", f"{exc}. List cameras with `voxedge devices`; check the cable and that no "
                                       "other program holds the device")
    mode = st.mode
    detail = f"{frame.image.shape[1]}x{frame.image.shape[0]} at {st.fps:.1f} fps"
    if mode is not None and mode.fourcc:
        detail += f", {mode.fourcc}"
    if st.frozen:
        return Check("camera", "WARN", detail + "; the picture does not change (lens cap? frozen driver?)")
    if st.fps < 10:
        return Check("camera", "WARN", detail + "; below 10 fps: request MJPG and a lower size "
                                                "(--camera-size 640x480), or check USB bandwidth")
    return Check("camera", "OK", detail)


def check_microphone(settings: ServeSettings) -> Check:
    from edge.sensors import make_microphone

    if settings.microphone.source.sim:
        return Check("microphone", "SKIP", "sim microphone (no device to check)")
    spec = settings.microphone.spec()
    try:
        with make_microphone(spec.type, **spec.options) as mic:
            time.sleep(MIC_LISTEN_S)
            st = mic.stats()
    except Exception as exc:
        return Check("microphone", "FAIL", f"{exc}. List inputs with `voxedge devices`; on a Jetson check "
                                           "`arecord -l` and that the user is in the audio group")
    detail = f"{st.device_rate_hz} Hz resampled to 16 kHz, {st.blocks} blocks, level {st.level_dbfs:.0f} dBFS"
    if st.blocks == 0 or st.samples == 0:
        return Check("microphone", "FAIL", detail + "; no audio arrived: the device opened but delivers nothing")
    if st.input_overflows:
        return Check("microphone", "WARN", detail + f"; {st.input_overflows} input overflows (CPU busy?)")
    if st.level_dbfs < -80:
        return Check("microphone", "WARN", detail + "; silent: unmuted? (alsamixer) right input selected?")
    return Check("microphone", "OK", detail)


def check_link(settings: ServeSettings) -> Check:
    from firmware_bridge.link import Link

    port = settings.link.port
    if settings.link.source is None:
        return Check("robot link", "FAIL", "no serial port given: --link /dev/robot (see firmware_bridge/deploy "
                                           "for the udev rule that makes /dev/robot)")
    if settings.link.source.scheme == "ros2":
        return check_ros2_link(settings)
    sim = None
    try:
        if settings.link.sim:
            from firmware_bridge.simulator import McuSimulator

            sim = McuSimulator().start()
            port = sim.port
        with Link(port) as link:
            hs = link.handshake
            tel = link.wait_for_telemetry(timeout_s=2.0)
    except Exception as exc:
        return Check("robot link", "FAIL", f"{exc}")
    finally:
        if sim is not None:
            sim.stop()
    detail = (f"firmware {hs.build_id}, handshake {1e3 * hs.rtt_s:.1f} ms, battery {tel.battery_v:.1f} V, "
              f"state {tel.state.name}")
    if not hs.schema_match:
        return Check("robot link", "FAIL", detail + "; protocol schema differs: flash firmware built from this "
                                                    "checkout (arming is refused until then)")
    return Check("robot link", "OK", detail)


def check_ros2_link(settings: ServeSettings) -> Check:
    """A ROS 2 base: is something on the DDS domain reading /cmd_vel, and does /odom arrive?"""
    from edge.ros2.link import Ros2Link
    from edge.sources import ros2_domain

    try:
        with Ros2Link(ros2_domain(settings.link.source)) as link:
            deadline = time.monotonic() + ROS2_WAIT_S
            while time.monotonic() < deadline and not (link.is_connected and link.telemetry is not None):
                time.sleep(0.1)
            readers, odom = link.is_connected, link.telemetry
    except Exception as exc:
        return Check("robot link", "FAIL", f"{exc}")
    if not readers:
        return Check("robot link", "FAIL", f"nothing on the DDS domain reads /cmd_vel (waited {ROS2_WAIT_S:g} s): "
                                           "start the base's driver, and check ROS_DOMAIN_ID and the network")
    if odom is None:
        return Check("robot link", "WARN", "the base reads /cmd_vel but publishes no /odom: go_to runs on the "
                                           "camera alone and the panel shows no position")
    return Check("robot link", "OK", f"ROS 2: /cmd_vel is read, /odom at x={odom.x_m:.2f} y={odom.y_m:.2f} m")


def check_bundle(settings: ServeSettings) -> Check:
    from edge.bundle import load_bundle

    if not settings.bundle:
        return Check("bundle", "FAIL", "no bundle given: voxedge doctor BUNDLE (or \"bundle\" in --config, or "
                                       "VOXEDGE_BUNDLE)")
    try:
        bundle = load_bundle(settings.bundle)
    except Exception as exc:
        return Check("bundle", "FAIL", f"{exc}")
    if settings.backend != "tensorrt":
        return check_models_run(bundle, settings.precision)
    from edge.engine import device_key, find_engine
    from edge.precision import AUTO, bundle_precisions

    auto = settings.precision == AUTO
    found, problems = [], []
    for precision in bundle_precisions(bundle.manifest) if auto else [settings.precision]:
        try:
            found.append(find_engine(bundle, device_key(bundle, precision)).name)
        except Exception as exc:
            problems.append(f"{exc}")
    if not found:
        return Check("bundle", "FAIL", "; ".join(problems))
    if auto:
        return Check("bundle", "OK", f"engines matching this device: {', '.join(found)} (serve times them at "
                                     "start and runs the fastest)")
    return Check("bundle", "OK", f"engine {found[0]} matches this device")


def check_models_run(bundle, precision: str) -> Check:
    """Load each model serve may run (ONNX Runtime) and run it on the bundle's golden inputs: a file that is
    present and hashes right but does not load, or computes something else, fails here, not at serve."""
    import numpy as np

    from edge.engine import GOLDEN_TOLERANCE, compare_golden, load_golden
    from edge.precision import AUTO, bundle_precisions
    from edge.runners import make_runner

    try:
        inputs, expected = load_golden(bundle)
    except Exception as exc:
        return Check("bundle", "FAIL", str(exc))
    results, failed = [], []
    for p in bundle_precisions(bundle.manifest) if precision == AUTO else [precision]:
        runner = None
        try:
            runner = make_runner("onnxruntime", bundle, p, intra_op_threads=1)
            runner.activate()
            n = next(iter(inputs.values())).shape[0]
            got: dict = {}
            for i in range(n):  # one sample at a time: the runner's own batch limits do not matter here
                out = runner.infer({k: v[i:i + 1] for k, v in inputs.items()})
                for name, value in out.items():
                    got.setdefault(name, []).append(value)
            got = {k: np.concatenate(v) for k, v in got.items()}
            rows = compare_golden(got, expected, GOLDEN_TOLERANCE[runner.precision])
            bad = [r for r in rows if not r.passed]
            if bad:
                differ = ", ".join(f"{r.name} max abs {r.max_abs:.3g} > {r.limit:.3g}" for r in bad)
                failed.append(f"{p}: golden outputs differ ({differ})")
            else:
                results.append(f"{p} ({runner.model_path.name}, {n} golden samples)")
        except Exception as exc:
            failed.append(f"{p}: {str(exc).splitlines()[0]}")
        finally:
            if runner is not None:
                runner.deactivate()
    if failed:
        return Check("bundle", "FAIL", "; ".join(failed) + ". Convert the model again, or copy the bundle again")
    return Check("bundle", "OK", f"{bundle.path.name}: golden check passed for {', '.join(results)}")


def check_cpu(settings: ServeSettings) -> Check:
    """The CPU's int8 arithmetic and the model file ``serve`` would run (``edge.int8_numerics``)."""
    from edge.int8_numerics import ONNXRUNTIME_CPU, choose_model, cpu_int8

    cpu = cpu_int8()
    detail = cpu.describe()
    if settings.backend == "tensorrt" or not settings.bundle:
        return Check("cpu", "OK", detail)
    from edge.bundle import load_bundle
    from edge.precision import AUTO, bundle_precisions

    try:
        manifest = load_bundle(settings.bundle, verify=False).manifest
        if settings.precision == AUTO:
            notes = [choose_model(manifest, p, ONNXRUNTIME_CPU, cpu).note for p in bundle_precisions(manifest)]
            return Check("cpu", "OK", f"{detail}; serve times these at start and runs the fastest: "
                                      f"{'; '.join(notes)}")
        choice = choose_model(manifest, settings.precision, ONNXRUNTIME_CPU, cpu)
    except Exception as exc:  # the bundle check says what is wrong with it
        return Check("cpu", "OK", f"{detail}; no model chosen ({exc})")
    if choice.precision != settings.precision:
        return Check("cpu", "WARN", f"{detail}; serve runs {choice.note}")
    return Check("cpu", "OK", f"{detail}; serve runs {choice.note}")


def check_disk(settings: ServeSettings) -> Check:
    where = Path(settings.audit_log or settings.bundle or ".")
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    detail = f"{free / 1024**3:.1f} GB free at {where}"
    if free < MIN_FREE_BYTES:
        return Check("disk", "WARN", detail + f"; keep at least {MIN_FREE_BYTES / 1024**3:.0f} GB for engines and "
                                              "the audit log")
    return Check("disk", "OK", detail)


def check_clock(settings: ServeSettings) -> Check:
    year = time.gmtime().tm_year
    if year < BUILD_YEAR:
        return Check("clock", "WARN", f"the system clock says {year}: set the time (timedatectl set-ntp true); "
                                      "logs and certificates need it")
    t0 = time.monotonic()
    time.sleep(0.05)
    if not 0.04 <= time.monotonic() - t0 <= 0.5:
        return Check("clock", "FAIL", "the monotonic clock does not advance as expected")
    return Check("clock", "OK", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


CHECKS = (check_bundle, check_cpu, check_camera, check_microphone, check_link, check_disk, check_clock)


def run(settings: ServeSettings, log=print) -> list[Check]:
    from edge.sensors.cli import quiet_stderr

    results = []
    for check in CHECKS:
        try:
            with quiet_stderr():  # ALSA, JACK and GStreamer print pages of probing noise on fd 2
                result = check(settings)
        except Exception as exc:  # a check that crashes is a failed check, reported like the others
            log_error = logging.getLogger("voxedge.doctor")
            log_error.debug("check %s crashed", check.__name__, exc_info=True)
            result = Check(check.__name__.removeprefix("check_"), "FAIL", str(exc) or type(exc).__name__)
        results.append(result)
        log(f"{result.status:<5} {result.name:<11} {result.detail}")
    return results


def _cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from edge.settings import load

    settings = load({"bundle": args.bundle, "camera": args.camera, "mic": args.mic, "link": args.link,
                     "backend": args.backend, "precision": args.precision}, args.config)
    results = run(settings, log=(lambda *_: None) if args.json else print)
    failed = [r for r in results if r.status == "FAIL"]
    warned = [r for r in results if r.status == "WARN"]
    summary = (f"{len(failed)} problem(s) to fix" if failed else "ready") + \
        (f", {len(warned)} warning(s)" if warned else "")
    if args.json:
        print(json.dumps({"ready": not failed, "summary": summary,
                          "checks": [{"name": r.name, "status": r.status, "detail": r.detail} for r in results]},
                         indent=2))
    else:
        print(f"\n{summary}")
    return 1 if failed else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the camera, microphone, robot link, engine, disk and clock")
    p.add_argument("bundle", nargs="?", help="bundle directory")
    p.add_argument("--config", help="the same JSON settings file as voxedge serve")
    p.add_argument("--camera", help="camera to check, as voxedge serve --camera (csi://0, v4l2:///dev/video0, file://..., sim://)")
    p.add_argument("--mic", help="microphone to check, as voxedge serve --mic (alsa://hw:1, a name part, index, wav://..., sim://)")
    p.add_argument("--link", dest="link", help="robot serial port to handshake with, or 'sim'")
    p.add_argument("--backend", metavar="BACKEND",
                   help="as voxedge serve: onnxruntime, tensorrt or kserve://HOST:PORT/MODEL (default: onnxruntime)")
    from edge.cli_args import add_deprecated

    add_deprecated(p, "--robot", "--link", dest="link")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="as voxedge serve (default: auto)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (one object) instead of lines")
    p.set_defaults(func=_cmd_doctor)
