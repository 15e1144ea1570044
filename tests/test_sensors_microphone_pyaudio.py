"""PyAudioMicrophone through the real PortAudio/ALSA path into a private PulseAudio server.

The fixture starts a PulseAudio server of its own (temporary runtime dir,
anonymous unix socket) with a null sink; its monitor source is the
microphone. PyAudio reaches it through ALSA's "pulse" device
(libasound2-plugins), and pacat plays known tones into the sink. Skipped
with the reason when the machine cannot provide that (no pulseaudio or
pacat binary, the server does not start, no ALSA pulse plugin).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pyaudio")

from edge.sensors import SAMPLE_RATE_HZ, clock, make_microphone
from edge.sensors.errors import (
    AudioDeviceNotFoundError,
    DeviceNotConnectedError,
    MicrophoneConfigError,
)
from edge.sensors.microphone_pyaudio import (
    PyAudioMicrophone,
    PyAudioMicrophoneConfig,
    list_input_devices,
    select_input_device,
)

SINK = "voxedge_test"
PLAY_RATE = 48000
INSTALL_HINT = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins (scripts/install_system_deps.sh)"
SERVER_START_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A private PulseAudio server with a null sink; yields the pacat command prefix."""
    exe, pactl, pacat = (shutil.which(n) for n in ("pulseaudio", "pactl", "pacat"))
    if not (exe and pactl and pacat):
        pytest.skip(f"no pulseaudio/pactl/pacat binaries: {INSTALL_HINT}")
    run_dir = tmp_path_factory.mktemp("pulse")
    sock = run_dir / "native"
    server = f"unix:{sock}"
    env = dict(os.environ, HOME=str(run_dir), XDG_RUNTIME_DIR=str(run_dir), XDG_CONFIG_HOME=str(run_dir / "cfg"))
    cmd = [
        exe, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
        "--log-target=stderr", "--log-level=error",
        "-L", f"module-native-protocol-unix socket={sock} auth-anonymous=1",
        "-L", f"module-null-sink sink_name={SINK} rate={PLAY_RATE} channels=2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists() and subprocess.run([pactl, "-s", server, "info"], capture_output=True, check=False).returncode == 0:
            ready = True
            break
        time.sleep(0.05)
    if not ready:
        proc.kill()
        err = proc.communicate(timeout=5)[1].decode(errors="replace")[-500:]
        pytest.skip(f"the PulseAudio test server did not start: {err.strip() or 'timeout'}")
    subprocess.run([pactl, "-s", server, "set-default-source", f"{SINK}.monitor"], check=True)
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_SOURCE", "PULSE_SINK")}
    os.environ.update(PULSE_SERVER=server, PULSE_SOURCE=f"{SINK}.monitor", PULSE_SINK=SINK)
    try:
        names = [d["name"] for d in list_input_devices()]
        if "pulse" not in names:
            pytest.skip(f"PortAudio sees no ALSA 'pulse' device (has {names}): {INSTALL_HINT}")
        yield [pacat, "--playback", "-s", server, "-d", SINK, "--format=float32le", f"--rate={PLAY_RATE}",
               "--channels=2", "--latency-msec=100"]  # buffered: a busy CPU must not cut the tone
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * PLAY_RATE)) / PLAY_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _play(pacat_cmd: list[str], left: np.ndarray, right: np.ndarray | None = None) -> float:
    """Play stereo float32 into the sink; returns the clock time when playing started."""
    right = left if right is None else right
    frames = np.stack([left, right], axis=1).astype(np.float32)
    proc = subprocess.Popen(pacat_cmd, stdin=subprocess.PIPE)
    t_start = clock.now()
    proc.communicate(frames.tobytes(), timeout=30)
    assert proc.returncode == 0
    return t_start


def _envelope(x: np.ndarray, n: int = 160) -> np.ndarray:
    """RMS over a centred 10 ms window."""
    return np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(n) / n, mode="same"))


