"""The microphone contract: lifecycle, the AudioRing it fills, health statistics, factory.

Every microphone delivers mono float32 at ``SAMPLE_RATE_HZ`` into its
``AudioRing``, each block stamped with the capture time of its last sample on
``edge.sensors.clock``. Backends: PyAudio (a real input device, callback
mode), a WAV file played in real time, and a simulator (noise + synthesized
speech). The file and simulator backends share ``FeederMicrophone``: one
thread that writes fixed-size blocks on a real-time schedule.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge.sensors import clock
from edge.sensors.audio_ring import DEFAULT_RING_S, SAMPLE_RATE_HZ, AudioRing
from edge.sensors.errors import (
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    MicrophoneConfigError,
    MicrophoneError,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "MICROPHONE_TYPES", "SAMPLE_RATE_HZ", "FeederMicrophone", "FeederMicrophoneConfig", "Microphone",
    "MicrophoneConfig", "MicrophoneStats", "make_microphone",
]  # fmt: skip

log = logging.getLogger(__name__)

DEFAULT_BLOCK_S = 0.02        # 20 ms blocks: 320 samples at 16 kHz
MAX_BLOCK_S = 0.5
JOIN_TIMEOUT_S = 2.0          # disconnect() waits this long for a feeder thread
FEEDER_RESYNC_S = 0.2         # a feeder this far behind its schedule restarts it (no burst)

# Microphone type -> "module:Class"; modules are imported only when that type is made.
MICROPHONE_TYPES: dict[str, str] = {
    "pyaudio": "edge.sensors.microphone_pyaudio:PyAudioMicrophone",
    "wav": "edge.sensors.microphone_wav:WavMicrophone",
    "sim": "simrobot.microphone:SimMicrophone",  # the simulated robot's (edge never imports it)
}


def check_positive(name: str, value: Any, maximum: float = math.inf) -> None:
    """Raise MicrophoneConfigError unless ``value`` is a finite number in (0, maximum]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and 0 < value <= maximum):
        limit = "" if maximum == math.inf else f" up to {maximum:g}"
        raise MicrophoneConfigError(f"{name}={value!r}; use a positive number{limit}")


@dataclass(kw_only=True)
class MicrophoneConfig:
    """Settings every microphone shares.

    Attributes:
        ring_s: seconds of 16 kHz audio the ring keeps.
    """

    ring_s: float = DEFAULT_RING_S

    def __post_init__(self) -> None:
        check_positive("ring_s", self.ring_s, maximum=3600.0)


@dataclass(frozen=True)
class MicrophoneStats:
    """A snapshot of a microphone's health.

    Attributes:
        blocks: device blocks received since connect().
        samples: 16 kHz samples in the ring's timeline (its end_index).
        input_overflows: blocks the device reported as dropped.
        device_rate_hz: the rate the device (or file) runs at, before resampling.
        level_dbfs: RMS level of the last 100 ms.
        latest_age_s: age of the newest sample, None before the first.
        errors: failed blocks (callback or feeder errors).
        failed: capture stopped after too many consecutive errors.
        ended: a finite source (a WAV file without loop) played to its end.
        last_error: the most recent error message, or None.
    """

    blocks: int
    samples: int
    input_overflows: int
    device_rate_hz: int | None
    level_dbfs: float
    latest_age_s: float | None
    errors: int
    failed: bool
    ended: bool
    last_error: str | None


