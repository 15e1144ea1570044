"""Settings of ``voxedge serve`` (and ``voxedge doctor``): defaults < a JSON file < ``VOXEDGE_*`` < flags, typed.

One loader, tested on its own, so every entry point resolves configuration
the same way. ``resolve`` merges the four layers into plain values and keeps
which layer set each one; ``load`` turns them into typed sections (link,
camera, microphone, endpointer, policy, service, runtime), and a value that a
section refuses is reported with the layer it came from.

Flat keys are the flags' names (``"camera": "csi://0"``, ``"port": 8080``).
The endpointer and policy sections, which have no flags, are JSON objects in
the file (``"policy": {"max_linear_m_s": 0.2}``) or variables named
``VOXEDGE_<SECTION>_<FIELD>`` (``VOXEDGE_POLICY_MAX_LINEAR_M_S=0.2``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.sources import ROS2, Source, SourceError, camera_source, link_source, microphone_source

# name -> (default, type); the environment variable is VOXEDGE_<NAME upper>
SERVE_SETTINGS: dict[str, tuple[object, type]] = {
    "bundle": (None, str),
    "camera": ("0", str),  # csi://0, v4l2:///dev/video0, file://clip.mp4, rtsp://..., sim:// (edge.sources)
    "camera_size": (None, str),  # WIDTHxHEIGHT
    "camera_fps": (None, float),
    "mic": (None, str),  # alsa://hw:1, wav://command.wav, sim://, a device name part or index; none: the default
    "link": (None, str),  # serial:///dev/robot (or the path), or sim://
    "precision": ("auto", str),  # fp32, fp16, int8, or auto: the fastest of the bundle's models here
    "backend": ("onnxruntime", str),  # or a remote server: kserve://HOST:PORT/MODEL (edge.runners.kserve)
    "remote_timeout_s": (0.3, float),  # a remote backend's per-request timeout: a request past it holds the robot
    "remote_fallback": (None, str),  # fp32, fp16 or int8: the local model to run while the remote server fails
    "remote_token": (None, str),  # the remote server's bearer token (a voxedge off loopback); file or variable only
    "host": ("127.0.0.1", str),
    "port": (8080, int),
    "estop_port": (-1, int),  # the e-stop listener; -1: the HTTP port + 1
    "grpc_port": (None, int),  # KServe v2 / Triton gRPC (needs tritonclient[grpc]); None: off
    "read_auth": ("auto", str),  # auto: viewing needs the token when bound beyond loopback
    "tls_cert": (None, str),  # PEM certificate (chain): serve https on the HTTP and e-stop ports
    "tls_key": (None, str),  # its PEM private key
    "token": (None, str),
    "allowed_hosts": ((), tuple),
    "audit_log": (None, str),
    "audit_reserve_mb": (100.0, float),  # the audit log stops recording (with an alert) below this much free disk
    "record_mcap": (None, str),  # record the session live to this MCAP file (edge.mcap_live); None: off
    "ros2": (None, str),  # ros2:// or ros2://?domain=N: also publish on ROS 2 beside a serial/sim link (edge.ros2)
    "seed": (0, int),
}
SECTION_NAMES = ("endpointer", "policy")  # sections without flags: nested objects in the file
BACKENDS = ("onnxruntime", "tensorrt")
DEFAULT_LAYER = "the default"


class SettingsError(ValueError):
    """A bad setting; the message names the layer (file, variable or flag) it came from."""


def _section_classes() -> dict[str, type]:
    from edge.listening import EndpointerConfig
    from edge.policy import PolicyConfig

    return {"endpointer": EndpointerConfig, "policy": PolicyConfig}


def _convert(name: str, value, kind: type, where: str):
    if value is None:
        return None
    try:
        if kind is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError("a boolean")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {name}={value!r} is not a valid {kind.__name__} ({exc})") from None


def _read_file(path: Path, spec: dict, sections: tuple[str, ...]) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a JSON object")
    unknown = sorted(set(data) - set(spec) - set(sections))
    if unknown:
        raise SettingsError(f"settings file {path}: unknown settings {unknown}; known are "
                            f"{sorted([*spec, *sections])}")
    for name in sections:
        if name in data and not isinstance(data[name], dict):
            raise SettingsError(f"settings file {path}: {name!r} must be a JSON object of its fields, "
                                f"e.g. {{\"{name}\": {{...}}}}")
    return data


def resolve_layers(flags: dict | None = None, config_file: str | os.PathLike | None = None,
                   environ: dict | None = None, spec: dict = SERVE_SETTINGS,
                   sections: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
    """The effective values and, for each, the layer that set it (for error messages).

    ``None`` in ``flags`` means "not given on the command line". Section values come
    back as ``{"policy": {"field": value}}`` with layers keyed ``"policy.field"``.
    """
    env = os.environ if environ is None else environ
    out: dict = {name: default for name, (default, _) in spec.items()}
    out.update({name: {} for name in sections})
    where = {name: DEFAULT_LAYER for name in spec}
    if config_file is not None:
        path = Path(config_file)
        for name, value in _read_file(path, spec, sections).items():
            if name in sections:
                out[name].update(value)
                where.update({f"{name}.{k}": f"settings file {path}" for k in value})
            else:
                out[name] = _convert(name, value, spec[name][1], f"settings file {path}")
                where[name] = f"settings file {path}"
    for name, (_, kind) in spec.items():
        variable = f"VOXEDGE_{name.upper()}"
        raw = env.get(variable)
        if raw is not None and raw != "":
            out[name] = _convert(name, raw, kind, f"environment variable {variable}")
            where[name] = f"environment variable {variable}"
    for section in sections:
        prefix = f"VOXEDGE_{section.upper()}_"
        for variable, raw in env.items():
            if variable.startswith(prefix) and raw != "":
                key = variable[len(prefix):].lower()
                out[section][key] = raw
                where[f"{section}.{key}"] = f"environment variable {variable}"
    for name, value in (flags or {}).items():
        if name in spec and value is not None and value != ():
            flag = f"flag --{name.replace('_', '-')}"
            out[name] = _convert(name, value, spec[name][1], flag)
            where[name] = flag
    return out, where


def resolve(flags: dict | None = None, config_file: str | os.PathLike | None = None,
            environ: dict | None = None, spec: dict = SERVE_SETTINGS) -> dict:
    """The effective flat settings (no sections); ``None`` in ``flags`` means "not given"."""
    return resolve_layers(flags, config_file, environ, spec)[0]


# -- typed sections -----------------------------------------------------------------------

@dataclass(frozen=True)
class CameraSettings:
    source: Source
    width: int | None = None  # requested capture size; both or neither
    height: int | None = None
    fps: float | None = None

    def spec(self):
        """The ``SensorSpec`` the runtime builds the camera from."""
        from edge.sensors.spec import SensorSpec

        s = self.source
        if s.sim:
            return SensorSpec("sim")
        size = {"width": self.width, "height": self.height} if self.width else {}
        rate = {"fps": self.fps} if self.fps else {}
        if s.scheme == "csi":  # jetson-inference's csi://N: the Argus pipeline at the requested mode
            from edge.sensors.camera_opencv import (
                CSI_DEFAULT_FPS,
                CSI_DEFAULT_HEIGHT_PX,
                CSI_DEFAULT_WIDTH_PX,
                jetson_csi_pipeline,
            )

            pipeline = jetson_csi_pipeline(int(s.location), self.width or CSI_DEFAULT_WIDTH_PX,
                                           self.height or CSI_DEFAULT_HEIGHT_PX, round(self.fps or CSI_DEFAULT_FPS))
            return SensorSpec("opencv", {"source": pipeline, "kind": "gstreamer"})
        if s.scheme == "v4l2":
            return SensorSpec("opencv", {"source": int(s.location) if s.location.isdigit() else s.location,
                                         "kind": "v4l2", **size, **rate})
        kind = {"file": "file", "gst": "gstreamer"}.get(s.scheme, "url")
        return SensorSpec("opencv", {"source": s.location, "kind": kind, **size, **rate})


@dataclass(frozen=True)
class MicrophoneSettings:
    source: Source

    def spec(self):
        """The ``SensorSpec`` the runtime builds the microphone from."""
        from edge.sensors.spec import SensorSpec

        s = self.source
        if s.sim:
            return SensorSpec("sim")
        if s.scheme == "wav":
            return SensorSpec("wav", {"path": s.location, "loop": True})  # a recording, played in a loop
        if not s.location:
            return SensorSpec("pyaudio")
        return SensorSpec("pyaudio", {"device": int(s.location) if s.location.isdigit() else s.location})


@dataclass(frozen=True)
class LinkSettings:
    source: Source | None  # None: not given

    @property
    def sim(self) -> bool:
        return self.source is not None and self.source.sim

    @property
    def port(self) -> str | None:
        """The serial device (None for the simulated robot, a ROS 2 base, or when not given)."""
        return self.source.location if self.source is not None and self.source.scheme == "serial" else None


@dataclass(frozen=True)
class ServeSettings:
    """Every setting of ``voxedge serve``, typed, with the layer each came from (``where``)."""

    bundle: str | None
    seed: int
    precision: str
    backend: str
    audit_log: str | None
    audit_reserve_mb: float
    link: LinkSettings
    camera: CameraSettings
    microphone: MicrophoneSettings
    endpointer: object  # edge.listening.EndpointerConfig
    policy: object  # edge.policy.PolicyConfig
    service: object  # edge.service.config.ServiceConfig
    remote_timeout_s: float = 0.3  # remote backend only
    remote_fallback: str | None = None
    remote_token: str | None = dataclasses.field(default=None, repr=False)
    record_mcap: str | None = None  # serve --record-mcap: the MCAP file the session is recorded to
    ros2: Source | None = None  # serve --ros2: the ROS 2 domain the robot's motion is also published on
    where: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def runtime_config(self, camera=None, microphone=None):
        """The ``RuntimeConfig``; ``camera``/``microphone`` replace the sensors' specs (the simulated robot)."""
        from edge.runtime import RuntimeConfig

        if not self.bundle:
            raise SettingsError("give the bundle directory (voxedge serve BUNDLE, or \"bundle\" in --config)")
        return RuntimeConfig(bundle=self.bundle, precision=self.precision, backend=self.backend,
                             camera=camera or self.camera.spec(), microphone=microphone or self.microphone.spec(),
                             link_port=self.link.port, endpointer=self.endpointer, policy=self.policy,
                             audit_log=self.audit_log, audit_reserve_mb=self.audit_reserve_mb,
                             remote_timeout_s=self.remote_timeout_s, remote_fallback=self.remote_fallback,
                             remote_token=self.remote_token)