def _bursts(x: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """[start, stop) of the stretches where the envelope exceeds ``threshold``."""
    on = (_envelope(x) > threshold).astype(np.int8)
    edges = np.diff(np.concatenate([[0], on, [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE_HZ)[np.argmax(spec)])


def test_tones_are_captured_at_16k_with_consistent_timestamps(pulse):
    before = threading.active_count()
    mic = PyAudioMicrophone(PyAudioMicrophoneConfig(device="PULSE"))  # name match is case-insensitive
    t_connect = clock.now()
    with mic:
        ring = mic.ring
        assert ring.wait_for(1, 5.0), "no audio arrived from the PulseAudio monitor"
        t_first_seen = clock.now()
        assert mic.device["name"] == "pulse"
        assert mic.device_rate_hz == mic.device["default_rate_hz"]  # opened at the device's own rate
        assert mic.channels == 1
        assert ring.wait_for(SAMPLE_RATE_HZ // 4, 3.0)
        gap = np.zeros(int(0.5 * PLAY_RATE), np.float32)
        signal = np.concatenate([_tone(1000, 0.4), gap, _tone(2500, 0.4), gap[:4800]])
        t_play = _play(pulse, signal)
        time.sleep(0.3)
        t_now = clock.now()
        stats = mic.stats()
        start = max(ring.oldest_index, ring.index_at(t_play) - SAMPLE_RATE_HZ // 2)
        x = ring.read(start, ring.end_index)
        onsets_t = None
        bursts = _bursts(x, 0.1)
        if len(bursts) == 2:
            onsets_t = [ring.time_of(start + b0) for b0, _ in bursts]
        first_t, end_t, end_i = ring.time_of(0), ring.end_time, ring.end_index
    assert threading.active_count() == before
    assert stats.errors == 0 and not stats.failed and stats.input_overflows == 0
    assert len(bursts) == 2, f"expected two tone bursts, found {bursts}"
    (a0, a1), (b0, b1) = bursts
    # Frequencies survive the 44.1/48 kHz -> 16 kHz resampling.
    assert _peak_hz(x[a0 + 800:a1 - 800]) == pytest.approx(1000, abs=8)
    assert _peak_hz(x[b0 + 800:b1 - 800]) == pytest.approx(2500, abs=8)
    # Durations in samples: 0.4 s bursts, onsets 0.9 s apart (1 % = resampling ratio right).
    assert (a1 - a0) / SAMPLE_RATE_HZ == pytest.approx(0.4, abs=0.015)
    # (pacat's playback scheduling adds jitter of a few 10 ms on a busy machine; a wrong resampling ratio
    # would show as a proportional error in the durations above as well)
    assert (b0 - a0) / SAMPLE_RATE_HZ == pytest.approx(0.9, abs=0.03)
    # Timestamps: the time map agrees with the sample count, and the tone is stamped when it played.
    assert onsets_t[1] - onsets_t[0] == pytest.approx(0.9, abs=0.035)
    assert t_play - 0.03 <= onsets_t[0] <= t_play + 0.4  # never before it was played
    assert end_t <= t_now and end_t >= t_now - 0.35
    assert t_connect <= first_t <= t_first_seen  # captured after connect(), before it reached the ring
    assert (end_t - first_t) / (end_i - 1) == pytest.approx(1 / SAMPLE_RATE_HZ, rel=0.01)
    assert stats.level_dbfs < -60  # the last 100 ms are silence again


def test_stereo_stream_is_downmixed_by_averaging(pulse):
    with PyAudioMicrophone(PyAudioMicrophoneConfig(device="pulse", channels=2)) as mic:
        assert mic.channels == 2
        ring = mic.ring
        assert ring.wait_for(SAMPLE_RATE_HZ // 4, 3.0)
        t_play = _play(pulse, _tone(700, 0.5, amp=0.6), np.zeros(int(0.5 * PLAY_RATE), np.float32))
        time.sleep(0.3)
        start = max(ring.oldest_index, ring.index_at(t_play) - SAMPLE_RATE_HZ // 2)
        x = ring.read(start, ring.end_index)
    bursts = _bursts(x, 0.05)
    assert len(bursts) == 1
    b0, b1 = bursts[0]
    core = x[b0 + 800:b1 - 800]
    # 0.6 on the left and silence on the right average to 0.3: not one channel (0.6), not a sum.
    assert np.sqrt(2 * np.mean(core.astype(np.float64) ** 2)) == pytest.approx(0.3, rel=0.05)
    assert _peak_hz(core) == pytest.approx(700, abs=8)


def test_factory_and_lifecycle(pulse):
    before = threading.active_count()
    mic = make_microphone("pyaudio", device="pulse", block_s=0.01)
    assert isinstance(mic, PyAudioMicrophone)
    with pytest.raises(DeviceNotConnectedError):
        mic.disconnect()
    for _ in range(2):  # reconnecting continues the same ring
        with mic:
            assert mic.ring.wait_for(mic.ring.end_index + 1600, 3.0)
    assert mic.stats().blocks > 0
    assert threading.active_count() == before


def test_unknown_device_lists_what_exists(pulse):
    before = threading.active_count()
    with pytest.raises(AudioDeviceNotFoundError, match=r"no audio input device name contains 'no-such-mic'; "
                                                       r"available input devices: .*'pulse'"):
        PyAudioMicrophone(PyAudioMicrophoneConfig(device="no-such-mic")).connect()
    with pytest.raises(AudioDeviceNotFoundError, match="no audio input device has index 999"):
        PyAudioMicrophone(PyAudioMicrophoneConfig(device=999)).connect()
    assert threading.active_count() == before


# --- device selection and configuration (no audio server needed) --------------------------------

DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "channels": 2, "default_rate_hz": 44100,
     "host_api": "ALSA", "is_default": False},
    {"index": 3, "name": "USB PnP Sound Device: Audio (hw:2,0)", "channels": 1, "default_rate_hz": 48000,
     "host_api": "ALSA", "is_default": False},
    {"index": 5, "name": "USB Camera Mic: Audio (hw:3,0)", "channels": 2, "default_rate_hz": 16000,
     "host_api": "ALSA", "is_default": False},
    {"index": 7, "name": "default", "channels": 32, "default_rate_hz": 44100, "host_api": "ALSA",
     "is_default": True},
]


def test_select_input_device():
    assert select_input_device(DEVICES, None)["index"] == 7
    assert select_input_device(DEVICES, 3)["index"] == 3
    assert select_input_device(DEVICES, "usb pnp")["index"] == 3
    assert select_input_device(DEVICES, "DEFAULT")["index"] == 7
    with pytest.raises(AudioDeviceNotFoundError, match=r"2 audio input devices match 'usb': \[3\] .*\[5\] "):
        select_input_device(DEVICES, "usb")
    with pytest.raises(AudioDeviceNotFoundError, match="no default audio input device"):
        select_input_device(DEVICES[:3], None)
    with pytest.raises(AudioDeviceNotFoundError, match="no input devices at all"):
        select_input_device([], "usb")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"device": 1.5}, "device"), ({"rate_hz": 1000}, "rate_hz"), ({"channels": 0}, "channels"),
     ({"block_s": 2.0}, "block_s"), ({"capture_delay_s": -0.1}, "capture_delay_s"),
     ({"max_consecutive_errors": 0}, "max_consecutive_errors"), ({"ring_s": 0}, "ring_s")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(MicrophoneConfigError, match=match):
        PyAudioMicrophoneConfig(**kwargs)
