"""Tests for sim.camera: projection, rendering, occlusion, determinism, appearance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.errors import SimError
from sim.world import Arena, Pose, SceneError, SceneObject, sample_view
from sim.camera import (
    Appearance,
    CameraModel,
    Render,
    project_point,
    random_appearance,
    render,
)

CAM = CameraModel()
ORIGIN = Pose(0.0, 0.0, 0.0)


def _one(color: str, shape: str, x: float, y: float = 0.0, size: float = 0.12) -> Arena:
    return Arena((SceneObject(color, shape, x, y, size),))


# --- CameraModel ----------------------------------------------------------------


def test_camera_defaults_and_focal_length():
    assert (CAM.width, CAM.height) == (160, 120)
    assert CAM.focal_px == pytest.approx(80 / math.tan(math.radians(33)))
    assert CAM.horizon_v == pytest.approx(60.0)


def test_camera_requires_4_3():
    with pytest.raises(SceneError, match="4:3"):
        CameraModel(width=160, height=100)
    with pytest.raises(SimError, match="32"):
        CameraModel(width=32, height=24)


def test_camera_scaled_keeps_parameters():
    big = CameraModel(hfov_deg=70.0, pitch_deg=5.0).scaled(640)
    assert (big.width, big.height, big.hfov_deg, big.pitch_deg) == (640, 480, 70.0, 5.0)
    with pytest.raises(SceneError, match="multiple of 4"):
        CAM.scaled(642)


# --- project_point ----------------------------------------------------------------


def test_project_point_ahead_is_centred():
    u, v, depth = project_point(CAM, ORIGIN, 2.0, 0.0, CAM.mount_height_m)
    assert (u, v, depth) == pytest.approx((80.0, 60.0, 2.0))


def test_project_point_left_and_below():
    # A point to the robot's left (+y when heading 0) appears on the image's left;
    # a point on the floor appears below the horizon.
    u, v, _ = project_point(CAM, ORIGIN, 1.0, 0.3, 0.0)
    assert u < 80 and v > 60
    assert u == pytest.approx(80 - CAM.focal_px * 0.3)
    assert v == pytest.approx(60 + CAM.focal_px * CAM.mount_height_m)


def test_project_point_behind_is_none():
    assert project_point(CAM, ORIGIN, -1.0, 0.0, 0.0) is None


def test_project_point_follows_pose():
    pose = Pose(1.0, 1.0, math.pi / 2)
    u, v, depth = project_point(CAM, pose, 1.0, 3.0, CAM.mount_height_m)
    assert (u, v, depth) == pytest.approx((80.0, 60.0, 2.0))


def test_pitch_down_moves_horizon_up():
    cam = CameraModel(pitch_deg=10.0)
    _, v, _ = project_point(cam, ORIGIN, 100.0, 0.0, cam.mount_height_m)
    assert v == pytest.approx(cam.horizon_v, abs=0.1)
    assert cam.horizon_v < 60


# --- Render basics -------------------------------------------------------------------


def test_render_types_shapes():
    r = render(_one("red", "ball", 1.0), ORIGIN)
    assert isinstance(r, Render)
    assert r.image.dtype == np.uint8 and r.image.shape == (120, 160, 3)
    assert r.object_ids.dtype == np.int16 and r.object_ids.shape == (120, 160)
    big = render(_one("red", "ball", 1.0), ORIGIN, CAM.scaled(320))
    assert big.image.shape == (240, 320, 3)


def test_empty_arena_has_wall_above_floor_below():
    app = Appearance.plain()
    r = render(Arena(()), ORIGIN, appearance=app)
    assert (r.object_ids == -1).all() and r.visible == ()
    top = r.image[5, 80].astype(int)
    assert np.abs(top - np.array(app.wall_rgb)).max() < 40
    bottom = r.image[115, 80].astype(int)
    assert np.abs(bottom - np.array(app.floor_rgb)).max() < 40
    assert abs(top.sum() - bottom.sum()) > 60


def test_object_straight_ahead_is_centred_and_below_horizon():
    r = render(_one("green", "cube", 1.0), ORIGIN)
    (vis,) = r.visible
    assert vis.index == 0 and vis.name == "green cube"
    assert abs(vis.center_xy[0] - 80) < 2.0
    # Camera at 0.10 m, 0.12 m cube: it straddles the horizon; its base is below.
    x0, y0, x1, y1 = vis.box
    assert y1 > 60 and vis.box[3] > y0
    assert vis.distance_m == pytest.approx(1.0)
    cx, cy = vis.center_normalised(CAM)
    assert cx == pytest.approx(0.5, abs=0.02) and 0 <= cy <= 1


def test_small_object_lies_entirely_below_horizon():
    r = render(_one("blue", "ball", 1.2, size=0.08), ORIGIN)
    (vis,) = r.visible
    assert vis.box[1] >= 60 and vis.center_xy[1] > 60


def test_visible_box_and_centroid_match_mask():
    r = render(_one("yellow", "cone", 0.8, 0.15), ORIGIN)
    (vis,) = r.visible
    ys, xs = np.nonzero(r.object_ids == 0)
    assert vis.pixel_count == len(xs)
    assert vis.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert vis.center_xy == pytest.approx((xs.mean() + 0.5, ys.mean() + 0.5))
    assert vis.visible_fraction == pytest.approx(1.0)
    # Left of the robot -> left half of the image.
    assert vis.center_xy[0] < 80


@pytest.mark.parametrize("shape", ["cube", "ball", "cone"])
def test_nearer_is_larger(shape):
    near = render(_one("red", shape, 0.6), ORIGIN).visible[0]
    far = render(_one("red", shape, 1.8), ORIGIN).visible[0]
    assert near.pixel_count > 4 * far.pixel_count
    nw, nh = near.box[2] - near.box[0], near.box[3] - near.box[1]
    fw, fh = far.box[2] - far.box[0], far.box[3] - far.box[1]
    assert nw > fw and nh > fh
    # Pinhole scaling: width ~ f * size / depth (3x nearer -> ~3x wider).
    assert 2.0 < nw / fw < 4.0


def test_ball_pixel_size_follows_pinhole():
    r = render(_one("blue", "ball", 1.0, size=0.16), ORIGIN, CAM.scaled(640))
    (vis,) = r.visible
    expected = CAM.scaled(640).focal_px * 0.16 / 1.0
    assert vis.box[2] - vis.box[0] == pytest.approx(expected, abs=2)


def test_occlusion_near_hides_far():
    far_only = Arena((SceneObject("blue", "cube", 1.5, 0.0, 0.14),))
    both = Arena((SceneObject("blue", "cube", 1.5, 0.0, 0.14), SceneObject("red", "ball", 0.7, 0.03, 0.12)))
    alone = render(far_only, ORIGIN).visible[0]
    r = render(both, ORIGIN)
    far = r.by_index(0)
    near = r.by_index(1)
    assert near is not None and near.visible_fraction == pytest.approx(1.0)
    assert far is None or far.visible_fraction < 0.5
    # Where the far cube used to be, the near ball now owns the pixels.
    overlap = render(far_only, ORIGIN).object_ids == 0
    assert (r.object_ids[overlap] == 1).mean() > 0.5
    # Order in the arena does not matter: painter's algorithm sorts by distance.
    swapped = render(Arena(both.objects[::-1]), ORIGIN)
    assert np.array_equal(swapped.image, r.image)
    assert alone.visible_fraction == pytest.approx(1.0)


def test_partial_occlusion_fraction():
    arena = Arena((SceneObject("green", "cube", 1.5, 0.0, 0.14), SceneObject("yellow", "ball", 0.8, -0.06, 0.1)))
    far = render(arena, ORIGIN).by_index(0)
    assert far is not None and 0.1 < far.visible_fraction < 0.95


def test_object_behind_camera_is_not_visible():
    r = render(_one("red", "ball", -1.0), ORIGIN)
    assert r.visible == () and (r.object_ids == -1).all()
    r = render(_one("red", "cube", 0.0, 1.0), ORIGIN)  # straight to the left: out of the FOV
    assert r.visible == ()


def test_far_objects_are_skipped():
    arena = Arena((SceneObject("red", "cube", 7.0, 0.0, 0.5),), half_extent_m=8.0)
    assert render(arena, ORIGIN).visible == ()


def test_partly_out_of_frame_is_clipped_and_truncated():
    # Bearing ~33 deg: the ball sits on the right edge of the 66 deg FOV.
    d = 1.0
    arena = _one("yellow", "ball", d * math.cos(math.radians(33)), -d * math.sin(math.radians(33)))
    (vis,) = render(arena, ORIGIN).visible
    assert vis.truncated and vis.box[2] == 160
    assert 0 < vis.box[0] < 160
    assert vis.visible_fraction == pytest.approx(1.0)


def test_very_close_cube_is_clipped_not_dropped():
    # The cube's side face spans depths -0.01..0.11 m, crossing the near plane;
    # the part in front must still render, on the left side of the image.
    arena = Arena((SceneObject("blue", "cube", 0.05, 0.12, 0.12),))
    (vis,) = render(arena, ORIGIN).visible
    assert vis.truncated and vis.box[0] == 0
    # Its nearest-visible corner (0.11, 0.06) sits at bearing ~28.6 deg -> u ~ 13.
    assert vis.box[2] == pytest.approx(80 - CAM.focal_px * 0.06 / 0.11, abs=1.5)
    assert vis.pixel_count > 500
    assert vis.center_xy[0] < 80


# --- Colour and determinism ------------------------------------------------------------


@pytest.mark.parametrize(
    "color, check",
    [
        ("red", lambda p: p[0] > 1.5 * p[1] and p[0] > 1.5 * p[2]),
        ("green", lambda p: p[1] > 1.3 * p[0] and p[1] > 1.3 * p[2]),
        ("blue", lambda p: p[2] > 1.5 * p[0] and p[2] > 1.3 * p[1]),
        ("yellow", lambda p: p[0] > 1.5 * p[2] and p[1] > 1.5 * p[2]),
    ],
)
def test_plain_colours_are_rgb_order(color, check):
    r = render(_one(color, "ball", 0.8), ORIGIN, appearance=Appearance.plain())
    (vis,) = r.visible
    cx, cy = (int(c) for c in vis.center_xy)
    assert check(r.image[cy, cx].astype(int)), r.image[cy, cx]


def test_random_appearances_keep_colours_recognisable():
    rng = np.random.default_rng(0)
    for _ in range(30):
        app = random_appearance(rng)
        r = render(_one("red", "ball", 0.8), ORIGIN, appearance=app, rng=rng)
        (vis,) = r.visible
        mask = r.object_ids == 0
        mean = r.image[mask].astype(float).mean(axis=0)
        assert mean[0] > 1.4 * mean[1] and mean[0] > 1.4 * mean[2], (app, mean)


def test_plain_without_rng_is_deterministic():
    arena, pose = sample_view(np.random.default_rng(3))
    a = render(arena, pose)
    b = render(arena, pose, CameraModel(), Appearance.plain(), None)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.object_ids, b.object_ids)
    assert a.visible == b.visible


def test_same_seed_same_bytes_different_seed_differs():
    arena, pose = sample_view(np.random.default_rng(4))
    app = Appearance(noise_sigma=6.0, color_jitter=0.1, hue_jitter_deg=5.0, blur_sigma_px=0.7)
    a = render(arena, pose, appearance=app, rng=np.random.default_rng(11))
    b = render(arena, pose, appearance=app, rng=np.random.default_rng(11))
    c = render(arena, pose, appearance=app, rng=np.random.default_rng(12))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.image.tobytes() != c.image.tobytes()
    # Noise changes pixels, never the geometry labels.
    assert np.array_equal(a.object_ids, c.object_ids)


def test_random_appearance_is_valid_and_varied():
    rng = np.random.default_rng(0)
    apps = [random_appearance(rng) for _ in range(20)]
    assert len({a.light_gain for a in apps}) == 20
    assert Appearance.plain() == Appearance.plain()
    assert Appearance.plain().noise_sigma == 0.0


def test_appearance_validation():
    with pytest.raises(SceneError, match="noise_sigma"):
        Appearance(noise_sigma=-1.0)
    with pytest.raises(SceneError, match="floor_rgb"):
        Appearance(floor_rgb=(0, 0, 300))


def test_floor_texture_moves_with_pose():
    arena = Arena(())
    app = Appearance(floor_texture=0.2)
    a = render(arena, Pose(0.0, 0.0, 0.0), appearance=app)
    b = render(arena, Pose(0.25, 0.0, 0.0), appearance=app)
    assert not np.array_equal(a.image[70:], b.image[70:])
    assert np.array_equal(a.image[:50], b.image[:50])  # the wall does not change


def test_lighting_gain_brightens():
    arena = _one("green", "cube", 1.0)
    dim = render(arena, ORIGIN, appearance=Appearance(light_gain=0.6)).image.astype(int).sum()
    bright = render(arena, ORIGIN, appearance=Appearance(light_gain=1.2)).image.astype(int).sum()
    assert bright > 1.5 * dim


# --- Consistency with sample_view and speed -------------------------------------------


def test_sample_view_objects_are_rendered():
    rng = np.random.default_rng(5)
    n_visible = []
    for _ in range(100):
        arena, pose = sample_view(rng)
        r = render(arena, pose)
        n_visible.append(len(r.visible))
        ids = set(np.unique(r.object_ids).tolist()) - {-1}
        assert ids == {v.index for v in r.visible}
    assert min(n_visible) >= 1
    assert np.mean([2 <= n <= 7 for n in n_visible]) > 0.95
