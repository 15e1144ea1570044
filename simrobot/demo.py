"""``voxedge demo``: the whole system, headless, through scripted spoken commands on the simulated robot.

Each episode builds a seeded arena with objects in view, starts the real C
firmware core on a pseudo-terminal, the sim camera rendering from the robot's
odometry, the sim microphone (pink noise), and the runtime with the bundle.
A command is synthesized with espeak-ng in a voice never used in training and
played at 10 dB SNR. Episode kinds:

- ``go_to``: "go to the <colour> <shape>" naming an object in view; success
  when the robot ends within 0.3 m of that object.
- ``stop``: "go forward", then "stop" while it drives; success when the
  motors are at zero within 1 s of the end of "stop" and the robot stays put.
- ``none``: ordinary speech that is no command; success when it does not move.

The table reports the success rate, the time from the end of speech to the
first motion, and the time to reach; a JSON file and a plot hold the details.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ

REACH_M = 0.30  # go_to success radius, robot centre to object centre
SPEECH_DBFS = -30.0  # active speech level; the noise bed sits SNR_DB below it
SNR_DB = 10.0
EPISODE_TIMEOUT_S = 35.0
NONE_WATCH_S = 3.0  # a "none" episode watches this long after the speech for any motion
MOTION_EPS = 1e-4  # m or rad of odometry that counts as motion
KINDS = ("go_to", "stop", "none")


DRIVE_ATTEMPTS = 3  # "go forward" before a stop episode, said again when the robot did not move
DRIVE_REACT_S = 3.0  # after the clip: hangover, inference and the first setpoint, with room for a loaded host


class DemoError(Exception):
    """Bad demo settings."""


@dataclass
class Episode:
    kind: str
    seed: int
    text: str
    voice: str
    success: bool = False
    intent: str | None = None
    confidence: float | None = None
    outcome: str | None = None
    first_motion_s: float | None = None  # end of speech -> first commanded wheel motion
    reach_s: float | None = None  # end of speech -> arrival (go_to)
    final_distance_m: float | None = None
    error: str | None = None
    events: list = field(default_factory=list)


def _voices():
    from sim.speech import voice_split

    return voice_split()["test"]  # accents and variants never heard in training


def _speech(text: str, rng: np.random.Generator):
    """(audio scaled to SPEECH_DBFS active RMS, index of the last active sample, voice name)."""
    from sim.noise import active_span
    from sim.speech import SpeechRequest, synthesize

    voices = _voices()
    voice = voices[int(rng.integers(len(voices)))]
    audio = synthesize(SpeechRequest(text, voice, rate_wpm=int(rng.integers(140, 181)))).astype(np.float32)
    lo, hi = active_span(audio)
    rms = float(np.sqrt(np.mean(audio[lo:hi].astype(np.float64) ** 2)))
    gain = 10 ** (SPEECH_DBFS / 20) / max(rms, 1e-6)
    return np.clip(audio * gain, -1, 1).astype(np.float32), hi, f"{voice.base}+{voice.variant or ''}".rstrip("+")


def _scene(seed: int, kind: str):
    """A seeded arena, start pose and (for go_to) a clearly visible target object."""
    from sim.camera import CameraModel, render
    from sim.world import sample_view

    rng = np.random.default_rng(seed)
    for _ in range(50):
        arena, pose = sample_view(rng, n_in_view=(2, 4), n_elsewhere=(0, 2))
        if kind != "go_to":
            return arena, pose, None
        view = render(arena, pose, CameraModel())
        ok = [v for v in view.visible if v.visible_fraction >= 0.6 and not v.truncated and v.distance_m > 0.5]
        if ok:
            target = ok[int(rng.integers(len(ok)))]
            return arena, pose, arena.objects[target.index]
    raise RuntimeError(f"seed {seed}: no arena with a clearly visible object (try another seed)")


class _Session:
    """One episode's simulated robot, sensors and runtime."""

    def __init__(self, bundle: str, precision: str, arena, pose, seed: int) -> None:
        from edge.runtime import Runtime, RuntimeConfig
        from edge.sensors import make_camera, make_microphone
        from sim.camera import Appearance
        from simrobot.robot import SimRobot

        self.robot = SimRobot(arena, pose)
        link = self.robot.start()
        camera = make_camera("sim", pose_fn=self.robot.pose, arena=arena, fps=15.0,
                             appearance=Appearance(noise_sigma=2.0), seed=seed)
        self.mic = make_microphone("sim", noise="pink", noise_dbfs=SPEECH_DBFS - SNR_DB, seed=seed)
        self.runtime = Runtime(RuntimeConfig(bundle=bundle, precision=precision), link=link, camera=camera,
                               microphone=self.mic)
        try:
            self.runtime.start()
            self.runtime.actuator.request("arm")
            link.wait_for_telemetry(lambda t: t.armed, timeout_s=3.0)
        except BaseException:
            self.close()
            raise

    def say(self, audio: np.ndarray, last_active: int) -> float:
        """Play the speech; returns the monotonic time its last active sample is heard."""
        t0 = self.mic.inject(audio)
        return t0 + last_active / SAMPLE_RATE_HZ

    def watch(self, until, timeout_s: float, t_speech_end: float) -> tuple[float | None, object]:
        """Poll telemetry until ``until(events)`` holds; returns (first motion time after speech end, event)."""
        first_motion = None
        seen = self.runtime.events_after(0)
        mark = seen[-1].id if seen else 0
        deadline = time.monotonic() + timeout_s
        found = None
        while time.monotonic() < deadline:
            tel = self.runtime.link.telemetry
            if first_motion is None and tel is not None and not tel.motors_stopped and time.monotonic() > t_speech_end:
                first_motion = time.monotonic() - t_speech_end
            events = self.runtime.events_after(mark, timeout_s=0.02)
            if events:
                mark = events[-1].id
                found = until(events)
                if found is not None:
                    return first_motion, found
        return first_motion, found

    def close(self) -> None:
        try:
            self.runtime.stop()
        finally:
            self.robot.stop()


