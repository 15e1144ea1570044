"""The simulated robot: the world of ``sim/`` wired to the robot code of ``edge/``.

- ``robot``: ``SimRobot`` (the real C firmware core on a pseudo-terminal, in a simulated arena) and
  ``sim_setup``, the robot, camera and microphone ``voxedge serve --sim`` and the benchmarks use;
- ``camera``, ``microphone``: the ``sim`` camera and microphone types (``edge.sensors`` makes them by
  name, so ``edge`` itself never imports this package or ``sim``);
- ``demo``: ``voxedge demo``, scripted spoken commands on the simulated robot.
"""
