"""``voxedge serve``: the runtime and the HTTP service together, on a robot or on the simulated robot."""

from __future__ import annotations

import argparse
import signal
import sys


def sim_setup(seed: int = 0, noise_dbfs: float = -50.0, voice: str = "en-us+m3", fps: float = 15.0):
    """The simulated robot: (SimRobot, camera, microphone); a seeded arena with objects in view."""
    import numpy as np

    from edge.runtime import SimRobot
    from edge.sensors import make_camera, make_microphone
    from sim.camera import Appearance
    from sim.world import sample_view

    arena, pose = sample_view(np.random.default_rng(seed), n_in_view=(3, 4), n_elsewhere=(1, 3))
    robot = SimRobot(arena, pose)
    # A little sensor noise, as a real camera has (and as the model was trained with): a robot standing
    # still still sees fresh frames, so the frozen-camera check stays meaningful.
    camera = make_camera("sim", pose_fn=robot.pose, arena=arena, fps=fps, appearance=Appearance(noise_sigma=2.0),
                         seed=seed)
    microphone = make_microphone("sim", noise="pink", noise_dbfs=noise_dbfs, voice=voice, seed=seed)
    return robot, camera, microphone


def _camera_config(args) -> dict:
    spec = args.camera
    source: int | str = int(spec) if spec.isdigit() else spec
    cfg = {"type": "opencv", "source": source}
    if args.camera_size:
        w, _, h = args.camera_size.partition("x")
        cfg.update(width=int(w), height=int(h))
    if args.camera_fps:
        cfg["fps"] = args.camera_fps
    return cfg


def _cmd_serve(args: argparse.Namespace) -> int:
    from edge.runtime import Runtime, RuntimeConfig
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server, banner

    service = ServiceConfig.from_env(host=args.host, port=args.port, allowed_hosts=tuple(args.allowed_host or ()))
    config = RuntimeConfig(bundle=args.bundle, precision=args.precision, backend=args.backend,
                           link_port=None if args.sim else args.robot, audit_log=args.audit_log)
    robot = link = camera = microphone = None
    if args.sim:
        robot, camera, microphone = sim_setup(args.seed)
        link = robot.start()
    else:
        if not args.robot:
            print("voxedge serve: error: give the robot's serial port (--robot /dev/robot) or use --sim",
                  file=sys.stderr)
            return 2
        config.camera = _camera_config(args)
        config.microphone = {"type": "pyaudio", "device": args.mic}
    runtime = Runtime(config, link=link, camera=camera, microphone=microphone)
    try:
        runtime.start()
        server = Server(create_app(runtime, service), service)
        print(banner(service, server.url), flush=True)
        if args.sim:
            print("simulated robot: type a command into the panel's say box, e.g. \"go to the red ball\"", flush=True)

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
        runtime.stop()
        if robot is not None:
            robot.stop()
    print("voxedge serve: stopped", flush=True)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``serve`` on the ``voxedge`` parser."""
    p = sub.add_parser("serve", help="run the robot: camera + microphone -> model -> motion, with the panel and API")
    p.add_argument("bundle", help="bundle directory (voxedge convert)")
    p.add_argument("--sim", action="store_true", help="the simulated robot: firmware simulator, sim camera and mic")
    p.add_argument("--seed", type=int, default=0, help="arena of the simulated robot (default: %(default)s)")
    p.add_argument("--robot", help="serial port of the robot's microcontroller, e.g. /dev/robot")
    p.add_argument("--camera", default="0", help="V4L2 index or path, video file, URL or GStreamer pipeline")
    p.add_argument("--camera-size", help="WIDTHxHEIGHT to request, e.g. 640x480")
    p.add_argument("--camera-fps", type=float, help="frame rate to request")
    p.add_argument("--mic", help="microphone by name (substring) or index (voxedge devices lists them)")
    p.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"))
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--allowed-host", action="append", help="extra Host name the panel may be reached by")
    p.add_argument("--audit-log", help="directory for the audit log of decisions (a sample set)")
    p.set_defaults(func=_cmd_serve)