class _Watcher:
    """``_Session.watch``'s test: notes the first decision and returns the first event ``done`` accepts
    (only once a decision has come, with ``after_decision``)."""

    def __init__(self, done, after_decision: bool = False) -> None:
        self.decision = None
        self._done, self._after_decision = done, after_decision

    def __call__(self, events):
        for e in events:
            if e.kind == "decision" and self.decision is None:
                self.decision = e
            if self._done(e) and (self.decision is not None or not self._after_decision):
                return e
        return None

    def record(self, ep: Episode) -> None:
        if self.decision is not None:
            ep.intent, ep.confidence = self.decision.data["intent"], self.decision.data["confidence"]


def run_episode(bundle: str, kind: str, seed: int, precision: str = "int8") -> Episode:
    from sim.commands import TEMPLATES, distractor_phrases

    rng = np.random.default_rng(10_000 + seed)
    arena, pose, target = _scene(seed, kind)
    if kind == "go_to":
        template = TEMPLATES["go_to"][int(rng.integers(len(TEMPLATES["go_to"])))]
        text = template.format(color=target.color, shape=target.shape)
    elif kind == "stop":
        text = "stop"
    else:
        phrases = distractor_phrases()
        text = phrases[int(rng.integers(len(phrases)))].text
    audio, last, voice = _speech(text, rng)
    ep = Episode(kind, seed, text, voice)
    session = _Session(bundle, precision, arena, pose, seed)
    try:
        rt = session.runtime
        start = session.robot.pose()
        if kind == "go_to":
            t_end = session.say(audio, last)
            watcher = _Watcher(lambda e: e.kind == "outcome", after_decision=True)
            ep.first_motion_s, outcome = session.watch(watcher, EPISODE_TIMEOUT_S, t_end)
            watcher.record(ep)
            if outcome is not None:
                ep.outcome = outcome.data["reason"]
                ep.reach_s = outcome.data["t"] - t_end
            p = session.robot.pose()
            ep.final_distance_m = math.hypot(p.x - target.x, p.y - target.y)
            # Success is where the robot ended (the criterion); the outcome says why it stopped
            # ("lost" right at the object: it filled the view). A timeout or a wrong command is a failure.
            ep.success = ep.final_distance_m <= REACH_M and ep.outcome in ("reached", "lost")
        elif kind == "stop":
            _start_moving(session, rng)
            time.sleep(0.3)
            t_end = session.say(audio, last)
            watcher = _Watcher(lambda e: e.kind == "outcome" and e.data["reason"] == "stopped")
            _, stopped = session.watch(watcher, 8.0, t_end)
            watcher.record(ep)
            if stopped is not None:
                tel = rt.link.wait_for_telemetry(lambda t: t.motors_stopped, timeout_s=2.0)
                ep.reach_s = tel.received_at - t_end
                ep.success = True
            ep.outcome = "stopped" if ep.success else "not stopped by the command"
        else:
            t_end = session.say(audio, last)
            watcher = _Watcher(lambda e: e.kind == "decision")
            session.watch(watcher, 8.0, t_end)
            watcher.record(ep)
            time.sleep(NONE_WATCH_S)
            p = session.robot.pose()
            moved = max(abs(p.x - start.x), abs(p.y - start.y), abs(p.heading - start.heading))
            ep.success = moved < MOTION_EPS
            ep.outcome = "still" if ep.success else f"moved ({moved:.3f})"
        ep.events = [(e.kind, e.text) for e in rt.events_after(0) if e.kind != "info"][-8:]
    except Exception as exc:  # one broken episode is reported, not fatal to the run
        ep.error = f"{type(exc).__name__}: {exc}"
    finally:
        session.close()
    return ep


