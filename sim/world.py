"""The simulated arena: objects on a square floor and a differential-drive robot.

World frame: metres, x/y on the floor, z up; headings in radians,
counter-clockwise from the +x axis. Everything here is a pure function of its
arguments; randomness comes only from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.contract.vocabulary import COLORS, OBJECT_TYPES, SHAPES
from sim.errors import SimError

# --- Arena geometry -------------------------------------------------------
DEFAULT_HALF_EXTENT_M = 2.5          # arena floor is [-h, h]^2, metres
MIN_HALF_EXTENT_M = 0.5              # smaller arenas cannot hold a view
MIN_OBJECT_SIZE_M = 0.03             # smallest allowed object size, metres
MAX_OBJECT_SIZE_M = 0.5              # largest allowed object size, metres
CONE_HEIGHT_RATIO = 1.4              # cone height = ratio * base diameter

# --- Random scenes ----------------------------------------------------------
RANDOM_SIZE_RANGE_M = (0.08, 0.16)   # sizes drawn by random_arena / sample_view
# Footprint radius as a fraction of size: covers a cube's half-diagonal (0.707).
FOOTPRINT_RADIUS_RATIO = 0.75
MIN_GAP_M = 0.06                     # free floor between random objects, metres
ROBOT_CLEARANCE_M = 0.30             # no object centre this close to the robot
PLACEMENT_TRIES = 64                 # rejection-sampling attempts per object

# --- Camera view used by sample_view ----------------------------------------
# The default horizontal field of view lives here (not in camera.py) so that
# world.py never imports camera.py; camera.py takes its default from here.
DEFAULT_HFOV_DEG = 66.0
VIEW_DISTANCE_RANGE_M = (0.35, 2.5)  # object distances sample_view aims for
VIEW_EDGE_MARGIN_RAD = math.radians(2.0)  # keep objects this far inside the FOV
POSE_EDGE_MARGIN_M = 0.3             # robot stays this far from the arena edge

_DIFF_DRIVE_SMALL_ANGLE = 1e-6       # below this turn angle use the series form


class SceneError(SimError, ValueError):
    """A pose, object, arena or camera description is invalid."""


def _check_finite(name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise SceneError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise SceneError(f"{name} must be finite, got {value!r}")
    return f


def wrap_angle(angle_rad: float) -> float:
    """Wrap an angle to [-pi, pi)."""
    return (angle_rad + math.pi) % (2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class Pose:
    """Robot pose: position in metres (world frame), heading in radians CCW from +x."""

    x: float
    y: float
    heading: float

    def __post_init__(self) -> None:
        for name in ("x", "y", "heading"):
            object.__setattr__(self, name, _check_finite(f"Pose.{name}", getattr(self, name)))

    def forward_vector(self) -> tuple[float, float]:
        """Unit vector (x, y) the robot faces."""
        return (math.cos(self.heading), math.sin(self.heading))

    def left_vector(self) -> tuple[float, float]:
        """Unit vector (x, y) to the robot's left."""
        return (-math.sin(self.heading), math.cos(self.heading))

    def to_local(self, x: float, y: float) -> tuple[float, float]:
        """World point -> (ahead, left) in metres in the robot frame."""
        dx, dy = x - self.x, y - self.y
        c, s = math.cos(self.heading), math.sin(self.heading)
        return (c * dx + s * dy, -s * dx + c * dy)


@dataclass(frozen=True)
class SceneObject:
    """One object resting on the floor.

    ``size`` is the cube edge, ball diameter or cone base diameter in metres
    (a cone is ``CONE_HEIGHT_RATIO * size`` tall). ``yaw`` turns a cube about
    its vertical axis (radians); balls and cones ignore it.
    """

    color: str
    shape: str
    x: float
    y: float
    size: float
    yaw: float = 0.0

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise SceneError(f"unknown object color {self.color!r}; expected one of {COLORS}")
        if self.shape not in SHAPES:
            raise SceneError(f"unknown object shape {self.shape!r}; expected one of {SHAPES}")
        for name in ("x", "y", "size", "yaw"):
            object.__setattr__(self, name, _check_finite(f"SceneObject.{name}", getattr(self, name)))
        if not MIN_OBJECT_SIZE_M <= self.size <= MAX_OBJECT_SIZE_M:
            raise SceneError(
                f"object size {self.size!r} m is outside "
                f"[{MIN_OBJECT_SIZE_M}, {MAX_OBJECT_SIZE_M}] m"
            )

    @property
    def name(self) -> str:
        """Spoken name, e.g. ``"red ball"``."""
        return f"{self.color} {self.shape}"

    @property
    def height(self) -> float:
        """Height of the object's top above the floor, metres."""
        return CONE_HEIGHT_RATIO * self.size if self.shape == "cone" else self.size

    @property
    def footprint_radius(self) -> float:
        """Radius of a floor disc that contains the object, metres."""
        return FOOTPRINT_RADIUS_RATIO * self.size