class Microphone(ABC):
    """An audio source that fills an ``AudioRing`` at 16 kHz mono.

    The ring outlives connect/disconnect cycles, so its sample indexes keep
    increasing and consumers may hold on to it.
    """

    config_class: ClassVar[type[MicrophoneConfig]] = MicrophoneConfig

    def __init__(self, config: MicrophoneConfig) -> None:
        if not isinstance(config, self.config_class):
            raise MicrophoneConfigError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._ring = AudioRing(config.ring_s, SAMPLE_RATE_HZ)
        self._connected = False
        self._lock = threading.Lock()  # guards the counters below
        self._device_rate_hz: int | None = None
        self._reset_counters()

    @property
    def name(self) -> str:
        """Short human-readable description of the source, used in messages."""
        return type(self).__name__

    @property
    def ring(self) -> AudioRing:
        """The ring this microphone writes into."""
        return self._ring

    @property
    def is_connected(self) -> bool:
        """True between a successful connect() and disconnect()."""
        return self._connected

    @property
    def device_rate_hz(self) -> int | None:
        """The source's own sample rate, known once connected."""
        return self._device_rate_hz

    def connect(self) -> Self:
        """Open the source and start capturing into the ring.

        Raises:
            DeviceAlreadyConnectedError: already connected.
            MicrophoneError: the source could not be opened (it is closed again first).
        """
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self.name} is already connected; disconnect() it first")
        self._reset_counters()
        try:
            self._connect_impl()
        except BaseException as exc:
            self._safe_disconnect_impl()
            if isinstance(exc, MicrophoneError) or not isinstance(exc, Exception):
                raise
            raise MicrophoneError(f"{self.name}: could not start capture: {type(exc).__name__}: {exc}") from exc
        self._connected = True
        return self

    def disconnect(self) -> None:
        """Stop capturing and release the source (bounded waits).

        Raises:
            DeviceNotConnectedError: not connected.
            MicrophoneError: a capture thread did not stop in time.
        """
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name} is not connected")
        self._connected = False
        self._disconnect_impl()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        if self._connected:
            self.disconnect()

    def stats(self) -> MicrophoneStats:
        """A snapshot of the capture counters and the current level."""
        ring = self._ring
        with self._lock:
            blocks, errors, failed, ended, last_error = (
                self._blocks, self._errors, self._failed, self._ended, self._last_error
            )
        return MicrophoneStats(
            blocks=blocks,
            samples=ring.end_index,
            input_overflows=ring.overflows - self._overflows_at_connect,
            device_rate_hz=self._device_rate_hz,
            level_dbfs=ring.level_dbfs(),
            latest_age_s=ring.age_s(),
            errors=errors,
            failed=failed,
            ended=ended,
            last_error=last_error,
        )

    # --- backend hooks ---------------------------------------------------------------------

    @abstractmethod
    def _connect_impl(self) -> None:
        """Open the source and start delivering; raise on failure."""

    @abstractmethod
    def _disconnect_impl(self) -> None:
        """Stop delivering and release the source; safe on a half-open source."""

    # --- internals -------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        with self._lock:
            self._blocks = 0
            self._errors = 0
            self._failed = False
            self._ended = False
            self._last_error: str | None = None
        self._overflows_at_connect = self._ring.overflows

    def _safe_disconnect_impl(self) -> None:
        try:
            self._disconnect_impl()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the error that led here
            log.warning("%s: error while closing: %s", self.name, exc)


@dataclass(kw_only=True)
class FeederMicrophoneConfig(MicrophoneConfig):
    """Settings of thread-fed microphones (file, simulator).

    Attributes:
        block_s: block length written per tick.
        realtime: write blocks as their audio would be captured (False: as fast as possible,
            each block stamped with the time it is written).
    """

    block_s: float = DEFAULT_BLOCK_S
    realtime: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("block_s", self.block_s, maximum=MAX_BLOCK_S)
        if self.block_s * SAMPLE_RATE_HZ < 1:
            raise MicrophoneConfigError(f"block_s={self.block_s!r} is shorter than one sample")


