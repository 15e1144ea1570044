"""First-person pinhole camera: renders what the robot sees of an arena.

Pixel coordinates: (u, v) with (0, 0) at the top-left corner of the image,
u to the right, v down; pixel (col i, row j) covers [i, i+1) x [j, j+1), so
its centre is (i + 0.5, j + 0.5) and the image centre is (W/2, H/2).

Camera frame: the camera sits ``mount_height_m`` above the robot's position,
looks along the robot heading, tilted down by ``pitch_deg`` (positive = down).

Images are RGB (not OpenCV's BGR). Drawing uses OpenCV for speed; the channel
order does not matter to it because colours are passed as RGB triples.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from sim.world import (
    CONE_HEIGHT_RATIO,
    DEFAULT_HFOV_DEG,
    Arena,
    Pose,
    SceneError,
    SceneObject,
)

# --- Camera defaults and limits -----------------------------------------------
DEFAULT_WIDTH_PX = 160
DEFAULT_HEIGHT_PX = 120
MIN_WIDTH_PX = 64
HFOV_RANGE_DEG = (20.0, 150.0)
MOUNT_HEIGHT_RANGE_M = (0.02, 2.0)
PITCH_RANGE_DEG = (-60.0, 60.0)
DEFAULT_MOUNT_HEIGHT_M = 0.10
NEAR_CLIP_M = 0.02            # geometry nearer than this (camera depth) is cut off
MAX_RENDER_DIST_M = 6.0       # objects whose centre is deeper than this are skipped

# --- Drawing ------------------------------------------------------------------
SUBPIXEL_BITS = 4             # fixed-point bits handed to OpenCV drawing calls
_SUBPIXEL_SCALE = float(1 << SUBPIXEL_BITS)
CONE_FACETS = 20              # cone side drawn as this many flat facets
BALL_SHADE_LAYERS = 5         # concentric circles approximating ball shading
FLOOR_TILE_M = 0.5            # floor checker tile edge, metres
FLOOR_TILE_FADE_M = 4.0       # tile contrast fades to 0 at this distance (no moire)
FLOOR_NEAR_GAIN = 1.05        # floor brightness right in front of the robot
FLOOR_FAR_GAIN = 0.80         # floor brightness far away (before haze)
FLOOR_GRADIENT_M = 3.0        # distance scale of the near->far brightness change
HAZE_M = 12.0                 # distance scale of the floor fading into the wall colour
WALL_TOP_GAIN = 0.85          # wall brightness at the top row relative to the horizon

# Reference colours (RGB, 0..1) of the four object colours, chosen to stay
# clearly distinct under the jitter random_appearance draws.
BASE_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.10),
    "green": (0.15, 0.62, 0.22),
    "blue": (0.13, 0.28, 0.80),
    "yellow": (0.92, 0.80, 0.14),
}


@dataclass(frozen=True)
class CameraModel:
    """Pinhole camera on the robot; 4:3 image, ``hfov_deg`` horizontal field of view."""

    width: int = DEFAULT_WIDTH_PX
    height: int = DEFAULT_HEIGHT_PX
    hfov_deg: float = DEFAULT_HFOV_DEG
    mount_height_m: float = DEFAULT_MOUNT_HEIGHT_M
    pitch_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise SceneError(f"camera {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.width < MIN_WIDTH_PX:
            raise SceneError(f"camera width {self.width!r} px is below the minimum {MIN_WIDTH_PX}")
        if self.width * 3 != self.height * 4:
            raise SceneError(
                f"camera must be 4:3, got {self.width}x{self.height} "
                f"(height for width {self.width} would be {self.width * 3 / 4:g})"
            )
        checks = (
            ("hfov_deg", HFOV_RANGE_DEG),
            ("mount_height_m", MOUNT_HEIGHT_RANGE_M),
            ("pitch_deg", PITCH_RANGE_DEG),
        )
        for name, (lo, hi) in checks:
            value = float(getattr(self, name))
            if not lo <= value <= hi:
                raise SceneError(f"camera {name} {getattr(self, name)!r} is outside [{lo}, {hi}]")
            object.__setattr__(self, name, value)

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (same horizontally and vertically)."""
        return 0.5 * self.width / math.tan(math.radians(0.5 * self.hfov_deg))

    @property
    def vfov_deg(self) -> float:
        """Vertical field of view in degrees."""
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.focal_px))

    @property
    def horizon_v(self) -> float:
        """Image row coordinate v of the horizon (H/2 when pitch is 0)."""
        return 0.5 * self.height - self.focal_px * math.tan(math.radians(self.pitch_deg))

    def scaled(self, width: int) -> CameraModel:
        """The same camera at another 4:3 resolution (``width`` must be a multiple of 4)."""
        if int(width) % 4:
            raise SceneError(f"width {width!r} has no integer 4:3 height; use a multiple of 4")
        return replace(self, width=int(width), height=int(width) * 3 // 4)


@dataclass(frozen=True)
class Appearance:
    """Lighting, surface colours and sensor effects of a render.

    Colours are RGB in 0..255. The light direction points from the scene
    towards the light, given by azimuth (world frame, CCW from +x) and
    elevation above the floor.
    """

    light_gain: float = 1.0                  # global brightness multiplier
    light_azimuth_rad: float = math.radians(225.0)
    light_elevation_rad: float = math.radians(55.0)
    ambient: float = 0.5                     # share of light that is direction-free
    floor_rgb: tuple[int, int, int] = (128, 122, 112)
    wall_rgb: tuple[int, int, int] = (196, 200, 206)
    floor_texture: float = 0.06              # checker contrast of the floor tiles
    color_jitter: float = 0.0                # per-object, per-channel relative gain jitter
    hue_jitter_deg: float = 0.0              # per-object hue shift amplitude, degrees
    noise_sigma: float = 0.0                 # Gaussian sensor noise, 0..255 units
    blur_sigma_px: float = 0.0               # Gaussian blur sigma in pixels; 0 = none

    def __post_init__(self) -> None:
        limits = {
            "light_gain": (0.1, 3.0),
            "ambient": (0.0, 1.0),
            "floor_texture": (0.0, 0.5),
            "color_jitter": (0.0, 0.5),
            "hue_jitter_deg": (0.0, 45.0),
            "noise_sigma": (0.0, 64.0),
            "blur_sigma_px": (0.0, 5.0),
            "light_elevation_rad": (0.0, math.pi / 2),
            "light_azimuth_rad": (-10.0, 10.0),
        }
        for name, (lo, hi) in limits.items():
            value = float(getattr(self, name))
            if not (math.isfinite(value) and lo <= value <= hi):
                raise SceneError(f"Appearance.{name} {getattr(self, name)!r} is outside [{lo}, {hi}]")
            object.__setattr__(self, name, value)
        for name in ("floor_rgb", "wall_rgb"):
            rgb = tuple(int(c) for c in getattr(self, name))
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise SceneError(f"Appearance.{name} must be 3 values in 0..255, got {getattr(self, name)!r}")
            object.__setattr__(self, name, rgb)

    @classmethod
    def plain(cls) -> Appearance:
        """A fixed, noise-free, jitter-free appearance."""
        return cls()

    def light_vector(self) -> tuple[float, float, float]:
        """Unit vector (world frame) pointing towards the light."""
        ce = math.cos(self.light_elevation_rad)
        return (
            ce * math.cos(self.light_azimuth_rad),
            ce * math.sin(self.light_azimuth_rad),
            math.sin(self.light_elevation_rad),
        )


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Plausible random lighting and sensor effects; object colours stay recognisable."""
    u = rng.uniform(0.0, 1.0, 16)
    # Floors are greyish (warm or cool tint) so they never look like an object colour.
    floor_level = 80 + 90 * u[0]
    floor_tint = (u[1] - 0.5) * 30
    floor = (floor_level + floor_tint, floor_level + 0.3 * floor_tint, floor_level - floor_tint)
    wall_level = 150 + 85 * u[2]
    wall_tint = (u[3] - 0.5) * 30
    wall = (wall_level + wall_tint, wall_level + 0.2 * wall_tint, wall_level - wall_tint)
    return Appearance(
        light_gain=0.7 + 0.55 * u[4],
        light_azimuth_rad=2.0 * math.pi * u[5] - math.pi,
        light_elevation_rad=math.radians(25.0 + 55.0 * u[6]),
        ambient=0.4 + 0.25 * u[7],
        floor_rgb=tuple(int(np.clip(c, 0, 255)) for c in floor),
        wall_rgb=tuple(int(np.clip(c, 0, 255)) for c in wall),
        floor_texture=0.12 * u[8],
        color_jitter=0.12 * u[9],
        hue_jitter_deg=8.0 * u[10],
        noise_sigma=8.0 * u[11],
        blur_sigma_px=(0.4 + 0.8 * u[13]) if u[12] < 0.3 else 0.0,
    )


@dataclass(frozen=True)
class VisibleObject:
    """An arena object as seen in one render.

    ``box`` is (x0, y0, x1, y1) in pixels, inclusive-exclusive, of the visible
    mask (``object_ids == index``); ``center_xy`` is the mask centroid in pixel
    coordinates (pixel centres at +0.5). ``visible_fraction`` is visible pixels
    over the pixels the object would cover inside the frame with nothing in
    front of it (occlusion only); ``truncated`` is True when the object is cut
    by the image border. ``distance_m`` is the floor distance from the camera
    to the object centre.
    """

    index: int
    color: str
    shape: str
    box: tuple[int, int, int, int]
    center_xy: tuple[float, float]
    pixel_count: int
    visible_fraction: float
    distance_m: float
    truncated: bool = False

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def center_normalised(self, camera: CameraModel) -> tuple[float, float]:
        """Centroid as (x / W, y / H), both in [0, 1]."""
        return (self.center_xy[0] / camera.width, self.center_xy[1] / camera.height)


@dataclass(frozen=True)
class Render:
    """One rendered frame: RGB image, per-pixel object index (-1 = none), visible objects.

    ``visible`` lists objects with at least one visible pixel, by arena index.
    """

    image: np.ndarray
    object_ids: np.ndarray
    visible: tuple[VisibleObject, ...] = field(default=())

    def find(self, color: str, shape: str) -> VisibleObject | None:
        """The visible object of this type, or None if it is not in view."""
        for vis in self.visible:
            if vis.color == color and vis.shape == shape:
                return vis
        return None

    def by_index(self, index: int) -> VisibleObject | None:
        """The visible object with this arena index, or None."""
        for vis in self.visible:
            if vis.index == index:
                return vis
        return None


# --- Projection -----------------------------------------------------------------


def _camera_axes(camera: CameraModel, pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Camera origin and its right, down, forward unit vectors in the world frame."""
    ch, sh = math.cos(pose.heading), math.sin(pose.heading)
    p = math.radians(camera.pitch_deg)
    cp, sp = math.cos(p), math.sin(p)
    origin = np.array([pose.x, pose.y, camera.mount_height_m])
    right = np.array([sh, -ch, 0.0])
    forward = np.array([cp * ch, cp * sh, -sp])
    down = np.array([-sp * ch, -sp * sh, -cp])
    return origin, right, down, forward


def _to_camera(points: np.ndarray, axes: tuple[np.ndarray, ...]) -> np.ndarray:
    """World points [N, 3] -> camera frame [N, 3] as (right, down, depth)."""
    origin, right, down, forward = axes
    rel = points - origin
    return rel @ np.stack([right, down, forward], axis=1)


def project_point(
    camera: CameraModel, pose: Pose, x: float, y: float, z: float
) -> tuple[float, float, float] | None:
    """Project a world point to pixel coordinates.

    Returns:
        (u, v, depth_m), or None when the point is behind the camera (depth
        below ``NEAR_CLIP_M``). (u, v) may lie outside the image.
    """
    cam = _to_camera(np.array([[x, y, z]], dtype=float), _camera_axes(camera, pose))[0]
    if cam[2] < NEAR_CLIP_M:
        return None
    f = camera.focal_px
    return (
        0.5 * camera.width + f * cam[0] / cam[2],
        0.5 * camera.height + f * cam[1] / cam[2],
        float(cam[2]),
    )


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Clip a convex camera-frame polygon [N, 3] to depth >= NEAR_CLIP_M."""
    if poly[:, 2].min() >= NEAR_CLIP_M:
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[2] >= NEAR_CLIP_M, b[2] >= NEAR_CLIP_M
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR_CLIP_M - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _to_pixels_fixed(cam_pts: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Camera-frame points -> int32 fixed-point pixel coords for OpenCV drawing."""
    f = camera.focal_px
    u = 0.5 * camera.width + f * cam_pts[:, 0] / cam_pts[:, 2]
    v = 0.5 * camera.height + f * cam_pts[:, 1] / cam_pts[:, 2]
    # OpenCV puts pixel centres at integer coordinates; ours are at +0.5.
    return np.round(np.stack([u - 0.5, v - 0.5], axis=1) * _SUBPIXEL_SCALE).astype(np.int32)


# --- Background -----------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _background_geometry(camera: CameraModel) -> dict[str, np.ndarray]:
    """Per-camera constants: floor rows, floor hit points (robot frame), shading terms."""
    w, h, f = camera.width, camera.height, camera.focal_px
    xr = ((np.arange(w) + 0.5 - 0.5 * w) / f).astype(np.float64)
    yd = ((np.arange(h) + 0.5 - 0.5 * h) / f).astype(np.float64)
    p = math.radians(camera.pitch_deg)
    cp, sp = math.cos(p), math.sin(p)
    # Ray = forward + xr*right + yd*down; its z component is -(sp + yd*cp).
    drop = sp + yd * cp
    first_floor_row = int(np.searchsorted(drop > 1e-9, True))
    rows = slice(first_floor_row, h)
    t = camera.mount_height_m / drop[rows]                       # ray parameter at floor
    ahead = (t * (cp - yd[rows] * sp))[:, None] * np.ones((1, w))  # metres ahead of robot
    right = t[:, None] * xr[None, :]                                # metres to the right
    dist = np.hypot(ahead, right)
    gain = FLOOR_FAR_GAIN + (FLOOR_NEAR_GAIN - FLOOR_FAR_GAIN) * np.exp(-dist / FLOOR_GRADIENT_M)
    haze = 1.0 - np.exp(-dist / HAZE_M)
    fade = np.clip(1.0 - dist / FLOOR_TILE_FADE_M, 0.0, 1.0)
    sky_rows = max(first_floor_row, 1)
    wall_gain = WALL_TOP_GAIN + (1.0 - WALL_TOP_GAIN) * np.arange(first_floor_row) / (sky_rows - 1 or 1)
    out = {
        "first_floor_row": np.array(first_floor_row),
        "ahead": ahead.astype(np.float32),
        "right": right.astype(np.float32),
        "floor_gain": (gain * (1.0 - haze)).astype(np.float32),
        "haze": haze.astype(np.float32),
        "fade": fade.astype(np.float32),
        "wall_gain": wall_gain.astype(np.float32),
    }
    for arr in out.values():
        arr.setflags(write=False)
    return out


def _draw_background(camera: CameraModel, pose: Pose, app: Appearance) -> np.ndarray:
    """Wall above the horizon, tiled floor below it; uint8 RGB [H, W, 3]."""
    geo = _background_geometry(camera)
    w, h = camera.width, camera.height
    k = int(geo["first_floor_row"])
    img = np.empty((h, w, 3), np.uint8)
    wall = np.array(app.wall_rgb, np.float32) * app.light_gain
    img[:k] = np.clip(geo["wall_gain"][:, None, None] * wall + 0.5, 0.0, 255.0).astype(np.uint8)
    if k < h:
        shade = geo["floor_gain"]
        if app.floor_texture > 0.0:
            ch, sh = math.cos(pose.heading), math.sin(pose.heading)
            inv_tile = 1.0 / FLOOR_TILE_M
            # Floor hit point in tile units, world frame: the tiles stay put as the robot moves.
            tx = geo["ahead"] * np.float32(ch * inv_tile)
            tx += geo["right"] * np.float32(sh * inv_tile)
            tx += np.float32(pose.x * inv_tile)
            ty = geo["ahead"] * np.float32(sh * inv_tile)
            ty -= geo["right"] * np.float32(ch * inv_tile)
            ty += np.float32(pose.y * inv_tile)
            np.floor(tx, out=tx)
            np.floor(ty, out=ty)
            tx += ty
            # Checker sign (-1)^(i+j) from the low bit (works for negative tiles too).
            parity = (tx.astype(np.int32) & 1).astype(np.float32)
            parity *= 2.0
            parity -= 1.0
            parity *= geo["fade"]
            parity *= np.float32(app.floor_texture)
            parity += 1.0
            parity *= shade
            shade = parity
        # colour = shade * floor + haze * wall, one fused 2->3 channel transform.
        floor = np.array(app.floor_rgb, np.float32) * app.light_gain
        mix = np.stack([floor, wall], axis=1)  # [3, 2]
        both = cv2.merge([np.ascontiguousarray(shade), geo["haze"]])
        rgb = cv2.transform(both, mix)
        img[k:] = np.clip(rgb + 0.5, 0.0, 255.0).astype(np.uint8)
    return img


# --- Objects --------------------------------------------------------------------


def _object_rgb(obj: SceneObject, app: Appearance, rng: np.random.Generator | None) -> np.ndarray:
    """Base colour (0..1) of one object, with per-object jitter when rng is given."""
    rgb = BASE_RGB[obj.color]
    if rng is None or (app.color_jitter == 0.0 and app.hue_jitter_deg == 0.0):
        return np.array(rgb)
    j = rng.uniform(-1.0, 1.0, 4)
    hh, ss, vv = colorsys.rgb_to_hsv(*rgb)
    hh = (hh + j[0] * app.hue_jitter_deg / 360.0) % 1.0
    out = np.array(colorsys.hsv_to_rgb(hh, ss, vv))
    return np.clip(out * (1.0 + app.color_jitter * j[1:]), 0.0, 1.0)


def _shade(base: np.ndarray, brightness: float, app: Appearance) -> tuple[float, float, float]:
    k = brightness * app.light_gain * 255.0
    # Plain floats: np.clip on 3 values costs far more than the drawing itself.
    return tuple(min(max(float(c) * k, 0.0), 255.0) for c in base)  # type: ignore[return-value]


def _brightness(normal: np.ndarray, light: np.ndarray, app: Appearance) -> float:
    return app.ambient + (1.0 - app.ambient) * max(0.0, float(normal @ light))


_CUBE_CORNERS = np.array(
    [[sx, sy, sz] for sz in (0.0, 1.0) for sy in (-0.5, 0.5) for sx in (-0.5, 0.5)]
)
# Faces as corner indices (counter-clockwise seen from outside) and outward normals (local).
_CUBE_FACES = (
    ((4, 5, 7, 6), (0.0, 0.0, 1.0)),
    ((0, 1, 5, 4), (0.0, -1.0, 0.0)),
    ((2, 6, 7, 3), (0.0, 1.0, 0.0)),
    ((0, 4, 6, 2), (-1.0, 0.0, 0.0)),
    ((1, 3, 7, 5), (1.0, 0.0, 0.0)),
)


def _object_polys(
    obj: SceneObject, axes: tuple[np.ndarray, ...], light: np.ndarray, app: Appearance
) -> list[tuple[np.ndarray, float]]:
    """Visible faces of a cube or cone: (camera-frame polygon [N, 3], brightness)."""
    origin = axes[0]
    faces: list[tuple[np.ndarray, float]] = []
    if obj.shape == "cube":
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        corners = (_CUBE_CORNERS * obj.size) @ rot.T + np.array([obj.x, obj.y, 0.0])
        cam = _to_camera(corners, axes)
        for idx, n_local in _CUBE_FACES:
            normal = rot @ np.array(n_local)
            # Back-face test: the face is seen only from its outward side.
            if normal @ (origin - corners[idx[0]]) <= 0:
                continue
            faces.append((cam[list(idx)], _brightness(normal, light, app)))
    else:  # cone
        r = 0.5 * obj.size
        height = CONE_HEIGHT_RATIO * obj.size
        ang = np.linspace(0.0, 2.0 * math.pi, CONE_FACETS, endpoint=False)
        base = np.stack([obj.x + r * np.cos(ang), obj.y + r * np.sin(ang), np.zeros_like(ang)], axis=1)
        apex = np.array([obj.x, obj.y, height])
        cam_base = _to_camera(base, axes)
        cam_apex = _to_camera(apex[None], axes)[0]
        slope = r / math.hypot(r, height)      # z share of the side normal
        radial = math.sqrt(1.0 - slope * slope)
        for i in range(CONE_FACETS):
            j = (i + 1) % CONE_FACETS
            mid = 0.5 * (ang[i] + ang[j]) + (math.pi if j == 0 else 0.0)
            normal = np.array([radial * math.cos(mid), radial * math.sin(mid), slope])
            if normal @ (origin - base[i]) <= 0:
                continue
            poly = np.stack([cam_apex, cam_base[i], cam_base[j]])
            faces.append((poly, _brightness(normal, light, app)))
    return faces


def _fixed_bbox(pts: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
    """Pixel bbox (x0, y0, x1, y1) of fixed-point points, clipped to the frame."""
    lo = pts.min(axis=0) // int(_SUBPIXEL_SCALE)
    hi = pts.max(axis=0) // int(_SUBPIXEL_SCALE) + 2
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), w), min(int(hi[1]), h)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def render(
    arena: Arena,
    pose: Pose,
    camera: CameraModel | None = None,
    appearance: Appearance | None = None,
    rng: np.random.Generator | None = None,
) -> Render:
    """Render the robot's first-person view of the arena.

    Objects are drawn far to near so nearer ones occlude farther ones; objects
    deeper than ``MAX_RENDER_DIST_M`` are skipped and geometry nearer than
    ``NEAR_CLIP_M`` is clipped away. Randomness (per-object colour jitter,
    sensor noise) is applied only when ``rng`` is given, so ``rng=None``
    renders deterministically for any appearance; the same seed gives the
    same bytes.

    Args:
        arena: the scene.
        pose: robot pose; the camera sits on it.
        camera: camera model (default ``CameraModel()``: 160x120).
        appearance: lighting and sensor effects (default ``Appearance.plain()``).
        rng: randomness source for jitter and noise.
    Returns:
        Render with an RGB uint8 image [H, W, 3], int16 object ids [H, W] and
        the visible objects.
    """
    camera = camera if camera is not None else CameraModel()
    app = appearance if appearance is not None else Appearance.plain()
    w, h, f = camera.width, camera.height, camera.focal_px
    axes = _camera_axes(camera, pose)
    light = np.array(app.light_vector())
    right_ax, down_ax = axes[1], axes[2]

    img = _draw_background(camera, pose, app)
    ids = np.full((h, w), -1, np.int16)

    # Object colours are drawn for every object in arena order, before any
    # skipping, so the random stream does not depend on the pose.
    colours = [_object_rgb(obj, app, rng) for obj in arena.objects]

    centres = np.array([[o.x, o.y, 0.5 * o.height] for o in arena.objects]).reshape(-1, 3)
    cam_centres = _to_camera(centres, axes) if len(centres) else centres
    order = [i for i in range(len(arena.objects)) if -arena.objects[i].size < cam_centres[i, 2] <= MAX_RENDER_DIST_M]
    order.sort(key=lambda i: -float(np.hypot(cam_centres[i, 0], cam_centres[i, 2])))

    full_counts: dict[int, int] = {}
    boxes: dict[int, tuple[int, int, int, int]] = {}
    truncated: dict[int, bool] = {}
    aa = cv2.LINE_AA
    for i in order:
        obj = arena.objects[i]
        base = colours[i]
        if obj.shape == "ball":
            cc = cam_centres[i]
            r = 0.5 * obj.size
            if cc[2] - r < NEAR_CLIP_M:
                continue
            u = 0.5 * w + f * cc[0] / cc[2]
            v = 0.5 * h + f * cc[1] / cc[2]
            rad = f * r / cc[2]
            centre_fx = (int(round((u - 0.5) * _SUBPIXEL_SCALE)), int(round((v - 0.5) * _SUBPIXEL_SCALE)))
            rad_fx = max(int(round(rad * _SUBPIXEL_SCALE)), 1)
            pts = np.array([[centre_fx[0] - rad_fx, centre_fx[1] - rad_fx],
                            [centre_fx[0] + rad_fx, centre_fx[1] + rad_fx]])
            bbox = _fixed_bbox(pts, w, h)
            if bbox is None:
                continue
            # Light direction in the image plane: where the highlight sits.
            lx, ly = float(light @ right_ax), float(light @ down_ax)
            toward_cam = -float(light @ axes[3])
            # Lambert maximum over the visible hemisphere: n = L when the light
            # is on the camera side, else the best rim normal.
            lit_max = 1.0 if toward_cam >= 0.0 else math.sqrt(max(0.0, 1.0 - toward_cam * toward_cam))
            # Concentric circles shrinking toward the brightest point approximate
            # smooth shading: the outer ring is the dim rim.
            for layer in range(BALL_SHADE_LAYERS + 1):
                t = layer / BALL_SHADE_LAYERS
                lr = rad * (1.0 - 0.8 * t)
                cx = u + (rad - lr) * lx * 0.9
                cy = v + (rad - lr) * ly * 0.9
                lit = lit_max * (0.25 + 0.75 * t ** 0.7)
                bright = app.ambient + (1.0 - app.ambient) * lit
                cv2.circle(
                    img,
                    (int(round((cx - 0.5) * _SUBPIXEL_SCALE)), int(round((cy - 0.5) * _SUBPIXEL_SCALE))),
                    max(int(round(lr * _SUBPIXEL_SCALE)), 1),
                    _shade(base, bright, app), -1, aa, SUBPIXEL_BITS,
                )
            # A small specular glint, mixed toward white.
            if rad >= 3.0:
                glint = np.clip(base * 0.4 + 0.6, 0.0, 1.0)
                gx = u + rad * lx * 0.45
                gy = v + rad * ly * 0.45
                cv2.circle(
                    img,
                    (int(round((gx - 0.5) * _SUBPIXEL_SCALE)), int(round((gy - 0.5) * _SUBPIXEL_SCALE))),
                    max(int(round(0.15 * rad * _SUBPIXEL_SCALE)), 1),
                    _shade(glint, 0.95, app), -1, aa, SUBPIXEL_BITS,
                )
            cv2.circle(ids, centre_fx, rad_fx, int(i), -1, cv2.LINE_8, SUBPIXEL_BITS)
            x0, y0, x1, y1 = bbox
            scratch = np.zeros((y1 - y0, x1 - x0), np.uint8)
            off = np.array([x0, y0]) * int(_SUBPIXEL_SCALE)
            cv2.circle(scratch, (centre_fx[0] - int(off[0]), centre_fx[1] - int(off[1])), rad_fx, 1, -1,
                       cv2.LINE_8, SUBPIXEL_BITS)
        else:
            faces = _object_polys(obj, axes, light, app)
            polys = []
            for poly, bright in faces:
                clipped = _clip_near(poly)
                if len(clipped) >= 3:
                    polys.append((_to_pixels_fixed(clipped, camera), bright))
            if not polys:
                continue
            all_pts = np.concatenate([p for p, _ in polys])
            hull = cv2.convexHull(all_pts)
            bbox = _fixed_bbox(all_pts, w, h)
            if bbox is None:
                continue
            # Silhouette first with an average shade so antialiased face edges
            # blend with the object, not with the background (no seams).
            mean_bright = float(np.mean([b for _, b in polys]))
            cv2.fillConvexPoly(img, hull, _shade(base, mean_bright, app), aa, SUBPIXEL_BITS)
            for pts, bright in polys:
                cv2.fillConvexPoly(img, pts, _shade(base, bright, app), aa, SUBPIXEL_BITS)
            cv2.fillConvexPoly(ids, hull, int(i), cv2.LINE_8, SUBPIXEL_BITS)
            x0, y0, x1, y1 = bbox
            scratch = np.zeros((y1 - y0, x1 - x0), np.uint8)
            off = np.array([x0, y0], np.int32) * int(_SUBPIXEL_SCALE)
            cv2.fillConvexPoly(scratch, hull - off, 1, cv2.LINE_8, SUBPIXEL_BITS)
        count = int(cv2.countNonZero(scratch))
        if count:
            full_counts[i] = count
            boxes[i] = bbox
            x0, y0, x1, y1 = bbox
            truncated[i] = bool(
                (x0 == 0 and scratch[:, 0].any()) or (y0 == 0 and scratch[0].any())
                or (x1 == w and scratch[:, -1].any()) or (y1 == h and scratch[-1].any())
            )

    if app.blur_sigma_px > 0.0:
        img = cv2.GaussianBlur(img, (0, 0), app.blur_sigma_px)
    if rng is not None and app.noise_sigma > 0.0:
        noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(app.noise_sigma)
        img = np.clip(img.astype(np.float32) + noise, 0.0, 255.0).astype(np.uint8)

    visible = _visible_objects(arena, pose, ids, full_counts, boxes, truncated)
    return Render(image=img, object_ids=ids, visible=visible)


def _visible_objects(
    arena: Arena,
    pose: Pose,
    ids: np.ndarray,
    full_counts: dict[int, int],
    boxes: dict[int, tuple[int, int, int, int]],
    truncated: dict[int, bool],
) -> tuple[VisibleObject, ...]:
    """Stats of each object's visible mask; ``boxes`` bound its unoccluded footprint."""
    if not full_counts:
        return ()
    counts = np.bincount(ids.ravel().astype(np.int64) + 1, minlength=len(arena.objects) + 1)
    out = []
    for i in sorted(full_counts):
        n = int(counts[i + 1])
        if n == 0:
            continue
        bx0, by0, bx1, by1 = boxes[i]
        ys, xs = np.nonzero(ids[by0:by1, bx0:bx1] == i)
        xs = xs + bx0
        ys = ys + by0
        obj = arena.objects[i]
        out.append(
            VisibleObject(
                index=i,
                color=obj.color,
                shape=obj.shape,
                box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                center_xy=(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
                pixel_count=n,
                visible_fraction=min(1.0, n / full_counts[i]),
                distance_m=math.hypot(obj.x - pose.x, obj.y - pose.y),
                truncated=truncated.get(i, False),
            )
        )
    return tuple(out)