def _origin(message: str, where: dict, names) -> str:
    """Which layers set the values a refusal names (" (port from flag --port)"), or "" for defaults."""
    named = [n for n in names if n.split(".")[-1] in message and where.get(n, DEFAULT_LAYER) != DEFAULT_LAYER]
    return f" ({'; '.join(f'{n} from {where[n]}' for n in named)})" if named else ""


def _build(what: str, where: dict, names, make):
    try:
        return make()
    except SettingsError:
        raise
    except (ValueError, TypeError, SourceError) as exc:
        message = str(exc)
        raise SettingsError(f"{what}: {message}{_origin(message, where, names)}") from None


def _size(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ValueError(f"camera_size {text!r} must be WIDTHxHEIGHT, e.g. 640x480")
    return int(w), int(h)


def _section(cls: type, name: str, values: dict, where: dict):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        layers = sorted({where[f"{name}.{k}"] for k in unknown})
        raise SettingsError(f"{'; '.join(layers)}: unknown {name} settings {unknown}; known are {sorted(fields)}")
    typed = {}
    for key, value in values.items():
        kind = type(fields[key].default)
        typed[key] = _convert(f"{name}.{key}", value, kind if kind in (int, float, bool) else float,
                              where[f"{name}.{key}"])
    return _build(f"{name} settings", where, [f"{name}.{k}" for k in values], lambda: cls(**typed))


def load(flags: dict | None = None, config_file: str | os.PathLike | None = None,
         environ: dict | None = None) -> ServeSettings:
    """The typed settings of ``voxedge serve`` from the four layers; a ``SettingsError`` names the bad one."""
    from edge.precision import CHOICES as PRECISION_CHOICES
    from edge.service.config import ServiceConfig

    values, where = resolve_layers(flags, config_file, environ, SERVE_SETTINGS, SECTION_NAMES)
    v = values

    def check(name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise SettingsError(f"{name} {v[name]!r} {rule}{_origin(name, where, [name])}")

    check("precision", v["precision"] in PRECISION_CHOICES, f"is not one of {', '.join(PRECISION_CHOICES)}")
    from edge.precision import PRECISIONS
    from edge.runners.kserve import FORMS, is_remote, parse_url

    if not (v["backend"] in BACKENDS or is_remote(v["backend"])):
        raise SettingsError(f"backend {v['backend']!r} is not one of {', '.join(BACKENDS)}"
                            f"{_origin('backend', where, ['backend'])}, nor a remote server: {FORMS}")
    if is_remote(v["backend"]):
        _build("backend", where, ["backend"], lambda: parse_url(v["backend"]))
    check("remote_timeout_s", v["remote_timeout_s"] > 0, "must be > 0 s")
    check("remote_fallback", v["remote_fallback"] in (None, *PRECISIONS),
          f"is not one of {', '.join(PRECISIONS)} (the local model to run while the remote server fails)")
    check("audit_reserve_mb", v["audit_reserve_mb"] >= 0, "must be >= 0 MB")
    width, height = _build("camera", where, ["camera_size"], lambda: _size(v["camera_size"]))
    camera = _build("camera", where, ["camera"], lambda: CameraSettings(
        camera_source(v["camera"]), width, height, v["camera_fps"]))
    microphone = _build("microphone", where, ["mic"], lambda: MicrophoneSettings(microphone_source(v["mic"])))
    link = _build("link", where, ["link"], lambda: LinkSettings(link_source(v["link"])))
    ros2 = _build("ros2", where, ["ros2"], lambda: _ros2_source(v["ros2"]))
    sections = {name: _section(cls, name, v[name], where) for name, cls in _section_classes().items()}
    service_names = ("host", "port", "estop_port", "grpc_port", "read_auth", "tls_cert", "tls_key", "token", "allowed_hosts")
    service = _build("service settings", where, service_names,
                     lambda: ServiceConfig(**{n: v[n] for n in service_names}))
    return ServeSettings(bundle=v["bundle"], seed=v["seed"], precision=v["precision"], backend=v["backend"],
                         audit_log=v["audit_log"], audit_reserve_mb=v["audit_reserve_mb"], link=link, camera=camera,
                         microphone=microphone, service=service, where=where,
                         remote_timeout_s=v["remote_timeout_s"], remote_fallback=v["remote_fallback"],
                         remote_token=v["remote_token"], record_mcap=v["record_mcap"], ros2=ros2, **sections)


def _ros2_source(text: str | None) -> Source | None:
    """``ros2`` names a ROS 2 domain (ros2:// or ros2://?domain=N), or is not given."""
    source = link_source(text)
    if source is not None and source.scheme != ROS2:
        raise ValueError(f"{text!r} is not a ROS 2 domain: use ros2:// or ros2://?domain=N")
    return source
