"""``voxedge serve --record-mcap``: the live recorder (edge.mcap_live) on the simulated robot, read back with mcap."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("mcap")
pytest.importorskip("mcap_ros2")

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

from edge.mcap_live import LiveRecorder  # noqa: E402
from edge.mcap_record import McapRecordError  # noqa: E402
from tests import service_fixtures  # noqa: E402
from tests.bridge_fixtures import requires_gcc  # noqa: E402

sim_bundle, sim_runtime = service_fixtures.sim_bundle, service_fixtures.sim_runtime  # the fixtures, used here

VOXEDGE = [sys.executable, "-m", "edge.cli"]


def _read(path):
    """{topic: [(schema name, log_time, decoded)]} in the order written, and the metadata."""
    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, validate_crcs=True, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert channel.message_encoding == "cdr" and schema.encoding == "ros2msg"
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return out, metadata


def _wait_decision(runtime, mark, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in runtime.events_after(mark, timeout_s=0.3) if e.kind == "decision"]
        if found:
            return found[0]
    raise AssertionError(f"no decision: {[e.text for e in runtime.events_after(mark)]}")


@requires_gcc
def test_a_live_session_reads_back_with_every_topic(sim_runtime, tmp_path):
    runtime, robot = sim_runtime
    out = tmp_path / "session.mcap"
    mark = runtime.events_after()[-1].id if runtime.events_after() else 0
    runtime.arm("test")
    try:
        recorder = LiveRecorder(out, runtime).start()
        time.sleep(0.3)
        runtime.say("go forward")
        event = _wait_decision(runtime, mark)
        time.sleep(1.0)  # the robot drives: non-zero setpoints, telemetry
        assert not out.exists()  # written beside itself until stop
        stats = recorder.stop()
    finally:
        runtime.disarm("test")
    assert stats.error is None and stats.dropped == 0 and stats.audio_lost == 0
    assert out.is_file() and not list(tmp_path.glob(".session.mcap.*.tmp"))
    topics, metadata = _read(out)
    assert {"/camera/image/compressed", "/audio", "/audio/info", "/voxedge/command", "/voxedge/setpoint",
            "/voxedge/telemetry"} <= set(topics)
    assert {t: len(m) for t, m in topics.items()} == stats.messages

    # camera: JPEG frames that decode, at most ~5 fps, in capture order
    frames = topics["/camera/image/compressed"]
    assert frames[0][0] == "sensor_msgs/msg/CompressedImage" and frames[0][2].format == "jpeg"
    img = cv2.imdecode(np.frombuffer(bytes(frames[0][2].data), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.ndim == 3 and img.shape[0] > 0
    times = [t for _, t, _ in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len(frames) >= 5 and (len(frames) - 1) / ((times[-1] - times[0]) / 1e9) <= 5.5  # capped at 5 fps

    # audio: one stream, every sample once, chunks of 100 ms at 16 kHz
    info = topics["/audio/info"]
    assert len(info) == 1 and info[0][2].sample_rate == 16000 and info[0][2].sample_format == "S16LE"
    chunks = topics["/audio"]
    sizes = [len(bytes(m.audio.data)) // 2 for _, _, m in chunks]
    assert sum(sizes) == stats.audio_samples == int(metadata["voxedge"]["samples_audio"])
    assert all(n == 1600 for n in sizes[:-1]) and 0 < sizes[-1] <= 1600
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in chunks]
    logs = [t for _, t, _ in chunks]
    assert all(s <= t for s, t in zip(stamps, logs))  # stamped at the first sample, logged at the last
    assert all(nxt > prev for prev, nxt in zip(logs, stamps[1:]))  # no overlap, time never goes back
    assert all(abs((b - a) / 1e9 - 0.1) < 0.02 for a, b in zip(stamps[:-2], stamps[1:-1]))
    assert sum(sizes) / 16000 >= 1.2  # the whole session: no gap

    # the decision as the runtime's event holds it, logged when decided; tracking updates may follow
    commands = [json.loads(m.data) for _, _, m in topics["/voxedge/command"]]
    utterances = [c for c in commands if c["kind"] == "utterance"]
    assert utterances[0] == json.loads(json.dumps(event.data)) and utterances[0]["intent"] == "forward"
    if runtime.bundle.manifest.heads.attention_output:  # the model's attention map over the frame
        att = topics["/voxedge/attention"][0][2]
        assert att.encoding == "mono8" and len(bytes(att.data)) == att.height * att.width == att.step * att.height

    # setpoints: ~20 Hz, the robot drove forward
    setpoints = topics["/voxedge/setpoint"]
    assert setpoints[0][0] == "geometry_msgs/msg/Twist"
    span_s = (setpoints[-1][1] - setpoints[0][1]) / 1e9
    assert 12 <= (len(setpoints) - 1) / span_s <= 22
    assert any(m.linear.x > 0 for _, _, m in setpoints)

    # telemetry: the panel's fields, each report once, in order
    reports = [json.loads(m.data) for _, _, m in topics["/voxedge/telemetry"]]
    assert len(reports) >= 5 and {"x_m", "y_m", "theta_rad", "battery_v", "state"} <= set(reports[-1])
    assert any(r["state"] == "ARMED" for r in reports)
    tel_times = [t for _, t, _ in topics["/voxedge/telemetry"]]
    assert tel_times == sorted(tel_times)
    assert metadata["voxedge"]["clock"].startswith("the robot's monotonic clock")


def test_an_existing_file_that_is_not_mcap_is_refused_and_kept(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(McapRecordError, match="not an MCAP file"):
        LiveRecorder(notes, runtime=None)
    r = subprocess.run([*VOXEDGE, "serve", str(tmp_path / "no-bundle"), "--sim", "--record-mcap", str(notes)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not an MCAP file" in r.stderr and "remove it" in r.stderr, r.stderr
    assert notes.read_text() == "keep me"


def test_serve_help_lists_record_mcap():
    r = subprocess.run([*VOXEDGE, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--record-mcap" in r.stdout


def test_the_setting_comes_from_the_config_file(tmp_path):
    from edge.settings import load

    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"record_mcap": "s.mcap"}))
    assert load({"bundle": "b"}, config, environ={}).record_mcap == "s.mcap"
    assert load({"bundle": "b"}, None, environ={"VOXEDGE_RECORD_MCAP": "e.mcap"}).record_mcap == "e.mcap"


class _FakeRuntime:
    """Just what the recorder reads: no sensors, an actuator that may fail, a report() that keeps what it gets."""

    def __init__(self, actuator=None):
        self.camera = self.microphone = None
        self.actuator = actuator
        self.running = True
        self.listeners, self.reports = [], []

    def add_decision_listener(self, listener):
        self.listeners.append(listener)

    def report(self, key, text, exc=None):
        self.reports.append((key, text))


def test_decisions_that_find_the_queue_full_are_dropped_and_counted(tmp_path):
    rec = LiveRecorder(tmp_path / "s.mcap", _FakeRuntime(), queue_size=2)
    rec._on_decision(object())  # not started: ignored
    rec._accepting = True  # as start() sets it, without the thread that would drain the queue
    for _ in range(5):
        rec._on_decision(object())  # never blocks
    assert rec.stats().dropped == 3 and rec._decisions.qsize() == 2


def test_a_failing_recording_leaves_no_file_and_reports_once(tmp_path):
    class Broken:
        def state(self):
            raise OSError(28, "No space left on device")

    runtime = _FakeRuntime(Broken())
    out = tmp_path / "s.mcap"
    stats = LiveRecorder(out, runtime).start().stop()
    assert "No space left" in stats.error and runtime.reports and runtime.reports[0][0] == "mcap-recorder"
    assert not out.exists() and not list(tmp_path.iterdir())  # no OUT, no temporary file left behind


def test_the_recording_ends_by_itself_when_the_runtime_stops(tmp_path):
    runtime = _FakeRuntime()
    out = tmp_path / "s.mcap"
    rec = LiveRecorder(out, runtime).start()
    runtime.running = False
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists() and rec.stop().error is None
    topics, metadata = _read(out)
    assert topics == {} and metadata["voxedge"]["source"].startswith("voxedge serve --record-mcap")


@requires_gcc
def test_serve_records_the_session_and_writes_the_file_when_it_stops(sim_bundle, tmp_path):
    import os
    import signal

    out = tmp_path / "serve.mcap"
    env = {**os.environ, "VOXEDGE_TOKEN": "test-operator-token-0123456789", "VOXEDGE_STATE_DIR": str(tmp_path)}
    p = subprocess.Popen([*VOXEDGE, "serve", str(sim_bundle.path), "--sim", "--precision", "fp32", "--port", "0",
                          "--estop-port", "0", "--record-mcap", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("simulated microphone"):  # the last line of the start-up
                break
        assert any(line.startswith("recording the session to") for line in lines), (lines, p.poll())
        time.sleep(1.5)
        assert not out.exists()
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, stderr
    assert f"wrote {out}:" in stdout and "/audio " in stdout, stdout
    topics, _ = _read(out)
    assert {"/camera/image/compressed", "/audio", "/audio/info", "/voxedge/setpoint", "/voxedge/telemetry"} <= set(
        topics)


def test_audio_the_ring_overwrote_before_it_was_read_is_counted_and_the_rest_written_once(tmp_path):
    from types import SimpleNamespace

    from edge.mcap_live import _Session
    from edge.sensors.audio_ring import AudioRing

    ring = AudioRing(capacity_s=0.5)
    runtime = _FakeRuntime()
    runtime.microphone = SimpleNamespace(ring=ring)
    rec = LiveRecorder(tmp_path / "s.mcap", runtime)
    written = []
    writer = SimpleNamespace(write_message=lambda topic, schema, message, **kw: written.append((message, kw)))
    session = _Session(rec, writer, {name: name for name in ("audio_common_msgs/msg/AudioDataStamped",)})
    session.next_index = 0
    for k in range(10):  # 1 s in 100 ms blocks, the ring keeps the last 0.5 s
        ring.write(np.full(1600, k / 20, np.float32), t_end=100.0 + (k + 1) * 0.1)
    session.audio()
    stats = rec.stats()
    assert stats.audio_lost == 8000 and stats.audio_samples == 8000 and len(written) == 5
    assert [m["audio"]["data"][:2] for m, _ in written] == [
        np.array([round(k / 20 * 32768)], "<i2").tobytes() for k in range(5, 10)]
    ring.write(np.zeros(700, np.float32), t_end=101.1)
    session.audio()  # under a chunk: waits for more
    assert len(written) == 5
    session.audio(final=True)  # at stop: the rest, once
    assert rec.stats().audio_samples == 8700 and len(bytes(written[-1][0]["audio"]["data"])) == 1400
