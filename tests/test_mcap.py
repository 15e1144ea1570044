"""``voxedge record-mcap``: an audit log as an MCAP file of ROS 2 messages, read back with the mcap reader."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

pytest.importorskip("mcap")
pytest.importorskip("mcap_ros2")

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

from edge.audit import AuditLog  # noqa: E402

VOXEDGE = [sys.executable, "-m", "edge.cli"]
RATE = 16000
WINDOW = 16000  # 1 s


def _frame(i: int) -> np.ndarray:
    """A smooth RGB frame (JPEG keeps it close), different for each sample."""
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 2, y * 2, np.full_like(x, 40 * i)], axis=-1) % 256
    img[30:60, 40 + 10 * i:80 + 10 * i] = (200, 30, 90)
    return img.astype(np.uint8)


def _audio(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (np.sin(np.arange(WINDOW) * (0.01 + 0.005 * i)) * 0.3 + rng.standard_normal(WINDOW) * 0.05).astype(
        np.float32)


def _decision(i: int) -> dict:
    return {"id": i, "intent": ("stop", "go_to", "pick_up")[i % 3], "confidence": 0.8 + 0.01 * i,
            "accepted": True, "target_xy": [0.25, 0.5], "presence": 0.9, "latency_ms": {"infer": 3.5}}


def _audit_log(path, times):
    log = AuditLog(path).start()
    samples = []
    for i, t in enumerate(times):
        samples.append((_frame(i), _audio(i), _decision(i), t))
        assert log.record(*samples[-1])
        log.stop()  # let the writer keep up: nothing dropped
        log.start()
    log.stop()
    return samples


def _run(*args):
    return subprocess.run([*VOXEDGE, "record-mcap", *map(str, args)], capture_output=True, text=True, timeout=120)


def _read(path):
    """{topic: [(schema name, log_time, publish_time, sequence, decoded)]}"""
    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, validate_crcs=True, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert channel.message_encoding == "cdr" and schema.encoding == "ros2msg"
            out.setdefault(channel.topic, []).append(
                (schema.name, message.log_time, message.publish_time, message.sequence, decoded))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        summary = reader.get_summary()
        counts = {summary.channels[c].topic: n for c, n in summary.statistics.channel_message_counts.items()}
        assert counts == {topic: len(msgs) for topic, msgs in out.items()}
        for schema in summary.schemas.values():  # ros2 bag's layout: the type, then each type it uses
            text = schema.data.decode()
            assert text.count("=" * 80 + "\nMSG: ") == text.count("MSG: ")
        assert reader.get_header().profile == "ros2"
    return out, metadata


def _wav_samples(log, index: int) -> np.ndarray:
    """The 16-bit samples the audit log's WAV file of its index-th sample holds."""
    with wave.open(str(log / "samples" / f"{index + 1:08d}.wav"), "rb") as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, RATE)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_an_audit_log_converts_to_ros2_messages_that_read_back(tmp_path):
    import cv2

    times = [50.0, 52.0, 54.25, 60.5]
    samples = _audit_log(tmp_path / "log", times)
    proc = _run(tmp_path / "log", tmp_path / "session.mcap")
    assert proc.returncode == 0, proc.stderr
    assert "4 sample(s)" in proc.stdout and "ros2 bag info" in proc.stdout and "warning" not in proc.stderr
    topics, metadata = _read(tmp_path / "session.mcap")

    assert {t: {m[0] for m in msgs} for t, msgs in topics.items()} == {
        "/camera/image/compressed": {"sensor_msgs/msg/CompressedImage"},
        "/audio": {"audio_common_msgs/msg/AudioDataStamped"},
        "/audio/info": {"audio_common_msgs/msg/AudioInfo"},
        "/voxedge/command": {"std_msgs/msg/String"},
    }
    assert len(topics["/camera/image/compressed"]) == len(topics["/voxedge/command"]) == 4
    assert len(topics["/audio"]) == 4 * 10  # 100 ms chunks of 1 s windows that do not overlap
    info = topics["/audio/info"][0][4]
    assert (info.channels, info.sample_rate, info.sample_format) == (1, RATE, "S16LE")
    assert metadata["voxedge"]["samples"] == "4"

    for i, ((frame, audio, decision, t), image, command) in enumerate(zip(samples, topics["/camera/image/compressed"],
                                                                          topics["/voxedge/command"])):
        _, log_time, publish_time, _, msg = image
        assert log_time == publish_time == _ns(msg.header.stamp) == round(t * 1e9) == command[1]
        assert msg.format == "jpeg" and msg.header.frame_id == "camera"
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == frame.shape
        assert np.abs(bgr[..., ::-1].astype(int) - frame).mean() < 3.0
        assert json.loads(command[4].data) == decision

        # the window's chunks, by time: they end at the decision and give the recorded samples back exactly
        chunks = [m for m in topics["/audio"] if round((t - 1.0) * 1e9) < m[1] <= round(t * 1e9)]
        assert len(chunks) == 10 and chunks[-1][1] == log_time
        pcm = np.concatenate([np.frombuffer(bytes(m[4].audio.data), "<i2") for m in chunks])
        assert np.array_equal(pcm, _wav_samples(tmp_path / "log", i))
        assert np.abs(pcm / 32768.0 - audio).max() < 1e-4  # the window within 16-bit quantisation
        assert _ns(chunks[0][4].header.stamp) == round((t - 1.0) * 1e9)
        assert all(m[4].header.frame_id == "microphone" for m in chunks)

    for msgs in topics.values():  # every topic's times and sequence numbers go forward
        assert [m[1] for m in msgs] == sorted(m[1] for m in msgs)
        assert [m[3] for m in msgs] == list(range(len(msgs)))


