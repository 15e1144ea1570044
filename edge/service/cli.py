"""``voxedge serve``: the runtime and the HTTP service together, on a robot or on the simulated robot."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass
from pathlib import Path

from edge.precision import CHOICES as PRECISION_CHOICES
from edge.service.config import ServiceConfigError

# The simulated robot, made by name (``module:function``) so that edge never imports simrobot or sim.
SIM_ROBOT_SETUP = "simrobot.robot:sim_setup"


def _sim_robot(seed: int):
    """(robot, camera, microphone) of the simulated robot (``simrobot.robot.sim_setup``)."""
    import importlib

    module_name, _, function = SIM_ROBOT_SETUP.partition(":")
    return getattr(importlib.import_module(module_name), function)(seed)


def runtime_summary(runtime) -> str:
    """Which model runs, and on what: the CPU's int8 arithmetic (``edge.int8_numerics``) for ONNX Runtime."""
    runner = runtime.runner
    lines = []
    if runner.backend == "onnxruntime":
        from edge.int8_numerics import cpu_int8

        lines.append(f"cpu: {cpu_int8().describe()}")
    lines.append(f"model ({runner.backend}): {getattr(runner, 'model_note', runner.precision)}")
    return "\n".join(lines)


def decision_line(decision) -> str | None:
    """One line for the terminal (and the journal) per heard utterance; None for tracking updates."""
    if decision.kind != "utterance":
        return None
    verdict = "acting" if decision.accepted else "not acting"
    if not decision.accepted and decision.intent == "none":
        best = max(decision.probabilities.items(), key=lambda kv: kv[1])
        verdict = "no command" if best[0] == "none" else f"not sure enough ({best[0]!r} {100 * best[1]:.0f} %)"
    parts = [f"heard {decision.intent!r} ({100 * decision.confidence:.0f} %): {verdict}"]
    if decision.accepted and decision.target_xy is not None and decision.presence is not None:
        x, y = decision.target_xy
        parts.append(f"target x={x:.2f} y={y:.2f}, in view {100 * decision.presence:.0f} %")
    latency = decision.latency_ms.get("speech_end_to_decision")
    if latency is not None:
        parts.append(f"{latency:.0f} ms after the end of speech")
    return "; ".join(parts)


def print_decision(decision) -> None:
    line = decision_line(decision)
    if line is not None:
        print(line, flush=True)


def _settings(args: argparse.Namespace):
    """``voxedge serve``'s typed settings (``edge.settings``) from its flags, ``--config`` and the environment, and
    the runtime's configuration from them; refused (``SettingsError``, ``ServiceConfigError``) before anything opens."""
    from edge import settings as settings_module

    flags = {"bundle": args.bundle, "camera": args.camera, "camera_size": args.camera_size,
             "camera_fps": args.camera_fps, "mic": args.mic, "link": args.link, "precision": args.precision,
             "backend": args.backend, "host": args.host, "port": args.port, "estop_port": args.estop_port,
             "grpc_port": args.grpc_port,
             "read_auth": args.read_auth, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
             "allowed_hosts": tuple(args.allowed_host or ()), "audit_log": args.audit_log,
             "audit_reserve_mb": args.audit_reserve_mb, "seed": args.seed}
    flags.update({"remote_timeout_s": args.remote_timeout_s, "remote_fallback": args.remote_fallback})
    flags.update({"record_mcap": args.record_mcap, "ros2": args.ros2})
    if args.sim:  # the parts not named on the command line (so --sim --mic my.wav hears a recording)
        flags.update({k: "sim" for k in ("camera", "mic", "link") if flags[k] is None})
    s = settings_module.load(flags, args.config)
    config = s.runtime_config()
    if s.record_mcap:  # refused before anything starts, as record-mcap does: another file there is left alone
        from edge.mcap_record import McapRecordError, check_out, mcap_writer

        try:
            check_out(Path(s.record_mcap), force_hint=", or remove it first")
            mcap_writer()
        except McapRecordError as exc:
            raise settings_module.SettingsError(f"record_mcap: {exc}") from None
    if s.link.source is None:
        raise ServiceConfigError("give the robot's serial port (--link /dev/robot) or --link sim")
    if s.camera.source.sim and not s.link.sim:
        raise ServiceConfigError("the sim camera renders from the simulated robot's pose: use --link sim too "
                                 "(or --sim for camera, microphone and robot)")
    return s, config


