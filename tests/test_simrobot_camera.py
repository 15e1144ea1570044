"""SimCamera: renders the arena from a live pose at a fixed rate into the FrameBuffer."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge.sensors import clock, make_camera
from edge.sensors.errors import CameraConfigError, CameraError
from sim.camera import CameraModel
from sim.world import Arena, Pose, SceneObject
from simrobot.camera import SimCamera, SimCameraConfig

FPS = 20.0


def _red_pixels(img: np.ndarray) -> int:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return int(np.count_nonzero((r > 120) & (g < 80) & (b < 80)))


class _Robot:
    """A pose another thread can change; readers get an immutable Pose."""

    def __init__(self, pose: Pose):
        self.pose = pose
        self.calls = 0

    def __call__(self) -> Pose:
        self.calls += 1
        return self.pose


@pytest.fixture
def arena():
    return Arena(objects=(SceneObject("red", "ball", 1.0, 0.0, 0.2), SceneObject("blue", "cube", -1.0, 0.5, 0.2)))


def test_frames_follow_the_pose(arena):
    robot = _Robot(Pose(0.0, 0.0, 0.0))  # facing +x: the red ball is straight ahead
    before = threading.active_count()
    with SimCamera(SimCameraConfig(pose_fn=robot, arena=arena, fps=FPS)) as cam:
        ahead = cam.read()
        time.sleep(0.3)
        t_turn = clock.now()
        robot.pose = Pose(0.0, 0.0, math.pi)  # turned around: the ball is behind
        time.sleep(0.3)
        behind = cam.read()
        old = cam.buffer.at(t_turn - 0.1)
        stats = cam.stats()
        history = cam.buffer.between(-1e9, 1e9)
    assert threading.active_count() == before
    assert ahead.image.shape == (120, 160, 3) and ahead.image.dtype == np.uint8
    assert _red_pixels(ahead.image) > 200
    assert _red_pixels(old.image) > 200
    assert _red_pixels(behind.image) == 0
    assert np.mean(np.abs(ahead.image.astype(int) - behind.image.astype(int))) > 5
    # Frames stamped after the turn show the new view, those before it the old (50 ms margins
    # for thread scheduling between the stamp and the pose read).
    for f in history:
        if f.t > t_turn + 0.05:
            assert _red_pixels(f.image) == 0
        elif f.t < t_turn - 0.05:
            assert _red_pixels(f.image) > 200
    assert stats.fps == pytest.approx(FPS, rel=0.2)
    assert stats.mode.backend == "sim" and (stats.mode.width, stats.mode.height) == (160, 120)
    assert stats.read_errors == 0 and not stats.frozen
    intervals = np.diff([f.t for f in history])
    assert np.median(intervals) == pytest.approx(1 / FPS, rel=0.1)


def test_a_still_robot_is_reported_frozen(arena):
    # A static scene without sensor noise renders identical frames: exactly what "frozen" detects.
    robot = _Robot(Pose(0.0, 0.0, 0.0))
    with SimCamera(SimCameraConfig(pose_fn=robot, arena=arena, fps=50.0, freeze_frames=5)) as cam:
        time.sleep(0.3)
        assert cam.stats().frozen
        still = cam.read()
        robot.pose = Pose(0.0, 0.0, 0.5)
        # The first frame of the new view ends the identical run; 4 more identical ones are 80 ms away.
        frame = cam.buffer.wait_for(still.seq, 1.0)
        while np.array_equal(frame.image, still.image):
            frame = cam.buffer.wait_for(frame.seq, 1.0)
        assert not cam.stats().frozen


def test_camera_model_and_factory(arena):
    robot = _Robot(Pose(0.0, 0.0, 0.0))
    cam = make_camera("sim", pose_fn=robot, arena=arena, fps=10.0, camera=CameraModel(width=64, height=48))
    assert isinstance(cam, SimCamera)
    with cam:
        frame = cam.read()
    assert frame.image.shape == (48, 64, 3)


def test_pose_fn_errors_are_counted_then_the_camera_fails(arena):
    def broken() -> Pose:
        raise RuntimeError("odometry unavailable")

    cfg = SimCameraConfig(pose_fn=broken, arena=arena, fps=50.0, max_consecutive_failures=3,
                          reconnect_backoff_s=0.01, reconnect_backoff_max_s=0.02, first_frame_timeout_s=None)
    with SimCamera(cfg) as cam:
        deadline = clock.now() + 2.0
        while not cam.stats().failed and clock.now() < deadline:
            time.sleep(0.01)
        stats = cam.stats()
        with pytest.raises(CameraError, match="odometry unavailable"):
            cam.read()
    assert stats.failed and stats.read_errors == 3
    assert stats.last_error == "read failed: RuntimeError: odometry unavailable"


def test_first_frame_timeout_names_the_error(arena):
    cfg = SimCameraConfig(pose_fn=lambda: "not a pose", arena=arena, fps=50.0, first_frame_timeout_s=0.3,
                          reconnect_backoff_s=0.01)
    before = threading.active_count()
    with pytest.raises(CameraError, match=r"delivered no frame \(waited 0.3 s, first_frame_timeout_s=0.3\) "
                                          r"\(last error: .*expected a sim.world.Pose"):
        SimCamera(cfg).connect()
    assert threading.active_count() == before


def test_connect_gives_up_as_soon_as_the_reader_does(arena):
    cfg = SimCameraConfig(pose_fn=lambda: "not a pose", arena=arena, fps=50.0, first_frame_timeout_s=10.0,
                          reconnect_backoff_s=0.01, max_consecutive_failures=2)
    t0 = clock.now()
    with pytest.raises(CameraError, match=r"delivered no frame .*last error: read failed: CameraError: pose_fn"):
        SimCamera(cfg).connect()
    assert clock.now() - t0 < 1.0


def test_config_validation(arena):
    with pytest.raises(CameraConfigError, match="pose_fn"):
        SimCameraConfig(pose_fn=None, arena=arena)
    with pytest.raises(CameraConfigError, match="fps"):
        SimCameraConfig(pose_fn=lambda: Pose(0, 0, 0), arena=arena, fps=0)
    with pytest.raises(CameraError, match="sim.world.Arena"):
        SimCamera(SimCameraConfig(pose_fn=lambda: Pose(0, 0, 0), arena="arena")).connect()
