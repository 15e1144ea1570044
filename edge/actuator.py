"""The actuator loop: a fixed 20 Hz loop, the only caller of the serial link.

Every tick it takes the newest decisions, lets the policy turn them into a
setpoint, and sends that setpoint, zeros when idle: the stream is the MCU's
heartbeat, so if this loop (or the host) dies the MCU stops the motors by
itself within 250 ms. It sends zeros when the inference worker has been stuck
on one inference for more than 500 ms (a stalled model must not leave the
robot driving on an old view), when manual driving lets go of its dead-man,
and while e-stopped.

E-stop is the one path that does not wait for a tick: ``estop()`` hands it to
the link at once (the link's I/O thread sends it ahead of everything and
repeats it until acknowledged) and sets an event the loop checks every tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field

from edge.fusion import Decision
from edge.policy import ZERO, Activity, Outcome, Policy, Setpoint
from edge.slots import LatestSlot
from firmware_bridge.errors import BridgeError

TICK_HZ = 20.0
TICK_S = 1.0 / TICK_HZ
STALL_LIMIT_S = 0.5  # an inference running longer than this stops the robot
MANUAL_DEADMAN_S = 0.5  # manual driving holds only while refreshed this often
CONTROL_QUEUE_MAX = 8  # arm/disarm/gripper requests waiting for the next tick


class ActuatorError(Exception):
    """A control request that cannot be accepted (queue full, bad value, not started)."""


@dataclass(frozen=True)
class ActuatorState:
    """A snapshot for the panel, the API and the metrics."""

    ticks: int
    overruns: int  # ticks that started late by more than one period
    setpoint: Setpoint
    source: str  # policy, manual, stalled, held (perception unhealthy: policy.hold), estop, idle
    activity: Activity
    outcomes: tuple[Outcome, ...]
    estopped: bool
    stalls: int
    link_connected: bool
    telemetry: object | None  # firmware_bridge.link.Telemetry
    first_motion_latency_s: float | None  # end of speech -> first non-zero setpoint, for the last command
    control_results: tuple[dict, ...] = field(default_factory=tuple)


class Actuator:
    """Owns the link for the runtime; see the module docstring."""

    def __init__(self, link, policy: Policy, stalled_for: Callable[[float], float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 hold_reason: Callable[[], str | None] | None = None) -> None:
        self.link = link
        self.policy = policy
        self._stalled_for = stalled_for or (lambda now: 0.0)
        # Why perception cannot be trusted now (camera, microphone, inference health), or None: the
        # policy holds still while there is a reason and resumes after it clears and the target is seen.
        self._hold_reason = hold_reason or (lambda: None)
        self._clock = clock
        self.decisions: LatestSlot[Decision] = LatestSlot()  # utterance decisions
        self.tracks: LatestSlot[Decision] = LatestSlot()  # servoing updates
        self.estop_event = threading.Event()
        self._lock = threading.Lock()
        self._controls: deque[tuple[str, tuple]] = deque()
        self._results: deque[dict] = deque(maxlen=20)
        self._manual: tuple[float, float, float] | None = None  # (v, w, refreshed at)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by submit() and stop(): tick now
        self._thread: threading.Thread | None = None
        self._ticks = self._overruns = self._stalls = self._unsent = 0
        self._last = (ZERO, "idle")
        self._pending_motion: tuple[int, float] | None = None  # (utterance id, end of speech) awaiting first motion
        self._first_motion: float | None = None
        self.on_tick: Callable[[], object] | None = None  # called after each tick, in this thread
        # called with each command's end-of-speech -> first-motion latency (seconds), in this thread
        self.on_first_motion: Callable[[float], object] | None = None

    # -- from other threads ---------------------------------------------------------
    def submit(self, decision: Decision) -> None:
        """A decision from the inference worker (any thread); a new command is acted on at once, not next tick."""
        if decision.kind == "track":
            self.tracks.put(decision)
        else:
            self.decisions.put(decision)
            self._wake.set()

    def estop(self) -> None:
        """Emergency stop now: straight to the link (no waiting for a tick), then latched here."""
        self.estop_event.set()
        try:
            self.link.estop()
        except BridgeError as exc:  # not connected: the loop sends zeros, the MCU stops without a heartbeat
            self._results.append({"control": "estop", "outcome": "failed", "detail": str(exc)})

    def request(self, action: str, *args) -> None:
        """Queue a control for the next tick: arm, disarm, clear_failsafe, gripper(open: bool)."""
        if action not in ("arm", "disarm", "clear_failsafe", "gripper"):
            raise ActuatorError(f"unknown control {action!r}; use arm, disarm, clear_failsafe or gripper")
        with self._lock:
            if len(self._controls) >= CONTROL_QUEUE_MAX:
                raise ActuatorError(f"{CONTROL_QUEUE_MAX} controls are already waiting; try again shortly")
            self._controls.append((action, args))

    def manual(self, linear_m_s: float, angular_rad_s: float) -> None:
        """Hold-to-move driving: holds for MANUAL_DEADMAN_S unless called again."""
        with self._lock:
            self._manual = (float(linear_m_s), float(angular_rad_s), self._clock())

    def release_estop(self) -> None:
        """Let motion resume after an e-stop: the MCU still needs clear_failsafe and an explicit arm."""
        self.estop_event.clear()

    def state(self) -> ActuatorState:
        with self._lock:
            sp, source = self._last
            link = self.link
            return ActuatorState(self._ticks, self._overruns, sp, source, self.policy.activity,
                                 tuple(self.policy.outcomes[-10:]), self.estop_event.is_set(), self._stalls,
                                 bool(getattr(link, "is_connected", False)), getattr(link, "telemetry", None),
                                 self._first_motion, tuple(self._results))

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise ActuatorError("actuator already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voxedge-actuator", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the loop after a last zero setpoint."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise ActuatorError(f"actuator loop did not stop within {timeout_s} s")
            self._thread = None

    def _run(self) -> None:
        next_tick = self._clock()
        while not self._stop.is_set():
            now = self._clock()
            if now - next_tick > TICK_S:
                self._overruns += 1
                next_tick = now  # resynchronise rather than burst to catch up
            self._wake.clear()
            early = now < next_tick - 1e-3  # woken by a new command between regular ticks
            self.tick(now)
            if not early:
                next_tick += TICK_S
            # Sleep until the next tick, or less when a new command arrives (it is sent at once; the fixed
            # 20 Hz stream resumes from there).
            self._wake.wait(max(0.0, next_tick - self._clock()))
        self._send(ZERO)

    def tick(self, now: float) -> Setpoint:
        """One loop iteration (the thread calls it; tests may call it directly)."""
        policy = self.policy
        d = self.decisions.take(timeout_s=0)
        if d is not None:
            policy.on_decision(d, now)
            if d.accepted and d.intent not in ("stop", "drop"):
                self._pending_motion = (d.utterance_id, d.t_speech_end)
        t = self.tracks.take(timeout_s=0)
        if t is not None:
            policy.on_decision(t, now)
        self._run_controls()
        with self._lock:
            manual = self._manual
        if self.estop_event.is_set():
            policy.stop(now, "estop")
            sp, source = ZERO, "estop"
        elif manual is not None and now - manual[2] <= MANUAL_DEADMAN_S:
            if policy.activity.mode != "idle":
                policy.stop(now, "manual")
            sp, source = Setpoint(*manual[:2]), "manual"
        else:
            reason = self._hold_reason()
            if reason:
                policy.hold(now, reason)
            else:
                policy.release(now)
            sp, source = policy.tick(now), "policy"
            if self._stalled_for(now) > STALL_LIMIT_S:
                if not sp.is_zero:
                    self._stalls += 1
                sp, source = ZERO, "stalled"
            elif reason and policy.activity.mode != "idle":
                source = "held"
            elif sp.is_zero:
                source = "idle"
        while policy.gripper_requests:
            self._control("gripper", (policy.gripper_requests.pop(0),))
        self._send(sp)
        if not sp.is_zero and self._pending_motion is not None and self._pending_motion[1]:
            self._first_motion = now - self._pending_motion[1]
            self._pending_motion = None
            if self.on_first_motion is not None:
                self.on_first_motion(self._first_motion)
        with self._lock:
            self._ticks += 1
            self._last = (sp, source)
        if self.on_tick is not None:
            self.on_tick()  # no snapshot built on the 20 Hz path: the callee reads what it needs
        return sp

    def _send(self, sp: Setpoint) -> None:
        try:
            self.link.send_setpoint(sp.linear_m_s, sp.angular_rad_s, sp.ttl_s)
        except BridgeError:  # link not started: nothing to send to; the MCU's own watchdog holds the robot
            self._unsent += 1

    def _run_controls(self) -> None:
        while True:
            with self._lock:
                if not self._controls:
                    return
                action, args = self._controls.popleft()
            self._control(action, args)

    def _control(self, action: str, args: tuple) -> None:
        try:
            future = getattr(self.link, action)(*args)
        except BridgeError as exc:
            self._results.append({"control": action, "outcome": "failed", "detail": str(exc)})
            return

        def done(f, action=action):
            try:
                r = f.result()
                self._results.append({"control": action, "outcome": str(r.outcome.value), "detail": r.detail})
            except (BridgeError, CancelledError) as exc:
                self._results.append({"control": action, "outcome": "failed", "detail": str(exc)})

        future.add_done_callback(done)
