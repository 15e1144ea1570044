"""The runtime: camera + microphone -> listener -> inference worker -> actuator -> link, started and stopped as one.

Threads (``docs/architecture.md``): the camera reader, the microphone
callback or feeder, the listener (VAD + endpointer), the inference worker
(owns the runner), the actuator loop (the only caller of the link), the
link's own I/O thread and the audit writer. Between them: one-item slots and
immutable snapshots. ``Runtime.status()`` is what the service shows (``edge.service.state``);
``events`` is a bounded log of what happened (decisions, outcomes, alerts).

The simulated robot (``simrobot``) gives it a link, a camera and a microphone
like any other; this module does not know it is simulated.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge import gc_pause
from edge.actuator import Actuator
from edge.alerts import Alerts
from edge.audit import AuditError, AuditLog, sample_frame
from edge.fusion import Decision, InferenceWorker
from edge.health import HEALTH_PERIOD_S, HOLDING_COMPONENTS, HealthRules
from edge.listening import EndpointerConfig, Listener, Utterance
from edge.policy import CameraGeometry, Policy, PolicyConfig
from edge.sensors.spec import SensorSpec

log = logging.getLogger("voxedge.runtime")

EVENT_LOG_LEN = 200  # events kept for the panel

class EdgeRuntimeError(Exception):
    """The runtime cannot start (bad settings, a device that does not open)."""


class NotRunningError(EdgeRuntimeError):
    """The service asked for something before the runtime started it (or after it stopped)."""


class RefusedError(EdgeRuntimeError):
    """An operator action the robot's state does not allow now (arming or driving while e-stopped)."""


@dataclass(frozen=True)
class Event:
    id: int
    t: float  # monotonic
    wall: float  # time.time(), for people
    kind: str  # decision, outcome, alert, info
    text: str
    data: dict = field(default_factory=dict)


@dataclass
class RuntimeConfig:
    """Everything ``voxedge serve`` and the demo set."""

    bundle: str
    precision: str = "auto"  # the bundle's file (onnxruntime) or engine (tensorrt) precision; auto: the fastest here
    backend: str = "onnxruntime"
    camera: SensorSpec = field(default_factory=lambda: SensorSpec("opencv", {"source": 0}))  # or a dict with "type"
    microphone: SensorSpec = field(default_factory=lambda: SensorSpec("pyaudio"))
    link_port: str | None = None  # serial device; None: the runtime's caller supplies a link
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    geometry: CameraGeometry = field(default_factory=CameraGeometry)
    audit_log: str | None = None
    audit_max_samples: int = 2000
    audit_reserve_mb: float = 100.0  # the audit log stops recording (with an alert) below this much free disk
    # ONNX Runtime threads per inference. One: the runner shares the CPU with the camera, microphone,
    # actuator and HTTP threads, and bench_predict measured +35-55 % throughput and a lower p99 with
    # one thread than with ONNX Runtime's default of one per core (2 here).
    intra_op_threads: int = 1
    # A remote backend (backend kserve://HOST:PORT/MODEL, edge.runners.kserve): its per-request timeout, and
    # the local precision to run while it fails (None: the robot holds still instead).
    remote_timeout_s: float = 0.3
    remote_fallback: str | None = None
    remote_token: str | None = field(default=None, repr=False)  # the remote server's bearer token, if it needs one

    def __post_init__(self) -> None:
        self.camera = SensorSpec.of(self.camera)
        self.microphone = SensorSpec.of(self.microphone)


