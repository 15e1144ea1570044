"""Settings of ``voxedge serve`` from four layers: defaults < a JSON file < ``VOXEDGE_*`` variables < flags.

One helper, tested on its own, so every entry point resolves configuration
the same way and says which layer a bad value came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# name -> (default, type); the environment variable is VOXEDGE_<NAME upper>
SERVE_SETTINGS: dict[str, tuple[object, type]] = {
    "bundle": (None, str),
    "camera": ("0", str),  # V4L2 index or path, video file, URL, GStreamer pipeline, or "sim"
    "camera_size": (None, str),  # WIDTHxHEIGHT
    "camera_fps": (None, float),
    "mic": (None, str),  # device name substring or index, a WAV file, or "sim"
    "link": (None, str),  # serial port (/dev/robot) or "sim"
    "precision": ("auto", str),  # fp32, fp16, int8, or auto: the fastest of the bundle's models here
    "backend": ("onnxruntime", str),
    "host": ("127.0.0.1", str),
    "port": (8080, int),
    "estop_port": (-1, int),  # the e-stop listener; -1: the HTTP port + 1
    "read_auth": ("auto", str),  # auto: viewing needs the token when bound beyond loopback
    "tls_cert": (None, str),  # PEM certificate (chain): serve https on the HTTP and e-stop ports
    "tls_key": (None, str),  # its PEM private key
    "token": (None, str),
    "allowed_hosts": ((), tuple),
    "audit_log": (None, str),
    "audit_reserve_mb": (100.0, float),  # the audit log stops recording (with an alert) below this much free disk
    "seed": (0, int),
}


class SettingsError(ValueError):
    """A bad setting; the message names the layer (file, variable or flag) it came from."""


def _convert(name: str, value, kind: type, where: str):
    if value is None:
        return None
    try:
        if kind is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if kind is int and isinstance(value, bool):
            raise ValueError("a boolean")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {name}={value!r} is not a valid {kind.__name__} ({exc})") from None


def resolve(flags: dict | None = None, config_file: str | os.PathLike | None = None,
            environ: dict | None = None, spec: dict = SERVE_SETTINGS) -> dict:
    """The effective settings; ``None`` in ``flags`` means "not given on the command line"."""
    env = os.environ if environ is None else environ
    out = {name: default for name, (default, _) in spec.items()}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"settings file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise SettingsError(f"settings file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"settings file {path} must hold a JSON object")
        unknown = sorted(set(data) - set(spec))
        if unknown:
            raise SettingsError(f"settings file {path}: unknown settings {unknown}; known are {sorted(spec)}")
        for name, value in data.items():
            out[name] = _convert(name, value, spec[name][1], f"settings file {path}")
    for name, (_, kind) in spec.items():
        raw = env.get(f"VOXEDGE_{name.upper()}")
        if raw is not None and raw != "":
            out[name] = _convert(name, raw, kind, f"environment variable VOXEDGE_{name.upper()}")
    for name, value in (flags or {}).items():
        if name in spec and value is not None and value != ():
            out[name] = _convert(name, value, spec[name][1], f"flag --{name.replace('_', '-')}")
    return out
