"""``SimRobot`` and ``sim_setup``: the simulated robot ``voxedge serve --sim``, the demo and the benchmarks run."""

from __future__ import annotations

import math


class SimRobot:
    """The firmware simulator (the real C core on a pty) and the arena the sim camera renders.

    The robot starts at ``start`` in the arena; its pose is that start composed
    with the odometry pose the firmware reports in telemetry.
    """

    def __init__(self, arena, start, faults=None) -> None:
        from firmware_bridge.simulator import McuSimulator

        self.arena = arena
        self.start_pose = start
        self.simulator = McuSimulator(faults=faults)
        self.link = None

    def pose(self):
        """The robot's pose in the arena now (thread-safe: reads the link's immutable telemetry)."""
        from sim.world import Pose

        t = self.link.telemetry if self.link is not None else None
        s = self.start_pose
        if t is None:
            return s
        c, si = math.cos(s.heading), math.sin(s.heading)
        return Pose(s.x + c * t.x_m - si * t.y_m, s.y + si * t.x_m + c * t.y_m, s.heading + t.theta_rad)

    def start(self):
        from firmware_bridge.link import Link

        self.simulator.start()
        self.link = Link(self.simulator.port).connect()
        return self.link

    def stop(self) -> None:
        if self.link is not None:
            self.link.disconnect()
        self.simulator.stop()


def sim_setup(seed: int = 0, noise_dbfs: float = -50.0, voice: str = "en-us+m3", fps: float = 15.0):
    """The simulated robot: (SimRobot, camera, microphone); a seeded arena with objects in view."""
    import numpy as np

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