def _start_moving(session: _Session, rng: np.random.Generator) -> None:
    """Get the robot driving for a stop episode: "go forward", said again (another voice) if it was not
    heard as a motion, as an operator would; what is tested is the "stop" that follows."""
    from firmware_bridge.errors import BridgeTimeoutError

    for _ in range(DRIVE_ATTEMPTS):
        drive, last, _ = _speech("go forward", rng)
        session.say(drive, last)
        try:
            session.runtime.link.wait_for_telemetry(lambda t: not t.motors_stopped,
                                                    timeout_s=len(drive) / SAMPLE_RATE_HZ + DRIVE_REACT_S)
            return
        except BridgeTimeoutError:
            continue
    raise DemoError(f"the robot did not start moving after {DRIVE_ATTEMPTS} 'go forward' commands; nothing to stop")


def summarize(episodes: list[Episode]) -> dict:
    out = {}
    for kind in KINDS:
        eps = [e for e in episodes if e.kind == kind]
        if not eps:
            continue
        motion = [e.first_motion_s for e in eps if e.first_motion_s is not None]
        reach = [e.reach_s for e in eps if e.reach_s is not None and e.success]
        out[kind] = {"episodes": len(eps), "success": sum(e.success for e in eps),
                     "success_rate": sum(e.success for e in eps) / len(eps),
                     "first_motion_s_p50": float(np.median(motion)) if motion else None,
                     "first_motion_s_p95": float(np.percentile(motion, 95)) if motion else None,
                     "reach_s_p50": float(np.median(reach)) if reach else None,
                     "errors": sum(e.error is not None for e in eps)}
    return out


