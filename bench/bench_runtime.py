"""The runtime on the simulated robot: end of speech -> first setpoint on the wire, memory and idle CPU of ``voxedge serve``.

One run, with the ONNX Runtime INT8 bundle of the reference model (made here by
``voxedge make-set`` / ``voxedge convert`` subprocesses, so torch is never
imported into this process):

1. Latency. The runtime runs in this process on the simulated robot (the C
   firmware core on a pty, sim camera at 15 fps, sim microphone). Each motion
   command is synthesized here with espeak-ng (held-out test voices), injected
   into the microphone, and timed to the moment the link's I/O thread has
   handed the first SETPOINT frame with a non-zero speed to the serial port
   (``serial.Serial.write`` is wrapped in this process; the written bytes are
   decoded with the project's codec). Two starting points, side by side:

   - the endpoint: the end of speech as the endpointer locates it (the end of
     the last frame the detector still called speech, ``Utterance.t_speech_end``).
     The hangover is counted from here, so "endpoint -> wire" minus the
     hangover is what the system adds: target p99 <= 30 ms.
   - the acoustic end of speech: the last sample of the clean clip above
     -60 dBFS. This one also holds the detector's own lag (Silero keeps calling
     the decay of the last word speech for a frame or three), reported as
     "detector lag".
2. Resident memory of ``voxedge serve BUNDLE --sim`` (target <= 300 MB), and its
   children (the firmware simulator) separately.
3. CPU use of ``voxedge serve`` while idle listening (sim camera at 15 fps), over
   30 s, as % of one core; then SIGTERM: it must exit within 5 s and leave no
   child process behind.

    .venv/bin/python bench/bench_runtime.py [--utterances 200] [--idle-s 30] [--bundle DIR]

Results: bench/results/runtime.json and bench/results/runtime.png.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ
from edge.service.state import snapshot

ROOT = Path(__file__).resolve().parents[1]
VOXEDGE = ROOT / ".venv" / "bin" / "voxedge"
MOTION_INTENTS = ("forward", "turn_left", "backward", "turn_right")  # this order keeps the robot near its start
TARGET_BEYOND_HANGOVER_MS = 30.0
TARGET_RSS_MB = 300.0
RECOGNISE_WINDOW_S = 2.0  # no motion on the wire this long after the end of speech: not recognised
SETTLE_S = 0.3  # pause after a motion has ended, before the next command
WARMUP = 3  # commands before the measured ones (first inferences, caches), not counted


# ----------------------------------------------------------------------------- helpers
def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _pct(values, q) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _stats(values) -> dict:
    v = list(values)
    return {"n": len(v), "p50": _pct(v, 50), "p95": _pct(v, 95), "p99": _pct(v, 99),
            "max": float(max(v)) if v else None, "mean": float(np.mean(v)) if v else None}


def _fmt(x, unit="ms", digits=1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} {unit}"


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB from /proc/<pid>/status (empty when the process is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, utime + stime in clock ticks) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text[text.rindex(")") + 2:].split()  # fields after "pid (comm) "
    return rest[0], int(rest[1]), int(rest[11]) + int(rest[12])


def _proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return "?"


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc/*/stat parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[0] != "Z":
                parents[int(entry)] = st[1]
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], log) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    dt = time.monotonic() - t0
    log(f"  {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}  ({dt:.0f} s)")
    return dt


def make_bundle(tmp: Path, n: int, log) -> tuple[Path, dict]:
    """The INT8 bundle of the reference model, made by subprocesses (no torch in this process)."""
    cal, ev, bundle = tmp / "cal", tmp / "eval", tmp / "bundle"
    times = {"make_set_val_s": _run([str(VOXEDGE), "make-set", "--out", str(cal), "--split", "val", "-n", str(n)], log),
             "make_set_test_s": _run([str(VOXEDGE), "make-set", "--out", str(ev), "--split", "test", "-n", str(n)],
                                     log),
             "convert_s": _run([str(VOXEDGE), "convert", "--out", str(bundle), "--calibration", str(cal),
                                "--eval", str(ev)], log)}
    return bundle, times


def bundle_info(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    info: dict = {"path": str(bundle), "files": [f["path"] for f in manifest.get("files", [])]}
    report = bundle / "report.json"
    if report.exists():
        gate = json.loads(report.read_text()).get("accuracy_gate", {})
        info["int8_gate"] = {"passed": gate.get("passed"), "accuracy_drop": gate.get("accuracy_drop"),
                             "int8_intent_accuracy": gate.get("candidate", {}).get("intent_accuracy")}
    return info


# ----------------------------------------------------------------------------- the wire tap
class WireTap:
    """Wraps ``serial.Serial.write`` (class level, this process only): every write is kept with its time.

    The wrapper only appends (time, bytes) to a deque, so the link's I/O thread
    is slowed by well under a microsecond; decoding happens in ``drain()``.
    """

    def __init__(self) -> None:
        from firmware_bridge.codec import FrameReader

        self._raw: collections.deque = collections.deque()
        self._reader = FrameReader()
        self._orig = None
        self.setpoints: list[tuple[float, float, float]] = []  # (t written, linear, angular)
        self.frames = 0

    def install(self) -> None:
        import serial

        orig = self._orig = serial.Serial.write
        raw = self._raw

        def write(ser, data):
            n = orig(ser, data)
            raw.append((time.monotonic(), bytes(data)))  # after the write returned: the bytes are in the pty
            return n

        serial.Serial.write = write

    def uninstall(self) -> None:
        import serial

        if self._orig is not None:
            serial.Serial.write = self._orig
            self._orig = None

    def drain(self) -> None:
        from firmware_bridge.messages import unpack
        from firmware_bridge.spec import MsgType

        while self._raw:
            t, data = self._raw.popleft()
            for frame in self._reader.feed(data):
                self.frames += 1
                if frame.msg_type == MsgType.SETPOINT:
                    sp = unpack(frame.msg_type, frame.payload)
                    self.setpoints.append((t, sp.linear_m_s, sp.angular_rad_s))

    def first_motion_after(self, t0: float) -> tuple[float, float, float] | None:
        """The first setpoint with a non-zero speed written at or after ``t0``, if any yet."""
        self.drain()
        found = None
        for sp in reversed(self.setpoints):  # the newest are at the end
            if sp[0] < t0:
                break
            if sp[1] != 0.0 or sp[2] != 0.0:
                found = sp
        return found


# ----------------------------------------------------------------------------- part 1: latency
def plan_commands(n: int, seed: int):
    """``n`` (text, intent, voice) motion commands: intents in turn, phrasings and test voices cycled."""
    from sim.commands import command_phrases
    from sim.speech import voice_split

    rng = np.random.default_rng(seed)
    phrases = {i: command_phrases(i) for i in MOTION_INTENTS}
    for pool in phrases.values():
        rng.shuffle(pool)
    voices = list(voice_split()["test"])
    rng.shuffle(voices)
    out = []
    for k in range(n):
        intent = MOTION_INTENTS[k % len(MOTION_INTENTS)]
        pool = phrases[intent]
        out.append((pool[(k // len(MOTION_INTENTS)) % len(pool)].text, intent, voices[k % len(voices)]))
    return out


def synthesize_all(plan, log):
    from sim.noise import active_span
    from sim.speech import SpeechRequest, synthesize

    t0 = time.monotonic()
    out = []
    for text, intent, voice in plan:
        audio = synthesize(SpeechRequest(text, voice))
        a0, a1 = active_span(audio)
        out.append((text, intent, voice, audio, a0, a1))
    log(f"  synthesized {len(out)} commands in {time.monotonic() - t0:.1f} s "
        f"(speech {np.mean([len(o[3]) for o in out]) / SAMPLE_RATE_HZ:.2f} s on average)")
    return out


def measure_latency(bundle: Path, n: int, seed: int, log) -> dict:
    from edge.listening import TRAILING_PAD_S, VAD_FRAME_S, EndpointerConfig
    from edge.policy import PolicyConfig
    from edge.runtime import Runtime, RuntimeConfig
    from simrobot.robot import sim_setup

    hangover_ms = 1e3 * EndpointerConfig().hangover_s
    # an utterance's audio ends this long after its last voiced frame (the endpointer's trailing pad)
    pad_ms = 1e3 * EndpointerConfig().frames(TRAILING_PAD_S) * VAD_FRAME_S
    commands = synthesize_all(plan_commands(n + WARMUP, seed), log)

    tap = WireTap()
    tap.install()
    decisions: list = []
    robot = runtime = None
    records: list[dict] = []
    resyncs = 0
    try:
        robot, camera, microphone = sim_setup(seed)
        link = robot.start()
        config = RuntimeConfig(bundle=str(bundle), precision="int8",
                               policy=PolicyConfig(step_distance_m=0.03, turn_angle_deg=6.0))
        runtime = Runtime(config, link=link, camera=camera, microphone=microphone)
        runtime.add_decision_listener(lambda d: decisions.append(d) if d.kind == "utterance" else None)
        runtime.start()
        runtime.actuator.request("arm")
        link.wait_for_telemetry(lambda t: t.armed, timeout_s=5.0)
        log(f"  runtime started and armed; {n} measured commands after {WARMUP} warm-up ones")
        time.sleep(1.0)  # the listener's cursor and the camera settle
        t_loop = time.monotonic()
        for k, (text, intent, voice, audio, a0, a1) in enumerate(commands):
            if a1 == 0:
                continue
            seen = len(decisions)
            t_first = microphone.inject(audio)
            sched_t0 = microphone.time_of_index(0)
            start_index = round((t_first - sched_t0) * SAMPLE_RATE_HZ)
            t_eos = t_first + (a1 - 1) / SAMPLE_RATE_HZ
            deadline = t_eos + RECOGNISE_WINDOW_S
            motion = None
            while motion is None and time.monotonic() < deadline:
                time.sleep(0.005)
                motion = tap.first_motion_after(t_first)
            # the ring's time of the last active sample is authoritative if the feeder had to resynchronise
            t_ring = microphone.ring.time_of(start_index + a1 - 1)
            resynced = abs(t_ring - t_eos) > 1e-3
            if resynced:
                resyncs += 1
                t_eos = t_ring
            if motion is None:
                motion = tap.first_motion_after(t_first)
                if motion is not None and motion[0] - t_eos > RECOGNISE_WINDOW_S:
                    motion = None
            rec: dict = {"k": k - WARMUP, "text": text, "intent": intent, "voice": voice.espeak_name,
                         "speech_s": round(len(audio) / SAMPLE_RATE_HZ, 3), "warmup": k < WARMUP, "feeder_resync": resynced}
            d = next((x for x in decisions[seen:] if x.t_decided >= t_first), None)
            if d is not None:
                t_start_worker = d.t_decided - d.latency_ms.get("total", 0.0) / 1e3
                rec.update(heard=d.intent, accepted=d.accepted, confidence=round(d.confidence, 4),
                           latency_ms={key: round(v, 3) for key, v in d.latency_ms.items()},
                           detector_lag_ms=round(1e3 * (d.t_speech_end - t_eos), 3),
                           endpoint_to_worker_beyond_hangover_ms=round(1e3 * (t_start_worker - d.t_speech_end)
                                                                       - hangover_ms, 3),
                           eos_to_worker_ms=round(1e3 * (t_start_worker - t_eos), 3),
                           eos_to_decision_ms=round(1e3 * (d.t_decided - t_eos), 3))
            if motion is not None:
                t_wire, v, w = motion
                rec.update(recognised=True, wire_ms=round(1e3 * (t_wire - t_eos), 3), linear=v, angular=w)
                if d is not None:
                    rec["decision_to_wire_ms"] = round(1e3 * (t_wire - d.t_decided), 3)
                    rec["endpoint_wire_ms"] = round(1e3 * (t_wire - d.t_speech_end), 3)
            else:
                rec["recognised"] = False
            records.append(rec)
            # let the motion end: the policy idle, zeros on the wire, the firmware's motors at zero
            t_wait = time.monotonic() + 5.0
            while time.monotonic() < t_wait:
                st = runtime.actuator.state()
                if st.activity.mode == "idle" and st.setpoint.is_zero:
                    break
                time.sleep(0.01)
            t_idle = time.monotonic()
            try:
                link.wait_for_telemetry(lambda t, t_idle=t_idle: t.motors_stopped and t.received_at > t_idle,
                                        timeout_s=3.0)
            except Exception as exc:  # noqa: BLE001 - noted, the run goes on
                rec["note"] = f"motors not reported stopped: {exc}"
            fm = runtime.actuator.state().first_motion_latency_s  # set at this command's first motion tick
            if motion is not None and fm is not None:
                rec["runtime_first_motion_ms"] = round(1e3 * fm, 3)
            rest = t_first + len(audio) / SAMPLE_RATE_HZ - time.monotonic()  # the whole clip has played
            time.sleep(max(0.0, rest) + SETTLE_S)
            tap.setpoints[:] = tap.setpoints[-200:]
            if (k + 1) % 25 == 0:
                done = [r for r in records if not r["warmup"] and r.get("recognised")]
                last = [r["wire_ms"] for r in done[-25:]]
                log(f"  {k + 1 - WARMUP:4d}/{n}  wire p50 of the last {len(last)}: {_fmt(_pct(last, 50))}, "
                    f"max {_fmt(max(last) if last else None)}  ({time.monotonic() - t_loop:.0f} s, "
                    f"load {_loadavg()[0]:.2f})")
        end_state = snapshot(runtime)
    finally:
        if runtime is not None:
            runtime.stop()
        if robot is not None:
            robot.stop()
        tap.uninstall()

    measured = [r for r in records if not r["warmup"]]
    ok = [r for r in measured if r.get("recognised")]
    wire = [r["wire_ms"] for r in ok]
    stages = {}
    for key in ("speech_end_to_decision", "frame_match", "preprocess", "inference", "total"):
        vals = [r["latency_ms"][key] for r in ok if key in r.get("latency_ms", {})]
        stages[key] = _stats(vals)
    for key in ("detector_lag_ms", "endpoint_to_worker_beyond_hangover_ms", "eos_to_worker_ms", "eos_to_decision_ms",
                "decision_to_wire_ms", "runtime_first_motion_ms"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        stages[key] = _stats(vals)
    stages["eos_to_worker_beyond_hangover_ms"] = _stats([r["eos_to_worker_ms"] - hangover_ms for r in ok
                                                         if r.get("eos_to_worker_ms") is not None])
    wrong = [r for r in ok if r.get("heard") != r["intent"]]
    wire_stats = _stats(wire)
    beyond = _stats([x - hangover_ms for x in wire])
    endpoint = [r["endpoint_wire_ms"] for r in ok if r.get("endpoint_wire_ms") is not None]
    endpoint_beyond = _stats([x - hangover_ms for x in endpoint])
    return {
        "utterances": len(measured), "recognised": len(ok),
        "not_recognised": len(measured) - len(ok),
        "not_recognised_examples": [{k: r.get(k) for k in ("text", "voice", "heard", "confidence")}
                                    for r in measured if not r.get("recognised")][:20],
        "wrong_motion": len(wrong),
        "wrong_motion_examples": [{k: r.get(k) for k in ("text", "voice", "heard")} for r in wrong][:20],
        "hangover_ms": hangover_ms,
        "trailing_pad_ms": pad_ms,
        "endpoint_to_wire_ms": _stats(endpoint),
        "endpoint_to_wire_beyond_hangover_ms": endpoint_beyond,
        "eos_to_wire_ms": wire_stats,
        "eos_to_wire_beyond_hangover_ms": beyond,
        "target_p99_beyond_hangover_ms": TARGET_BEYOND_HANGOVER_MS,
        "target_met": endpoint_beyond["p99"] is not None and endpoint_beyond["p99"] <= TARGET_BEYOND_HANGOVER_MS,
        "stages_ms": stages,
        "feeder_resyncs": resyncs,
        "warmup": [r for r in records if r["warmup"]],
        "records": measured,
        "runtime_end": {"inference": end_state.get("inference"), "link_stats": end_state["link"]["stats"],
                        "alerts": runtime.alert_count if runtime else None},
        "wire_frames_seen": tap.frames,
    }


# ----------------------------------------------------------------------------- parts 2 and 3: voxedge serve
def measure_serve(bundle: Path, tmp: Path, settle_s: float, idle_s: float, log) -> dict:
    port = _free_port()
    log_path = tmp / "serve.log"
    cmd = [str(VOXEDGE), "serve", str(bundle), "--sim", "--port", str(port)]
    out: dict = {"command": " ".join(cmd[1:]), "port": port}
    tick = os.sysconf("SC_CLK_TCK")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            t0 = time.monotonic()
            url = f"http://127.0.0.1:{port}/v2/health/ready"
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"voxedge serve exited ({proc.returncode}) before it was ready:\n"
                                       + log_path.read_text()[-3000:])
                if time.monotonic() - t0 > 120:
                    raise RuntimeError("voxedge serve not ready within 120 s:\n" + log_path.read_text()[-3000:])
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.2)
            out["ready_after_s"] = round(time.monotonic() - t0, 2)
            log(f"  voxedge serve (pid {proc.pid}) ready after {out['ready_after_s']} s; settling {settle_s:.0f} s")
            time.sleep(settle_s)

            def memory() -> dict:
                kids = _descendants(proc.pid)
                main = _proc_status(proc.pid)
                return {"serve_rss_mb": main.get("VmRSS", 0) / 1024, "serve_hwm_mb": main.get("VmHWM", 0) / 1024,
                        "serve_threads": main.get("Threads"),
                        "children": [{"pid": c, "comm": _proc_comm(c), "rss_mb": _proc_status(c).get("VmRSS", 0) / 1024,
                                      "hwm_mb": _proc_status(c).get("VmHWM", 0) / 1024} for c in kids]}

            mem = memory()
            mem["children_rss_mb"] = sum(c["rss_mb"] for c in mem["children"])
            mem["total_rss_mb"] = mem["serve_rss_mb"] + mem["children_rss_mb"]
            mem["target_mb"] = TARGET_RSS_MB
            mem["target_met"] = mem["serve_rss_mb"] <= TARGET_RSS_MB
            try:
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
                mem["torch_loaded"] = "libtorch" in maps or "/torch/" in maps
            except OSError:
                mem["torch_loaded"] = None
            out["memory"] = mem
            log(f"  RSS {mem['serve_rss_mb']:.1f} MB (HWM {mem['serve_hwm_mb']:.1f} MB), children "
                f"{mem['children_rss_mb']:.1f} MB; measuring idle CPU for {idle_s:.0f} s")

            kids = _descendants(proc.pid)
            before = {p: _proc_stat(p) for p in [proc.pid, *kids]}
            t_a = time.monotonic()
            load_a = _loadavg()
            time.sleep(idle_s)
            t_b = time.monotonic()
            after = {p: _proc_stat(p) for p in before}
            wall = t_b - t_a

            def cpu(p):
                a, b = before.get(p), after.get(p)
                return None if a is None or b is None else 100.0 * (b[2] - a[2]) / tick / wall

            out["idle_cpu"] = {"window_s": round(wall, 2), "serve_pct_of_one_core": cpu(proc.pid),
                               "children": [{"pid": p, "comm": _proc_comm(p), "pct_of_one_core": cpu(p)}
                                            for p in kids],
                               "loadavg_during": [load_a, _loadavg()], "camera_fps": 15.0}
            end_mem = memory()
            out["memory_after_idle"] = {"serve_rss_mb": end_mem["serve_rss_mb"], "serve_hwm_mb": end_mem["serve_hwm_mb"],
                                        "children_rss_mb": sum(c["rss_mb"] for c in end_mem["children"])}

            kids = _descendants(proc.pid)
            comms = {p: _proc_comm(p) for p in kids}
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=5.0)
                exited = True
            except subprocess.TimeoutExpired:
                rc, exited = None, False
            stop_s = time.monotonic() - t_term
            left_now = [p for p in kids if _alive(p)]
            time.sleep(1.0)
            left_1s = [p for p in kids if _alive(p)]
            out["sigterm"] = {"exited_within_5s": exited, "exit_s": round(stop_s, 3), "returncode": rc,
                              "children_before": [{"pid": p, "comm": comms[p]} for p in kids],
                              "leftover_children_at_exit": left_now, "leftover_children_after_1s": left_1s,
                              "clean": exited and rc == 0 and not left_1s,
                              "stopped_message": "voxedge serve: stopped" in log_path.read_text()}
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            for p in _descendants(proc.pid) if proc.poll() is None else []:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    out["log_tail"] = log_path.read_text()[-1500:]
    return out


# ----------------------------------------------------------------------------- report
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = result["latency"]
    ok = [r for r in lat["records"] if r.get("recognised")]
    hang = lat["hangover_ms"]
    wire = np.array([r["endpoint_wire_ms"] for r in ok if "endpoint_wire_ms" in r])
    acoustic = np.array([r["wire_ms"] for r in ok])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    if wire.size:
        ax.hist(wire, bins=40, color="#4477aa", label="from the endpoint")
        ax.hist(acoustic, bins=40, color="#bbbbbb", alpha=0.7, label="from the acoustic end (+ detector lag)")
        for q, style in ((50, "--"), (99, ":")):
            ax.axvline(np.percentile(wire, q), color="k", linestyle=style,
                       label=f"endpoint p{q} {np.percentile(wire, q):.0f} ms")
    ax.axvline(hang, color="#999999", label=f"hangover {hang:.0f} ms")
    ax.axvline(hang + TARGET_BEYOND_HANGOVER_MS, color="#cc3311",
               label=f"target p99 {hang + TARGET_BEYOND_HANGOVER_MS:.0f} ms")
    ax.set_xlabel("end of speech -> first non-zero setpoint on the wire (ms)")
    ax.set_ylabel("commands")
    ax.set_title(f"INT8, {len(ok)} commands (load {result['loadavg_start'][0]:.1f} -> {result['loadavg_end'][0]:.1f})")
    ax.legend(fontsize=8)
    ax = axes[1]
    parts = {"detector lag (acoustic end -> endpoint)": [r["detector_lag_ms"] for r in ok if "detector_lag_ms" in r],
             "endpoint + hangover -> inference starts": [r["endpoint_to_worker_beyond_hangover_ms"] for r in ok
                                                         if "endpoint_to_worker_beyond_hangover_ms" in r],
             "inference worker (total)": [r["latency_ms"]["total"] for r in ok if "latency_ms" in r],
             "decision -> wire": [r["decision_to_wire_ms"] for r in ok if "decision_to_wire_ms" in r]}
    ax.hist(list(parts.values()), bins=30, label=list(parts), histtype="step", linewidth=1.5)
    ax.set_xlabel("ms")
    ax.set_title("where the time goes (per command)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(result: dict) -> str:
    lat, srv = result["latency"], result.get("serve", {})
    w, b, s = lat["eos_to_wire_ms"], lat["eos_to_wire_beyond_hangover_ms"], lat["stages_ms"]
    e, eb = lat["endpoint_to_wire_ms"], lat["endpoint_to_wire_beyond_hangover_ms"]

    def ok(met) -> str:
        return "MET" if met else "MISSED"

    lines = [
        "",
        "=" * 78,
        (f"voxedge runtime bench (INT8, onnxruntime)   load avg start {result['loadavg_start']}  "
        f"end {result['loadavg_end']}  ({os.cpu_count()} CPUs)"),
        "-" * 78,
        (f"1. end of speech -> first setpoint on the wire  ({lat['utterances']} commands, {lat['recognised']} "
        f"recognised as a motion, {lat['not_recognised']} not (excluded), {lat['wrong_motion']} wrong motion)"),
        "   from the endpoint (the endpointer's end of speech; the hangover counts from here):",
        f"     latency          p50 {_fmt(e['p50'])}  p95 {_fmt(e['p95'])}  p99 {_fmt(e['p99'])}  max {_fmt(e['max'])}",
        (f"     minus hangover ({lat['hangover_ms']:.0f} ms) p50 {_fmt(eb['p50'])}  p95 {_fmt(eb['p95'])}  "
         f"p99 {_fmt(eb['p99'])}  max {_fmt(eb['max'])}"),
        f"     target p99 <= {TARGET_BEYOND_HANGOVER_MS:.0f} ms beyond the hangover: {ok(lat['target_met'])}",
        "   from the acoustic end of speech (last sample above -60 dBFS; adds the detector's lag):",
        f"     latency          p50 {_fmt(w['p50'])}  p95 {_fmt(w['p95'])}  p99 {_fmt(w['p99'])}  max {_fmt(w['max'])}",
        (f"     minus hangover ({lat['hangover_ms']:.0f} ms) p50 {_fmt(b['p50'])}  p95 {_fmt(b['p95'])}  "
         f"p99 {_fmt(b['p99'])}  max {_fmt(b['max'])}"),
        (f"   microphone feeder resynchronised (host stall > 0.2 s) during {lat['feeder_resyncs']} of the "
         f"{lat['utterances']} commands"),
        "   stages (p50 / p99):",
    ]
    for key, label in (("detector_lag_ms", "detector lag: acoustic end -> endpoint"),
                       ("endpoint_to_worker_beyond_hangover_ms", "endpoint + hangover -> inference starts"),
                       ("eos_to_worker_beyond_hangover_ms", "acoustic end -> inference starts, minus hangover"),
                       ("frame_match", "  frame match"), ("preprocess", "  preprocess"),
                       ("inference", "  inference (onnxruntime int8)"), ("total", "  inference worker total"),
                       ("decision_to_wire_ms", "decision -> setpoint on the wire"),
                       ("speech_end_to_decision", "runtime's speech_end_to_decision"),
                       ("runtime_first_motion_ms", "runtime's first_motion_latency_s"),
                       ("eos_to_decision_ms", "end of speech -> decision (measured here)")):
        st = s.get(key, {})
        lines.append(f"     {label:<52} {_fmt(st.get('p50')):>10} / {_fmt(st.get('p99')):>10}")
    if srv:
        m, c, t = srv["memory"], srv["idle_cpu"], srv["sigterm"]
        kids = ", ".join(f"{k['comm']} {k['rss_mb']:.1f} MB" for k in m["children"]) or "none"
        lines += [
            "-" * 78,
            (f"2. voxedge serve --sim (INT8): VmRSS {m['serve_rss_mb']:.1f} MB, VmHWM {m['serve_hwm_mb']:.1f} MB "
            f"(children: {kids}); after idle {srv['memory_after_idle']['serve_rss_mb']:.1f} MB"),
            f"   target RSS <= {TARGET_RSS_MB:.0f} MB: {ok(m['target_met'])}   (torch loaded: {m['torch_loaded']})",
            f"3. idle listening, camera 15 fps, {c['window_s']:.0f} s: serve "
            f"{_fmt(c['serve_pct_of_one_core'], '%')} of one core; "
            + ", ".join(f"{k['comm']} {_fmt(k['pct_of_one_core'], '%')}" for k in c["children"]),
            (f"   SIGTERM: exited {'within 5 s' if t['exited_within_5s'] else 'NOT within 5 s'} "
            f"({t['exit_s']:.2f} s, rc {t['returncode']}), leftover children: {t['leftover_children_after_1s'] or 'none'}"
            f" -> {'clean' if t['clean'] else 'NOT clean'}"),
        ]
    lines += [(f"bench process: VmHWM {result['bench_process']['hwm_mb']:.1f} MB, torch imported: "
              f"{result['bench_process']['torch_imported']}"), "=" * 78]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200, help="measured motion commands")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set-size", type=int, default=256, help="calibration and evaluation set size")
    parser.add_argument("--bundle", help="use this INT8 bundle instead of making one (for quick reruns)")
    parser.add_argument("--settle-s", type=float, default=10.0, help="voxedge serve runs this long before memory")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle CPU window")
    parser.add_argument("--skip-serve", action="store_true", help="part 1 only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "runtime.json"))
    args = parser.parse_args()

    def log(msg: str) -> None:
        print(msg, flush=True)

    result: dict = {"loadavg_start": _loadavg(), "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "args": vars(args)}
    log(f"load average at start: {result['loadavg_start']} ({os.cpu_count()} CPUs)")
    tmp = Path(tempfile.mkdtemp(prefix="voxedge-bench-runtime-"))
    try:
        if args.bundle:
            bundle = Path(args.bundle).resolve()
            result["bundle_build_s"] = None
        else:
            log("making the INT8 bundle (subprocesses):")
            bundle, result["bundle_build_s"] = make_bundle(tmp, args.set_size, log)
        result["bundle"] = bundle_info(bundle)
        log("1. latency, end of speech -> first setpoint on the wire:")
        result["latency"] = measure_latency(bundle, args.utterances, args.seed, log)
        if not args.skip_serve:
            log("2./3. voxedge serve: memory, idle CPU, SIGTERM:")
            result["serve"] = measure_serve(bundle, tmp, args.settle_s, args.idle_s, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    st = _proc_status(os.getpid())
    result["bench_process"] = {"hwm_mb": st.get("VmHWM", 0) / 1024, "rss_mb": st.get("VmRSS", 0) / 1024,
                               "torch_imported": "torch" in sys.modules}
    result["loadavg_end"] = _loadavg()
    result["threads_left"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    plot(result, out.with_suffix(".png"))
    print(summary(result))
    print(f"results: {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