def _service_config(s):
    """The service's settings, with the operator token kept in a 0600 file across restarts (never logged)."""
    import dataclasses

    service = s.service
    if service.token_generated:
        from edge.service.token_store import load_or_create

        token, path, _ = load_or_create()
        service = dataclasses.replace(service, token=token, token_file=str(path), token_generated=False)
    return service


@dataclass
class _Robot:
    """What ``serve`` opens for the robot besides the runtime's own: the simulated robot's parts and ROS 2."""

    sim: object = None  # simrobot's robot, when the link is the simulated one
    link: object = None  # None: the runtime opens the serial port itself
    camera: object = None
    microphone: object = None
    ros2: object = None  # edge.ros2.link.Ros2Link: the link itself (--link ros2) or the mirror's (--ros2)
    ros2_camera: object = None

    def close(self) -> None:
        if self.sim is not None:
            self.sim.stop()
        if self.ros2_camera is not None:
            self.ros2_camera.stop()
        if self.ros2 is not None:
            self.ros2.disconnect()


def _open_robot(s) -> _Robot:
    """The simulated robot's parts the settings name, and the ROS 2 link (``--link ros2``) or mirror (``--ros2``)."""
    parts = _Robot()
    if s.link.sim or s.camera.source.sim or s.microphone.source.sim:
        robot, sim_camera, sim_microphone = _sim_robot(s.seed)
        if s.link.sim:
            parts.sim, parts.link = robot, robot.start()
        parts.camera = sim_camera if s.camera.source.sim else None
        parts.microphone = sim_microphone if s.microphone.source.sim else None
    ros2 = s.link.source if s.link.source.scheme == "ros2" else s.ros2
    if ros2 is None:
        return parts
    from edge.ros2.link import Ros2Link
    from edge.sources import ros2_domain

    try:
        parts.ros2 = Ros2Link(ros2_domain(ros2)).connect()
        if s.link.source.scheme == "ros2":  # a ROS 2 base on /cmd_vel over DDS (edge.ros2; README, ROS 2)
            parts.link = parts.ros2
        else:  # the robot's own link drives; its motion is published as well (edge.ros2.mirror)
            from edge.ros2.mirror import MirroredLink

            if parts.link is None:  # a serial port: opened here, so that the mirror wraps it
                from firmware_bridge.link import Link

                parts.link = Link(s.link.port)
            parts.link = MirroredLink(parts.link, parts.ros2)
    except BaseException:
        parts.close()
        raise
    return parts


