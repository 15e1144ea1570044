"""Simulated camera: renders the robot's first-person view of a ``sim`` arena at a fixed rate.

Used by the demo and closed-loop tests. Each tick the reader thread asks
``pose_fn()`` for the robot's current pose, renders it with
``sim.camera.render`` and stamps the frame with the time the pose was taken,
so frame times mean the same as a real camera's capture times. ``edge.sensors``
makes it for the camera type ``sim``, by name: ``edge`` never imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.sensors import clock
from edge.sensors.camera import Camera, CameraConfig, CameraMode
from edge.sensors.errors import CameraConfigError, CameraError

if TYPE_CHECKING:
    from sim.camera import Appearance, CameraModel
    from sim.world import Arena, Pose

__all__ = ["SimCamera", "SimCameraConfig"]

DEFAULT_FPS = 15.0
MAX_FPS = 240.0
LATE_RESYNC_PERIODS = 2.0  # more than this many periods behind: skip ticks rather than burst


@dataclass
class SimCameraConfig(CameraConfig):
    """Settings of a simulated camera.

    Attributes:
        pose_fn: returns the robot's current ``sim.world.Pose``; called from
            the reader thread, so it must be thread-safe (e.g. read an
            immutable snapshot).
        arena: the ``sim.world.Arena`` to render.
        fps: render rate.
        camera: ``sim.camera.CameraModel`` (default 160x120, the model's input size).
        appearance: ``sim.camera.Appearance`` (default plain lighting).
        seed: seeds sensor noise/jitter when the appearance has any; None renders deterministically.
    """

    pose_fn: Callable[[], Pose]
    arena: Arena
    fps: float = DEFAULT_FPS
    camera: CameraModel | None = None
    appearance: Appearance | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.pose_fn):
            raise CameraConfigError(f"pose_fn={self.pose_fn!r} is not callable; pass a function returning a Pose")
        ok = isinstance(self.fps, (int, float)) and not isinstance(self.fps, bool)
        if not (ok and math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS):
            raise CameraConfigError(f"fps={self.fps!r}; use a number in (0, {MAX_FPS:g}]")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise CameraConfigError(f"seed={self.seed!r}; use an int or None")


class SimCamera(Camera):
    """Renders ``sim`` frames from a live pose at ``fps`` into the FrameBuffer."""

    config_class = SimCameraConfig

    def __init__(self, config: SimCameraConfig) -> None:
        super().__init__(config)
        self.config: SimCameraConfig = config
        self._render: Callable[..., Any] | None = None
        self._model: Any = None
        self._rng: np.random.Generator | None = None
        self._t0: float | None = None
        self._tick = 0

    @property
    def name(self) -> str:
        return f"SimCamera({self.config.fps:g} fps)"

    def _open_impl(self) -> None:
        from sim.camera import CameraModel, render
        from sim.world import Arena

        cfg = self.config
        if not isinstance(cfg.arena, Arena):
            raise CameraError(f"arena must be a sim.world.Arena, got {type(cfg.arena).__name__}")
        self._model = cfg.camera if cfg.camera is not None else CameraModel()
        if not isinstance(self._model, CameraModel):
            raise CameraError(f"camera must be a sim.camera.CameraModel, got {type(self._model).__name__}")
        self._render = render
        self._rng = np.random.default_rng(cfg.seed) if cfg.seed is not None else None
        self._t0, self._tick = None, 0
        self._mode = CameraMode(
            width=self._model.width, height=self._model.height, fps=float(cfg.fps), fourcc=None, backend="sim"
        )

    def _read_impl(self) -> tuple[np.ndarray, float] | None:
        from sim.world import Pose

        period = 1.0 / self.config.fps
        now = clock.now()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._tick * period
        if now - due > LATE_RESYNC_PERIODS * period:
            # Rendering or the host fell behind: drop the missed ticks (counted as dropped frames).
            self._tick = int((now - self._t0) / period)
            due = self._t0 + self._tick * period
        self._tick += 1
        if due > now and self._stop.wait(due - now):
            return None
        t = clock.now()
        pose = self.config.pose_fn()
        if not isinstance(pose, Pose):
            raise CameraError(f"pose_fn returned {type(pose).__name__}, expected a sim.world.Pose")
        assert self._render is not None
        image = self._render(self.config.arena, pose, self._model, self.config.appearance, self._rng).image
        return np.ascontiguousarray(image), t

    def _close_impl(self) -> None:
        self._render = None
