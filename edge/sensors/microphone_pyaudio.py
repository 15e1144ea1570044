"""PyAudio microphone: a real input device in callback mode, resampled to 16 kHz mono.

The device is opened at its own default rate (44.1/48 kHz: asking a USB
microphone for 16 kHz makes ALSA resample with a poor filter, or fails) and
in mono when it accepts one channel, else in stereo downmixed by averaging.
PortAudio calls ``_callback`` on its own thread for every block; the callback
only converts, resamples (soxr, state kept across blocks) and copies into the
ring, never blocks and never logs (logging would register a Python thread
object for PortAudio's thread and take locks).

Timestamps: the callback reads ``edge.sensors.clock.now()`` on entry and
takes it, minus ``capture_delay_s`` (default 0), as the capture time of the
block's last sample: the callback runs as soon as a block is complete, so
this is late only by the host's scheduling delay. PortAudio's
``time_info`` was tried and rejected: through ALSA's PulseAudio plugin,
``current_time - input_buffer_adc_time`` ramps from ~180 ms to 0 over the
first ten blocks while the callbacks arrive evenly 20 ms apart, so it does
not describe when samples were captured (and other host APIs report 0).
``BlockClock`` then removes the scheduling jitter against the steady sample
count, and the resampler's hold-back is accounted for per output sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.sensors import clock
from edge.sensors.audio_ring import SAMPLE_RATE_HZ, BlockClock
from edge.sensors.errors import AudioDeviceNotFoundError, MicrophoneConfigError, MicrophoneError
from edge.sensors.microphone import (
    DEFAULT_BLOCK_S,
    MAX_BLOCK_S,
    Microphone,
    MicrophoneConfig,
    MicrophoneStats,
    check_positive,
)
from edge.sensors.resample import StreamResampler

__all__ = ["PyAudioMicrophone", "PyAudioMicrophoneConfig", "list_input_devices", "select_input_device"]

MAX_CAPTURE_DELAY_S = 1.0               # capture_delay_s above this is surely a mistake
DEFAULT_MAX_CONSECUTIVE_ERRORS = 50     # failed callbacks in a row (1 s at 20 ms) before aborting
MIN_TIME_STEP_S = 1e-6                  # stamps of consecutive ring writes differ by at least this


def _pyaudio():
    try:
        import pyaudio
    except ImportError as exc:
        raise MicrophoneError(
            "the PyAudio microphone needs the pyaudio package: `pip install pyaudio` "
            "(with `sudo apt-get install portaudio19-dev` first), or `make setup`"
        ) from exc
    return pyaudio


def _input_devices(pa: Any) -> list[dict[str, Any]]:
    try:
        default = pa.get_default_input_device_info()["index"]
    except OSError:
        default = None
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) < 1:
            continue
        api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
        out.append({
            "index": int(info["index"]),
            "name": str(info["name"]),
            "channels": int(info["maxInputChannels"]),
            "default_rate_hz": round(float(info["defaultSampleRate"])),
            "host_api": str(api),
            "is_default": int(info["index"]) == default,
        })
    return out


def list_input_devices() -> list[dict[str, Any]]:
    """Audio input devices PortAudio sees: index, name, channels, default_rate_hz, host_api, is_default.

    Raises:
        MicrophoneError: PyAudio is not installed.
    """
    pa = _pyaudio().PyAudio()
    try:
        return _input_devices(pa)
    finally:
        pa.terminate()


def _describe(devices: list[dict[str, Any]], prefix: str = "available input devices: ") -> str:
    if not devices:
        return "no input devices at all (is a microphone plugged in? `arecord -l` lists ALSA capture devices)"
    return prefix + "; ".join(
        f"[{d['index']}] {d['name']!r} ({d['channels']} ch, {d['default_rate_hz']} Hz)" for d in devices
    )


def select_input_device(devices: list[dict[str, Any]], device: int | str | None) -> dict[str, Any]:
    """Pick the device: by index, by case-insensitive name substring, or the default (None).

    A name that matches several devices exactly once (case-insensitively) wins;
    otherwise the match must be unique.

    Raises:
        AudioDeviceNotFoundError: none or several match; the message lists the candidates.
    """
    if device is None:
        for d in devices:
            if d["is_default"]:
                return d
        raise AudioDeviceNotFoundError(f"there is no default audio input device; name one. {_describe(devices)}")
    if isinstance(device, int) and not isinstance(device, bool):
        for d in devices:
            if d["index"] == device:
                return d
        raise AudioDeviceNotFoundError(f"no audio input device has index {device}; {_describe(devices)}")
    needle = str(device).strip().lower()
    matches = [d for d in devices if needle in d["name"].lower()]
    exact = [d for d in matches if d["name"].lower() == needle]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioDeviceNotFoundError(f"no audio input device name contains {device!r}; {_describe(devices)}")
    raise AudioDeviceNotFoundError(
        f"{len(matches)} audio input devices match {device!r}: {_describe(matches, '')}; "
        "use a longer part of the name or the index"
    )


@dataclass
class PyAudioMicrophoneConfig(MicrophoneConfig):
    """Settings of a PyAudio microphone.

    Attributes:
        device: input device index, a case-insensitive part of its name, or None for the default.
        rate_hz: device rate; None uses the device's default rate (recommended).
        channels: channels to open; None opens mono if the device accepts it, else stereo (downmixed).
        block_s: callback block length.
        max_consecutive_errors: failed callbacks in a row before capture is aborted.
        capture_delay_s: the audio stack's delay from capturing a block's last
            sample to running the callback, subtracted from the callback time;
            0 (default) assumes the callback runs as soon as the block is complete.
    """

    device: int | str | None = None
    rate_hz: int | None = None
    channels: int | None = None
    block_s: float = DEFAULT_BLOCK_S
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    capture_delay_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device is not None and (isinstance(self.device, bool) or not isinstance(self.device, (int, str))):
            raise MicrophoneConfigError(f"device={self.device!r}; use an index, part of a name, or None")
        for name in ("rate_hz", "channels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise MicrophoneConfigError(f"{name}={value!r}; use a positive int or None (device default)")
        if self.rate_hz is not None and not 8000 <= self.rate_hz <= 384000:
            raise MicrophoneConfigError(f"rate_hz={self.rate_hz!r}; use 8000..384000 Hz or None")
        check_positive("block_s", self.block_s, maximum=MAX_BLOCK_S)
        m = self.max_consecutive_errors
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise MicrophoneConfigError(f"max_consecutive_errors={m!r}; use an int >= 1")
        d = self.capture_delay_s
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= MAX_CAPTURE_DELAY_S:
            raise MicrophoneConfigError(f"capture_delay_s={d!r}; use seconds in [0, {MAX_CAPTURE_DELAY_S:g}]")


class PyAudioMicrophone(Microphone):
    """Captures a PortAudio input device in callback mode into the 16 kHz ring."""

    config_class = PyAudioMicrophoneConfig

    def __init__(self, config: PyAudioMicrophoneConfig) -> None:
        super().__init__(config)
        self.config: PyAudioMicrophoneConfig = config
        self._pa: Any = None
        self._stream: Any = None
        self._device: dict[str, Any] | None = None
        self._channels = 1
        self._resampler: StreamResampler | None = None
        self._clock: BlockClock | None = None
        self._last_write_t: float | None = None
        self._consecutive_errors = 0
        self._flags = (0, 0, 0)  # paInputOverflow, paContinue, paAbort once PyAudio is loaded

    @property
    def name(self) -> str:
        if self._device is not None:
            return f"PyAudioMicrophone([{self._device['index']}] {self._device['name']})"
        return f"PyAudioMicrophone({self.config.device!r})"

    @property
    def device(self) -> dict[str, Any] | None:
        """The selected device (as in ``list_input_devices``), once connected."""
        return self._device

    @property
    def channels(self) -> int:
        """Channels the stream was opened with (downmixed to mono)."""
        return self._channels

    def _connect_impl(self) -> None:
        pyaudio = _pyaudio()
        cfg = self.config
        self._pa = pyaudio.PyAudio()
        self._device = select_input_device(_input_devices(self._pa), cfg.device)
        index = self._device["index"]
        rate = cfg.rate_hz or self._device["default_rate_hz"]
        self._channels = cfg.channels or self._pick_channels(index, rate)
        if self._channels > self._device["channels"]:
            raise MicrophoneConfigError(
                f"channels={self._channels} but {self.name} has only {self._device['channels']} input channels"
            )
        frames = max(1, round(cfg.block_s * rate))
        self._resampler = StreamResampler(rate, SAMPLE_RATE_HZ)
        self._clock = BlockClock(rate)
        self._last_write_t = self._ring.end_time
        self._consecutive_errors = 0
        self._flags = (pyaudio.paInputOverflow, pyaudio.paContinue, pyaudio.paAbort)
        self._device_rate_hz = rate
        try:
            self._stream = self._pa.open(
                format=pyaudio.paFloat32, channels=self._channels, rate=rate, input=True,
                input_device_index=index, frames_per_buffer=frames, stream_callback=self._callback,
                start=False,
            )
            self._stream.start_stream()
        except (OSError, ValueError) as exc:
            raise MicrophoneError(
                f"could not open {self.name} at {rate} Hz, {self._channels} ch: {exc}. Try another rate_hz "
                "or channels, check that no other program holds the device (`fuser -v /dev/snd/*`)"
            ) from exc

    def _pick_channels(self, index: int, rate: int) -> int:
        for ch in (1, 2):
            if ch > self._device["channels"]:
                break
            try:
                if self._pa.is_format_supported(rate, input_device=index, input_channels=ch,
                                                input_format=_pyaudio().paFloat32):
                    return ch
            except ValueError:
                continue
        return min(2, self._device["channels"])

    def _disconnect_impl(self) -> None:
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        try:
            if stream is not None:
                try:
                    if not stream.is_stopped():
                        stream.stop_stream()  # waits for a running callback to return
                finally:
                    stream.close()
        finally:
            self._resampler = None
            if pa is not None:
                pa.terminate()

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: object, status: int
    ) -> tuple[None, int]:
        overflow_flag, cont, abort = self._flags
        now = clock.now()
        try:
            if status & overflow_flag:
                self._ring.note_overflow()
            x = np.frombuffer(in_data or b"", dtype=np.float32)
            if self._channels > 1:
                x = x.reshape(-1, self._channels).mean(axis=1)
            if x.size != frame_count:
                raise MicrophoneError(f"callback got {x.size} frames, PortAudio announced {frame_count}")
            assert self._clock is not None and self._resampler is not None
            t_last_in = self._clock.stamp(frame_count, now - self.config.capture_delay_s)
            y = self._resampler.process(x)
            if y.size:
                t = self._resampler.last_output_time(t_last_in)
                if self._last_write_t is not None and t <= self._last_write_t:
                    t = self._last_write_t + MIN_TIME_STEP_S
                self._ring.write(y, t)
                self._last_write_t = t
            self._consecutive_errors = 0
            with self._lock:
                self._blocks += 1
            return None, cont
        except Exception as exc:  # noqa: BLE001 - never let an exception escape into PortAudio; count it
            self._consecutive_errors += 1
            give_up = self._consecutive_errors >= self.config.max_consecutive_errors
            with self._lock:
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if give_up:
                    self._failed = True
            return None, abort if give_up else cont

    def stats(self) -> MicrophoneStats:
        """As ``Microphone.stats``; ``failed`` also when PortAudio stopped the stream itself."""
        base = super().stats()
        stream = self._stream
        if stream is not None and not base.failed:
            try:
                active = stream.is_active()
            except OSError:
                active = False
            if not active and self._connected:
                return replace(base, failed=True, last_error=base.last_error or "the stream stopped (device lost?)")
        return base