@dataclass(frozen=True)
class Arena:
    """Square floor [-h, h]^2 with objects; each (color, shape) type at most once."""

    objects: tuple[SceneObject, ...]
    half_extent_m: float = DEFAULT_HALF_EXTENT_M

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        object.__setattr__(self, "objects", objects)
        h = _check_finite("Arena.half_extent_m", self.half_extent_m)
        object.__setattr__(self, "half_extent_m", h)
        if h < MIN_HALF_EXTENT_M:
            raise SceneError(f"arena half extent {h!r} m is below {MIN_HALF_EXTENT_M} m")
        seen: set[tuple[str, str]] = set()
        for i, obj in enumerate(objects):
            if not isinstance(obj, SceneObject):
                raise SceneError(f"arena object {i} is not a SceneObject: {obj!r}")
            half = obj.size / 2.0
            if abs(obj.x) > h - half or abs(obj.y) > h - half:
                raise SceneError(
                    f"{obj.name} at ({obj.x:.3f}, {obj.y:.3f}) with size {obj.size:.3f} m "
                    f"does not fit inside the arena [-{h}, {h}]^2"
                )
            if (obj.color, obj.shape) in seen:
                raise SceneError(f"{obj.name!r} appears twice; each type may appear once per arena")
            seen.add((obj.color, obj.shape))
            for j in range(i):
                other = objects[j]
                # Inscribed discs overlapping means the solids certainly intersect.
                if math.hypot(obj.x - other.x, obj.y - other.y) < (obj.size + other.size) / 2.0:
                    raise SceneError(
                        f"{obj.name} at ({obj.x:.3f}, {obj.y:.3f}) overlaps "
                        f"{other.name} at ({other.x:.3f}, {other.y:.3f})"
                    )

    def find(self, color: str, shape: str) -> SceneObject | None:
        """The object of this type, or None if the arena has none."""
        for obj in self.objects:
            if obj.color == color and obj.shape == shape:
                return obj
        return None

    def index_of(self, color: str, shape: str) -> int | None:
        """Index into ``objects`` of this type, or None."""
        for i, obj in enumerate(self.objects):
            if obj.color == color and obj.shape == shape:
                return i
        return None

    def contains(self, x: float, y: float, margin_m: float = 0.0) -> bool:
        """Whether (x, y) lies at least ``margin_m`` inside the floor square."""
        lim = self.half_extent_m - margin_m
        return abs(x) <= lim and abs(y) <= lim


# --- Kinematics -------------------------------------------------------------


def step_diff_drive(pose: Pose, v_mps: float, omega_radps: float, dt_s: float) -> Pose:
    """Advance a differential-drive robot by ``dt_s`` at constant (v, omega).

    Exact arc integration: the robot moves along a circle of radius v/omega
    (a straight line when omega == 0). Heading is wrapped to [-pi, pi).

    Args:
        pose: start pose.
        v_mps: forward speed, m/s (negative drives backwards).
        omega_radps: turn rate, rad/s, CCW positive.
        dt_s: time step, s (>= 0).
    Returns:
        The pose after ``dt_s``.
    """
    v = _check_finite("v_mps", v_mps)
    w = _check_finite("omega_radps", omega_radps)
    dt = _check_finite("dt_s", dt_s)
    if dt < 0:
        raise SceneError(f"dt_s must be >= 0, got {dt_s!r}")
    theta = w * dt
    half = 0.5 * theta
    # Chord of the arc: length v*dt*sin(half)/half, direction heading + half.
    # The series form keeps omega -> 0 exact and free of 0/0.
    if abs(theta) < _DIFF_DRIVE_SMALL_ANGLE:
        chord_ratio = 1.0 - half * half / 6.0
    else:
        chord_ratio = math.sin(half) / half
    chord = v * dt * chord_ratio
    direction = pose.heading + half
    return Pose(
        pose.x + chord * math.cos(direction),
        pose.y + chord * math.sin(direction),
        wrap_angle(pose.heading + theta),
    )


def clamp_to_arena(pose: Pose, arena: Arena, margin_m: float = 0.0) -> Pose:
    """The pose with its position clipped into the floor square (minus ``margin_m``)."""
    lim = arena.half_extent_m - margin_m
    if lim < 0:
        raise SceneError(f"margin {margin_m!r} m is larger than the arena half extent")
    return Pose(min(max(pose.x, -lim), lim), min(max(pose.y, -lim), lim), pose.heading)


# --- Random scenes ----------------------------------------------------------