class Runtime:
    """The robot's brain stem; see the module docstring."""

    _remote = None  # the runner when it is a remote backend's (edge.runners.kserve): its problem holds the robot

    def __init__(self, config: RuntimeConfig, link=None, camera=None, microphone=None, runner=None) -> None:
        self.config = config
        self._link, self._camera, self._microphone, self._runner = link, camera, microphone, runner
        self.bundle = None
        self.worker: InferenceWorker | None = None
        self.listener: Listener | None = None
        self.actuator: Actuator | None = None
        self.audit: AuditLog | None = None
        self._audit_off: str | None = None  # why the configured audit log could not be opened
        self._events: deque[Event] = deque(maxlen=EVENT_LOG_LEN)
        self._event_ids = itertools.count(1)
        self._cond = threading.Condition()
        self._last_decision: Decision | None = None
        self._last_view: Decision | None = None
        self._listeners: list = []
        self._motion_listeners: list = []
        self._direct_alerts = 0
        self.alerts = Alerts(self.event)  # one alert per condition (health checks and repeated failures)
        self.health: dict[str, str | None] = {}
        from edge.systemd import Notifier

        self.notifier = Notifier()
        self._last_health = 0.0
        self._health_rules = HealthRules()
        self._last_utterance: Utterance | None = None
        self._outcomes_seen = 0
        self._started = False
        self.started_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Runtime:
        """Open everything and start the threads; on failure, close what was opened and re-raise."""
        from edge.bundle import load_bundle
        from edge.precision import AUTO, pick_fastest
        from edge.runners import make_runner
        from edge.runners.kserve import KServeRunner, is_remote
        from edge.sensors import make_camera, make_microphone

        if self._started:
            raise EdgeRuntimeError("runtime already started")
        cfg = self.config
        opened = []
        try:
            self.bundle = load_bundle(cfg.bundle)
            if self._runner is None:
                options = {"intra_op_threads": cfg.intra_op_threads} if cfg.backend == "onnxruntime" else {}
                if is_remote(cfg.backend):  # auto is not timed: the remote serves one model (KServeRunner)
                    options = {"intra_op_threads": cfg.intra_op_threads, "timeout_s": cfg.remote_timeout_s,
                               "fallback": cfg.remote_fallback, "token": cfg.remote_token}
                # auto times each of the bundle's precisions here and returns the fastest, active
                if cfg.precision == AUTO and not is_remote(cfg.backend):
                    self._runner, _ = pick_fastest(self.bundle, cfg.backend, options)
                    opened.append(self._runner.deactivate)
                else:
                    self._runner = make_runner(cfg.backend, self.bundle, cfg.precision, **options)
            if self._camera is None:
                self._camera = make_camera(cfg.camera.type, **cfg.camera.options)
            if self._microphone is None:
                self._microphone = make_microphone(cfg.microphone.type, **cfg.microphone.options)
            if self._link is None:
                if not cfg.link_port:
                    raise EdgeRuntimeError("no robot link: give a serial port (--link /dev/robot) or --link sim")
                from firmware_bridge.link import Link

                self._link = Link(cfg.link_port)
            if not getattr(self._link, "is_connected", False):
                self._link.connect()
                opened.append(self._link.disconnect)
            self._camera.connect()
            opened.append(self._camera.disconnect)
            self._microphone.connect()
            opened.append(self._microphone.disconnect)
            if cfg.audit_log:
                # An audit log that cannot be opened does not keep the robot from working: it runs without one
                # and says so (health "audit", an alert, the state API), as it does when the disk fills later.
                try:
                    self.audit = AuditLog(cfg.audit_log, cfg.audit_max_samples,
                                          reserve_bytes=int(cfg.audit_reserve_mb * 1024**2)).start()
                    opened.append(self.audit.stop)
                    for note in self.audit.notes:
                        self.alert(f"audit log: {note}", {"component": "audit"})
                except AuditError as exc:
                    self._audit_off = f"audit log off: {exc}"
            if not self._runner.is_active:
                self._runner.activate()
                opened.append(self._runner.deactivate)
            self._remote = self._runner if isinstance(self._runner, KServeRunner) else None
            self.worker = InferenceWorker(self._runner, self._camera.buffer, self._microphone.ring,
                                          self._on_decision, on_error=self._on_inference_error)
            self.actuator = Actuator(self._link, Policy(cfg.policy, cfg.geometry, tracker=self.worker),
                                     stalled_for=self.worker.stalled_for, hold_reason=self.hold_reason)
            self.actuator.on_tick = self._on_tick
            self.actuator.on_first_motion = self._on_first_motion
            self.listener = Listener(self._microphone.ring, self._on_utterance, cfg.endpointer)
            self.actuator.start()
            opened.append(self.actuator.stop)
            self.worker.start()
            opened.append(self.worker.stop)
            self.listener.start()
            opened.append(self.listener.stop)
            # Last: what start-up made (the model, the threads' state) is frozen out of the collector, so a
            # full collection no longer stops the actuator's heartbeat for longer than the MCU's watchdog.
            gc_pause.hold()
            opened.append(gc_pause.release)
        except BaseException:
            for close in reversed(opened):
                try:
                    close()
                except Exception as exc:  # keep closing the rest; the original error is what matters
                    self.alert(f"while cleaning up: {exc}")
            raise
        self._started = True
        self.started_at = time.monotonic()
        self.notifier.ready(f"serving {Path(cfg.bundle).name}")
        note = getattr(self._runner, "model_note", None) or f"{cfg.precision}"
        self.event("info", f"runtime started: {Path(cfg.bundle).name} ({cfg.backend}, {note})")
        return self

    def stop(self) -> None:
        """Stop the threads in reverse order (the actuator's last word is a zero setpoint) and close devices."""
        if not self._started:
            return
        self._started = False
        self.notifier.stopping()
        errors = []
        steps = [self.listener.stop, self.worker.stop, self.actuator.stop, self._runner.deactivate,
                 self._microphone.disconnect, self._camera.disconnect, gc_pause.release]
        if self.audit is not None:
            steps.append(self.audit.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(f"{getattr(step, '__qualname__', step)}: {exc}")
        if errors:
            raise EdgeRuntimeError("the runtime did not stop cleanly: " + "; ".join(errors))

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- components (read-only use by the service) ------------------------------------
    @property
    def link(self):
        return self._link

    @property
    def camera(self):
        return self._camera

    @property
    def microphone(self):
        return self._microphone

    @property
    def runner(self):
        return self._runner

    @property
    def last_utterance(self) -> Utterance | None:
        return self._last_utterance

    @property
    def last_view(self) -> Decision | None:
        """The newest decision of any kind (tracking updates too): what the live view overlays."""
        return self._last_view

    # -- what the service calls (edge.service never reaches into the components) -----------
    def _running_actuator(self) -> Actuator:
        if self.actuator is None:
            raise NotRunningError("the runtime is not running yet; try again in a moment")
        return self.actuator

    @property
    def estopped(self) -> bool:
        return self.actuator is not None and self.actuator.estop_event.is_set()

    def estop(self, source: str) -> None:
        """Stop the robot now (straight to the link), then log it: repeated presses make one alert with a count,
        while every one of them reaches the link."""
        self._running_actuator().estop()
        self.report("estop", f"E-STOP from {source}")

    def arm(self, source: str) -> None:
        if self.estopped:
            raise RefusedError("e-stopped: clear the failsafe first (the robot never resumes by itself)")
        self._request("arm", source)

    def disarm(self, source: str) -> None:
        self._request("disarm", source)

    def clear_failsafe(self, source: str) -> None:
        self._running_actuator().release_estop()
        self._request("clear_failsafe", source)

    def _request(self, action: str, source: str) -> None:
        self._running_actuator().request(action)
        self.event("info", f"{action.replace('_', ' ')} requested from {source}")

    def drive(self, linear_m_s: float, angular_rad_s: float) -> None:
        """Manual driving (hold-to-move: the actuator's deadman stops it unless refreshed)."""
        actuator = self._running_actuator()
        if actuator.estop_event.is_set():
            raise RefusedError("e-stopped: clear the failsafe and arm before driving")
        actuator.manual(linear_m_s, angular_rad_s)

    @property
    def can_say(self) -> bool:
        """Whether the microphone takes typed commands (the simulated one speaks them with espeak-ng)."""
        return callable(getattr(self._microphone, "say", None))

    def say(self, text: str) -> float:
        """Speak ``text`` into the microphone; the monotonic time its audio starts."""
        if not self.can_say:
            raise RefusedError("the say box needs the simulated microphone (voxedge serve --sim or make demo)")
        t_start = self._microphone.say(text)
        self.event("info", f"said {text!r} into the sim microphone")
        return t_start

    def infer(self, feed: dict) -> tuple[dict, float]:
        """Run the model on an API request's inputs, batched with others by the inference worker: (outputs, ms).
        Raises ``edge.fusion.WorkerBusyError`` when the worker's queue is full."""
        if self.worker is None:
            raise NotRunningError("the model is not loaded yet; try again in a moment")
        return self.worker.request(feed)

    def recent_audio(self, samples: int) -> np.ndarray:
        """The microphone's newest ``samples`` (fewer if it has not heard that much yet), 16 kHz float32."""
        ring = self._microphone.ring
        n = min(samples, ring.end_index - ring.oldest_index)
        return ring.latest(n) if n > 0 else np.zeros(0, np.float32)

    @property
    def ready(self) -> bool:
        return self.bundle is not None and self.worker is not None

    @property
    def running(self) -> bool:
        """Between a successful ``start()`` and ``stop()``."""
        return self._started

    # -- events -----------------------------------------------------------------------
    def event(self, kind: str, text: str, data: dict | None = None) -> Event:
        e = Event(next(self._event_ids), time.monotonic(), time.time(), kind, text, data or {})
        if kind == "alert":
            log.warning("alert: %s", text)
        with self._cond:
            self._events.append(e)
            self._cond.notify_all()
        return e

    def alert(self, text: str, data: dict | None = None) -> Event:
        """A one-off alert (something that happened once, e.g. a repair at start)."""
        self._direct_alerts += 1
        return self.event("alert", text, data)

    def report(self, key: str, text: str, exc: BaseException | None = None) -> None:
        """A failure that may repeat: one alert while it keeps recurring (``edge.alerts``; the alert itself is
        logged as a warning once); every occurrence, with its exception and traceback, at info level."""
        log.info("%s", text, exc_info=exc)
        self.alerts.report(key, text, time.monotonic())

    @property
    def alert_count(self) -> int:
        return self._direct_alerts + self.alerts.raised

    def events_after(self, after_id: int = 0, timeout_s: float | None = None) -> list[Event]:
        """Events newer than ``after_id``; waits up to ``timeout_s`` for one if there is none yet."""
        with self._cond:
            if timeout_s and not (self._events and self._events[-1].id > after_id):
                self._cond.wait(timeout_s)
            return [e for e in self._events if e.id > after_id]

    # -- callbacks from the threads -------------------------------------------------------
    def _on_inference_error(self, exc: BaseException) -> None:
        self.report("inference-errors", f"inference error: {exc}", exc)

    def _on_utterance(self, utterance: Utterance) -> None:
        self._last_utterance = utterance
        self.worker.submit(utterance)

    def add_decision_listener(self, listener) -> None:
        """Call ``listener(decision)`` for every decision (in the inference thread: keep it quick)."""
        self._listeners.append(listener)

    def add_motion_listener(self, listener) -> None:
        """Call ``listener(seconds)`` with each command's end-of-speech -> first-motion latency (in the actuator
        thread, at 20 Hz: keep it quick)."""
        self._motion_listeners.append(listener)

    def _on_first_motion(self, seconds: float) -> None:
        for listener in self._motion_listeners:
            try:
                listener(seconds)
            except Exception as exc:  # a listener never stops the actuator loop
                self.report("motion-listener", f"first-motion listener failed: {exc}", exc)

    def _on_decision(self, decision: Decision) -> None:
        self.actuator.submit(decision)
        self._last_view = decision
        for listener in self._listeners:
            listener(decision)
        if decision.kind != "utterance":
            return
        self._last_decision = decision
        d = decision.summary()
        verdict = "acting" if decision.accepted else "ignored"
        self.event("decision", f"heard {decision.intent!r} ({100 * decision.confidence:.0f} %), {verdict}", d)
        if self.audit is not None:
            # What the model decided from: its camera frame in the sample-set format (RGB at the model's size,
            # whatever layout and colour order the model takes) and the audio window the worker fed it (kept
            # for tracking; one cut again now would differ, the ring has moved on and the newest utterance may
            # already be another one).
            try:
                frame = self._camera.buffer.at(decision.t_frame, tolerance_s=0.001)
                if frame.seq != decision.frame_seq:
                    raise RuntimeError(f"frame {decision.frame_seq} of decision {decision.id} is no longer in the "
                                       "camera's history")
                window = self.worker.window(decision.utterance_id)
                if window is None:
                    raise RuntimeError(f"the audio window of decision {decision.id} is no longer kept")
                image = sample_frame(frame.image, self.bundle.manifest.preprocessing)
                self.audit.record(image, window, d, t=decision.t_speech_end)
            except Exception as exc:  # the audit log never gets in the way of the robot
                self.report("audit-errors", f"audit log could not take a decision: {exc}", exc)

    def _check_health(self, now: float) -> dict[str, str | None]:
        """Each component's problem now (None when healthy): ``edge.health``'s rules."""
        audit = None
        if self.config.audit_log:
            audit = self._audit_off or (self.audit.problem(now) if self.audit is not None else None)
        problems = self._health_rules.check(now, self._camera, self._microphone, self.worker, self._link,
                                            audit_problem=audit, audit_on=bool(self.config.audit_log))
        if self._remote is not None:  # a remote backend's server (edge.runners.kserve)
            problems["remote"] = self._remote.problem()
        return problems

    def hold_reason(self) -> str | None:
        """Why the robot must hold still now (a camera, microphone or inference problem), or None.
        Read by the actuator thread every tick; the health check (same thread) keeps it current."""
        reason = next((self.health[k] for k in HOLDING_COMPONENTS if self.health.get(k)), None)
        remote = self._remote
        if reason is None and remote is not None and remote.holds:  # a remote backend failing, no fallback:
            reason = remote.problem()  # read every tick, not at the health period, to stop at once
        return reason

    def _update_health(self, now: float) -> None:
        if now - self._last_health < HEALTH_PERIOD_S:
            return
        self._last_health = now
        try:
            problems = self._check_health(now)
        except Exception as exc:  # a health check must never stop the actuator loop
            problems = {**self.health, "runtime": f"health check failed: {exc}"}
        for key, problem in problems.items():
            self.alerts.check(key, problem, now)
        self.alerts.expire(now)
        self.health = problems

    def _on_tick(self) -> None:
        self.notifier.watchdog()  # from the actuator loop: a hung loop stops the pings and systemd restarts us
        self._update_health(time.monotonic())
        policy = self.actuator.policy  # the actuator thread's own: read here, in that thread
        new = policy.outcome_count - self._outcomes_seen
        if new > 0:
            for o in policy.outcomes[-new:]:
                self.event("outcome", f"{o.intent}: {o.reason}", asdict(o))
            self._outcomes_seen = policy.outcome_count

    # -- the state, for the service to show ----------------------------------------------------
    def status(self) -> RuntimeStatus:
        """Each component's state now, typed; ``edge.service.state`` turns it into the panel's JSON."""
        w = self.worker
        return RuntimeStatus(
            uptime_s=time.monotonic() - self.started_at if self.started_at else 0.0,
            actuator=self.actuator.state() if self.actuator else None,
            camera=self._camera.stats() if self._camera else None,
            microphone=self._microphone.stats() if self._microphone else None,
            vad=self.listener.state if self.listener else None,
            decision=self._last_decision,
            link_stats=getattr(self._link, "stats", None),  # a property of firmware_bridge.Link
            inference=InferenceCounts(w.decisions, w.errors, w.utterances.dropped, w.api_requests, w.api_batches,
                                      w.tracking) if w else InferenceCounts(),
            audit=self.audit.status() if self.audit is not None else (
                {"off": self._audit_off} if self._audit_off else None),
            health=dict(self.health),
            alerts=tuple(self.alerts.active(time.monotonic())),
        )


@dataclass(frozen=True)
class InferenceCounts:
    decisions: int = 0
    errors: int = 0
    dropped_utterances: int = 0
    api_requests: int = 0
    api_batches: int = 0
    tracking: object = None  # the utterance being tracked (go_to, pick_up), if any


@dataclass(frozen=True)
class RuntimeStatus:
    """``Runtime.status()``: what each component reports, at one moment."""

    uptime_s: float
    actuator: object | None  # edge.actuator.ActuatorState
    camera: object | None  # edge.sensors.CameraStats
    microphone: object | None  # edge.sensors.MicrophoneStats
    vad: object | None  # edge.listening's VAD state
    decision: Decision | None  # the last utterance's
    link_stats: object | None  # firmware_bridge's LinkStats
    inference: InferenceCounts
    audit: dict | None
    health: dict
    alerts: tuple
