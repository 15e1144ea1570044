"""The runtime: camera + microphone -> listener -> inference worker -> actuator -> link, started and stopped as one.

Threads (``docs/architecture.md``): the camera reader, the microphone
callback or feeder, the listener (VAD + endpointer), the inference worker
(owns the runner), the actuator loop (the only caller of the link), the
link's own I/O thread and the audit writer. Between them: one-item slots and
immutable snapshots. ``Runtime.snapshot()`` is what the service shows;
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

from edge.actuator import Actuator
from edge.alerts import Alerts
from edge.audit import AuditError, AuditLog, sample_frame
from edge.fusion import Decision, InferenceWorker
from edge.health import HEALTH_PERIOD_S, HOLDING_COMPONENTS, HealthRules
from edge.listening import EndpointerConfig, Listener, Utterance
from edge.policy import CameraGeometry, Policy, PolicyConfig

log = logging.getLogger("voxedge.runtime")

EVENT_LOG_LEN = 200  # events kept for the panel

class EdgeRuntimeError(Exception):
    """The runtime cannot start (bad settings, a device that does not open)."""


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
    camera: dict = field(default_factory=lambda: {"type": "opencv", "source": 0})
    microphone: dict = field(default_factory=lambda: {"type": "pyaudio"})
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


class Runtime:
    """The robot's brain stem; see the module docstring."""

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
        from edge.sensors import make_camera, make_microphone

        if self._started:
            raise EdgeRuntimeError("runtime already started")
        cfg = self.config
        opened = []
        try:
            self.bundle = load_bundle(cfg.bundle)
            if self._runner is None:
                options = {"intra_op_threads": cfg.intra_op_threads} if cfg.backend == "onnxruntime" else {}
                if cfg.precision == AUTO:  # times each of the bundle's precisions here; returns the fastest, active
                    self._runner, _ = pick_fastest(self.bundle, cfg.backend, options)
                    opened.append(self._runner.deactivate)
                else:
                    self._runner = make_runner(cfg.backend, self.bundle, cfg.precision, **options)
            if self._camera is None:
                cam = dict(cfg.camera)
                self._camera = make_camera(cam.pop("type"), **cam)
            if self._microphone is None:
                mic = dict(cfg.microphone)
                self._microphone = make_microphone(mic.pop("type"), **mic)
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
            self.worker = InferenceWorker(self._runner, self._camera.buffer, self._microphone.ring,
                                          self._on_decision, on_error=self._on_inference_error)
            self.actuator = Actuator(self._link, Policy(cfg.policy, cfg.geometry, tracker=self.worker),
                                     stalled_for=self.worker.stalled_for, hold_reason=self.hold_reason)
            self.actuator.on_tick = self._on_tick
            self.listener = Listener(self._microphone.ring, self._on_utterance, cfg.endpointer)
            self.actuator.start()
            opened.append(self.actuator.stop)
            self.worker.start()
            opened.append(self.worker.stop)
            self.listener.start()
            opened.append(self.listener.stop)
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
                 self._microphone.disconnect, self._camera.disconnect]
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
        return self._health_rules.check(now, self._camera, self._microphone, self.worker, self._link,
                                        audit_problem=audit, audit_on=bool(self.config.audit_log))

    def hold_reason(self) -> str | None:
        """Why the robot must hold still now (a camera, microphone or inference problem), or None.
        Read by the actuator thread every tick; the health check (same thread) keeps it current."""
        return next((self.health[k] for k in HOLDING_COMPONENTS if self.health.get(k)), None)

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

    # -- the panel's view ------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything the panel and the API show, as JSON-ready values."""
        a = self.actuator.state() if self.actuator else None
        cam = self._camera.stats() if self._camera else None
        mic = self._microphone.stats() if self._microphone else None
        vad = self.listener.state if self.listener else None
        link_stats = getattr(self._link, "stats", None)  # a property of firmware_bridge.Link
        tel = a.telemetry if a else None
        d = self._last_decision
        return {
            "uptime_s": time.monotonic() - self.started_at if self.started_at else 0.0,
            "camera": asdict(cam) if cam else None,
            "microphone": asdict(mic) if mic else None,
            "vad": asdict(vad) if vad else None,
            "decision": d.summary() if d else None,
            "activity": asdict(a.activity) if a else None,
            "setpoint": asdict(a.setpoint) if a else None,
            "setpoint_source": a.source if a else None,
            "estopped": a.estopped if a else False,
            "first_motion_latency_s": a.first_motion_latency_s if a else None,
            "link": {"connected": a.link_connected if a else False,
                     "stats": link_stats.as_dict() if link_stats else None,
                     "telemetry": _telemetry_dict(tel)},
            "inference": {"decisions": self.worker.decisions if self.worker else 0,
                          "errors": self.worker.errors if self.worker else 0,
                          "dropped_utterances": self.worker.utterances.dropped if self.worker else 0,
                          "api_requests": self.worker.api_requests if self.worker else 0,
                          "api_batches": self.worker.api_batches if self.worker else 0,
                          "tracking": self.worker.tracking if self.worker else None},
            "audit": self.audit.status() if self.audit is not None else (
                {"off": self._audit_off} if self._audit_off else None),
            "health": dict(self.health),
            "alerts": self.alerts.active(time.monotonic()),
        }


def _telemetry_dict(t) -> dict | None:
    if t is None:
        return None
    return {"x_m": t.x_m, "y_m": t.y_m, "theta_rad": t.theta_rad, "battery_v": t.battery_v,
            "state": t.state.name, "reason": t.reason.name, "gripper": t.gripper.name,
            "wheel_left_m_s": t.wheel_left_m_s, "wheel_right_m_s": t.wheel_right_m_s, "age_s": t.age_s}