def _range_pair(name: str, value: tuple[int, int]) -> tuple[int, int]:
    lo, hi = int(value[0]), int(value[1])
    if lo < 0 or hi < lo or hi > len(OBJECT_TYPES):
        raise SceneError(
            f"{name} must be (lo, hi) with 0 <= lo <= hi <= {len(OBJECT_TYPES)}, got {value!r}"
        )
    return lo, hi


def _fits(x: float, y: float, r: float, placed: list[tuple[float, float, float]]) -> bool:
    for px, py, pr in placed:
        dx, dy = x - px, y - py
        lim = r + pr + MIN_GAP_M
        if dx * dx + dy * dy < lim * lim:
            return False
    return True


def random_arena(
    rng: np.random.Generator,
    n_objects: tuple[int, int] = (3, 7),
    half_extent_m: float = DEFAULT_HALF_EXTENT_M,
    size_range_m: tuple[float, float] = RANDOM_SIZE_RANGE_M,
) -> Arena:
    """A random arena: distinct object types, non-overlapping, realistic sizes.

    Args:
        rng: randomness source.
        n_objects: inclusive (lo, hi) range for the number of objects. Fewer may
            be placed if the floor is too crowded to fit them all.
        half_extent_m: arena half size, metres.
        size_range_m: object sizes are uniform in this range, metres.
    """
    lo, hi = _range_pair("n_objects", n_objects)
    n = int(rng.integers(lo, hi + 1))
    types = rng.permutation(len(OBJECT_TYPES))[:n]
    sizes = rng.uniform(size_range_m[0], size_range_m[1], n)
    yaws = rng.uniform(-math.pi, math.pi, n)
    placed: list[tuple[float, float, float]] = []
    objects: list[SceneObject] = []
    for k in range(n):
        size = float(sizes[k])
        r = FOOTPRINT_RADIUS_RATIO * size
        lim = half_extent_m - r
        cand = rng.uniform(-lim, lim, (PLACEMENT_TRIES, 2))
        for x, y in cand:
            if _fits(x, y, r, placed):
                color, shape = OBJECT_TYPES[int(types[k])]
                objects.append(SceneObject(color, shape, float(x), float(y), size, float(yaws[k])))
                placed.append((float(x), float(y), r))
                break
    return Arena(tuple(objects), half_extent_m)


def _hfov_rad(camera: Any) -> float:
    hfov_deg = DEFAULT_HFOV_DEG if camera is None else float(camera.hfov_deg)
    return math.radians(hfov_deg)


def _pose_facing_inside(rng: np.random.Generator, half_extent_m: float) -> Pose:
    """A random pose whose view mostly covers the arena floor."""
    lim = half_extent_m - POSE_EDGE_MARGIN_M
    look = 0.5 * (VIEW_DISTANCE_RANGE_M[0] + VIEW_DISTANCE_RANGE_M[1])
    cand = rng.uniform(-1.0, 1.0, (PLACEMENT_TRIES, 3))
    for cx, cy, ch in cand:
        x, y, heading = cx * lim, cy * lim, ch * math.pi
        # Prefer headings whose mid-range view point is still on the floor.
        tx, ty = x + look * math.cos(heading), y + look * math.sin(heading)
        if abs(tx) <= lim and abs(ty) <= lim:
            return Pose(float(x), float(y), float(heading))
    # Facing the centre always works.
    x, y = float(cand[0, 0] * lim), float(cand[0, 1] * lim)
    return Pose(x, y, math.atan2(-y, -x) if (x or y) else 0.0)