def test_overlapping_windows_and_a_reboot_keep_one_forward_stream(tmp_path):
    _audit_log(tmp_path / "log", [10.0, 10.4, 3.0])  # 0.4 s apart (1 s windows), then a reboot
    proc = _run(tmp_path / "log", tmp_path / "s.mcap")
    assert proc.returncode == 0, proc.stderr
    assert "clock went back 1 time" in proc.stderr
    topics, _ = _read(tmp_path / "s.mcap")
    image_times = [m[1] for m in topics["/camera/image/compressed"]]
    assert image_times[:2] == [10_000_000_000, 10_400_000_000] and image_times[2] > image_times[1] + 1e9
    audio = topics["/audio"]
    assert [m[1] for m in audio] == sorted(m[1] for m in audio)
    second = [m for m in audio if 10_000_000_000 < m[1] <= 10_400_000_000]
    pcm = np.concatenate([np.frombuffer(bytes(m[4].audio.data), "<i2") for m in second])
    want = _wav_samples(tmp_path / "log", 1)[-int(0.4 * RATE):]
    assert np.array_equal(pcm, want)  # only the 0.4 s the first window did not already hold
    assert len(audio) == 10 + 4 + 10


def test_a_sample_whose_files_are_gone_is_skipped_with_a_warning(tmp_path):
    _audit_log(tmp_path / "log", [5.0, 7.0])
    (tmp_path / "log" / "samples" / "00000001.wav").unlink()
    proc = _run(tmp_path / "log", tmp_path / "s.mcap")
    assert proc.returncode == 0, proc.stderr
    assert "1 sample(s) skipped: sample 00000001: its audio file samples/00000001.wav is gone" in proc.stderr
    topics, _ = _read(tmp_path / "s.mcap")
    assert [m[1] for m in topics["/voxedge/command"]] == [7_000_000_000]


def test_errors_are_clear_and_leave_other_files_alone(tmp_path):
    proc = _run(tmp_path / "nothing", tmp_path / "s.mcap")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _run(tmp_path / "empty", tmp_path / "s.mcap")
    assert proc.returncode == 2 and "is not an audit log: it has no index.jsonl" in proc.stderr
    assert not (tmp_path / "s.mcap").exists() and not list(tmp_path.glob(".*.tmp"))

    _audit_log(tmp_path / "log", [1.5])
    precious = tmp_path / "notes.mcap"
    precious.write_text("not a recording")
    proc = _run(tmp_path / "log", precious)
    assert proc.returncode == 2 and "exists and is not an MCAP file" in proc.stderr and "--force" in proc.stderr
    assert precious.read_text() == "not a recording" and not list(tmp_path.glob(".*.tmp"))
    proc = _run(tmp_path / "log", tmp_path)
    assert proc.returncode == 2 and "is a directory" in proc.stderr

    assert _run(tmp_path / "log", precious, "--force").returncode == 0
    assert set(_read(precious)[0]) >= {"/camera/image/compressed", "/voxedge/command"}
    assert _run(tmp_path / "log", precious).returncode == 0  # an earlier recording is replaced without --force

    (tmp_path / "log" / "index.jsonl").write_text("{not json\n")
    proc = _run(tmp_path / "log", precious)
    assert proc.returncode == 2 and "index.jsonl:1: not a sample record" in proc.stderr


def test_missing_packages_name_the_pip_command(tmp_path, monkeypatch):
    from edge.mcap_record import McapRecordError, write_mcap

    _audit_log(tmp_path / "log", [1.5])
    monkeypatch.setitem(sys.modules, "mcap_ros2.writer", None)
    with pytest.raises(McapRecordError, match="pip install mcap mcap-ros2-support"):
        write_mcap(tmp_path / "log", tmp_path / "s.mcap")
    assert not (tmp_path / "s.mcap").exists()


def test_samples_without_a_time_are_placed_in_order_and_the_file_is_not_private(tmp_path):
    import os

    _audit_log(tmp_path / "log", [None, None])
    proc = _run(tmp_path / "log", tmp_path / "s.mcap", "--audio-chunk-ms", "250")
    assert proc.returncode == 0, proc.stderr
    assert "2 sample(s) have no recorded time" in proc.stderr
    topics, _ = _read(tmp_path / "s.mcap")
    assert [m[1] for m in topics["/voxedge/command"]] == [2_000_000_000, 4_000_000_000]  # window + 1 s apart
    assert len(topics["/audio"]) == 2 * 4
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "s.mcap").st_mode & 0o777 == 0o666 & ~umask