def _start_ros2(parts: _Robot, runtime) -> None:
    """Publish the heard commands and the camera on ROS 2, and say where."""
    from edge.ros2.camera import CameraPublisher

    link = parts.ros2
    runtime.add_decision_listener(link.publish_command)
    parts.ros2_camera = CameraPublisher(link, runtime.camera.buffer).start()
    if parts.link is link:
        drives = f"Twist on {link.topics['cmd_vel']} (zeros until armed), {link.topics['odom']} read"
    else:
        drives = f"the robot's setpoints also on {link.topics['cmd_vel']} (zeros unless the robot is armed)"
    print(f"ROS 2 link: {drives}, commands on {link.topics['command']}, camera on {parts.ros2_camera.topic}, "
          f"DDS domain {link.domain_id}", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    from edge import gc_pause
    from edge.runtime import Runtime
    from edge.service import create_app
    from edge.service.server import Server, banner

    s, config = _settings(args)
    service = _service_config(s)
    parts = _open_robot(s)
    runtime = recorder = None
    try:
        runtime = Runtime(config, link=parts.link, camera=parts.camera, microphone=parts.microphone)
        runtime.start()
        if s.record_mcap:  # edge.mcap_live: its own thread, bounded queues; the file appears at stop
            from edge.mcap_live import LiveRecorder

            recorder = LiveRecorder(s.record_mcap, runtime).start()
            print(f"recording the session to {s.record_mcap} (MCAP, ROS 2 messages; written when serve stops)",
                  flush=True)
        server = Server(create_app(runtime, service), service)
        gc_pause.settle()  # the app and server join what the runtime froze at start (edge.gc_pause)
        print(banner(service, server.url, server.estop_url, server.grpc_address), flush=True)
        print(runtime_summary(runtime), flush=True)
        if parts.microphone is not None:
            print("simulated microphone: type a command into the panel's say box, e.g. \"go to the red ball\"",
                  flush=True)
        runtime.add_decision_listener(print_decision)
        if parts.ros2 is not None:
            _start_ros2(parts, runtime)

        def on_term(*_):  # SIGTERM (systemd, docker stop) ends the loop like Ctrl-C does
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    finally:
        if recorder is not None:
            _stop_recorder(recorder)
        if runtime is not None:
            runtime.stop()
        parts.close()
    print("voxedge serve: stopped", flush=True)
    return 0


def _stop_recorder(recorder) -> None:
    """Finish ``serve --record-mcap``'s file and say what it holds; a failure is said, never raised (the runtime
    must still stop)."""
    import sys

    try:
        stats = recorder.stop()
    except Exception as exc:
        print(f"voxedge serve: the MCAP recording failed: {exc}", file=sys.stderr, flush=True)
        return
    if stats.error:
        print(f"voxedge serve: the MCAP recording {stats.path} failed: {stats.error}", file=sys.stderr, flush=True)
        return
    topics = ", ".join(f"{topic} {n}" for topic, n in sorted(stats.messages.items()))
    lost = f"; {stats.dropped} decision(s) dropped" if stats.dropped else ""
    lost += f"; {stats.audio_lost} audio sample(s) lost" if stats.audio_lost else ""
    print(f"wrote {stats.path}: {topics}{lost}", flush=True)


def _cmd_token(args: argparse.Namespace) -> int:
    from edge.service.token_store import load_or_create, token_path

    if not args.rotate and not token_path().is_file():
        raise ServiceConfigError(f"no operator token kept in {token_path()} yet: `voxedge serve` creates it on its "
                                 "first start, or run `voxedge token --rotate` to make one now")
    token, path, created = load_or_create(rotate=args.rotate)
    print(token)
    if args.rotate:
        import sys

        print(f"a new operator token is kept in {path}; restart voxedge serve to use it", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``serve`` and ``token`` on the ``voxedge`` parser."""
    t = sub.add_parser("token", help="print the operator token voxedge serve keeps (or make a new one)",
                       description="The token is kept in the state directory with mode 0600 (VOXEDGE_STATE_DIR, "
                                   "systemd's StateDirectory, or ~/.local/state/voxedge); serve never writes it to a "
                                   "log. A token given in VOXEDGE_TOKEN or the config file takes precedence.")
    t.add_argument("--rotate", action="store_true", help="replace it with a new random token")
    t.set_defaults(func=_cmd_token)
    p = sub.add_parser("serve", help="run the robot: camera + microphone -> model -> motion, with the panel and API",
                       description="Settings come from defaults, then --config FILE (JSON), then VOXEDGE_* "
                                   "environment variables (e.g. VOXEDGE_TOKEN, VOXEDGE_LINK), then these flags.")
    p.add_argument("bundle", nargs="?", help="bundle directory (voxedge convert)")
    p.add_argument("--config", help="JSON file of settings (keys as the flags, with underscores)")
    p.add_argument("--sim", action="store_true", help="shorthand for --camera sim --mic sim --link sim, for those not given "
                   "(--sim --mic command.wav: the simulated robot hears your recording)")
    p.add_argument("--seed", type=int, help="arena of the simulated robot")
    p.add_argument("--link", dest="link", help="robot serial port: serial:///dev/robot (or /dev/robot), sim://, or "
                   "ros2:// (ros2://?domain=N): a ROS 2 base, Twist on /cmd_vel (needs voxedge[ros2])")
    p.add_argument("--ros2", nargs="?", const="ros2://", metavar="ros2://?domain=N",
                   help="also publish on ROS 2 beside a serial or sim link: the robot's setpoints as Twist on "
                        "/cmd_vel (zeros unless it is armed), the heard commands and the camera (domain: "
                        "ROS_DOMAIN_ID's or 0 unless named; needs voxedge[ros2]; --link ros2 drives a ROS 2 base "
                        "instead)")
    p.add_argument("--camera", help="csi://0 (Jetson CSI), v4l2:///dev/video0 (or 0, /dev/video0), file://clip.mp4, "
                   "rtsp://..., gst://PIPELINE, or sim:// (default 0)")
    from edge.cli_args import add_deprecated

    add_deprecated(p, "--robot", "--link", dest="link")
    p.add_argument("--camera-size", help="WIDTHxHEIGHT to request, e.g. 640x480")
    p.add_argument("--camera-fps", type=float, help="frame rate to request")
    p.add_argument("--mic", help="alsa://hw:1 or a part of the device's name, its index (voxedge devices), "
                   "wav://command.wav (or a .wav path), or sim:// (default: the system's default input)")
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="model precision; auto (the default) times the bundle's models at start and runs the "
                        "fastest (each passed its accuracy gate)")
    p.add_argument("--backend", metavar="BACKEND",  # checked by edge.settings.load (kserve URLs have no list)
                   help="onnxruntime (any machine), tensorrt (a built engine on an NVIDIA GPU; voxedge "
                        "build-engine), or kserve://HOST:PORT/MODEL (kserve+https://...): run the model on an Open "
                        "Inference Protocol server (Triton, KServe, another voxedge) (default: onnxruntime)")
    p.add_argument("--remote-timeout-s", type=float, metavar="S",
                   help="with a kserve backend: each request's timeout; one that fails holds the robot still "
                        "(default 0.3)")
    p.add_argument("--remote-fallback", choices=("fp32", "fp16", "int8"),
                   help="with a kserve backend: run the bundle's model of this precision here while the server "
                        "fails, instead of holding the robot still")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--read-auth", choices=("auto", "on", "off"),
                   help="whether viewing the robot (live view, audio, state, events, /predict, /metrics) needs the "
                        "operator token; auto (default): on when --host is not loopback")
    p.add_argument("--estop-port", type=int, metavar="PORT",
                   help="port of the e-stop listener, which busy or hostile HTTP clients cannot block "
                        "(default: the HTTP port + 1; 0: any free port)")
    p.add_argument("--grpc-port", type=int, metavar="PORT",
                   help="also serve the KServe v2 / Triton gRPC API (GRPCInferenceService) on this port, with "
                        "the same token rules and TLS (default: off; 0: any free port; needs tritonclient[grpc])")
    p.add_argument("--tls-cert", metavar="PEM",
                   help="serve https with this certificate (chain) on the HTTP and e-stop ports; needs --tls-key")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (keep it mode 0600)")
    p.add_argument("--allowed-host", action="append", help="extra Host name the panel may be reached by")
    p.add_argument("--audit-log", help="directory for the audit log of decisions (a sample set)")
    p.add_argument("--record-mcap", metavar="OUT.mcap",
                   help="record the session live to one MCAP file of ROS 2 messages (camera at 5 fps, all audio, "
                        "decisions, attention maps, setpoints, telemetry) for Foxglove and ros2 bag; written beside "
                        "itself and renamed into place when serve stops (needs: pip install mcap mcap-ros2-support)")
    p.add_argument("--audit-reserve-mb", type=float, metavar="MB",
                   help="the audit log stops recording, with an alert, when its disk has less free space than this "
                        "(default 100)")
    p.set_defaults(func=_cmd_serve)