def sample_view(
    rng: np.random.Generator,
    arena: Arena | None = None,
    n_in_view: tuple[int, int] = (2, 5),
    camera: Any = None,
    n_elsewhere: tuple[int, int] = (0, 2),
    half_extent_m: float = DEFAULT_HALF_EXTENT_M,
) -> tuple[Arena, Pose]:
    """An arena and a robot pose with several objects in the camera's view.

    Without ``arena``: picks a pose, then places ``n_in_view`` (inclusive
    range) distinct objects fully inside the horizontal field of view at
    distances in ``VIEW_DISTANCE_RANGE_M``, plus ``n_elsewhere`` objects
    anywhere else. With ``arena``: keeps it and picks a pose that looks at
    one of its objects (how many others are in view then depends on the arena).

    Args:
        rng: randomness source.
        arena: optional fixed arena.
        n_in_view: inclusive (lo, hi) count of objects to place in view.
        camera: anything with ``hfov_deg`` (e.g. camera.CameraModel); default FOV otherwise.
        n_elsewhere: inclusive (lo, hi) count of extra objects outside the view.
        half_extent_m: arena half size when ``arena`` is None.
    Returns:
        (arena, pose).
    """
    half_fov = 0.5 * _hfov_rad(camera)
    d_lo, d_hi = VIEW_DISTANCE_RANGE_M
    if arena is not None:
        return arena, _pose_looking_at(rng, arena, half_fov)

    lo, hi = _range_pair("n_in_view", n_in_view)
    e_lo, e_hi = _range_pair("n_elsewhere", n_elsewhere)
    n_in = int(rng.integers(lo, hi + 1))
    n_out = min(int(rng.integers(e_lo, e_hi + 1)), len(OBJECT_TYPES) - n_in)
    pose = _pose_facing_inside(rng, half_extent_m)
    n_total = n_in + n_out
    types = rng.permutation(len(OBJECT_TYPES))[:n_total]
    sizes = rng.uniform(RANDOM_SIZE_RANGE_M[0], RANDOM_SIZE_RANGE_M[1], n_total)
    yaws = rng.uniform(-math.pi, math.pi, n_total)
    # One batch of uniforms serves all rejection sampling: far fewer rng calls.
    cand = rng.uniform(0.0, 1.0, (n_total, PLACEMENT_TRIES, 2)).tolist()

    placed: list[tuple[float, float, float]] = []
    in_view: list[tuple[float, float, float]] = []  # (bearing, distance, angular half width)
    objects: list[SceneObject] = []
    h = half_extent_m
    bearing = half_width = 0.0
    for k in range(n_total):
        size = float(sizes[k])
        r = FOOTPRINT_RADIUS_RATIO * size
        lim = h - r
        for a, b in cand[k]:
            if k < n_in:
                # sqrt spreads distances evenly over the floor area in view.
                d = math.sqrt(d_lo * d_lo + a * (d_hi * d_hi - d_lo * d_lo))
                max_bearing = half_fov - math.atan2(r, d) - VIEW_EDGE_MARGIN_RAD
                if max_bearing <= 0:
                    continue
                bearing = (2.0 * b - 1.0) * max_bearing
                ang = pose.heading + bearing
                x, y = pose.x + d * math.cos(ang), pose.y + d * math.sin(ang)
                if abs(x) > lim or abs(y) > lim:
                    continue
                half_width = math.atan2(r, d)
                if _mostly_hidden(bearing, d, half_width, in_view):
                    continue
            else:
                x, y = (2.0 * a - 1.0) * lim, (2.0 * b - 1.0) * lim
                if math.hypot(x - pose.x, y - pose.y) < ROBOT_CLEARANCE_M + r:
                    continue
            if _fits(x, y, r, placed):
                color, shape = OBJECT_TYPES[int(types[k])]
                objects.append(SceneObject(color, shape, x, y, size, float(yaws[k])))
                placed.append((x, y, r))
                if k < n_in:
                    in_view.append((bearing, d, half_width))
                break
    return Arena(tuple(objects), h), pose


def _mostly_hidden(
    bearing: float, d: float, half_width: float, in_view: list[tuple[float, float, float]]
) -> bool:
    """Whether a new object and an already placed one would mostly hide each other.

    Partial occlusion is kept (useful training data); only pairs where the
    farther object's angular extent lies mostly behind the nearer one are refused.
    """
    for b2, d2, w2 in in_view:
        near_w, far_w = (half_width, w2) if d < d2 else (w2, half_width)
        if abs(bearing - b2) < near_w - 0.5 * far_w:
            return True
    return False


def _pose_looking_at(rng: np.random.Generator, arena: Arena, half_fov: float) -> Pose:
    """A pose inside ``arena`` with one of its objects in view, clear of all objects."""
    if not arena.objects:
        return _pose_facing_inside(rng, arena.half_extent_m)
    d_lo, d_hi = VIEW_DISTANCE_RANGE_M
    lim = arena.half_extent_m - POSE_EDGE_MARGIN_M
    cand = rng.uniform(0.0, 1.0, (PLACEMENT_TRIES, 4)).tolist()
    for a, b, c, e in cand:
        target = arena.objects[min(int(a * len(arena.objects)), len(arena.objects) - 1)]
        d = d_lo + b * (min(d_hi, 1.5) - d_lo)
        direction = (2.0 * c - 1.0) * math.pi        # from target back to the robot
        x = target.x + d * math.cos(direction)
        y = target.y + d * math.sin(direction)
        if abs(x) > lim or abs(y) > lim:
            continue
        if any(math.hypot(x - o.x, y - o.y) < ROBOT_CLEARANCE_M + o.footprint_radius
               for o in arena.objects):
            continue
        bearing = (2.0 * e - 1.0) * max(half_fov - math.atan2(target.footprint_radius, d)
                                         - VIEW_EDGE_MARGIN_RAD, 0.0)
        heading = wrap_angle(direction + math.pi - bearing)
        return Pose(x, y, heading)
    return _pose_facing_inside(rng, arena.half_extent_m)
