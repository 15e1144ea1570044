"""Tests for sim.world: poses, objects, arena validation, kinematics, random scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.commands import OBJECT_TYPES
from sim.errors import SimError
from sim.world import (
    DEFAULT_HFOV_DEG,
    FOOTPRINT_RADIUS_RATIO,
    MIN_GAP_M,
    RANDOM_SIZE_RANGE_M,
    VIEW_DISTANCE_RANGE_M,
    Arena,
    Pose,
    SceneError,
    SceneObject,
    clamp_to_arena,
    random_arena,
    sample_view,
    step_diff_drive,
    wrap_angle,
)


def _close(a: Pose, b: Pose, tol: float = 1e-9) -> bool:
    return (
        abs(a.x - b.x) < tol
        and abs(a.y - b.y) < tol
        and abs(wrap_angle(a.heading - b.heading)) < tol
    )


# --- Pose / SceneObject ---------------------------------------------------------


def test_pose_forward_vector_follows_heading():
    assert Pose(0, 0, 0).forward_vector() == pytest.approx((1.0, 0.0))
    assert Pose(0, 0, math.pi / 2).forward_vector() == pytest.approx((0.0, 1.0), abs=1e-12)
    assert Pose(1, 2, math.pi).to_local(0, 2) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert Pose(0, 0, 0).to_local(0, 1) == pytest.approx((0.0, 1.0))  # +y is to the left


def test_pose_rejects_non_finite():
    with pytest.raises(SceneError, match="nan"):
        Pose(float("nan"), 0, 0)


def test_scene_object_name_and_height():
    ball = SceneObject("red", "ball", 0.0, 0.0, 0.1)
    cone = SceneObject("blue", "cone", 0.0, 0.0, 0.1)
    assert ball.name == "red ball"
    assert ball.height == pytest.approx(0.1)
    assert cone.height == pytest.approx(0.14)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(color="purple", shape="ball"), "'purple'"),
        (dict(color="red", shape="pyramid"), "'pyramid'"),
        (dict(color="red", shape="ball", size=0.01), "0.01"),
        (dict(color="red", shape="ball", size=2.0), "2.0"),
    ],
)
def test_scene_object_validation(kwargs, message):
    args = dict(x=0.0, y=0.0, size=0.1) | kwargs
    with pytest.raises(SceneError, match=message):
        SceneObject(**args)


def test_scene_error_is_sim_error_and_value_error():
    with pytest.raises(SimError):
        SceneObject("red", "blob", 0, 0, 0.1)
    with pytest.raises(ValueError):
        SceneObject("red", "blob", 0, 0, 0.1)


# --- Arena ------------------------------------------------------------------------


def test_arena_find_and_index():
    a = Arena((SceneObject("red", "ball", 1, 0, 0.1), SceneObject("blue", "cube", -1, 0, 0.1)))
    assert a.find("blue", "cube") is a.objects[1]
    assert a.find("blue", "ball") is None
    assert a.index_of("red", "ball") == 0
    assert a.index_of("green", "cone") is None


def test_arena_accepts_list_and_stores_tuple():
    a = Arena([SceneObject("red", "ball", 1, 0, 0.1)])
    assert isinstance(a.objects, tuple)


def test_arena_rejects_object_outside_bounds():
    with pytest.raises(SceneError, match="does not fit"):
        Arena((SceneObject("red", "ball", 2.49, 0, 0.1),), half_extent_m=2.5)
    with pytest.raises(SceneError, match="does not fit"):
        Arena((SceneObject("red", "ball", 0, -3.0, 0.1),))


def test_arena_rejects_duplicate_type():
    with pytest.raises(SceneError, match="twice"):
        Arena((SceneObject("red", "ball", 1, 0, 0.1), SceneObject("red", "ball", -1, 0, 0.1)))


def test_arena_rejects_overlapping_objects():
    with pytest.raises(SceneError, match="overlaps"):
        Arena((SceneObject("red", "ball", 0, 0, 0.2), SceneObject("blue", "cube", 0.05, 0, 0.2)))


def test_arena_rejects_tiny_extent():
    with pytest.raises(SceneError, match="0.1"):
        Arena((), half_extent_m=0.1)


# --- Kinematics --------------------------------------------------------------------


def test_straight_line():
    p = step_diff_drive(Pose(1.0, 2.0, math.pi / 2), 0.5, 0.0, 2.0)
    assert _close(p, Pose(1.0, 3.0, math.pi / 2), 1e-12)


def test_backwards():
    p = step_diff_drive(Pose(0.0, 0.0, 0.0), -0.2, 0.0, 1.0)
    assert _close(p, Pose(-0.2, 0.0, 0.0), 1e-12)


def test_pure_rotation_keeps_position():
    p = step_diff_drive(Pose(0.3, -0.4, 0.0), 0.0, 1.0, math.pi / 2)
    assert _close(p, Pose(0.3, -0.4, math.pi / 2), 1e-12)


def test_quarter_arc_lands_on_circle():
    # v = 1, omega = 1 -> radius 1; a quarter turn left from the origin facing +x.
    p = step_diff_drive(Pose(0, 0, 0), 1.0, 1.0, math.pi / 2)
    assert _close(p, Pose(1.0, 1.0, math.pi / 2), 1e-12)


def test_full_circle_returns_to_start_in_one_step_and_many():
    start = Pose(0.5, -0.25, 0.3)
    period = 2 * math.pi / 0.8
    assert _close(step_diff_drive(start, 0.3, 0.8, period), start, 1e-12)
    p = start
    for _ in range(1000):
        p = step_diff_drive(p, 0.3, 0.8, period / 1000)
    assert _close(p, start, 1e-9)


def test_tiny_omega_matches_straight_line():
    a = step_diff_drive(Pose(0, 0, 0.7), 0.4, 1e-12, 1.5)
    b = step_diff_drive(Pose(0, 0, 0.7), 0.4, 0.0, 1.5)
    assert _close(a, b, 1e-9)


def test_step_is_composable():
    # Exact integration: two half steps equal one full step.
    p0 = Pose(0.1, 0.2, -1.0)
    one = step_diff_drive(p0, 0.35, -0.6, 1.0)
    two = step_diff_drive(step_diff_drive(p0, 0.35, -0.6, 0.5), 0.35, -0.6, 0.5)
    assert _close(one, two, 1e-12)


def test_heading_is_wrapped():
    p = step_diff_drive(Pose(0, 0, 3.0), 0.0, 1.0, 1.0)
    assert -math.pi <= p.heading < math.pi
    assert p.heading == pytest.approx(4.0 - 2 * math.pi)


def test_negative_dt_rejected():
    with pytest.raises(SceneError, match="-1"):
        step_diff_drive(Pose(0, 0, 0), 0.1, 0.0, -1.0)


def test_clamp_to_arena():
    arena = Arena(())
    p = clamp_to_arena(Pose(3.0, -2.0, 1.0), arena, margin_m=0.2)
    assert (p.x, p.y, p.heading) == pytest.approx((2.3, -2.0, 1.0))


# --- Random scenes -------------------------------------------------------------------


def _check_spacing(arena: Arena) -> None:
    objs = arena.objects
    for i in range(len(objs)):
        for j in range(i):
            d = math.hypot(objs[i].x - objs[j].x, objs[i].y - objs[j].y)
            need = FOOTPRINT_RADIUS_RATIO * (objs[i].size + objs[j].size) + MIN_GAP_M
            assert d >= need - 1e-9


def test_random_arena_unique_types_spacing_and_sizes():
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(200):
        arena = random_arena(rng)
        counts.add(len(arena.objects))
        types = [(o.color, o.shape) for o in arena.objects]
        assert len(set(types)) == len(types)
        assert all(t in OBJECT_TYPES for t in types)
        assert all(RANDOM_SIZE_RANGE_M[0] <= o.size <= RANDOM_SIZE_RANGE_M[1] for o in arena.objects)
        _check_spacing(arena)
    assert counts == {3, 4, 5, 6, 7}


def test_random_arena_is_reproducible():
    a = random_arena(np.random.default_rng(5))
    b = random_arena(np.random.default_rng(5))
    assert a == b


def test_random_arena_rejects_bad_count():
    with pytest.raises(SceneError, match="n_objects"):
        random_arena(np.random.default_rng(0), n_objects=(5, 2))


def _in_fov(pose: Pose, obj: SceneObject, hfov_deg: float = DEFAULT_HFOV_DEG) -> bool:
    ahead, left = pose.to_local(obj.x, obj.y)
    return ahead > 0 and abs(math.atan2(left, ahead)) < math.radians(hfov_deg / 2)


def test_sample_view_puts_objects_in_view():
    rng = np.random.default_rng(1)
    lo, hi = VIEW_DISTANCE_RANGE_M
    for _ in range(300):
        arena, pose = sample_view(rng)
        assert abs(pose.x) < arena.half_extent_m and abs(pose.y) < arena.half_extent_m
        in_view = [
            o for o in arena.objects
            if _in_fov(pose, o) and lo - 1e-9 <= math.hypot(o.x - pose.x, o.y - pose.y) <= hi + 1e-9
        ]
        assert 2 <= len(in_view) <= 7
        types = [(o.color, o.shape) for o in arena.objects]
        assert len(set(types)) == len(types)
        _check_spacing(arena)


def test_sample_view_respects_count_range():
    rng = np.random.default_rng(2)
    for _ in range(100):
        arena, pose = sample_view(rng, n_in_view=(3, 3), n_elsewhere=(0, 0))
        assert len(arena.objects) == 3
        assert all(_in_fov(pose, o) for o in arena.objects)


def test_sample_view_with_narrow_camera():
    class Narrow:
        hfov_deg = 30.0

    rng = np.random.default_rng(3)
    for _ in range(50):
        arena, pose = sample_view(rng, camera=Narrow(), n_elsewhere=(0, 0))
        assert all(_in_fov(pose, o, 30.0) for o in arena.objects)


def test_sample_view_with_given_arena_looks_at_an_object():
    rng = np.random.default_rng(4)
    arena = random_arena(rng)
    for _ in range(50):
        got, pose = sample_view(rng, arena=arena)
        assert got is arena
        assert any(_in_fov(pose, o) for o in arena.objects)
        # The robot never stands on an object.
        assert all(math.hypot(o.x - pose.x, o.y - pose.y) > o.footprint_radius for o in arena.objects)


def test_sample_view_is_reproducible():
    assert sample_view(np.random.default_rng(9)) == sample_view(np.random.default_rng(9))