class FeederMicrophone(Microphone):
    """A microphone whose samples come from a thread writing fixed blocks on a real-time schedule.

    The schedule maps ring index ``i`` to capture time ``t0 + i / SAMPLE_RATE_HZ``;
    the block [i, i + n) is produced and written once its last sample's time
    has come, so what a caller injects before that time is in the block.
    Backends implement ``_prepare`` (load or generate) and ``_make_block``.
    """

    config_class = FeederMicrophoneConfig

    def __init__(self, config: FeederMicrophoneConfig) -> None:
        super().__init__(config)
        self.config: FeederMicrophoneConfig = config
        self._block_n = max(1, round(config.block_s * SAMPLE_RATE_HZ))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sched = threading.Lock()  # guards the schedule and what _make_block reads
        self._sched_t0 = 0.0
        self._next_index = 0

    @abstractmethod
    def _prepare(self) -> int:
        """Load or generate the source; returns its own sample rate in Hz. Called by connect()."""

    @abstractmethod
    def _make_block(self, start: int, n: int) -> np.ndarray | None:
        """Samples [start, start + n) of the ring timeline (shorter at the end), or None when done.

        Called with the schedule lock held.
        """

    def _connect_impl(self) -> None:
        self._device_rate_hz = self._prepare()
        self._stop.clear()
        with self._sched:
            self._next_index = self._ring.end_index
            self._sched_t0 = clock.now() - self._next_index / SAMPLE_RATE_HZ
        self._thread = threading.Thread(target=self._feeder, name=f"mic-feeder[{self.name}]", daemon=True)
        self._thread.start()

    def _disconnect_impl(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                raise MicrophoneError(f"{self.name}: feeder thread did not stop within {JOIN_TIMEOUT_S:g} s")

    def time_of_index(self, index: int) -> float:
        """Scheduled capture time of ring index ``index`` (for indexes not yet written)."""
        with self._sched:
            return self._sched_t0 + index / SAMPLE_RATE_HZ

    def _feeder(self) -> None:
        n = self._block_n
        realtime = self.config.realtime
        last_t = self._ring.end_time
        while not self._stop.is_set():
            with self._sched:
                start = self._next_index
                due = self._sched_t0 + (start + n - 1) / SAMPLE_RATE_HZ
            if realtime:
                delay = due - clock.now()
                if delay > 0 and self._stop.wait(delay):
                    break
            try:
                with self._sched:
                    now = clock.now()
                    if realtime and now - due > FEEDER_RESYNC_S:
                        # The host stalled (GC, swap): move the schedule rather than burst-catch-up.
                        self._sched_t0 += now - due
                        due = now
                    block = self._make_block(start, n)
                    if block is not None and block.size:
                        self._next_index = start + block.size
                        t_end = self._sched_t0 + (start + block.size - 1) / SAMPLE_RATE_HZ if realtime else now
                if block is None or block.size == 0:
                    with self._lock:
                        self._ended = True
                    break
                if last_t is not None and t_end <= last_t:
                    t_end = last_t + 1e-6
                self._ring.write(block, t_end)
                last_t = t_end
                with self._lock:
                    self._blocks += 1
            except Exception as exc:  # noqa: BLE001 - a broken source must not die silently
                log.error("%s: feeder stopped: %s", self.name, exc)
                with self._lock:
                    self._errors += 1
                    self._failed = True
                    self._last_error = f"{type(exc).__name__}: {exc}"
                break


def make_microphone(type: str, **config: Any) -> Microphone:
    """Build a microphone by type name ("pyaudio", "wav", "sim") from keyword configuration.

    The backend module is imported only here (PyAudio, the simulator and
    espeak-ng wrappers load only when used).

    Raises:
        MicrophoneConfigError: unknown type or invalid configuration.
    """
    spec = MICROPHONE_TYPES.get(type)
    if spec is None:
        raise MicrophoneConfigError(f"unknown microphone type {type!r}; use one of {sorted(MICROPHONE_TYPES)}")
    module_name, _, class_name = spec.partition(":")
    cls: type[Microphone] = getattr(importlib.import_module(module_name), class_name)
    cfg_cls = cls.config_class
    fields = sorted(f.name for f in dataclasses.fields(cfg_cls))
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise MicrophoneConfigError(f"unknown {type!r} microphone settings {unknown}; valid settings are {fields}")
    try:
        cfg = cfg_cls(**config)
    except TypeError as exc:
        raise MicrophoneConfigError(f"bad {type!r} microphone settings: {exc}") from exc
    return cls(cfg)