def _plot(episodes: list[Episode], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    s = summarize(episodes)
    kinds = list(s)
    axes[0].bar(kinds, [100 * s[k]["success_rate"] for k in kinds], color=["#228833", "#4477aa", "#bbbbbb"][: len(kinds)])
    axes[0].axhline(95, color="red", lw=1, ls="--")
    axes[0].set_ylabel("success %")
    axes[0].set_title("task success")
    motion = [e.first_motion_s for e in episodes if e.first_motion_s is not None]
    axes[1].hist(motion, bins=20, color="#4477aa")
    axes[1].set_xlabel("end of speech -> first motion (s)")
    axes[1].set_title("reaction")
    d = [e.final_distance_m for e in episodes if e.final_distance_m is not None]
    axes[2].hist(d, bins=20, color="#228833")
    axes[2].axvline(REACH_M, color="red", lw=1, ls="--")
    axes[2].set_xlabel("go_to: final distance to the object (m)")
    axes[2].set_title("where go_to ended")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(bundle: str, episodes: int, seed: int, kinds: tuple[str, ...], out: Path, precision: str = "int8",
             log=print) -> dict:
    """Run ``episodes`` go_to episodes and a tenth as many of each other kind; writes JSON + plot to ``out``."""
    plan = [("go_to", seed + i) for i in range(episodes)] if "go_to" in kinds else []
    extra = max(1, episodes // 10)
    for kind in ("stop", "none"):
        if kind in kinds:
            plan += [(kind, seed + 1000 + i) for i in range(extra)]
    results = []
    log(f"{len(plan)} episodes; each starts the simulated robot (the C firmware on a pseudo-terminal), the "
        f"{precision} model and espeak-ng, speaks its command and watches what the robot does (10-20 s each)")
    for n, (kind, s) in enumerate(plan, start=1):
        if log is print:  # a live line on the terminal, overwritten by the episode's result
            print(f"[{n:3d}/{len(plan)}] {kind} episode, seed {s} ...", end="\r", flush=True)
        ep = run_episode(bundle, kind, s, precision)
        results.append(ep)
        mark = "ok " if ep.success else "FAIL"
        extra_info = f" {ep.final_distance_m:.2f} m" if ep.final_distance_m is not None else ""
        log(f"[{n:3d}/{len(plan)}] {mark} {kind:<5} seed {s:<5} {ep.text!r:<34} heard {ep.intent!s:<10} "
            f"{ep.outcome!s:<12}{extra_info}" + (f"  error: {ep.error}" if ep.error else ""))
    summary = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps({"summary": summary, "episodes": [asdict(e) for e in results]},
                                              indent=2, default=str) + "\n")
    _plot(results, out / "demo.png")
    return summary


def print_table(summary: dict, log=print) -> None:
    log(f"{'episodes':<10}{'n':>5}{'success':>10}{'first motion p50':>18}{'p95':>8}{'time to reach p50':>20}")
    for kind, s in summary.items():
        def fmt(v):
            return f"{v:.2f} s" if v is not None else "-"

        log(f"{kind:<10}{s['episodes']:>5}{100 * s['success_rate']:>9.1f}%{fmt(s['first_motion_s_p50']):>18}"
            f"{fmt(s['first_motion_s_p95']):>8}{fmt(s['reach_s_p50']):>20}")


def target_verdict(summary: dict) -> tuple[str, bool]:
    """The demo's verdict line and whether it passed, for the targets of the kinds that ran only: "met"
    without a single go_to episode would claim what was not measured."""
    targets = []
    if "go_to" in summary:
        targets.append(("go_to >= 95 %", summary["go_to"]["success_rate"] >= 0.95))
    if "none" in summary:
        targets.append(("no motion on any 'none'", summary["none"]["success_rate"] == 1.0))
    if not targets:
        return "targets: none measured (they are for go_to and none episodes)", True
    ok = all(met for _, met in targets)
    return f"targets ({', '.join(name for name, _ in targets)}): {'met' if ok else 'MISSED'}", ok


def _cmd_demo(args: argparse.Namespace) -> int:
    args.bundle = args.bundle or getattr(args, "bundle_option", None) or "bundle"
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise DemoError(f"unknown episode kinds {bad}; use {list(KINDS)}")
    if not (Path(args.bundle) / "manifest.json").is_file():
        raise DemoError(f"no bundle at {args.bundle}: build it with `make demo-bundle` (or voxedge convert)")
    from edge.outputs import output_dir

    with output_dir(args.out):  # checked before the episodes, not after them; removed again if they fail
        summary = run_demo(args.bundle, args.episodes, args.seed, kinds, Path(args.out), args.precision)
    print()
    print_table(summary)
    print(f"\nwrote {Path(args.out) / 'demo.json'} and {Path(args.out) / 'demo.png'}")
    line, ok = target_verdict(summary)
    print(line)
    return 0 if ok else 1  # a demo that missed its targets says so to scripts too


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the ``voxedge`` parser."""
    p = sub.add_parser("demo", help="run the system headless through scripted spoken commands on the sim robot")
    p.add_argument("bundle", nargs="?",
                   help="bundle directory (default: bundle; make demo-bundle builds it)")
    from edge.cli_args import add_deprecated

    add_deprecated(p, "--bundle", "the positional BUNDLE", dest="bundle_option")
    p.add_argument("--episodes", type=int, default=20, help="go_to episodes (plus a tenth as many stop and none)")
    p.add_argument("--seed", type=int, default=0, help="arenas and voices of the episodes (default: %(default)s)")
    p.add_argument("--kinds", default="go_to,stop,none",
                   help=f"comma-separated episode kinds, of {', '.join(KINDS)} (default: %(default)s)")
    p.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"),
                   help="which of the bundle's models runs (default: %(default)s)")
    p.add_argument("--out", default="demo-results", help="directory for demo.json and demo.png")
    p.set_defaults(func=_cmd_demo)
