"""Short garbage-collection pauses while the robot runs.

CPython's full collection holds the GIL while it walks every object the collector tracks, so every thread
stops for it, the actuator loop included. That loop's setpoint stream is the MCU's heartbeat: no valid
setpoint for 250 ms latches a failsafe (firmware_bridge.spec WATCHDOG_TIMEOUT_MS). The pause grows with
what the process holds: a started ``voxedge serve --sim`` tracks about 55 000 objects (13-19 ms a full
collection on a 2-core Xeon, p50), the test process about 700 000 by the end of the suite, where full
collections took up to 0.59 s, most likely what tripped an armed robot's watchdog in CI. A process that
embeds the runtime (an application's own objects, a slower Jetson core) sits anywhere between.

Almost everything tracked at start-up (modules, the model, the app) lives as long as the process. Python's
``gc.freeze()`` moves it to a permanent generation that collections skip, so a later full collection walks
only what was made since. ``bench/bench_gc_pause.py`` measures a started ``voxedge serve`` both ways.

The freeze is held, not global for good: each started runtime holds it and the last to stop lets go
(``gc.unfreeze()``), so a process that stops its runtime (the tests, the demo) collects as before.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0


def hold() -> None:
    """Freeze what the collector tracks now; call ``release()`` once for each call when the runtime stops."""
    global _holders
    with _lock:
        gc.collect(1)  # the young generations only (milliseconds): fresh garbage is not frozen with the rest
        gc.freeze()
        _holders += 1


def settle() -> None:
    """Freeze what was made since ``hold()`` too (serve calls it when its server is up); no-op unless held."""
    with _lock:
        if _holders:
            gc.collect(1)
            gc.freeze()


def release() -> None:
    """Let go of one ``hold()``; the last to let go returns the frozen objects to normal collection."""
    global _holders
    with _lock:
        if _holders == 0:
            raise RuntimeError("gc_pause.release() without a matching hold()")
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()


def holders() -> int:
    """How many runtimes hold the freeze now."""
    with _lock:
        return _holders
